/**
 * A small PCP client (Port Control Protocol, RFC 6887): MAP requests to the router's port 5351 over UDP,
 * retransmitted until answered, renewed with the same nonce at a random point between 1/2 and 5/8 of the
 * lease (§11.2.1 recommends that, the jitter keeps clients from renewing in step), deleted with a
 * lifetime of 0 on stop. Written here because `@achingbrain/nat-port-mapper` speaks only NAT-PMP and
 * UPnP-IGD and npm has no maintained PCP client. The packets are in pcp_wire.ts. An IPv6 client address is
 * asked over IPv6, which maps nothing but opens the router's firewall for it (client/pinhole.ts).
 *
 * A router that restarts forgets our mapping, and says so (§14.1.1) with an unsolicited ANNOUNCE to port 5350
 * of the all-nodes address (224.0.0.1, ff02::1), or to our request's port. Such an ANNOUNCE, from the router
 * we asked and with an epoch that shows the loss (§8.5), has the mapping asked for again after a random wait
 * of up to 5 s (so that a LAN full of clients does not answer at once) instead of at the next renewal, up to
 * half a lease later. An ANNOUNCE whose epoch shows no loss changes nothing.
 *
 * Not done (not needed to map one TCP port of ours): the PEER opcode, options (THIRD_PARTY, PREFER_FAILURE,
 * FILTER), sending ANNOUNCE requests of our own.
 */
import dgram from "node:dgram";
import { listenGroup } from "./multicast.ts";
import {
  decodeAnnounce,
  decodeMapResponse,
  encodeMapRequest,
  type EpochReading,
  epochShowsLoss,
  IPPROTO_TCP,
  isIpv6,
  isLinkLocalV6,
  type MapResponse,
  PCP_CLIENT_PORT,
  PCP_NONCE_LENGTH,
  PCP_SERVER_PORT,
  PcpError,
  resultName,
  sameIp,
} from "./pcp_wire.ts";

/** The first retransmission. RFC 6887 §8.1.1 suggests 3 s, but the whole attempt is bounded by the
 * caller's signal (a few seconds at start-up), so we retransmit sooner and double, as NAT-PMP does. */
export const PCP_FIRST_RETRANSMIT_MS = 500;
/** When a renewal fails, the next try comes after this share of the lease that is left. */
const RETRY_SHARE = 0.25;
/** After a router's ANNOUNCE that shows it lost its state, the mapping is asked for again after a random wait
 * of up to this (RFC 6887 §14.1.1: clients on one LAN must not all answer at once). */
export const ANNOUNCE_DELAY_MAX_MS = 5000;
/** At most one mapping asked for again per this, however many ANNOUNCEs come (one forged on the LAN, over
 * and over, must not keep us asking). */
export const ANNOUNCE_MIN_GAP_MS = 10_000;
const ALL_NODES_V4 = "224.0.0.1";
const ALL_NODES_V6 = "ff02::1";

/** When to renew a lease of `seconds` (§11.2.1: uniformly at random in 1/2 to 5/8 of it). */
export function renewalDelayMs(seconds: number): number {
  return seconds * 1000 * (0.5 + Math.random() / 8);
}

export interface PcpMapOptions {
  /** The PCP server: the default gateway (of the client address's family). */
  gateway: string;
  /** Our address on the gateway's subnet: the socket binds it, and the request carries it (§8.1). */
  clientIp: string;
  internalPort: number;
  /** Asked for; the router may assign another. Default: the internal port. */
  externalPort?: number;
  lifetimeSeconds: number;
  /** IANA number; default TCP. */
  protocol?: number;
  /** Default 5351; tests use another. */
  serverPort?: number;
  /** Bounds the first mapping. */
  signal?: AbortSignal;
  log?: (text: string) => void;
  /** The port the router's multicast ANNOUNCE comes to (default 5350); null listens for none (tests: an
   * ANNOUNCE sent to the request's own port is heard all the same). */
  announcePort?: number | null;
  /** Another address of the same router whose ANNOUNCE counts too, in the other family: the IPv4 gateway,
   * for a mapping over IPv6. miniupnpd (2.3.1, checked with a packet capture in the network lab) sends its
   * restart ANNOUNCE to 224.0.0.1 on the LAN, but to ff02::1 out of its WAN interface, so over IPv6 the LAN
   * never hears it. Then the all-nodes group of that family is listened to as well. */
  alsoFrom?: string | null;
  /** Longest random wait after an ANNOUNCE before asking again (default ANNOUNCE_DELAY_MAX_MS). */
  announceDelayMaxMs?: number;
  /** A renewal gave another public address or port (the router's own address changed, or it rebooted). */
  onMoved?: (externalHost: string, externalPort: number) => void;
  /** The lease ran out with no renewal answered (said once). */
  onLost?: (why: string) => void;
}

export interface PcpMapping {
  externalHost: string;
  externalPort: number;
  /** The lease the router granted, in seconds. */
  lifetime: number;
  /** Deletes the mapping (lifetime 0), bounded by `signal`, and closes the socket. Never throws. */
  stop(signal: AbortSignal): Promise<void>;
}

