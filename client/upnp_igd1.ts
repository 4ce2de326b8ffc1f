/**
 * UPnP-IGD version 1 (InternetGatewayDevice:1, the version most home routers still offer): found by an
 * SSDP M-SEARCH (`@achingbrain/ssdp`, which also fetches and parses the device description), then SOAP
 * actions on the router's WANIPConnection:1 service, or WANPPPConnection:1 on routers that dial PPPoE
 * themselves. `@achingbrain/nat-port-mapper` (port_mapping.ts) speaks only version 2: version 1 has no
 * AddAnyPortMapping, so the external port is asked for as is, and two answers of version 1 routers are
 * handled here:
 * - 718 ConflictInMappingEntry (another host holds that public port): another port is asked for, a few times;
 * - 725 OnlyPermanentLeasesSupported: asked again with lease 0 (kept until removed); chat removes it when it
 *   quits, and says that a crash would leave it behind.
 * A router whose description says InternetGatewayDevice:2 is left to the version 2 path (it answers version
 * 1 searches too, as the spec asks).
 */
import ssdp, { type Service } from "@achingbrain/ssdp";
import xml2js from "xml2js";
import { CodedError } from "../coded_error.ts";

export const IGD_1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
export const IGD_2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2";
/** The connection services that carry port mappings, in the order they are preferred. */
export const WAN_SERVICES_1 = [
  "urn:schemas-upnp-org:service:WANIPConnection:1",
  "urn:schemas-upnp-org:service:WANPPPConnection:1",
] as const;

/** UPnP error codes of the WANIPConnection:1 spec that change what we ask next. */
export const CONFLICT_IN_MAPPING = 718;
export const ONLY_PERMANENT_LEASES = 725;
/** The M-SEARCH is sent again this often while no router has answered. */
export const SEARCH_INTERVAL_MS = 1000;
/** Public ports asked for after the first one conflicts, before giving up. */
export const CONFLICT_RETRIES = 4;

export type UpnpErrorCode = "UPNP_FAULT" | "UPNP_BAD_ANSWER" | "UPNP_NO_SERVICE";

export class UpnpError extends CodedError<UpnpErrorCode> {
  /** The router's UPnP error code (a fault), else null. */
  readonly upnpCode: number | null;
  constructor(code: UpnpErrorCode, message: string, upnpCode: number | null = null) {
    super(code, message);
    this.upnpCode = upnpCode;
  }
}

/** A version 1 router's connection service: where its SOAP actions go. */
export interface Igd1Service {
  /** The router's address, from its description's location. */
  host: string;
  port: number;
  serviceType: (typeof WAN_SERVICES_1)[number];
  controlUrl: URL;
}

type Xml = Record<string, unknown>;

const list = (v: unknown): Xml[] =>
  v === undefined || v === null ? [] : (Array.isArray(v) ? v : [v]).filter((x) => typeof x === "object");

/** The services of a parsed device and of the devices nested in it, in document order. */
export function servicesOf(device: Xml): { serviceType: string; controlURL: string }[] {
  const found: { serviceType: string; controlURL: string }[] = [];
  const walk = (d: Xml) => {
    for (const s of list((d.serviceList as Xml | undefined)?.service)) {
      if (typeof s.serviceType === "string" && typeof s.controlURL === "string") {
        found.push({ serviceType: s.serviceType, controlURL: s.controlURL });
      }
    }
    for (const child of list((d.deviceList as Xml | undefined)?.device)) walk(child);
  };
  walk(device);
  return found;
}

/** The first WAN connection service of a parsed device description (devices nest: IGD > WANDevice >
 * WANConnectionDevice), by preference; null when it names none, or is a version 2 device. */
export function serviceOf(location: URL, details: Xml): Igd1Service | null {
  const root = details.device as Xml | undefined;
  if (!root || root.deviceType !== IGD_1) return null;
  const found = servicesOf(root);
  const base = typeof details.URLBase === "string" ? details.URLBase : location.href;
  for (const type of WAN_SERVICES_1) {
    const s = found.find((f) => f.serviceType === type);
    if (!s) continue;
    let controlUrl: URL;
    try {
      controlUrl = new URL(s.controlURL, base);
    } catch {
      continue;
    }
    // The actions go to the router that answered, not to a host its description names elsewhere.
    if (controlUrl.protocol !== "http:" || controlUrl.hostname !== location.hostname) continue;
    return {
      host: location.hostname,
      port: Number(location.port || 80),
      serviceType: type,
      controlUrl,
    };
  }
  return null;
}

