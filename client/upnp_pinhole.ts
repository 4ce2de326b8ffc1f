/**
 * An IPv6 pinhole over UPnP: the WANIPv6FirewallControl:1 service of UPnP-IGD version 2, which many home
 * routers offer where they offer no PCP. The router is found by an SSDP M-SEARCH over IPv6 (the link-scope
 * group `ff02::c`, UPnP Device Architecture 2.0 §1.3.2; `@achingbrain/ssdp` sends it and fetches the
 * description), and the SOAP actions go to the description's control URL over IPv6, from the very address
 * the pinhole is for: in the spec's default security mode a control point may open pinholes for itself
 * only, and the router compares the request's source with `InternalClient` (WANIPv6FirewallControl:1
 * §2.4.1, error 606). A router whose description is only reachable at a link-local address is not used
 * (its URL would need the interface, which fetch and node:http do not take).
 *
 * The actions (§2.4): GetFirewallStatus (is the firewall on, does it take pinholes at all), AddPinhole
 * (any remote host and port, our address and port, TCP, a lease of at most a day) which answers a
 * UniqueID, UpdatePinhole (renewal, at half the lease) and DeletePinhole. A router that forgot the pinhole
 * (704 NoSuchEntry on renewal) reports it lost.
 */
import http from "node:http";
import { Buffer } from "node:buffer";
import ssdp, { type Service } from "@achingbrain/ssdp";
import { IGD_2, MAX_ANSWER_BYTES, parseSoapAnswer, servicesOf, soapRequest, UpnpError } from "./upnp_igd1.ts";
import { realScheduler, type Scheduler, type Timer } from "./scheduler.ts";

export const WAN_IPV6_FIREWALL = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1";
/** The SSDP group of link-local scope: the home router is on our link. */
export const SSDP_GROUP_V6 = "ff02::c";
/** The M-SEARCH is sent again this often while no router has answered (multicast may be lost). */
export const SEARCH_INTERVAL_MS = 1000;
/** The longest lease the service takes (§2.3.8: LeaseTime is 1 to 86400 s). */
export const MAX_LEASE_S = 86_400;
/** IANA protocol number of TCP, as the service names protocols. */
const TCP = 6;
/** The router forgot the pinhole (UpdatePinhole, DeletePinhole). */
export const NO_SUCH_ENTRY = 704;

/** A router's firewall service: where its SOAP actions go. */
export interface FirewallService {
  /** The router's IPv6 address, from its description's location. */
  host: string;
  controlUrl: URL;
  serviceType: typeof WAN_IPV6_FIREWALL;
}

type Xml = Record<string, unknown>;

/** The hostname of a URL without the brackets of an IPv6 one. */
const bare = (hostname: string) => hostname.replace(/^\[(.*)\]$/, "$1");

/** The WANIPv6FirewallControl:1 service of a parsed IGD version 2 description (devices nest: IGD >
 * WANDevice > WANConnectionDevice), or null: none named, not version 2, a control URL on another host than
 * the one that answered, or only a link-local address to reach it at (see firewallServiceOrWhy). */
export function firewallServiceOf(location: URL, details: Xml): FirewallService | null {
  const r = firewallServiceOrWhy(location, details);
  return typeof r === "string" ? null : r;
}

/** firewallServiceOf, saying why a description that names the service cannot be used (a string), else
 * null for one that names none. */
export function firewallServiceOrWhy(location: URL, details: Xml): FirewallService | string | null {
  const root = details.device as Xml | undefined;
  if (!root || root.deviceType !== IGD_2) return null;
  const controlURL = servicesOf(root).find((x) => x.serviceType === WAN_IPV6_FIREWALL)?.controlURL;
  if (controlURL === undefined) return null;
  const base = typeof details.URLBase === "string" ? details.URLBase : location.href;
  let controlUrl: URL;
  try {
    controlUrl = new URL(controlURL, base);
  } catch {
    return `the router at ${location.host} names an unusable control URL`;
  }
  const host = bare(controlUrl.hostname);
  // The actions go to the router that answered, over IPv6, at an address a socket can reach without a zone.
  if (controlUrl.protocol !== "http:" || controlUrl.hostname !== location.hostname) {
    return `the router at ${location.host} sends its control to another host (not followed)`;
  }
  if (!host.includes(":")) return null;
  if (/^fe[89ab]/i.test(host)) {
    return `the router at ${location.host} offers WANIPv6FirewallControl at a link-local address only (not used)`;
  }
  return { host, controlUrl, serviceType: WAN_IPV6_FIREWALL };
}