/** Maps a port; throws PcpError ("PCP_REFUSED" with the router's result, "PCP_UNSUPPORTED_VERSION" from a
 * NAT-PMP-only router, "PCP_TIMEOUT" when `signal` ends first). The mapping renews itself until stop(). */
export async function pcpMap(o: PcpMapOptions): Promise<PcpMapping> {
  // An IPv6 client asks over IPv6: that MAP opens a pinhole in the router's firewall (no translation).
  const sock = dgram.createSocket(isIpv6(o.clientIp) ? "udp6" : "udp4");
  sock.on("error", () => {}); // a send to a vanished router: the request just goes unanswered
  const serverPort = o.serverPort ?? PCP_SERVER_PORT;
  const protocol = o.protocol ?? IPPROTO_TCP;
  const nonce = crypto.getRandomValues(new Uint8Array(PCP_NONCE_LENGTH));
  let closed = false;
  /** Set by stop(): no renewal is started or rescheduled from then on. */
  let stopping = false;
  /** Ends each request still waiting for its answer (so no retransmission timer outlives stop()). */
  const inflight = new Set<() => void>();
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      sock.close();
    } catch { /* already closed */ }
  };
  await new Promise<void>((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(0, o.clientIp, () => {
      sock.off("error", reject);
      resolve();
    });
  }).catch((e) => {
    close();
    throw e;
  });

  /** One request until its answer (or the signal's end). */
  const ask = (
    lifetime: number,
    port: number,
    ip: string | null,
    signal?: AbortSignal,
  ): Promise<MapResponse> =>
    new Promise((resolve, reject) => {
      const packet = encodeMapRequest({
        nonce,
        protocol,
        internalPort: o.internalPort,
        suggestedExternalPort: port,
        suggestedExternalIp: ip,
        lifetime,
        clientIp: o.clientIp,
      });
      let wait = PCP_FIRST_RETRANSMIT_MS;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        clearTimeout(timer);
        sock.off("message", onMessage);
        signal?.removeEventListener("abort", onAbort);
        inflight.delete(cancel);
      };
      const cancel = () => {
        done();
        reject(new PcpError("PCP_STOPPED", "the PCP mapping was stopped"));
      };
      const onAbort = () => {
        done();
        reject(new PcpError("PCP_TIMEOUT", `no PCP answer from ${o.gateway}`));
      };
      const onMessage = (msg: Uint8Array, from: dgram.RemoteInfo) => {
        // Only the server we asked may answer (§8.3); anything else on our port is ignored.
        if (!sameIp(from.address, o.gateway) || from.port !== serverPort) return;
        let r: MapResponse;
        try {
          r = decodeMapResponse(new Uint8Array(msg));
        } catch (e) {
          if (e instanceof PcpError && e.code === "PCP_UNSUPPORTED_VERSION") {
            done();
            reject(e);
          }
          return; // a malformed answer is dropped: a retransmission may get a good one
        }
        // An answer to another request of ours (or someone's guess) does not count (§11.3).
        if (
          r.protocol !== protocol || r.internalPort !== o.internalPort ||
          r.nonce.some((b, i) => b !== nonce[i])
        ) return;
        done();
        if (r.result !== 0) {
          const e = new PcpError(
            "PCP_REFUSED",
            `the router refused the PCP mapping: ${resultName(r.result)}`,
          );
          e.result = r.result;
          reject(e);
        } else resolve(r);
      };
      const send = () => {
        if (closed) return;
        sock.send(packet, serverPort, o.gateway);
        timer = setTimeout(send, wait);
        wait *= 2;
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      inflight.add(cancel);
      sock.on("message", onMessage);
      send();
    });

  let first: MapResponse;
  try {
    first = await ask(o.lifetimeSeconds, o.externalPort ?? o.internalPort, null, o.signal);
  } catch (e) {
    close();
    throw e;
  }
  let current = first;
  let expires = Date.now() + current.lifetime * 1000;
  let renewTimer: ReturnType<typeof setTimeout> | undefined;
  const schedule = (ms: number) => {
    clearTimeout(renewTimer);
    renewTimer = setTimeout(renew, Math.max(1000, ms));
  };
  /** The router's epoch as last heard (§8.5), on our monotonic clock. */
  let epochSeen: EpochReading = { epoch: first.epoch, atMs: performance.now() };
  /** Records an epoch the router just gave; true when it shows the router lost its state since the last. */
  const noteEpoch = (epoch: number): boolean => {
    const now = { epoch, atMs: performance.now() };
    const loss = epochShowsLoss(epochSeen, now);
    epochSeen = now;
    return loss;
  };
  let renewing = false;
  let lastAnnounced = -Infinity;
  const onAnnounce = (msg: Uint8Array, from: dgram.RemoteInfo) => {
    if (stopping || !fromOurRouter(from.address, o) || from.port !== serverPort) return;
    let epoch: number;
    try {
      epoch = decodeAnnounce(new Uint8Array(msg));
    } catch {
      return; // a MAP answer (the request's own handler reads those), or nothing of PCP's
    }
    if (!noteEpoch(epoch) || renewing || performance.now() - lastAnnounced < ANNOUNCE_MIN_GAP_MS) return;
    lastAnnounced = performance.now();
    const wait = Math.random() * (o.announceDelayMaxMs ?? ANNOUNCE_DELAY_MAX_MS);
    o.log?.(
      `the router restarted (PCP ANNOUNCE from ${from.address}, epoch ${epoch}): mapping again in ${
        (wait / 1000).toFixed(1)
      } s`,
    );
    clearTimeout(renewTimer);
    renewTimer = setTimeout(renew, wait);
  };
  sock.on("message", onAnnounce);
  const v6 = isIpv6(o.clientIp);
  const announcePort = o.announcePort ?? PCP_CLIENT_PORT;
  const announceSocks = o.announcePort === null ? [] : [
    await listenAnnouncements(v6, announcePort, onAnnounce, o.log),
    // The same router's announcements in the other family.
    o.alsoFrom && isIpv6(o.alsoFrom) !== v6
      ? await listenAnnouncements(!v6, announcePort, onAnnounce, o.log)
      : null,
  ];
  let lost = false;
  const renew = async () => {
    if (stopping) return;
    const left = expires - Date.now();
    renewing = true;
    try {
      // The same nonce and the assigned endpoint: the router extends the mapping it has (§11.2.1).
      const r = await ask(
        o.lifetimeSeconds,
        current.externalPort,
        current.externalIp,
        AbortSignal.timeout(Math.max(2000, left / 2)),
      );
      if (stopping) return;
      if (noteEpoch(r.epoch)) o.log?.("the router had lost its PCP state (epoch); the renewal mapped again");
      if (r.externalPort !== current.externalPort || r.externalIp !== current.externalIp) {
        o.log?.(`PCP mapping moved to ${r.externalIp}:${r.externalPort}`);
        o.onMoved?.(r.externalIp, r.externalPort);
      }
      current = r;
      expires = Date.now() + r.lifetime * 1000;
      o.log?.(`PCP mapping renewed for ${r.lifetime} s`);
      schedule(renewalDelayMs(r.lifetime));
    } catch (e) {
      if (stopping) return;
      o.log?.(`PCP renewal failed: ${e instanceof Error ? e.message : String(e)}`);
      if (!lost && Date.now() >= expires) {
        lost = true;
        o.onLost?.("PCP: no renewal answered before the lease ended");
      }
      schedule(Math.max(0, expires - Date.now()) * RETRY_SHARE);
    } finally {
      renewing = false;
    }
  };
  schedule(renewalDelayMs(first.lifetime));

  return {
    externalHost: first.externalIp,
    externalPort: first.externalPort,
    lifetime: first.lifetime,
    stop: async (signal) => {
      if (stopping) return;
      stopping = true;
      clearTimeout(renewTimer);
      for (const cancel of [...inflight]) cancel();
      for (const a of announceSocks) {
        try {
          a?.close();
        } catch { /* already closed */ }
      }
      await ask(0, current.externalPort, current.externalIp, signal).catch(() => {});
      close();
    },
  };
}

