/**
 * The Port Control Protocol's MAP packets (RFC 6887), pure: encode a request, decode a response (and the
 * router's unsolicited ANNOUNCE, and what its epoch says), nothing else. The I/O (a UDP socket to the
 * router's port 5351, retransmission, renewal) is in pcp.ts.
 *
 * Layout (RFC 6887 §7.1 request header, §7.2 response header, §11.1 MAP opcode), all big-endian:
 *   request:  version(1)=2 | R=0,opcode(1) | reserved(2) | requested lifetime(4) | client IP(16)
 *   response: version(1)=2 | R=1,opcode(1) | reserved(1) | result(1) | lifetime(4) | epoch(4) | reserved(12)
 *   MAP:      nonce(12) | protocol(1) | reserved(3) | internal port(2) | (suggested|assigned) external port(2)
 *             | (suggested|assigned) external IP(16)
 * IPv4 addresses travel as IPv4-mapped IPv6 (::ffff:a.b.c.d, §5).
 */
import { CodedError } from "../coded_error.ts";

export const PCP_VERSION = 2;
/** The router's PCP port, shared with NAT-PMP (§19.1). */
export const PCP_SERVER_PORT = 5351;
/** Where a router's unsolicited ANNOUNCE goes: this port of the all-nodes multicast address (224.0.0.1,
 * ff02::1) (§19.1, §14.1.1). */
export const PCP_CLIENT_PORT = 5350;
export const PCP_OPCODE_ANNOUNCE = 0;
export const PCP_OPCODE_MAP = 1;
/** The R bit of the opcode byte: set in responses (§7.2). */
export const PCP_RESPONSE_BIT = 0x80;
export const PCP_HEADER_LENGTH = 24;
export const PCP_MAP_LENGTH = 36;
/** Request header + MAP opcode, no options. */
export const PCP_MAP_PACKET_LENGTH = PCP_HEADER_LENGTH + PCP_MAP_LENGTH;
/** Nothing longer is a PCP message (§7). */
export const PCP_MAX_LENGTH = 1100;
export const PCP_NONCE_LENGTH = 12;
/** IANA protocol numbers (§11.1: 0 means all protocols). */
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** Result codes (§7.4). */
export const PCP_RESULTS = {
  0: "SUCCESS",
  1: "UNSUPP_VERSION",
  2: "NOT_AUTHORIZED",
  3: "MALFORMED_REQUEST",
  4: "UNSUPP_OPCODE",
  5: "UNSUPP_OPTION",
  6: "MALFORMED_OPTION",
  7: "NETWORK_FAILURE",
  8: "NO_RESOURCES",
  9: "UNSUPP_PROTOCOL",
  10: "USER_EX_QUOTA",
  11: "CANNOT_PROVIDE_EXTERNAL",
  12: "ADDRESS_MISMATCH",
  13: "EXCESSIVE_REMOTE_PEERS",
} as const;

export type PcpErrorCode =
  | "PCP_BAD_ARGUMENT"
  | "PCP_MALFORMED_RESPONSE"
  | "PCP_NOT_A_RESPONSE"
  | "PCP_UNSUPPORTED_VERSION"
  | "PCP_REFUSED"
  | "PCP_TIMEOUT"
  | "PCP_STOPPED";

export class PcpError extends CodedError<PcpErrorCode> {
  /** The router's result code when it answered with one. */
  result?: number;
}

export interface MapRequest {
  nonce: Uint8Array;
  protocol: number;
  internalPort: number;
  /** 0: let the router choose. */
  suggestedExternalPort: number;
  /** null: no preference (the all-zeros address of the client's family, §11.1: `::` for an IPv6 client,
   * which asks for a pinhole in the router's firewall rather than a translation). */
  suggestedExternalIp: string | null;
  /** Seconds; 0 deletes the mapping (§11.1). */
  lifetime: number;
  /** Our address as the router sees it (it checks this against the packet's source, §8.1). */
  clientIp: string;
}

export interface MapResponse {
  result: number;
  /** Seconds the mapping lasts (0 after a delete, or on most errors). */
  lifetime: number;
  /** Seconds since the router's PCP state began; a jump back means it lost its mappings (§8.5). */
  epoch: number;
  nonce: Uint8Array;
  protocol: number;
  internalPort: number;
  externalPort: number;
  externalIp: string;
}

function checkPort(name: string, port: number, allowZero: boolean): void {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new PcpError("PCP_BAD_ARGUMENT", `${name} must be an integer port (${allowZero ? 0 : 1}..65535)`);
  }
}

