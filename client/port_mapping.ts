/**
 * Port mapping: asks the home router to forward a public TCP port to our listener, so that peers on the
 * internet can dial us directly. Four protocols are asked at once, and the first that maps wins:
 * - PCP (RFC 6887, pcp.ts: our own client, no maintained npm one exists) to the default gateway's port 5351;
 * - NAT-PMP (RFC 6886, `@achingbrain/nat-port-mapper`) to the same gateway and port;
 * - UPnP-IGD v2 (the same library: SSDP search on 239.255.255.250:1900, then SOAP AddAnyPortMapping to the
 *   WANIPConnection:2 service the router describes);
 * - UPnP-IGD v1 (upnp_igd1.ts: the same search for InternetGatewayDevice:1 from an ephemeral port, then
 *   AddPortMapping on WANIPConnection:1 or WANPPPConnection:1).
 * The mapping is published as the first candidate (`via: "mapping"`, shown as the path `mapped`), renewed
 * before its lease ends, and removed when chat quits. A router that answers none within MAPPING_TIMEOUT_MS,
 * or refuses, simply means no mapping: the other paths still work.
 */
import { type Gateway, pmpNat, upnpNat } from "@achingbrain/nat-port-mapper";
import { CodedError, messageOf } from "../coded_error.ts";
import { type Address, addressKind } from "./candidates.ts";
import { ANNOUNCE_MIN_GAP_MS, listenAnnouncements, pcpMap } from "./pcp.ts";
import {
  decodePmpAnnouncement,
  PCP_CLIENT_PORT,
  PCP_SERVER_PORT,
  pmpRestartedSince,
  sameIp,
} from "./pcp_wire.ts";
import { addMapping, deleteMapping, findIgd1, type Igd1Service, SEARCH_INTERVAL_MS } from "./upnp_igd1.ts";

export const MAPPING_TIMEOUT_MS = 3000;
/** Lease asked for (UPnP routers are asked for at least an hour: the library's floor). PCP is renewed at 1/2
 * to 5/8 of the lease the router grants, NAT-PMP and UPnP RENEW_MARGIN_MS before the lease ends. */
export const MAPPING_TTL_MS = 20 * 60_000;

/** A test hook's whole number of seconds from the environment, in min..max, as ms; else `fallbackMs`. */
function secondsFromEnv(name: string, min: number, max: number, fallbackMs: number): number {
  try {
    const v = Number(Deno.env.get(name) ?? "");
    if (Number.isInteger(v) && v >= min && v <= max) return v * 1000;
  } catch {
    // no --allow-env: the default
  }
  return fallbackMs;
}

/** The lease: MAPPING_TTL_MS, or SECURECHAT_MAPPING_LEASE_S seconds (10..86400), a test hook: the lab tests
 * watch renewals happen within seconds. */
export function mappingLeaseMs(): number {
  return secondsFromEnv("SECURECHAT_MAPPING_LEASE_S", 10, 86400, MAPPING_TTL_MS);
}

/** While no mapping is held, one is asked for again this often. */
export const MAPPING_RETRY_MS = 5 * 60_000;

/** MAPPING_RETRY_MS, or SECURECHAT_MAPPING_RETRY_S seconds (2..86400), a test hook: the lab test starts the
 * router after chat and watches the mapping come. */
export function mappingRetryMs(): number {
  return secondsFromEnv("SECURECHAT_MAPPING_RETRY_S", 2, 86400, MAPPING_RETRY_MS);
}

/** When to renew a lease we asked for (NAT-PMP, UPnP): a minute before it ends, or halfway for a short one. */
export function renewAfterMs(leaseMs: number): number {
  return leaseMs - Math.min(RENEW_MARGIN_MS, leaseMs / 2);
}

/** The default IPv4 gateway from Linux's routing table; else (Deno reads /proc only with --allow-all, which
 * chat does not have) the first address of the subnet of our first private IPv4 interface, where home
 * routers sit; null when neither gives one. */
