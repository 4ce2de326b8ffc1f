/**
 * What a user may publish as their address. Pure: syntax and ranges only (the directory cannot check that a
 * host is really the user's). Peers dial whatever is published, so addresses nobody can be reached at, or
 * that mean something else to a resolver, are refused.
 */
import { isIP } from "node:net";
import { ApiError } from "./errors.ts";

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
/** A last label that resolvers and URL parsers read as (part of) an IPv4 address: "127.1", "0x7f.1",
 * "01.02.03.004" are IP addresses in disguise (inet_aton), not names. */
const NUMERIC_LAST_LABEL = /(^|\.)(0x[0-9a-f]*|[0-9]+)$/;

function badAddress(message: string): ApiError {
  return new ApiError(400, "BAD_ADDRESS", message);
}

/** IPv4 addresses nobody can be reached at: 0.0.0.0/8 ("this host"), multicast 224/4, reserved 240/4 and
 * the broadcast address. Loopback and private ranges stay allowed (a LAN, or the local demo). */
function checkIpv4(octets: number[]): void {
  const a = octets[0];
  if (a === 0) throw badAddress("an unspecified IPv4 address (0.0.0.0/8) is not reachable");
  if (a >= 224) throw badAddress("multicast, reserved and broadcast IPv4 addresses are not allowed");
}

/** Returns the canonical form of a publishable host (lower-case DNS name, or the IP address as WHATWG URL
 * serialises it), or throws ApiError 400 BAD_ADDRESS. */
export function canonicalPresenceHost(input: unknown): string {
  if (typeof input !== "string") throw badAddress("host must be an IP address or a DNS name");
  if (input.includes("%")) throw badAddress("IPv6 zone identifiers mean nothing to other hosts");
  const kind = isIP(input);
  if (kind === 4) {
    const canonical = new URL(`http://${input}/`).hostname;
    checkIpv4(canonical.split(".").map(Number));
    return canonical;
  }
  if (kind === 6) {
    const canonical = new URL(`http://[${input}]/`).hostname.slice(1, -1);
    if (canonical === "::") throw badAddress("the unspecified IPv6 address is not reachable");
    if (canonical.startsWith("ff")) throw badAddress("multicast IPv6 addresses are not allowed");
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
    if (mapped) {
      const hi = parseInt(mapped[1], 16);
      const lo = parseInt(mapped[2], 16);
      checkIpv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
    }
    return canonical;
  }
  const name = input.toLowerCase();
  if (!DNS_NAME.test(name)) throw badAddress("host must be an IP address or a DNS name");
  if (NUMERIC_LAST_LABEL.test(name)) {
    throw badAddress("a host name cannot end in a numeric label (it would be read as an IPv4 address)");
  }
  return name;
}
