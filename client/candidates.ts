/**
 * Where peers can reach us, and how a session to a peer runs. Pure except `localAddresses` (which reads the
 * machine's interfaces): the publication is a function of the bound listener, the interfaces, the flags.
 *
 * Kinds of address (what each reveals is in docs/protocol.md "Reachability"):
 * - "local": loopback, this machine only (the one-machine demo);
 * - "lan": private IPv4 (RFC 1918), carrier-grade shared space (RFC 6598), unique-local IPv6 (fc00::/7);
 * - "ipv6": a global IPv6 address;
 * - "public": any other IPv4 address (a public one, or as the phonebook saw us);
 * - "mapped": a port the peer's router forwards to it (PCP, NAT-PMP or UPnP-IGD);
 * - "punched": a direct connection made by hole punching (after a relayed start);
 * - "relayed": not an address of ours, a circuit through a relay.
 */
import { isIP } from "node:net";

export interface Address {
  host: string;
  port: number;
  /** "mapping": forwarded to us by our router (port_mapping.ts). */
  via?: "mapping";
}

export type PathKind = "local" | "lan" | "ipv6" | "public" | "mapped" | "punched" | "relayed";

/** How a session runs: direct to an address of the peer's, or through a relay. */
export interface SessionPath {
  kind: PathKind;
  /** The peer's address we dialled or were reached from (direct), or the relay's (relayed). */
  address: Address;
}

/** What we publish: the best candidate first (also sent as host/port for older phonebooks). */
export interface Publication {
  candidates: Address[];
  relay: Address | null;
  relayOnly: boolean;
  /** Our listener's knock secret (base64url), handed by the phonebook to enrolled callers only. */
  knock?: string;
}

/** The kind of an address by its range alone. */
export function addressKind(host: string): Exclude<PathKind, "relayed" | "punched" | "mapped"> {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  const v4 = mapped ? mapped[1] : isIP(h) === 4 ? h : null;
  if (v4) {
    const [a, b] = v4.split(".").map(Number);
    if (a === 127) return "local";
    if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) return "lan";
    if (a === 100 && b >= 64 && b <= 127) return "lan";
    if (a === 169 && b === 254) return "lan";
    return "public";
  }
  if (isIP(h) === 6) {
    if (h === "::1") return "local";
    if (/^f[cd]/.test(h) || /^fe[89ab]/.test(h)) return "lan";
    return "ipv6";
  }
  // A DNS name someone advertised: say nothing of its range.
  return "public";
}

/** The first global IPv6 address among `candidates` (a port mapping aside), or null: the one a user punches
 * from over IPv6 (client/upgrade.ts), and the one its peers punch to. */
export function firstGlobalIpv6(candidates: readonly Address[]): string | null {
  return candidates.find((a) => a.via !== "mapping" && addressKind(a.host) === "ipv6")?.host ?? null;
}

/** Whether peers on the internet can probably dial us, so that a dialer asks a peer behind NAT to dial it
 * back (connection reversal, client/dialer.ts): we publish a public IPv4 or a global IPv6 address, and the
 * phonebook's check of our listing (`own`: our entry as the phonebook lists it), when it ran on what we
 * publish now, reached one of them. A global IPv6 address behind a home router's firewall is the common
 * case it rules out: asking for a dial-back there only costs the wait for it before the relay is tried. */
export function dialableFromInternet(
  published: readonly Address[],
  own: { reachable?: Address[]; reachCheckedAt?: number | null } | null,
): boolean {
  const norm = (h: string) => h.toLowerCase().replace(/^\[|\]$/g, "");
  const internet = published.filter((c) => ["public", "ipv6"].includes(addressKind(c.host)));
  if (internet.length === 0) return false;
  if (!own || own.reachCheckedAt == null) return true;
  return (own.reachable ?? []).some((r) =>
    internet.some((c) => norm(c.host) === norm(r.host) && c.port === r.port)
  );
}

/** An interface address as `Deno.networkInterfaces()` gives it. */
export interface InterfaceAddress {
  family: "IPv4" | "IPv6";
  address: string;
}

/** A link-local address (fe80::/10, 169.254/16): it needs a zone that means nothing to another host, and
 * every network has the same ones. */
