/**
 * A UPnP router that restarts, heard from its SSDP announcements. Each time a UPnP device starts it multicasts
 * `NOTIFY * HTTP/1.1` with `NTS: ssdp:alive` to 239.255.255.250:1900 and [ff02::c]:1900, and its
 * `BOOTID.UPNP.ORG` header is greater than at its last start (UPnP Device Architecture 2.0 §1.2.2); it sends
 * the same again every few minutes with the same BOOTID, and answers a search with it (one is sent at start,
 * so that a router that loses power, and says no byebye, is noticed too). A restarted router has usually
 * forgotten the pinholes (and, without a lease file, the port mappings) it gave us: a BOOTID that changed is
 * our cue to ask again at once instead of at the next renewal. miniupnpd, with PCP and NAT-PMP off, says so in no other way
 * (checked with a packet capture in the lab: its NOTIFYs leave on the LAN over IPv4, from its LAN address, and
 * over IPv6, from its link-local one).
 *
 * Our own listener rather than `@achingbrain/ssdp`'s: that one fetches the description at the LOCATION of
 * every NOTIFY it hears and answers searches, neither of which we want from a socket any LAN host can write to.
 * Here a NOTIFY is only parsed; what counts is its source (our router: `isOurRouter`), its device's uuid and
 * its BOOTID. The worst a forged one can do is have us ask the router for our own mapping again, and the
 * caller bounds how often.
 */
import dgram from "node:dgram";
import { listenGroup } from "./multicast.ts";
import { isIpv6 } from "./pcp_wire.ts";

export const SSDP_PORT = 1900;
export const SSDP_GROUP_V4 = "239.255.255.250";
export const SSDP_GROUP_V6 = "ff02::c";
/** Longest NOTIFY read (devices send a few hundred bytes; more is not an announcement of a router). */
const MAX_NOTIFY_BYTES = 4096;
/** Devices remembered (a LAN with more UPnP devices than this forgets the oldest). */
const MAX_DEVICES = 64;

export interface Notify {
  nts: "ssdp:alive" | "ssdp:byebye";
  /** The device's uuid (of its USN, before any "::"). */
  uuid: string;
  /** BOOTID.UPNP.ORG (UDA 1.1 and later), or null. */
  bootId: number | null;
}

/** Reads an SSDP NOTIFY; null for anything else (a search, a search response, a malformed one). */
export function parseNotify(bytes: Uint8Array): Notify | null {
  const m = parseSsdp(bytes);
  if (!m || !/^NOTIFY \* HTTP\/1\.1$/i.test(m.first)) return null;
  const nts = m.headers.get("NTS")?.toLowerCase();
  if (nts !== "ssdp:alive" && nts !== "ssdp:byebye") return null;
  return deviceBoot(nts, m.headers);
}

/** Reads the answer to a search (`HTTP/1.1 200 OK`) as the alive it amounts to: the device is up, with that
 * boot; null for anything else. */
export function parseSearchAnswer(bytes: Uint8Array): Notify | null {
  const m = parseSsdp(bytes);
  if (!m || !/^HTTP\/1\.1 200 OK$/i.test(m.first)) return null;
  return deviceBoot("ssdp:alive", m.headers);
}

/** An SSDP message's first line and headers (names upper-cased); null when too long to be one. */
function parseSsdp(bytes: Uint8Array): { first: string; headers: Map<string, string> } | null {
  if (bytes.length > MAX_NOTIFY_BYTES) return null;
  const lines = new TextDecoder().decode(bytes).split(/\r?\n/);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.set(line.slice(0, colon).trim().toUpperCase(), line.slice(colon + 1).trim());
  }
  return { first: lines[0].trim(), headers };
}

function deviceBoot(nts: Notify["nts"], h: Map<string, string>): Notify | null {
  const usn = /^uuid:([^:\s]+)/i.exec(h.get("USN") ?? "");
  if (!usn) return null;
  const raw = h.get("BOOTID.UPNP.ORG");
  // A non-negative integer below 2^31 (UDA 2.0 §1.2.2); anything else is as if absent.
  const bootId = raw !== undefined && /^\d{1,10}$/.test(raw) && Number(raw) < 2 ** 31 ? Number(raw) : null;
  return { nts, uuid: usn[1].toLowerCase(), bootId };
}

/**
 * Follows devices' boots: feed it NOTIFYs in order, and it says which show a restart. A restart is an alive
 * whose BOOTID differs from the last one heard from that device, or (a device without BOOTID) the first alive
 * after its byebye. The first NOTIFY heard from a device only sets what it is compared with.
 */
export class BootTracker {
  readonly #boots = new Map<string, { bootId: number | null; byebye: boolean }>();

