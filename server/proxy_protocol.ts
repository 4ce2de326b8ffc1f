/**
 * The PROXY protocol, version 1 (the text form; HAProxy `send-proxy`): a TCP load balancer in front of
 * several nodes passes TLS through untouched, so client certificates reach the nodes, but every connection
 * then comes from the balancer's address. The balancer prepends one line naming the real client, which the
 * node reads before TLS starts, so per-source limits count clients, not the balancer.
 *
 * Only the line is parsed here (pure); http.ts reads it off the socket. With the option on, a connection
 * without a valid line is closed: accepting both would let a client that reaches the node directly claim
 * any address.
 */
import { isIP } from "node:net";

/** Spec: "a receiver must not accept more than 107 bytes" for the v1 line, CRLF included. */
export const PROXY_V1_MAX_BYTES = 107;

export class ProxyProtocolError extends Error {
  readonly code = "BAD_PROXY_HEADER";
  constructor(message: string) {
    super(message);
    this.name = "ProxyProtocolError";
  }
}

/** The client's address from a v1 line (without its CRLF); null for "PROXY UNKNOWN" (a health check from the
 * balancer itself: the connection's own address stands). */
export function parseProxyV1(line: string): { address: string; port: number } | null {
  const parts = line.split(" ");
  if (parts[0] !== "PROXY") throw new ProxyProtocolError("not a PROXY protocol v1 line");
  if (parts[1] === "UNKNOWN") return null;
  if (parts.length !== 6 || (parts[1] !== "TCP4" && parts[1] !== "TCP6")) {
    throw new ProxyProtocolError("PROXY line needs TCP4|TCP6 SRC DST SPORT DPORT");
  }
  const [, fam, src, dst, sport, dport] = parts;
  const want = fam === "TCP4" ? 4 : 6;
  if (isIP(src) !== want || isIP(dst) !== want) throw new ProxyProtocolError(`bad ${fam} address`);
  for (const p of [sport, dport]) {
    if (!/^(0|[1-9][0-9]{0,4})$/.test(p) || Number(p) > 65535) throw new ProxyProtocolError("bad port");
  }
  return { address: src, port: Number(sport) };
}

/** Where the v1 line ends in `buf` (the index of its CR), -1 when not complete yet; throws when the line is
 * too long or cannot be one. */
export function proxyLineEnd(buf: Uint8Array): number {
  const limit = Math.min(buf.length, PROXY_V1_MAX_BYTES);
  for (let i = 0; i < limit - 1; i++) {
    if (buf[i] === 0x0d && buf[i + 1] === 0x0a) return i;
  }
  const prefix = "PROXY ";
  for (let i = 0; i < Math.min(buf.length, prefix.length); i++) {
    if (buf[i] !== prefix.charCodeAt(i)) throw new ProxyProtocolError("connection did not start with PROXY");
  }
  if (buf.length >= PROXY_V1_MAX_BYTES) throw new ProxyProtocolError("PROXY line longer than 107 bytes");
  return -1;
}