export function isLinkLocal(a: InterfaceAddress): boolean {
  return a.family === "IPv6" ? /^fe[89ab]/i.test(a.address) : a.address.startsWith("169.254.");
}

/** The machine's addresses worth publishing: global IPv6 first (RFC 8305 prefers it), then IPv4 (LAN or
 * public), loopback last (it reaches only this machine, which is where the one-machine demo's peers are).
 * Link-local addresses are left out: they need a zone that means nothing to another host. */
export function candidateHosts(ifaces: InterfaceAddress[]): string[] {
  const rank = (a: InterfaceAddress): number => {
    const k = addressKind(a.address);
    if (isLinkLocal(a)) return -1;
    if (k === "ipv6") return 0;
    if (k === "public") return 1;
    if (k === "lan") return a.family === "IPv4" ? 2 : 3;
    return a.family === "IPv4" ? 4 : 5;
  };
  const seen = new Set<string>();
  return ifaces
    .map((a) => ({ a, r: rank(a) }))
    .filter((x) => x.r >= 0 && !seen.has(x.a.address) && (seen.add(x.a.address), true))
    .sort((x, y) => x.r - y.r)
    .map((x) => x.a.address);
}

/** The machine's interface addresses; empty when they cannot be read (no --allow-sys). */
export function localAddresses(): InterfaceAddress[] {
  try {
    return Deno.networkInterfaces().map((i) => ({ family: i.family, address: i.address }));
  } catch {
    return [];
  }
}

export function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || host === "";
}

/** What to publish. `advertise` (the user's --advertise list) wins; a listener on all interfaces publishes
 * each interface address with the bound port; a listener on one address publishes that address. With
 * `relayOnly` nothing of ours is published, only the relay. */
export function publicationFor(opts: {
  bound: Address;
  advertise: Address[];
  relay: Address | null;
  relayOnly: boolean;
  ifaces: InterfaceAddress[];
  max: number;
  /** A port our router forwards to us: published first (the best a peer on the internet can try). */
  mapped?: Address | null;
}): Publication {
  if (opts.relayOnly) return { candidates: [], relay: opts.relay, relayOnly: true };
  let candidates: Address[];
  if (opts.advertise.length > 0) candidates = opts.advertise;
  else if (isWildcard(opts.bound.host)) {
    const v4only = opts.bound.host === "0.0.0.0";
    candidates = candidateHosts(opts.ifaces)
      .filter((h) => !v4only || isIP(h) === 4)
      .map((host) => ({ host, port: opts.bound.port }));
    if (candidates.length === 0) candidates = [{ host: "127.0.0.1", port: opts.bound.port }];
  } else candidates = [opts.bound];
  if (opts.mapped && opts.advertise.length === 0) candidates = [opts.mapped, ...candidates];
  return { candidates: candidates.slice(0, opts.max), relay: opts.relay, relayOnly: false };
}

/** The order a dialer tries a peer's candidates in: those the phonebook's reachability check reached
 * (`reachable`) first, then every other one, each group in the listed order. Nothing is dropped: the
 * phonebook cannot reach a LAN address, which a peer on that LAN still can. Duplicates are tried once. */
export function dialOrder(candidates: readonly Address[], reachable: readonly Address[] = []): Address[] {
  const key = (a: Address) => `${plainAddress(a.host).toLowerCase()}|${a.port}`;
  const verified = new Set(reachable.map(key));
  const seen = new Set<string>();
  const once = (a: Address) => !seen.has(key(a)) && (seen.add(key(a)), true);
  return [
    ...candidates.filter((a) => verified.has(key(a))),
    ...candidates.filter((a) => !verified.has(key(a))),
  ].filter(once);
}

/** An IPv4 address as a dual-stack socket reports it (`::ffff:198.51.100.7`) in its plain form. */
export function plainAddress(host: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host);
  return m ? m[1] : host;
}

/** "198.51.100.7:4000", "[2001:db8::1]:4000". */
export function formatAddress(a: Address): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** A path for front ends: "direct (lan 192.168.1.10:4000)", "relayed via 198.18.0.1:10041". */
export function describePath(p: SessionPath): string {
  return p.kind === "relayed"
    ? `relayed via ${formatAddress(p.address)}`
    : `direct (${p.kind} ${formatAddress(p.address)})`;
}