/** Searches for version 1 routers until `signal` ends, yielding each (IPv4) one's service once. The search
 * goes out from an ephemeral port (answers come back to it), so it never competes with the version 2
 * search for UDP 1900. */
export async function* findIgd1(signal: AbortSignal): AsyncGenerator<Igd1Service> {
  const bus = await ssdp({
    cache: false,
    sockets: [{ type: "udp4", bind: { address: "0.0.0.0", port: 0 } }],
  });
  // A parse or socket error of one answer must not end the search (the bus is an EventEmitter).
  bus.on("error", () => {});
  const seen = new Set<string>();
  try {
    // Multicast may be lost: asked again every SEARCH_INTERVAL_MS until an answer or the end of the signal.
    const found = bus.discover({ serviceType: IGD_1, signal, searchInterval: SEARCH_INTERVAL_MS });
    for await (const s of found as AsyncIterable<Service>) {
      const key = s.location.href;
      if (seen.has(key)) continue;
      seen.add(key);
      const svc = serviceOf(s.location, s.details as Xml);
      if (svc) yield svc;
    }
  } catch (e) {
    if (!signal.aborted) throw e;
  } finally {
    await bus.stop();
  }
}

const escapeXml = (s: string) =>
  s.replace(
    /[<>&'"]/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&apos;", '"': "&quot;" })[c]!,
  );

/** The SOAP envelope of `action` with `args` (in the order the spec lists them). */
export function soapRequest(serviceType: string, action: string, args: [string, string | number][]): string {
  const body = args.map(([k, v]) => `<${k}>${escapeXml(String(v))}</${k}>`).join("");
  return `<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" ` +
    `s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:${action} ` +
    `xmlns:u="${serviceType}">${body}</u:${action}></s:Body></s:Envelope>`;
}

/** The elements of a parsed SOAP answer's body, without namespace prefixes. */
function unprefixed(o: unknown): Xml {
  if (typeof o !== "object" || o === null) return {};
  const out: Xml = {};
  for (const [k, v] of Object.entries(o)) out[k.replace(/^[^:]*:/, "")] = v;
  return out;
}

/** Reads a SOAP answer: the response element's fields, or a UpnpError for a fault (with the router's code). */
export async function parseSoapAnswer(action: string, status: number, text: string): Promise<Xml> {
  let doc: unknown;
  try {
    doc = await xml2js.parseStringPromise(text, { explicitArray: false, explicitRoot: false });
  } catch {
    throw new UpnpError("UPNP_BAD_ANSWER", `${action}: the router's answer (HTTP ${status}) is not XML`);
  }
  const body = unprefixed(unprefixed(doc).Body);
  if (body.Fault !== undefined) {
    const detail = unprefixed(unprefixed(body.Fault).detail);
    const err = unprefixed(detail.UPnPError);
    const code = Number(err.errorCode);
    const what = typeof err.errorDescription === "string" ? err.errorDescription : "fault";
    throw new UpnpError(
      "UPNP_FAULT",
      `${action} refused: ${Number.isInteger(code) ? code : "?"} ${what}`,
      Number.isInteger(code) ? code : null,
    );
  }
  if (status < 200 || status > 299) throw new UpnpError("UPNP_BAD_ANSWER", `${action}: HTTP ${status}`);
  const answer = body[`${action}Response`];
  if (answer === undefined) throw new UpnpError("UPNP_BAD_ANSWER", `${action}: no ${action}Response`);
  return unprefixed(answer);
}

/** Runs one SOAP action on the service; bounded by `signal`. */
export async function soap(
  svc: Igd1Service,
  action: string,
  args: [string, string | number][],
  signal: AbortSignal,
): Promise<Xml> {
  const res = await fetch(svc.controlUrl, {
    method: "POST",
    headers: {
      "content-type": 'text/xml; charset="utf-8"',
      "soapaction": `"${svc.serviceType}#${action}"`,
    },
    body: soapRequest(svc.serviceType, action, args),
    signal,
    // A redirect from a LAN device would send our request (our address and port) to a host it chose.
    redirect: "manual",
  });
  if (res.status >= 300 && res.status < 400) {
    await res.body?.cancel();
    throw new UpnpError(
      "UPNP_BAD_ANSWER",
      `${action}: the router redirected (HTTP ${res.status}); not followed`,
    );
  }
  return parseSoapAnswer(action, res.status, await boundedText(res, MAX_ANSWER_BYTES, action));
}

/** A router's SOAP answer is a few hundred bytes; more than this is not read. */
export const MAX_ANSWER_BYTES = 64 * 1024;

async function boundedText(res: Response, max: number, action: string): Promise<string> {
  if (!res.body) return "";
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += c.length;
    if (n > max) {
      // Leaving the loop cancels the body.
      throw new UpnpError("UPNP_BAD_ANSWER", `${action}: the answer is over ${max} bytes; not read`);
    }
    chunks.push(c);
  }
  const all = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}