export async function defaultGateway(): Promise<string | null> {
  try {
    const table = await Deno.readTextFile("/proc/net/route");
    for (const line of table.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 3 || f[1] !== "00000000") continue;
      // Little-endian hex: "0101A8C0" is 192.168.1.1.
      const g = f[2];
      const ip = [6, 4, 2, 0].map((i) => parseInt(g.slice(i, i + 2), 16)).join(".");
      if (ip !== "0.0.0.0") return ip;
    }
  } catch {
    // not Linux, or not readable: guess below
  }
  let ifaces: Deno.NetworkInterfaceInfo[];
  try {
    ifaces = Deno.networkInterfaces();
  } catch {
    return null;
  }
  for (const i of ifaces) {
    if (i.family !== "IPv4" || addressKind(i.address) !== "lan" || i.address.startsWith("169.254.")) continue;
    const mask = toInt(i.netmask);
    const first = ((toInt(i.address) & mask) + 1) >>> 0;
    if (first !== toInt(i.address)) return fromInt(first);
  }
  return null;
}

function toInt(ip: string): number {
  return ip.split(".").reduce((n, o) => (n << 8) + Number(o), 0) >>> 0;
}

function fromInt(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

/** Our IPv4 address on the gateway's subnet (what the router forwards to). */
export function addressToward(gateway: string): string | null {
  let ifaces: Deno.NetworkInterfaceInfo[];
  try {
    ifaces = Deno.networkInterfaces();
  } catch {
    return null;
  }
  const g = toInt(gateway);
  for (const i of ifaces) {
    if (i.family !== "IPv4") continue;
    const mask = toInt(i.netmask);
    if ((toInt(i.address) & mask) === (g & mask)) return i.address;
  }
  return null;
}

export type MappingProtocol = "pcp" | "nat-pmp" | "upnp-igd" | "upnp-igd1";
/** Asked in parallel; the order only says how a log lists them. */
export const MAPPING_PROTOCOLS: readonly MappingProtocol[] = ["pcp", "nat-pmp", "upnp-igd", "upnp-igd1"];
/** A UPnP mapping is renewed this long before the lease we asked for ends. */
export const RENEW_MARGIN_MS = 60_000;
const DESCRIPTION = "securechat";
/** The IGD v2 service the library talks to (it finds only InternetGatewayDevice:2 routers). */
const WAN_IP_CONNECTION_2 = "urn:schemas-upnp-org:service:WANIPConnection:2";

const PROTOCOL_NAMES: Record<MappingProtocol, string> = {
  "pcp": "PCP",
  "nat-pmp": "NAT-PMP",
  "upnp-igd": "UPnP-IGD",
  "upnp-igd1": "UPnP-IGD v1",
};

export interface Mapping {
  external: Address & { via: "mapping" };
  /** Which protocol won. */
  protocol: MappingProtocol;
  /** Removes the mapping (and any other protocol's that also mapped), bounded; never throws. */
  stop(): Promise<void>;
}

export interface MapPortOptions {
  /** Default all (MAPPING_PROTOCOLS). */
  protocols?: readonly MappingProtocol[];
  /** Bounds each protocol's first mapping. Default MAPPING_TIMEOUT_MS. */
  timeoutMs?: number;
  /** The lease to ask for. Default mappingLeaseMs(). */
  leaseMs?: number;
  /** The winner's public end changed at a renewal; `external` already says the new one. */
  onMoved?(m: Mapping): void;
  /** The winner's lease ran out unrenewed: it is no longer a way to reach us (stop() it). */
  onLost?(m: Mapping): void;
}

/** One protocol's mapping, before it is chosen. */
interface Mapped {
  protocol: MappingProtocol;
  host: string;
  port: number;
  local: string;
  /** The router, as the log names it. */
  router: string;
  stop(signal: AbortSignal): Promise<void>;
}

/** What a mapping tells after it was made: `moved`, a renewal gave another public address or port than the
 * mapping had (the router's public address changed, or it rebooted and assigned another port); `lost`, its
 * lease ran out with no renewal answered (the router is gone, or we are on another network). */
interface Changes {
  moved(host: string, port: number): void;
  lost(why: string): void;
}

type Attempt = (
  port: number,
  signal: AbortSignal,
  log: (text: string) => void,
  leaseMs: number,
  changes: Changes,
) => Promise<Mapped>;

/** Why a protocol was not even asked: no router to ask, or no address of ours toward it. */
export class PortMappingError extends CodedError<"NO_ROUTER" | "NO_LOCAL_ADDRESS"> {}

/** The default gateway and our address toward it, for PCP and NAT-PMP. */
async function gatewayAndLocal(): Promise<{ gateway: string; local: string }> {
  const gateway = await defaultGateway();
  if (!gateway) throw new PortMappingError("NO_ROUTER", "no default IPv4 gateway found");
  const local = addressToward(gateway);
  if (!local) {
    throw new PortMappingError("NO_LOCAL_ADDRESS", `no address of ours on the subnet of ${gateway}`);
  }
  return { gateway, local };
}

const pcpAttempt: Attempt = async (port, signal, log, leaseMs, changes) => {
  const { gateway, local } = await gatewayAndLocal();
  const m = await pcpMap({
    gateway,
    clientIp: local,
    internalPort: port,
    externalPort: port,
    lifetimeSeconds: Math.round(leaseMs / 1000),
    signal,
    log,
    onMoved: changes.moved,
    onLost: changes.lost,
  });
  return {
    protocol: "pcp",
    host: m.externalHost,
    port: m.externalPort,
    local,
    router: gateway,
    stop: m.stop,
  };
};

const pmpAttempt: Attempt = async (port, signal, log, leaseMs, changes) => {
  const { gateway, local } = await gatewayAndLocal();
  const nat = pmpNat(gateway);
  // Renewing is ours too: the library writes its `ttl` option into the request as is, in seconds on the wire
  // although it takes milliseconds everywhere else (20 minutes would ask for 1,200,000 s, two weeks), and its
  // refresh timer takes the same number as milliseconds. So it is given seconds, and no timer of its own.
  const ask = (externalPort: number, s: AbortSignal) =>
    nat.map(port, local, {
      protocol: "tcp",
      externalPort,
      ttl: Math.round(leaseMs / 1000),
      description: DESCRIPTION,
      autoRefresh: false,
      signal: s,
    });
  try {
    const m = await ask(port, signal);
    const renewal = renewLease("NAT-PMP", leaseMs, log, m, changes, (s, ext) => ask(ext, s));
    // The gateway multicasts its public address when it restarts or gets another (RFC 6886 §3.2.1): either
    // has the mapping asked for again now, not at the renewal up to a lease later (at most once per
    // ANNOUNCE_MIN_GAP_MS, whatever comes).
    let lastAnnounced = -Infinity;
    const announcements = await listenAnnouncements(false, PCP_CLIENT_PORT, (msg, from) => {
      if (!sameIp(from.address, gateway) || from.port !== PCP_SERVER_PORT) return;
      let a;
      try {
        a = decodePmpAnnouncement(new Uint8Array(msg));
      } catch {
        return; // PCP's ANNOUNCE (pcp.ts reads those), or nothing of NAT-PMP's
      }
      const restarted = pmpRestartedSince(a.epoch, renewal.sinceAnswerMs());
      const moved = a.externalIp !== renewal.host();
      if (!restarted && !moved) return;
      if (performance.now() - lastAnnounced < ANNOUNCE_MIN_GAP_MS) return;
      lastAnnounced = performance.now();
      log(
        `the router ${
          restarted ? "restarted" : `has another public address, ${a.externalIp}`
        } (NAT-PMP announcement): mapping again`,
      );
      renewal.now();
    }, log);
    return {
      protocol: "nat-pmp",
      host: m.externalHost,
      port: m.externalPort,
      local,
      router: gateway,
      stop: async (signal) => {
        try {
          announcements?.close();
        } catch { /* already closed */ }
        await renewal.stop();
        // Unmapped explicitly (lifetime 0): the library's stop() drops its queue before it sends the unmap
        // requests, so they never leave. unmap() passes its options on to map(): without autoRefresh:false
        // it would schedule a "refresh" of the removal. Its type declares only the signal.
        const opts = { signal, autoRefresh: false } as { signal: AbortSignal };
        await nat.unmap(port, opts).catch(() => {});
        await nat.stop({ signal: AbortSignal.timeout(500) }).catch(() => {});
      },
    };
  } catch (e) {
    await nat.stop({ signal: AbortSignal.timeout(500) }).catch(() => {});
    throw e;
  }
};

/** Runs `renew` every `ms` until stop(), which also waits for a renewal in flight (so none starts after);
 * now() runs it at once (unless one is in flight) and counts the next `ms` from there. */
function renewEvery(ms: number, renew: () => Promise<void>): { stop(): Promise<void>; now(): void } {
  let stopped = false;
  let inFlight = false;
  let running: Promise<void> = Promise.resolve();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = () => {
    inFlight = true;
    running = renew().finally(() => {
      inFlight = false;
      if (!stopped) timer = setTimeout(tick, ms);
    });
  };
  timer = setTimeout(tick, ms);
  return {
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
    now: () => {
      if (stopped || inFlight) return;
      clearTimeout(timer);
      tick();
    },
  };
}

/** The public end of a mapping as the libraries and upnp_igd1.ts report it. */
interface PublicEnd {
  externalHost: string;
  externalPort: number;
}

/** Renews a lease of `leaseMs` (null: a permanent mapping, asked for again on the default lease's schedule)
 * through `ask` until stopped, saying how each renewal went; calls `moved` when the router answers with
 * another public end than `first` (or the last renewal), and `lost` once when the lease ran out since the
 * last answered renewal. */
function renewLease(
  name: string,
  leaseMs: number | null,
  log: (text: string) => void,
  first: PublicEnd,
  changes: Changes,
  ask: (signal: AbortSignal, externalPort: number) => Promise<PublicEnd>,
): { stop(): Promise<void>; port(): number; host(): string; sinceAnswerMs(): number; now(): void } {
  let last = { host: first.externalHost, port: first.externalPort };
  /** When the router last answered for the mapping (monotonic clock). */
  let answeredAt = performance.now();
  let lost = false;
  const timer = renewEvery(renewAfterMs(leaseMs ?? mappingLeaseMs()), async () => {
    try {
      // For the public port held now (a move may have changed it).
      const r = await ask(AbortSignal.timeout(MAPPING_TIMEOUT_MS), last.port);
      answeredAt = performance.now();
      log(`${name} mapping renewed`);
      if (r.externalHost !== last.host || r.externalPort !== last.port) {
        last = { host: r.externalHost, port: r.externalPort };
        changes.moved(last.host, last.port);
      }
    } catch (e) {
      log(`${name} renewal failed: ${messageOf(e)}`);
      if (!lost && leaseMs !== null && performance.now() - answeredAt >= leaseMs) {
        lost = true;
        changes.lost(`${name}: no renewal answered before the lease ended`);
      }
    }
  });
  return {
    stop: () => timer.stop(),
    /** The public port held now (what removal names). */
    port: () => last.port,
    /** The public address held now. */
    host: () => last.host,
    /** How long ago the router last answered for the mapping (monotonic clock). */
    sinceAnswerMs: () => performance.now() - answeredAt,
    /** Renews at once (a router that said it restarted, or moved). */
    now: () => timer.now(),
  };
}

/** Our address on a UPnP router's subnet (what it forwards to). */
function localTowardUpnp(router: string): string {
  const local = addressToward(router);
  if (!local) {
    throw new PortMappingError(
      "NO_LOCAL_ADDRESS",
      `no address of ours on the subnet of UPnP router ${router}`,
    );
  }
  return local;
}

/** What the library's IGD gateway holds but does not declare: the device that runs SOAP actions. */
interface IgdDevice {
  run(
    service: string,
    action: string,
    args: [string, string | number][],
    o: { signal?: AbortSignal },
  ): Promise<
    unknown
  >;
}

function deviceOf(g: Gateway): IgdDevice | null {
  const d = (g as unknown as { gateway?: { run?: unknown } }).gateway;
  return d && typeof d.run === "function" ? d as IgdDevice : null;
}

const upnpAttempt: Attempt = async (port, signal, log, leaseMs, changes) => {
  // Refreshing is ours: the library's unmap() sends DeletePortMapping for the internal port with an empty
  // protocol (wrong when the router reserved another port, and refused by routers that check the
  // arguments), and its refresh timers are only cleared by that unmap() or stop(), which calls it.
  const client = upnpNat({ autoRefresh: false, description: DESCRIPTION });
  let gateway: Gateway | null = null;
  // Sent again every second while no router answered (multicast can be lost): the library searches once.
  for await (const g of client.findGateways({ signal, searchInterval: SEARCH_INTERVAL_MS })) {
    if (g.family !== "IPv4") continue;
    gateway = g;
    break;
  }
  if (!gateway) throw new PortMappingError("NO_ROUTER", "no UPnP-IGD v2 router answered the SSDP search");
  const local = localTowardUpnp(gateway.host);
  const g = gateway;
  const ask = (externalPort: number, s: AbortSignal) =>
    g.map(port, local, {
      protocol: "TCP",
      externalPort,
      ttl: leaseMs,
      description: DESCRIPTION,
      autoRefresh: false,
      signal: s,
    });
  const m = await ask(port, signal);
  // AddAnyPortMapping again for the port we hold, to the same client: the router extends the lease.
  const renewal = renewLease("UPnP-IGD", leaseMs, log, m, changes, (s, ext) => ask(ext, s));
  return {
    protocol: "upnp-igd",
    host: m.externalHost,
    port: m.externalPort,
    local,
    router: `${g.host}:${g.port}`,
    stop: async (signal) => {
      await renewal.stop();
      const device = deviceOf(g);
      const args: [string, string | number][] = [
        ["NewRemoteHost", ""],
        ["NewExternalPort", renewal.port()],
        ["NewProtocol", "TCP"],
      ];
      if (device) {
        await device.run(WAN_IP_CONNECTION_2, "DeletePortMapping", args, { signal }).catch(() => {});
      } else await g.unmap(port, { signal }).catch(() => {});
    },
  };
};

/** Version 1 routers (upnp_igd1.ts): the same renewal and removal as version 2, on the port the router took;
 * a router that grants only permanent mappings gets one (lease 0), asked for again on the renewal schedule
 * (a rebooted router forgets it) and removed at exit, and the log says so. */
const upnp1Attempt: Attempt = async (port, signal, log, leaseMs, changes) => {
  let svc: Igd1Service | null = null;
  for await (const s of findIgd1(signal)) {
    svc = s;
    break;
  }
  if (!svc) throw new PortMappingError("NO_ROUTER", "no UPnP-IGD v1 router answered the SSDP search");
  const local = localTowardUpnp(svc.host);
  const s = svc;
  const leaseS = Math.ceil(leaseMs / 1000);
  const m = await addMapping(
    s,
    { port, local, externalPort: port, leaseS, description: DESCRIPTION },
    signal,
  );
  if (m.leaseS === 0) {
    log(
      `UPnP-IGD v1 router ${s.host} grants only permanent mappings: ours is removed when chat quits ` +
        `(a crash would leave public port ${m.externalPort} forwarded to us until the router restarts)`,
    );
  }
  // AddPortMapping again for the same public port and client: the router extends the lease. A permanent one
  // is asked for again on the same schedule, so that a router that rebooted (and forgot it) has it again.
  const renewal = renewLease(
    "UPnP-IGD v1",
    m.leaseS === 0 ? null : leaseMs,
    log,
    m,
    changes,
    (signal, externalPort) =>
      addMapping(s, { port, local, externalPort, leaseS: m.leaseS, description: DESCRIPTION }, signal),
  );
  return {
    protocol: "upnp-igd1",
    host: m.externalHost,
    port: m.externalPort,
    local,
    router: `${s.host}:${s.port}`,
    stop: async (signal) => {
      await renewal.stop();
      await deleteMapping(s, renewal.port(), signal).catch(() => {});
    },
  };
};

const ATTEMPTS: Record<MappingProtocol, Attempt> = {
  "pcp": pcpAttempt,
  "nat-pmp": pmpAttempt,
  "upnp-igd": upnpAttempt,
  "upnp-igd1": upnp1Attempt,
};

/**
 * Maps public TCP `port` (or another the router picks) to our `port`, asking every protocol at once; the
 * first that maps wins, and null comes when none did (the reasons logged). A protocol that also maps later
 * is removed again, unless it reports the same public address and port (one router speaking several
 * protocols shares one forwarding rule among them: removing that one would remove the winner's); such a one
 * is kept and removed with the winner on stop().
 */
export function mapPort(
  port: number,
  log: (text: string) => void,
  opts: MapPortOptions = {},
): Promise<Mapping | null> {
  const protocols = opts.protocols ?? MAPPING_PROTOCOLS;
  const timeoutMs = opts.timeoutMs ?? MAPPING_TIMEOUT_MS;
  const signal = AbortSignal.timeout(timeoutMs);
  const held: Mapped[] = [];
  const settled: Promise<void>[] = [];
  const leaseMs = opts.leaseMs ?? mappingLeaseMs();
  const stopOne = (m: Mapped) => m.stop(AbortSignal.timeout(timeoutMs)).catch(() => {});
  return new Promise((resolve) => {
    let winner: Mapped | null = null;
    let left = protocols.length;
    const reasons: string[] = [];
    if (left === 0) return resolve(null);
    let mapping: Mapping | null = null;
    for (const p of protocols) {
      let mine: Mapped | null = null;
      // Only the winner's public end is published; a kept loser's follows the same rule.
      const changes: Changes = {
        moved: (host, movedPort) => {
          if (!mapping || mine !== winner) return;
          const was = mapping.external;
          mapping.external = { host, port: movedPort, via: "mapping" };
          log(`port mapping moved: ${was.host}:${was.port} -> ${host}:${movedPort} (${PROTOCOL_NAMES[p]})`);
          opts.onMoved?.(mapping);
        },
        lost: (why) => {
          if (!mapping || mine !== winner) return;
          log(`port mapping lost: ${mapping.external.host}:${mapping.external.port} (${why})`);
          opts.onLost?.(mapping);
        },
      };
      settled.push(
        ATTEMPTS[p](port, signal, log, leaseMs, changes).then((m) => {
          mine = m;
          if (!winner) {
            winner = m;
            held.push(m);
            log(
              `port mapping: ${m.host}:${m.port} -> ${m.local}:${port} (${PROTOCOL_NAMES[p]} at ${m.router})`,
            );
            mapping = {
              external: { host: m.host, port: m.port, via: "mapping" },
              protocol: p,
              stop: async () => {
                // The attempts still running are bounded by their signal; what they map is removed too.
                await Promise.all(settled);
                await Promise.all(held.map(stopOne));
              },
            };
            resolve(mapping);
          } else if (m.host === winner.host && m.port === winner.port) {
            held.push(m);
          } else {
            log(
              `${PROTOCOL_NAMES[p]} also mapped ${m.host}:${m.port}; removed (${
                PROTOCOL_NAMES[winner.protocol]
              } won)`,
            );
            return stopOne(m);
          }
        }, (e) => {
          const why = e instanceof DOMException && e.name === "TimeoutError" ? "no answer" : messageOf(e);
          reasons.push(`${PROTOCOL_NAMES[p]}: ${why}`);
        }).finally(() => {
          if (--left === 0 && !winner) {
            log(`no port mapping (${reasons.join("; ")})`);
            resolve(null);
          }
        }),
      );
    }
  });
}
