/**
 * An IPv6 pinhole: the home router is asked to let inbound TCP reach our listener at our global IPv6 address.
 * A home router gives IPv6 with no NAT but with a stateful firewall that drops whatever the LAN did not start
 * (RFC 6092, the common case). PCP controls such a firewall as it controls a NAT (RFC 6887 §1): a MAP request
 * sent over IPv6 for our IPv6 address, with IPv6's all-zeros address as the suggested external one, opens
 * the firewall for that address and port, and the answer names the same address and port as the external
 * end. Our published IPv6 address is then what it looks like: dialable. The phonebook's check reaches it,
 * and a peer dials it directly instead of starting relayed and punching.
 *
 * The PCP server is the IPv6 default router. Its address comes from Linux's routing table where that can be
 * read (Deno reads /proc only with --allow-all); else the first address of our address's prefix (`::1` of
 * the /64) is asked, where many home routers sit. A router that does not answer within the timeout, or
 * refuses, means no pinhole: the relayed start and the IPv6 punch still work (client/upgrade.ts).
 *
 * Routers that speak no PCP often offer UPnP's WANIPv6FirewallControl instead (client/upnp_pinhole.ts): both
 * are asked at once, and the first pinhole opened is the one reported.
 */
import { CodedError, messageOf } from "../coded_error.ts";
import { ipBytes, ipText, PcpError, sameIp } from "./pcp_wire.ts";
import { pcpMap, type PcpMapOptions, type PcpMapping } from "./pcp.ts";
import { defaultGateway } from "./port_mapping.ts";
import type { Scheduler, Timer } from "./scheduler.ts";
import { type UpnpPinhole, upnpPinhole, type UpnpPinholeOptions } from "./upnp_pinhole.ts";

/** The IPv6 default router from Linux's routing table (a link-local one with its interface as zone, as a
 * socket needs it); null when the table cannot be read or has no default route. */
export async function ipv6RouterFromTable(): Promise<string | null> {
  let table: string;
  try {
    table = await Deno.readTextFile("/proc/net/ipv6_route");
  } catch {
    return null;
  }
  // dest(32 hex) dest_len src src_len next_hop metric refcnt use flags interface
  for (const line of table.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[0] !== "0".repeat(32) || f[1] !== "00") continue;
    const hop = ipText(Uint8Array.from(f[4].match(/../g)!.map((h) => parseInt(h, 16))));
    if (hop === "::") continue;
    return hop.startsWith("fe80:") ? `${hop}%${f[9]}` : hop;
  }
  return null;
}

/** The first address of the prefix `address` is in (`netmask` as Deno.networkInterfaces gives it): the
 * `::1` of the /64 for a home LAN. Null when either cannot be read, or `address` is that one itself. */
export function firstOfPrefix(address: string, netmask: string): string | null {
  let a: Uint8Array;
  let m: Uint8Array;
  try {
    a = ipBytes(address);
    m = ipBytes(netmask);
  } catch {
    return null;
  }
  if (m[15] & 1) return null; // a /128: no prefix to find a router in
  const first = a.map((b, i) => b & m[i]);
  first[15] |= 1;
  const text = ipText(first);
  return sameIp(text, address) ? null : text;
}

/** Where to ask for a pinhole for `address`: the routing table's default router, else the first address of
 * the prefix of the interface that has `address`. */
export async function ipv6Router(address: string): Promise<string | null> {
  const fromTable = await ipv6RouterFromTable();
  if (fromTable) return fromTable;
  try {
    const i = Deno.networkInterfaces().find((x) => x.family === "IPv6" && sameIp(x.address, address));
    return i ? firstOfPrefix(i.address, i.netmask) : null;
  } catch {
    return null;
  }
}

export class PinholeError extends CodedError<"NO_ROUTER" | "NOT_A_PINHOLE" | "NO_PINHOLE"> {}

/** How a pinhole is asked for: PCP (RFC 6887) or UPnP-IGD 2's WANIPv6FirewallControl. */
export type PinholeWay = "pcp" | "upnp";
export const PINHOLE_WAYS: readonly PinholeWay[] = ["pcp", "upnp"];
const WAY_NAME: Record<PinholeWay, "PCP" | "UPnP"> = { pcp: "PCP", upnp: "UPnP" };

export interface Pinhole {
  /** Our IPv6 address the router lets inbound TCP reach, at `port`. */
  address: string;
  port: number;
  /** The router asked (its PCP server, or its UPnP firewall service's host). */
  router: string;
  /** The way it was opened (and is renewed and closed). */
  via: "PCP" | "UPnP";
  /** Seconds the router granted (renewed before they run out). */
  lifetime: number;
  /** Closes the pinhole (a PCP delete, UPnP's DeletePinhole), bounded; never throws. */
  stop(): Promise<void>;
}