/** The 16 bytes of an address: IPv4 as IPv4-mapped IPv6; IPv6 in full. */
export function ipBytes(ip: string): Uint8Array {
  const out = new Uint8Array(16);
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/i.exec(ip);
  if (v4) {
    const octets = v4.slice(1).map(Number);
    if (octets.some((o) => o > 255)) throw new PcpError("PCP_BAD_ARGUMENT", `not an IP address: ${ip}`);
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(octets, 12);
    return out;
  }
  const halves = ip.split("::");
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  if (halves.length > 2 || !ip.includes(":")) {
    throw new PcpError("PCP_BAD_ARGUMENT", `not an IP address: ${ip}`);
  }
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const fill = 8 - head.length - tail.length;
  if ((halves.length === 1 && fill !== 0) || fill < 0) {
    throw new PcpError("PCP_BAD_ARGUMENT", `not an IP address: ${ip}`);
  }
  const all = [...head, ...Array(fill).fill("0"), ...tail];
  all.forEach((g, i) => {
    if (!/^[0-9a-f]{1,4}$/i.test(g)) throw new PcpError("PCP_BAD_ARGUMENT", `not an IP address: ${ip}`);
    const n = parseInt(g, 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 255;
  });
  return out;
}

/** Whether `ip` is an IPv6 address proper (not dotted IPv4, nor IPv4-mapped IPv6). */
export function isIpv6(ip: string): boolean {
  return ip.includes(":") && !/^(?:::ffff:)?\d{1,3}(?:\.\d{1,3}){3}$/i.test(ip);
}

/** Whether `ip` is an IPv6 link-local address (fe80::/10): one of our own link's, where a router's multicast
 * comes from. */
export function isLinkLocalV6(ip: string): boolean {
  return isIpv6(ip) && /^fe[89ab][0-9a-f]:/i.test(ip);
}

/** Whether two addresses are the same however each is written (a zone index, `%eth0`, is left out). */
export function sameIp(a: string, b: string): boolean {
  try {
    const x = ipBytes(a.replace(/%.*$/, ""));
    const y = ipBytes(b.replace(/%.*$/, ""));
    return x.every((v, i) => v === y[i]);
  } catch {
    return false;
  }
}

/** The text form of 16 address bytes: dotted IPv4 for an IPv4-mapped address, else IPv6 as RFC 5952 writes
 * it (lower case, the longest run of zero groups as `::`). */
export function ipText(b: Uint8Array): string {
  const mapped = b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (mapped) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // RFC 5952: the longest run of two or more zero groups (the first of equal ones) becomes "::".
  let at = -1;
  let len = 0;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > len && j - i >= 2) [at, len] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  return at < 0 ? hex(groups) : `${hex(groups.slice(0, at))}::${hex(groups.slice(at + len))}`;
}

/** A MAP request (60 bytes, no options). Throws PcpError("PCP_BAD_ARGUMENT") on a bad field. */
export function encodeMapRequest(r: MapRequest): Uint8Array {
  if (r.nonce.length !== PCP_NONCE_LENGTH) {
    throw new PcpError("PCP_BAD_ARGUMENT", `the nonce must be ${PCP_NONCE_LENGTH} bytes`);
  }
  if (!Number.isInteger(r.protocol) || r.protocol < 0 || r.protocol > 255) {
    throw new PcpError("PCP_BAD_ARGUMENT", "protocol must be an IANA protocol number (0..255)");
  }
  // Internal port 0 means "all ports" and is only valid with protocol 0 (§11.1): not something we ask.
  checkPort("internalPort", r.internalPort, false);
  checkPort("suggestedExternalPort", r.suggestedExternalPort, true);
  if (!Number.isInteger(r.lifetime) || r.lifetime < 0 || r.lifetime > 0xffffffff) {
    throw new PcpError("PCP_BAD_ARGUMENT", "lifetime must be whole seconds (0..2^32-1)");
  }
  const b = new Uint8Array(PCP_MAP_PACKET_LENGTH);
  const v = new DataView(b.buffer);
  b[0] = PCP_VERSION;
  b[1] = PCP_OPCODE_MAP; // R = 0: a request
  v.setUint32(4, r.lifetime);
  b.set(ipBytes(r.clientIp), 8);
  const m = PCP_HEADER_LENGTH;
  b.set(r.nonce, m);
  b[m + 12] = r.protocol;
  v.setUint16(m + 16, r.internalPort);
  v.setUint16(m + 18, r.suggestedExternalPort);
  b.set(ipBytes(r.suggestedExternalIp ?? (isIpv6(r.clientIp) ? "::" : "0.0.0.0")), m + 20);
  return b;
}

/**
 * A MAP response. Throws PcpError: "PCP_UNSUPPORTED_VERSION" when the router answered in another version
 * (a NAT-PMP-only router answers version 0, RFC 6887 §9), "PCP_NOT_A_RESPONSE" for a request or another
 * opcode, "PCP_MALFORMED_RESPONSE" when too short or too long. A non-zero result code is returned, not
 * thrown (the caller decides; see resultName).
 */
