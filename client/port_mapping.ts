/**
 * Port mapping: asks the home router to forward a public TCP port to our listener, so that peers on the
 * internet can dial us directly. Three protocols are asked at once, and the first that maps wins:
 * - PCP (RFC 6887, pcp.ts: our own client, no maintained npm one exists) to the default gateway's port 5351;
 * - NAT-PMP (RFC 6886, `@achingbrain/nat-port-mapper`) to the same gateway and port;
 * - UPnP-IGD v2 (the same library: SSDP search on 239.255.255.250:1900, then SOAP AddAnyPortMapping to the
 *   WANIPConnection:2 service the router describes).
 * The mapping is published as the first candidate (`via: "mapping"`, shown as the path `mapped`), renewed
 * before its lease ends, and removed when chat quits. A router that answers none within MAPPING_TIMEOUT_MS,
 * or refuses, simply means no mapping: the other paths still work.
 */
import { type Gateway, pmpNat, upnpNat } from "@achingbrain/nat-port-mapper";
import { CodedError, messageOf } from "../coded_error.ts";
import { type Address, addressKind } from "./candidates.ts";
import { pcpMap } from "./pcp.ts";

export const MAPPING_TIMEOUT_MS = 3000;
/** Lease asked for (UPnP routers are asked for at least an hour: the library's floor). NAT-PMP is renewed by
 * the library a minute before it ends, PCP at 1/2 to 5/8 of the lease, UPnP by us (RENEW_MARGIN_MS before). */
export const MAPPING_TTL_MS = 20 * 60_000;

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

export type MappingProtocol = "pcp" | "nat-pmp" | "upnp-igd";
/** Asked in parallel; the order only says how a log lists them. */
export const MAPPING_PROTOCOLS: readonly MappingProtocol[] = ["pcp", "nat-pmp", "upnp-igd"];
/** A UPnP mapping is renewed this long before the lease we asked for ends. */
export const RENEW_MARGIN_MS = 60_000;
const DESCRIPTION = "securechat";
/** The IGD v2 service the library talks to (it finds only InternetGatewayDevice:2 routers). */
const WAN_IP_CONNECTION_2 = "urn:schemas-upnp-org:service:WANIPConnection:2";

const PROTOCOL_NAMES: Record<MappingProtocol, string> = {
  "pcp": "PCP",
  "nat-pmp": "NAT-PMP",
  "upnp-igd": "UPnP-IGD",
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

type Attempt = (port: number, signal: AbortSignal, log: (text: string) => void) => Promise<Mapped>;

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

const pcpAttempt: Attempt = async (port, signal, log) => {
  const { gateway, local } = await gatewayAndLocal();
  const m = await pcpMap({
    gateway,
    clientIp: local,
    internalPort: port,
    externalPort: port,
    lifetimeSeconds: MAPPING_TTL_MS / 1000,
    signal,
    log,
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

const pmpAttempt: Attempt = async (port, signal) => {
  const { gateway, local } = await gatewayAndLocal();
  const nat = pmpNat(gateway);
  try {
    const m = await nat.map(port, local, {
      protocol: "tcp",
      externalPort: port,
      ttl: MAPPING_TTL_MS,
      description: DESCRIPTION,
      signal,
    });
    return {
      protocol: "nat-pmp",
      host: m.externalHost,
      port: m.externalPort,
      local,
      router: gateway,
      stop: async (signal) => {
        // Unmapped first and explicitly (the library's stop() drops its queue before it sends the unmap
        // requests, so they never leave). unmap() passes its options on to map() (ttl 0): without
        // autoRefresh:false it would schedule a "refresh" of the removal. Its type declares only the signal.
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

const upnpAttempt: Attempt = async (port, signal, log) => {
  // Refreshing is ours: the library's unmap() sends DeletePortMapping for the internal port with an empty
  // protocol (wrong when the router reserved another port, and refused by routers that check the
  // arguments), and its refresh timers are only cleared by that unmap() or stop(), which calls it.
  const client = upnpNat({ autoRefresh: false, description: DESCRIPTION });
  let gateway: Gateway | null = null;
  for await (const g of client.findGateways({ signal })) {
    if (g.family !== "IPv4") continue;
    gateway = g;
    break;
  }
  if (!gateway) throw new PortMappingError("NO_ROUTER", "no UPnP-IGD v2 router answered the SSDP search");
  const local = addressToward(gateway.host);
  if (!local) {
    throw new PortMappingError(
      "NO_LOCAL_ADDRESS",
      `no address of ours on the subnet of UPnP router ${gateway.host}`,
    );
  }
  const g = gateway;
  const ask = (externalPort: number, s: AbortSignal) =>
    g.map(port, local, {
      protocol: "TCP",
      externalPort,
      ttl: MAPPING_TTL_MS,
      description: DESCRIPTION,
      autoRefresh: false,
      signal: s,
    });
  const m = await ask(port, signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const renew = async () => {
    try {
      // AddAnyPortMapping for the port we hold, to the same client: the router extends the lease.
      await ask(m.externalPort, AbortSignal.timeout(MAPPING_TIMEOUT_MS));
      log(`UPnP-IGD mapping renewed`);
    } catch (e) {
      log(`UPnP-IGD renewal failed: ${messageOf(e)}`);
    }
    timer = setTimeout(renew, MAPPING_TTL_MS - RENEW_MARGIN_MS);
  };
  timer = setTimeout(renew, MAPPING_TTL_MS - RENEW_MARGIN_MS);
  return {
    protocol: "upnp-igd",
    host: m.externalHost,
    port: m.externalPort,
    local,
    router: `${g.host}:${g.port}`,
    stop: async (signal) => {
      clearTimeout(timer);
      const device = deviceOf(g);
      const args: [string, string | number][] = [
        ["NewRemoteHost", ""],
        ["NewExternalPort", m.externalPort],
        ["NewProtocol", "TCP"],
      ];
      if (device) {
        await device.run(WAN_IP_CONNECTION_2, "DeletePortMapping", args, { signal }).catch(() => {});
      } else await g.unmap(port, { signal }).catch(() => {});
    },
  };
};

const ATTEMPTS: Record<MappingProtocol, Attempt> = {
  "pcp": pcpAttempt,
  "nat-pmp": pmpAttempt,
  "upnp-igd": upnpAttempt,
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
  const stopOne = (m: Mapped) => m.stop(AbortSignal.timeout(timeoutMs)).catch(() => {});
  return new Promise((resolve) => {
    let winner: Mapped | null = null;
    let left = protocols.length;
    const reasons: string[] = [];
    if (left === 0) return resolve(null);
    for (const p of protocols) {
      settled.push(
        ATTEMPTS[p](port, signal, log).then((m) => {
          if (!winner) {
            winner = m;
            held.push(m);
            log(
              `port mapping: ${m.host}:${m.port} -> ${m.local}:${port} (${PROTOCOL_NAMES[p]} at ${m.router})`,
            );
            resolve({
              external: { host: m.host, port: m.port, via: "mapping" },
              protocol: p,
              stop: async () => {
                // The attempts still running are bounded by their signal; what they map is removed too.
                await Promise.all(settled);
                await Promise.all(held.map(stopOne));
              },
            });
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
