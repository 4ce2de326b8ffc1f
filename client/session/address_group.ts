/**
 * The unit the listener's per-address cap counts (pure): an IPv4 address by itself, an IPv6 address by its
 * /64. One IPv6 host usually holds a whole /64 (SLAAC, privacy addresses, a provider's delegation), so
 * counting exact IPv6 addresses would give one machine 2^64 shares of the pending cap.
 */
import { isIP } from "node:net";

/** "v4:a.b.c.d" for IPv4 (also IPv4-mapped IPv6), "v6:xxxx:xxxx:xxxx:xxxx::/64" for IPv6, else the text
 * itself (a socket without an address). */
export function addressGroup(address: string): string {
  const a = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "").toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (mapped) return `v4:${mapped[1]}`;
  if (isIP(a) === 4) return `v4:${a}`;
  if (isIP(a) !== 6) return a;
  return `v6:${expandV6(a).slice(0, 4).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, without leading zeros (a trailing dotted quad converted). */
function expandV6(a: string): string[] {
  let text = a;
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad) {
    const [b0, b1, b2, b3] = quad.slice(1).map(Number);
    text = text.slice(0, quad.index) + `${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, null];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = tail === null ? [] : Array(8 - h.length - t.length).fill("0");
  return [...h, ...fill, ...t].map((g) => parseInt(g, 16).toString(16));
}