export function decodeMapResponse(packet: Uint8Array): MapResponse {
  if (packet.length >= 2 && packet[0] !== PCP_VERSION) {
    const e = new PcpError(
      "PCP_UNSUPPORTED_VERSION",
      `the router answered in protocol version ${packet[0]}, not PCP's ${PCP_VERSION}` +
        (packet[0] === 0 ? " (it speaks NAT-PMP only)" : ""),
    );
    e.result = 1;
    throw e;
  }
  if (packet.length < PCP_MAP_PACKET_LENGTH || packet.length > PCP_MAX_LENGTH || packet.length % 4 !== 0) {
    throw new PcpError("PCP_MALFORMED_RESPONSE", `a PCP MAP response of ${packet.length} bytes`);
  }
  if ((packet[1] & PCP_RESPONSE_BIT) === 0 || (packet[1] & 0x7f) !== PCP_OPCODE_MAP) {
    throw new PcpError("PCP_NOT_A_RESPONSE", `not a MAP response (opcode byte ${packet[1]})`);
  }
  const v = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const m = PCP_HEADER_LENGTH;
  return {
    result: packet[3],
    lifetime: v.getUint32(4),
    epoch: v.getUint32(8),
    nonce: packet.slice(m, m + PCP_NONCE_LENGTH),
    protocol: packet[m + 12],
    internalPort: v.getUint16(m + 16),
    externalPort: v.getUint16(m + 18),
    externalIp: ipText(packet.subarray(m + 20, m + 36)),
  };
}

/** The RFC's name of a result code ("NOT_AUTHORIZED"), or "result N" for one it does not define. */
export function resultName(result: number): string {
  return (PCP_RESULTS as Record<number, string>)[result] ?? `result ${result}`;
}

/** An ANNOUNCE response's epoch (§14.1): the router says when its PCP state began. Throws PcpError
 * "PCP_NOT_A_RESPONSE" for anything that is not a successful ANNOUNCE response of version 2 (requests,
 * other opcodes, other versions, a result other than SUCCESS), "PCP_MALFORMED_RESPONSE" for a bad length. */
export function decodeAnnounce(packet: Uint8Array): number {
  if (packet.length < PCP_HEADER_LENGTH || packet.length > PCP_MAX_LENGTH || packet.length % 4 !== 0) {
    throw new PcpError("PCP_MALFORMED_RESPONSE", `a PCP ANNOUNCE of ${packet.length} bytes`);
  }
  if (
    packet[0] !== PCP_VERSION || packet[1] !== (PCP_RESPONSE_BIT | PCP_OPCODE_ANNOUNCE) || packet[3] !== 0
  ) {
    throw new PcpError("PCP_NOT_A_RESPONSE", "not a successful PCP ANNOUNCE response");
  }
  return new DataView(packet.buffer, packet.byteOffset, packet.byteLength).getUint32(8);
}

/** One reading of a router's epoch: what it said, and our monotonic clock (ms) when it came. */
export interface EpochReading {
  epoch: number;
  atMs: number;
}

/** RFC 6887 §8.5: whether the router lost its state (rebooted, or its PCP service restarted) between two
 * readings of its epoch. Its epoch went back by more than a second, or it ran at another pace than our
 * clock: the two elapsed times may differ by 2 s plus 1/16 of the longer, no more. */
export function epochShowsLoss(prev: EpochReading, now: EpochReading): boolean {
  if (now.epoch + 1 < prev.epoch) return true;
  const client = (now.atMs - prev.atMs) / 1000;
  const server = now.epoch - prev.epoch;
  return client + 2 < server - server / 16 || server + 2 < client - client / 16;
}

/** NAT-PMP (RFC 6886 §3.2.1): what a gateway multicasts to 224.0.0.1:5350 when it boots, restarts or gets
 * another public address (and answers to an address request), a version 0 packet of 12 bytes. */
export interface PmpAnnouncement {
  /** Seconds since its mapping state began. */
  epoch: number;
  externalIp: string;
}

/** A NAT-PMP public address announcement. Throws PcpError "PCP_NOT_A_RESPONSE" for anything else (another
 * version or opcode, a result other than success), "PCP_MALFORMED_RESPONSE" for another length. */
export function decodePmpAnnouncement(packet: Uint8Array): PmpAnnouncement {
  if (packet.length !== 12) {
    throw new PcpError("PCP_MALFORMED_RESPONSE", `a NAT-PMP announcement of ${packet.length} bytes`);
  }
  const v = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  if (packet[0] !== 0 || packet[1] !== 128 || v.getUint16(2) !== 0) {
    throw new PcpError("PCP_NOT_A_RESPONSE", "not a successful NAT-PMP public address announcement");
  }
  return { epoch: v.getUint32(4), externalIp: [...packet.subarray(8, 12)].join(".") };
}

/** RFC 6886 §3.6, for a mapping last answered `sinceMs` ago: the gateway's state began after that answer
 * (so our mapping is gone) when its epoch is short of 7/8 of that time by more than 2 s. */
export function pmpRestartedSince(epoch: number, sinceMs: number): boolean {
  return epoch + 2 < (sinceMs / 1000) * 7 / 8;
}