/** Whether an ANNOUNCE from `source` is the router's: the address we asked; for a mapping over IPv6, a
 * link-local address; or `alsoFrom`, the same router's address in the other family. A router's multicast to
 * ff02::1 leaves from its link-local address unless it binds another (RFC 6724's source selection prefers the
 * destination's scope: link-local here), while we may know it only by a global one (chat cannot read the
 * routing table without --allow-all, see pinhole.ts); a link-local packet comes from our own link, which the
 * router's own address is on too, and what an ANNOUNCE can make us do is ask for our own mapping again. */
export function fromOurRouter(
  source: string,
  o: Pick<PcpMapOptions, "gateway" | "clientIp" | "alsoFrom">,
): boolean {
  if (sameIp(source, o.gateway) || (o.alsoFrom && sameIp(source, o.alsoFrom))) return true;
  return isIpv6(o.clientIp) && isLinkLocalV6(source);
}

/** A socket on `port` in the all-nodes group, where a router's ANNOUNCE (and a NAT-PMP gateway's
 * announcement) arrives; shared with other programs (and other mappings of ours) that listen there too. Over
 * IPv4 it gets only what is multicast to 224.0.0.1 (client/multicast.ts): NAT-PMP clients
 * (`@achingbrain/nat-port-mapper` among them) send their requests from port 5350 and read the answers there,
 * and a second socket on the wildcard address would take those answers from them. Null, said in the log, when
 * the port cannot be had: then only the renewals restore a mapping a router forgot. */
export function listenAnnouncements(
  v6: boolean,
  port: number,
  onMessage: (msg: Uint8Array, from: dgram.RemoteInfo) => void,
  log?: (text: string) => void,
): Promise<dgram.Socket | null> {
  return listenGroup({
    v6,
    group: v6 ? ALL_NODES_V6 : ALL_NODES_V4,
    everyHostIn: true,
    port,
    what: "the router's announcements",
    onMessage,
    log,
  });
}
