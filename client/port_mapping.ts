/**
 * Port mapping: asks the home router (NAT-PMP, RFC 6886, through `@achingbrain/nat-port-mapper`) to forward
 * a public TCP port to our listener, so that peers on the internet can dial us directly. The mapping is
 * published as the first candidate (`via: "mapping"`, shown as the path `mapped`), renewed by the library
 * before its lease ends, and removed when chat quits. The router is the default IPv4 gateway (see
 * defaultGateway). A router that does not answer within
 * MAPPING_TIMEOUT_MS, or refuses, simply means no mapping: the other paths still work.
 */
import { pmpNat } from "@achingbrain/nat-port-mapper";
import { messageOf } from "../coded_error.ts";
import { type Address, addressKind } from "./candidates.ts";

export const MAPPING_TIMEOUT_MS = 3000;
/** Lease asked for; the library renews it a minute before it ends. */
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

export interface Mapping {
  external: Address & { via: "mapping" };
  stop(): Promise<void>;
}

/** Maps public TCP `port` (or another the router picks) to our `port`; null when there is no router that
 * maps, with the reason logged at info level. */
export async function mapPort(port: number, log: (text: string) => void): Promise<Mapping | null> {
  const gateway = await defaultGateway();
  if (!gateway) {
    log("no port mapping: no default IPv4 gateway found");
    return null;
  }
  const local = addressToward(gateway);
  if (!local) {
    log(`no port mapping: no address of ours on the subnet of ${gateway}`);
    return null;
  }
  const nat = pmpNat(gateway);
  try {
    const m = await nat.map(port, local, {
      protocol: "tcp",
      externalPort: port,
      ttl: MAPPING_TTL_MS,
      description: "securechat",
      signal: AbortSignal.timeout(MAPPING_TIMEOUT_MS),
    });
    log(`port mapping: ${m.externalHost}:${m.externalPort} -> ${local}:${port} (NAT-PMP at ${gateway})`);
    return {
      external: { host: m.externalHost, port: m.externalPort, via: "mapping" },
      stop: async () => {
        // Unmapped first and explicitly (the library's stop() drops its queue before it sends the unmap
        // requests, so they never leave), bounded: a router gone away must not hold up quitting.
        const signal = AbortSignal.timeout(MAPPING_TIMEOUT_MS);
        // unmap() passes its options on to map() (ttl 0): without autoRefresh:false it would schedule a
        // "refresh" of the removal. Its type declares only the signal.
        const opts = { signal, autoRefresh: false } as { signal: AbortSignal };
        await nat.unmap(port, opts).catch(() => {});
        await nat.stop({ signal: AbortSignal.timeout(500) }).catch(() => {});
      },
    };
  } catch (e) {
    log(`no port mapping from ${gateway}: ${messageOf(e)}`);
    await nat.stop({ signal: AbortSignal.timeout(500) }).catch(() => {});
    return null;
  }
}