  /** True when `n` shows that its device restarted since the last NOTIFY heard from it. */
  note(n: Notify): boolean {
    const last = this.#boots.get(n.uuid);
    this.#boots.delete(n.uuid);
    if (this.#boots.size >= MAX_DEVICES) this.#boots.delete(this.#boots.keys().next().value!);
    if (n.nts === "ssdp:byebye") {
      this.#boots.set(n.uuid, { bootId: last?.bootId ?? n.bootId, byebye: true });
      return false;
    }
    this.#boots.set(n.uuid, { bootId: n.bootId ?? last?.bootId ?? null, byebye: false });
    if (!last) return false;
    if (n.bootId !== null && last.bootId !== null) return n.bootId !== last.bootId;
    return last.byebye;
  }
}

export interface RestartWatchOptions {
  /** Whether a NOTIFY from this address may speak for our router. */
  isOurRouter(address: string): boolean;
  /** Our router restarted: `why` says how we know, for the log. */
  onRestart(why: string): void;
  log?: (text: string) => void;
  /** Default SSDP_PORT; tests use another. */
  port?: number;
  /** Which families to listen on (default both). */
  families?: readonly ("ipv4" | "ipv6")[];
  /** Where the search at start goes (default each family's group, on `port`); null sends none. */
  searchTo?: { address: string; port: number } | null;
}

/** How long the answers to the search at start are waited for (it asks for them within MX = 1 s). */
export const SEARCH_WAIT_MS = 3000;

export interface RestartWatch {
  close(): void;
}

/** Listens for our router's NOTIFYs on UDP 1900 (shared with other SSDP listeners on the machine; over IPv4
 * only what is multicast; a port that cannot be had is said in the log, and then only the renewals notice a
 * restart). */
export async function watchRouterRestarts(o: RestartWatchOptions): Promise<RestartWatch> {
  const boots = new BootTracker();
  const port = o.port ?? SSDP_PORT;
  const heard = (n: Notify | null, what: string, from: dgram.RemoteInfo) => {
    if (!n || !boots.note(n)) return;
    o.onRestart(`UPnP ${what} from ${from.address}, boot ${n.bootId ?? "after its byebye"}`);
  };
  const onMessage = (msg: Uint8Array, from: dgram.RemoteInfo) => {
    if (o.isOurRouter(from.address)) heard(parseNotify(new Uint8Array(msg)), "NOTIFY", from);
  };
  const sockets: dgram.Socket[] = [];
  const timers: ReturnType<typeof setTimeout>[] = [];
  // One search at start: the router's answer says its boot now, so a restart that sends no byebye (a power
  // cut) is noticed even before its first periodic alive reached us.
  const search = async (v6: boolean) => {
    const to = o.searchTo !== undefined ? o.searchTo : { address: v6 ? SSDP_GROUP_V6 : SSDP_GROUP_V4, port };
    if (!to) return;
    const s = dgram.createSocket(v6 ? "udp6" : "udp4");
    s.on("error", () => {});
    s.on("message", (msg: Uint8Array, from: dgram.RemoteInfo) => {
      if (o.isOurRouter(from.address)) heard(parseSearchAnswer(new Uint8Array(msg)), "search answer", from);
    });
    try {
      await new Promise<void>((resolve) => s.bind(0, resolve));
      const host = to.address.includes(":") ? `[${to.address}]` : to.address;
      s.send(
        new TextEncoder().encode(
          `M-SEARCH * HTTP/1.1\r\nHOST: ${host}:${to.port}\r\nMAN: "ssdp:discover"\r\nMX: 1\r\n` +
            "ST: upnp:rootdevice\r\n\r\n",
        ),
        to.port,
        to.address,
      );
    } catch {
      s.close();
      return;
    }
    sockets.push(s);
    timers.push(setTimeout(() => {
      const i = sockets.indexOf(s);
      if (i >= 0) sockets.splice(i, 1);
      s.close();
    }, SEARCH_WAIT_MS));
  };
  for (const family of o.families ?? ["ipv4", "ipv6"]) {
    // Joined on each of our interfaces: the group is link-scoped, the router is on one of our links, and the
    // system's default joins one only.
    const v6 = family === "ipv6";
    const s = await listenGroup({
      v6,
      group: v6 ? SSDP_GROUP_V6 : SSDP_GROUP_V4,
      port,
      what: "the router's SSDP announcements",
      joinVia: interfacesFor(v6),
      onMessage,
      log: o.log,
    });
    if (!s) continue;
    sockets.push(s);
    await search(v6);
  }
  return {
    close: () => {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets.splice(0)) {
        try {
          s.close();
        } catch { /* already closed */ }
      }
    },
  };
}

/** What addMembership takes to join on each interface of a family: an IPv4 address, or "::%name". */
function interfacesFor(v6: boolean): string[] {
  let ifaces: Deno.NetworkInterfaceInfo[];
  try {
    ifaces = Deno.networkInterfaces();
  } catch {
    return [];
  }
  const out = new Set<string>();
  for (const i of ifaces) {
    if (i.name === "lo" || isIpv6(i.address) !== v6 || i.address === "::1" || i.address.startsWith("127.")) {
      continue;
    }
    out.add(v6 ? `::%${i.name}` : i.address);
  }
  return [...out];
}