export interface OpenPinholeOptions {
  /** Bounds the first answer. */
  timeoutMs: number;
  leaseMs: number;
  log: (text: string) => void;
  /** Its lease ran out with no renewal answered (the router is gone, or we are on another network). */
  onLost?: (why: string) => void;
  /** The router to ask; default ipv6Router(address). */
  router?: string;
  /** Tests: the PCP server's port (default 5351). */
  serverPort?: number;
  /** Our IPv4 gateway, whose PCP ANNOUNCE over IPv4 counts for the pinhole too (see PcpMapOptions.alsoFrom);
   * default defaultGateway(), null for none. */
  ipv4Gateway?: string | null;
  /** Tests: the PCP client (default pcpMap). */
  map?: (o: PcpMapOptions) => Promise<PcpMapping>;
  /** The ways asked, all at once (default PINHOLE_WAYS). */
  ways?: readonly PinholeWay[];
  /** Times the UPnP renewals (default the runtime's timers). */
  scheduler?: Scheduler;
  /** Tests: the UPnP client (default upnpPinhole). */
  upnp?: (o: UpnpPinholeOptions) => Promise<UpnpPinhole>;
}

/** Opens a pinhole for `address`:`port`, asking each of `o.ways` at once; the first one opened is the one
 * returned. One opened by another way later is kept with it, and closed with it on stop(): on a router that
 * speaks both (miniupnpd answers PCP and UPnP), the two are the same rule, and closing the second at once
 * would close the first (as for port mappings, client/port_mapping.ts). Throws, when it is the only way
 * asked, what that way throws (for PCP: PinholeError NO_ROUTER or NOT_A_PINHOLE, or the PcpError of the
 * exchange; for UPnP: the UpnpError), else PinholeError NO_PINHOLE with each way's reason. */
export function openPinhole(address: string, port: number, o: OpenPinholeOptions): Promise<Pinhole> {
  const ways = o.ways ?? PINHOLE_WAYS;
  const attempts = ways.map((w) => w === "pcp" ? viaPcp(address, port, o) : viaUpnp(address, port, o));
  if (attempts.length === 1) return attempts[0];
  return new Promise<Pinhole>((resolve, reject) => {
    const held: Pinhole[] = [];
    let stopped = false;
    const why: string[] = [];
    let failed = 0;
    attempts.forEach((a, i) =>
      a.then((p) => {
        // One that opens after stop() is closed at once.
        if (stopped) return void p.stop();
        held.push(p);
        if (held.length > 1) return;
        resolve({
          ...p,
          stop: async () => {
            stopped = true;
            await Promise.allSettled(attempts);
            await Promise.all(held.map((h) => h.stop()));
          },
        });
      }, (e) => {
        why[i] = `${WAY_NAME[ways[i]]}: ${reasonOf(e)}`;
        if (++failed === attempts.length) reject(new PinholeError("NO_PINHOLE", why.join("; ")));
      })
    );
  });
}

/** Why a way opened nothing, in a few words. */
function reasonOf(e: unknown): string {
  return e instanceof PcpError && e.code === "PCP_TIMEOUT" ? "no answer" : messageOf(e);
}

/** The pinhole over PCP: a MAP for our own address and port, which must come back as they are. */
async function viaPcp(address: string, port: number, o: OpenPinholeOptions): Promise<Pinhole> {
  const router = o.router ?? await ipv6Router(address);
  if (!router) throw new PinholeError("NO_ROUTER", `no IPv6 router found for ${address}`);
  const stopSignal = () => AbortSignal.timeout(o.timeoutMs);
  const m = await (o.map ?? pcpMap)({
    gateway: router,
    clientIp: address,
    internalPort: port,
    externalPort: port,
    lifetimeSeconds: Math.max(1, Math.round(o.leaseMs / 1000)),
    signal: AbortSignal.timeout(o.timeoutMs),
    serverPort: o.serverPort,
    log: (text) => o.log(text.replace(/^PCP mapping/, "IPv6 pinhole")),
    onLost: o.onLost,
    // The same box, most likely: a home router that restarts may say so over IPv4 only (miniupnpd does).
    alsoFrom: o.ipv4Gateway !== undefined ? o.ipv4Gateway : await defaultGateway(),
  });
  if (!sameIp(m.externalHost, address) || m.externalPort !== port) {
    await m.stop(stopSignal());
    throw new PinholeError(
      "NOT_A_PINHOLE",
      `the router at ${router} answered with [${m.externalHost}]:${m.externalPort}, not our own ` +
        `[${address}]:${port} (it translates IPv6; the address we publish stays closed)`,
    );
  }
  return { address, port, router, via: "PCP", lifetime: m.lifetime, stop: () => m.stop(stopSignal()) };
}