export interface Igd1Mapping {
  externalHost: string;
  externalPort: number;
  /** The lease granted, in seconds: 0 when the router keeps only permanent mappings. */
  leaseS: number;
}

/** The public port to try after `tried` ones conflicted: random in 1024..65535, not one of them. */
export function nextPortToTry(tried: ReadonlySet<number>, random: () => number = Math.random): number {
  for (;;) {
    const p = 1024 + Math.floor(random() * (65536 - 1024));
    if (!tried.has(p)) return p;
  }
}

/** Maps public TCP `externalPort` (another when it conflicts) to `local`:`port` for `leaseS` seconds (0 when
 * the router grants only permanent ones), and reads the public address. */
export async function addMapping(
  svc: Igd1Service,
  o: { port: number; local: string; externalPort: number; leaseS: number; description: string },
  signal: AbortSignal,
  random: () => number = Math.random,
): Promise<Igd1Mapping> {
  const tried = new Set<number>();
  let ext = o.externalPort;
  let leaseS = o.leaseS;
  for (let attempt = 0;; attempt++) {
    tried.add(ext);
    try {
      await soap(svc, "AddPortMapping", [
        ["NewRemoteHost", ""],
        ["NewExternalPort", ext],
        ["NewProtocol", "TCP"],
        ["NewInternalPort", o.port],
        ["NewInternalClient", o.local],
        ["NewEnabled", 1],
        ["NewPortMappingDescription", o.description],
        ["NewLeaseDuration", leaseS],
      ], signal);
      break;
    } catch (e) {
      const code = e instanceof UpnpError ? e.upnpCode : null;
      if (code === ONLY_PERMANENT_LEASES && leaseS !== 0) {
        leaseS = 0;
        continue;
      }
      if (code === CONFLICT_IN_MAPPING && attempt < CONFLICT_RETRIES) {
        ext = nextPortToTry(tried, random);
        continue;
      }
      throw e;
    }
  }
  const ip = await soap(svc, "GetExternalIPAddress", [], signal);
  const externalHost = typeof ip.NewExternalIPAddress === "string" ? ip.NewExternalIPAddress.trim() : "";
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(externalHost)) {
    // Mapped, but with no public address to publish: not a mapping we can use, so it goes again.
    await deleteMapping(svc, ext, signal).catch(() => {});
    throw new UpnpError("UPNP_BAD_ANSWER", `GetExternalIPAddress: "${externalHost}" is not an IPv4 address`);
  }
  return { externalHost, externalPort: ext, leaseS };
}

export function deleteMapping(svc: Igd1Service, externalPort: number, signal: AbortSignal): Promise<Xml> {
  return soap(svc, "DeletePortMapping", [
    ["NewRemoteHost", ""],
    ["NewExternalPort", externalPort],
    ["NewProtocol", "TCP"],
  ], signal);
}