/** Searches over IPv6 until `signal` ends and returns the first router offering the firewall service
 * usably, or else why the last one that offered it cannot be used (a string), or null when none offered it.
 * The search goes out from an ephemeral port, so it competes with no other for UDP 1900. */
export async function findFirewall(signal: AbortSignal): Promise<FirewallService | string | null> {
  const bus = await ssdp({
    cache: false,
    sockets: [{
      type: "udp6",
      broadcast: { address: SSDP_GROUP_V6, port: 1900 },
      bind: { address: "::", port: 0 },
    }],
  });
  // A parse or socket error of one answer must not end the search (the bus is an EventEmitter).
  bus.on("error", () => {});
  const seen = new Set<string>();
  let why: string | null = null;
  try {
    const found = bus.discover({ serviceType: IGD_2, signal, searchInterval: SEARCH_INTERVAL_MS });
    for await (const s of found as AsyncIterable<Service>) {
      if (seen.has(s.location.href)) continue;
      seen.add(s.location.href);
      const svc = firewallServiceOrWhy(s.location, s.details as Xml);
      if (typeof svc === "string") why = svc;
      else if (svc) return svc;
    }
  } catch (e) {
    if (!signal.aborted) throw e;
  } finally {
    await bus.stop();
  }
  return why;
}

/** Runs one SOAP action on the firewall service from our address `from` (the router authorizes by it);
 * bounded by `signal` and by MAX_ANSWER_BYTES. Redirects are not followed. */
