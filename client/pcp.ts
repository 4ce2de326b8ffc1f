/**
 * A small PCP client (Port Control Protocol, RFC 6887): MAP requests to the router's port 5351 over UDP,
 * retransmitted until answered, renewed with the same nonce at a random point between 1/2 and 5/8 of the
 * lease (§11.2.1 recommends that, the jitter keeps clients from renewing in step), deleted with a
 * lifetime of 0 on stop. Written here because `@achingbrain/nat-port-mapper` speaks only NAT-PMP and
 * UPnP-IGD and npm has no maintained PCP client. The packets are in pcp_wire.ts. An IPv6 client address is
 * asked over IPv6, which maps nothing but opens the router's firewall for it (client/pinhole.ts).
 *
 * Not done (not needed to map one TCP port of ours): PEER and ANNOUNCE opcodes, options (THIRD_PARTY,
 * PREFER_FAILURE, FILTER), listening for the router's unsolicited ANNOUNCE on 224.0.0.1:5350, watching the
 * epoch for a router that restarted (§8.5): the next renewal, a MAP request like the first, maps again anyway.
 */
import dgram from "node:dgram";
import {
  decodeMapResponse,
  encodeMapRequest,
  IPPROTO_TCP,
  isIpv6,
  type MapResponse,
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
    renewTimer = setTimeout(renew, Math.max(1000, ms));
  };
  let lost = false;
  const renew = async () => {
    if (stopping) return;
    const left = expires - Date.now();
    try {
      // The same nonce and the assigned endpoint: the router extends the mapping it has (§11.2.1).
      const r = await ask(
        o.lifetimeSeconds,
        current.externalPort,
        current.externalIp,
        AbortSignal.timeout(Math.max(2000, left / 2)),
      );
      if (stopping) return;
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
      await ask(0, current.externalPort, current.externalIp, signal).catch(() => {});
      close();
    },
  };
}