/** The pinhole over UPnP (client/upnp_pinhole.ts). */
async function viaUpnp(address: string, port: number, o: OpenPinholeOptions): Promise<Pinhole> {
  const h = await (o.upnp ?? upnpPinhole)({
    address,
    port,
    leaseMs: o.leaseMs,
    timeoutMs: o.timeoutMs,
    onLost: o.onLost,
    scheduler: o.scheduler,
  });
  return {
    address,
    port,
    router: h.router,
    via: "UPnP",
    lifetime: h.lifetime,
    stop: () => h.stop(AbortSignal.timeout(o.timeoutMs)),
  };
}

export interface PinholeKeeperOptions {
  port: number;
  /** Our IPv6 address to open now (the first global one we publish), or null. */
  address: () => string | null;
  scheduler: Scheduler;
  log: (text: string) => void;
  /** While none is held, one is asked for again this often. */
  retryMs: number;
  timeoutMs: number;
  leaseMs: number;
  /** A pinhole was opened: the phonebook should check our addresses again. */
  onOpen(p: Pinhole): void;
  /** Tests: opens one (default openPinhole). */
  open?: (address: string, port: number, o: OpenPinholeOptions) => Promise<Pinhole>;
}

/**
 * Keeps a pinhole open for our first global IPv6 address while chat runs: asked for at start, asked again
 * every `retryMs` while none is held, for the new address when ours changed (another network, a new privacy
 * address), anew after a wake from sleep (the router may have forgotten it), and closed on stop. A failure
 * worded like the last one is not logged again.
 */
export class PinholeKeeper {
  readonly #o: PinholeKeeperOptions;
  #held: Pinhole | null = null;
  /** The attempt or removal running; the next one waits for it. */
  #work: Promise<void> = Promise.resolve();
  #retry: Timer | null = null;
  #stopped = false;
  #lastFailure = "";
  /** Bumped by each refresh: an attempt begun before it is not taken. */
  #gen = 0;

  constructor(o: PinholeKeeperOptions) {
    this.#o = o;
  }

  /** The pinhole held now, or null. */
  get held(): Pinhole | null {
    return this.#held;
  }

  start(): void {
    this.#queue(true);
  }

  /** Our addresses changed, or we woke from sleep (`force`): the pinhole held is closed and one asked for
   * our address now, unless it is for that address already and nothing forces it. */
  refresh(force: boolean): void {
    const want = this.#o.address();
    if (!force && this.#held && want && sameIp(this.#held.address, want)) return;
    if (!force && !this.#held && !want) return;
    this.#lastFailure = "";
    this.#queue(true);
  }

  /** Closes the pinhole held; nothing is asked for afterwards. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#retry?.cancel();
    this.#gen++;
    await this.#work;
    const held = this.#held;
    this.#held = null;
    await held?.stop();
  }

  #queue(reopen: boolean): void {
    if (this.#stopped) return;
    this.#retry?.cancel();
    this.#retry = null;
    const gen = ++this.#gen;
    this.#work = this.#work.then(async () => {
      if (this.#stopped || gen !== this.#gen) return;
      const old = this.#held;
      this.#held = null;
      if (reopen) await old?.stop();
      await this.#attempt(gen);
    });
  }

  async #attempt(gen: number): Promise<void> {
    const address = this.#o.address();
    if (!address) return; // no global IPv6 address: nothing to open (a new one comes with a refresh)
    const o = this.#o;
    let p: Pinhole;
    try {
      p = await (o.open ?? openPinhole)(address, o.port, {
        timeoutMs: o.timeoutMs,
        leaseMs: o.leaseMs,
        log: o.log,
        scheduler: o.scheduler,
        onLost: (why) => {
          if (this.#held !== p || this.#stopped) return;
          o.log(`IPv6 pinhole lost: [${p.address}]:${p.port} (${why})`);
          this.#queue(true);
        },
      });
    } catch (e) {
      const why = reasonOf(e);
      const text = `no IPv6 pinhole for [${address}]:${o.port} (${why})`;
      if (text !== this.#lastFailure) o.log(text);
      this.#lastFailure = text;
      if (!this.#stopped && gen === this.#gen) {
        this.#retry = o.scheduler.after(o.retryMs, () => this.#queue(false));
      }
      return;
    }
    if (this.#stopped || gen !== this.#gen) {
      await p.stop();
      return;
    }
    this.#held = p;
    this.#lastFailure = "";
    o.log(
      `IPv6 pinhole: [${p.address}]:${p.port} open for inbound (${p.via} at ${p.router}, ${p.lifetime} s)`,
    );
    o.onOpen(p);
  }
}