export function firewallSoap(
  svc: FirewallService,
  from: string,
  action: string,
  args: [string, string | number][],
  signal: AbortSignal,
): Promise<Xml> {
  const body = new TextEncoder().encode(soapRequest(svc.serviceType, action, args));
  return new Promise<Xml>((resolve, reject) => {
    const req = http.request(svc.controlUrl, {
      method: "POST",
      localAddress: from,
      signal,
      headers: {
        "content-type": 'text/xml; charset="utf-8"',
        "soapaction": `"${svc.serviceType}#${action}"`,
        "content-length": String(body.length),
      },
    }, (res) => {
      const chunks: Uint8Array[] = [];
      let n = 0;
      res.on("data", (c: Uint8Array) => {
        n += c.length;
        if (n > MAX_ANSWER_BYTES) {
          res.destroy();
          reject(new UpnpError("UPNP_BAD_ANSWER", `${action}: the answer is over ${MAX_ANSWER_BYTES} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on("error", reject);
      res.on("end", () => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400) {
          reject(new UpnpError("UPNP_BAD_ANSWER", `${action}: the router redirected (HTTP ${status})`));
          return;
        }
        const text = new TextDecoder().decode(Buffer.concat(chunks));
        parseSoapAnswer(action, status, text).then(resolve, reject);
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** True for the service's booleans ("1", "true", "yes"). */
const yes = (v: unknown) => typeof v === "string" && /^(1|true|yes)$/i.test(v.trim());

export interface FirewallStatus {
  enabled: boolean;
  inboundAllowed: boolean;
}

export async function firewallStatus(
  svc: FirewallService,
  from: string,
  signal: AbortSignal,
): Promise<FirewallStatus> {
  const r = await firewallSoap(svc, from, "GetFirewallStatus", [], signal);
  return { enabled: yes(r.FirewallEnabled), inboundAllowed: yes(r.InboundPinholeAllowed) };
}

/** Opens inbound TCP from anywhere to [address]:port for `leaseS` seconds; returns the router's UniqueID. */
export async function addPinhole(
  svc: FirewallService,
  o: { address: string; port: number; leaseS: number },
  signal: AbortSignal,
): Promise<number> {
  const r = await firewallSoap(svc, o.address, "AddPinhole", [
    ["RemoteHost", ""],
    ["RemotePort", 0],
    ["InternalClient", o.address],
    ["InternalPort", o.port],
    ["Protocol", TCP],
    ["LeaseTime", o.leaseS],
  ], signal);
  const id = Number(typeof r.UniqueID === "string" ? r.UniqueID.trim() : NaN);
  if (!Number.isInteger(id) || id < 0 || id > 65535) {
    throw new UpnpError("UPNP_BAD_ANSWER", `AddPinhole: "${String(r.UniqueID)}" is not a pinhole id`);
  }
  return id;
}

export function updatePinhole(
  svc: FirewallService,
  from: string,
  id: number,
  leaseS: number,
  signal: AbortSignal,
): Promise<Xml> {
  return firewallSoap(svc, from, "UpdatePinhole", [["UniqueID", id], ["NewLeaseTime", leaseS]], signal);
}

export function deletePinhole(svc: FirewallService, from: string, id: number, signal: AbortSignal) {
  return firewallSoap(svc, from, "DeletePinhole", [["UniqueID", id]], signal);
}

/** A pinhole held on a UPnP router, renewed at half its lease until stopped. */
export interface UpnpPinhole {
  router: string;
  /** The lease asked for and granted (the service has no counter-offer), seconds. */
  lifetime: number;
  stop(signal: AbortSignal): Promise<void>;
}

export interface UpnpPinholeOptions {
  address: string;
  port: number;
  leaseMs: number;
  /** Bounds the search, and each action. */
  timeoutMs: number;
  /** The router lost it (a renewal refused or unanswered). */
  onLost?: (why: string) => void;
  scheduler?: Scheduler;
  /** Tests: the router's service instead of a search. */
  service?: FirewallService;
}

/** Finds the router and opens the pinhole. Throws UpnpError: UPNP_NO_SERVICE (no router with the service
 * answered, or its firewall takes no pinholes), UPNP_FAULT (it refused, with its code), UPNP_BAD_ANSWER. A
 * router whose firewall is off needs no pinhole, and says so as UPNP_NO_SERVICE too: nothing is held. */
export async function upnpPinhole(o: UpnpPinholeOptions): Promise<UpnpPinhole> {
  const signal = () => AbortSignal.timeout(o.timeoutMs);
  const svc = o.service ?? await findFirewall(signal());
  if (!svc) throw new UpnpError("UPNP_NO_SERVICE", "no router with WANIPv6FirewallControl answered");
  if (typeof svc === "string") throw new UpnpError("UPNP_NO_SERVICE", svc);
  const status = await firewallStatus(svc, o.address, signal());
  if (!status.enabled) {
    throw new UpnpError("UPNP_NO_SERVICE", `the IPv6 firewall of ${svc.host} is off: no pinhole is needed`);
  }
  if (!status.inboundAllowed) {
    throw new UpnpError("UPNP_NO_SERVICE", `the router at ${svc.host} allows no inbound pinholes`);
  }
  const leaseS = Math.min(MAX_LEASE_S, Math.max(1, Math.round(o.leaseMs / 1000)));
  const id = await addPinhole(svc, { address: o.address, port: o.port, leaseS }, signal());
  const scheduler = o.scheduler ?? realScheduler;
  let timer: Timer | null = null;
  let stopped = false;
  const arm = () => {
    timer = scheduler.after(leaseS * 500, async () => {
      timer = null;
      try {
        await updatePinhole(svc, o.address, id, leaseS, signal());
      } catch (e) {
        if (stopped) return;
        const why = e instanceof UpnpError && e.upnpCode === NO_SUCH_ENTRY
          ? "the router forgot it"
          : `renewal failed: ${e instanceof Error ? e.message : String(e)}`;
        o.onLost?.(why);
        return;
      }
      if (!stopped) arm();
    });
  };
  arm();
  return {
    router: svc.host,
    lifetime: leaseS,
    stop: async (signal) => {
      if (stopped) return;
      stopped = true;
      timer?.cancel();
      await deletePinhole(svc, o.address, id, signal).catch(() => {});
    },
  };
}
