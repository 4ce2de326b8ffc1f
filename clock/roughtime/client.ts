/**
 * Querying one server over UDP: resend the same request with growing intervals until a reply verifies or the
 * time budget is spent. Datagrams from any other address/port are ignored, and a reply that fails
 * verification does not end the wait (anyone can send us a datagram); if nothing valid arrives, the last
 * verification error is reported, else TIMEOUT.
 */
import dgram from "node:dgram";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { ServerSpec } from "../types.ts";
import { BACKOFF_FACTOR, DEFAULT_QUERY_TIMEOUT_MS, INITIAL_RETRY_MS } from "./constants.ts";
import { RoughtimeError } from "./errors.ts";
import { buildRequest, type RoughtimeRequest } from "./request.ts";
import { type VerifiedReply, verifyReply } from "./verify.ts";
import { exchangeTcp } from "./tcp.ts";

export { DEFAULT_QUERY_TIMEOUT_MS };

export interface QueryOptions {
  /** Whole budget for this server, resends included. Default 1500 ms. */
  timeoutMs?: number;
  /** First resend after this long; each next one 1.5x later (the draft's backoff factor). Default 250 ms. */
  initialRetryMs?: number;
  /** Use this nonce instead of a random one (chaining, time proofs). */
  nonce?: Uint8Array;
  /** Monotonic clock for RTT measurement; default performance.now. */
  monotonicNow?: () => number;
  /** Abandons the query (RoughtimeError ABORTED), closing its socket. */
  signal?: AbortSignal;
}

export interface QueryResult {
  server: ServerSpec;
  request: Uint8Array;
  response: Uint8Array;
  reply: VerifiedReply;
  /** From the first send to the verified reply (an upper bound on the true round trip). */
  rttMs: number;
  /** Monotonic time at which the reply arrived. */
  receivedAtMono: number;
}

async function resolveHost(host: string, deadline: number, mono: () => number): Promise<string> {
  if (isIP(host)) return host;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new RoughtimeError("TIMEOUT", `resolving ${host} timed out`)),
        Math.max(0, deadline - mono()),
      );
    });
    const r = await Promise.race([lookup(host), timeout]);
    return r.address;
  } catch (e) {
    if (e instanceof RoughtimeError) throw e;
    throw new RoughtimeError(
      "UNREACHABLE",
      `cannot resolve ${host}: ${e instanceof Error ? e.message : String(e)}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

async function queryTcp(
  server: ServerSpec,
  request: RoughtimeRequest,
  address: string,
  deadline: number,
  mono: () => number,
): Promise<QueryResult> {
  if (request.family !== "ietf") {
    throw new RoughtimeError("BAD_ARGUMENT", "Google-Roughtime has no TCP framing; use UDP");
  }
  const sent = mono();
  const response = await exchangeTcp(address, server.port, request.packet, deadline - sent);
  const receivedAtMono = mono();
  const reply = verifyReply(request.packet, response, server.publicKey, { transport: "tcp" });
  return { server, request: request.packet, response, reply, rttMs: receivedAtMono - sent, receivedAtMono };
}

/** Sends a request to `server` and returns its verified reply. Never takes longer than `timeoutMs`
 * (plus timer slack). Throws RoughtimeError (TIMEOUT or the last verification failure). */
export async function queryServer(server: ServerSpec, opts: QueryOptions = {}): Promise<QueryResult> {
  const mono = opts.monotonicNow ?? (() => performance.now());
  const aborted = () => new RoughtimeError("ABORTED", `query to ${server.name} abandoned`);
  if (opts.signal?.aborted) throw aborted();
  const start = mono();
  const deadline = start + (opts.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS);
  const request: RoughtimeRequest = buildRequest({
    version: server.version,
    nonce: opts.nonce,
    serverPublicKey: server.version === "google" ? undefined : server.publicKey,
  });
  const address = await resolveHost(server.host, deadline, mono);
  if (server.transport === "tcp") return await queryTcp(server, request, address, deadline, mono);
  const socket = dgram.createSocket(isIP(address) === 6 ? "udp6" : "udp4");
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  let lastError: RoughtimeError | null = null;
  let onAbort: (() => void) | undefined;
  // Set once the query is over: a bind callback that comes after an abort must not start resending.
  let finished = false;
  const firstSend = mono();
  try {
    return await new Promise<QueryResult>((resolve, reject) => {
      let interval = opts.initialRetryMs ?? INITIAL_RETRY_MS;
      const send = () => {
        if (finished) return;
        socket.send(request.packet, server.port, address, () => {});
        retryTimer = setTimeout(send, interval);
        interval *= BACKOFF_FACTOR;
      };
      socket.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
        if (rinfo.address !== address || rinfo.port !== server.port) return;
        const receivedAtMono = mono();
        const response = new Uint8Array(msg);
        try {
          const reply = verifyReply(request.packet, response, server.publicKey);
          resolve({
            server,
            request: request.packet,
            response,
            reply,
            rttMs: receivedAtMono - firstSend,
            receivedAtMono,
          });
        } catch (e) {
          lastError = e instanceof RoughtimeError ? e : new RoughtimeError("BAD_VALUE", String(e));
        }
      });
      socket.on("error", () => {
        // ICMP errors and the like: keep waiting until the deadline.
      });
      deadlineTimer = setTimeout(() => {
        reject(
          lastError ??
            new RoughtimeError(
              "TIMEOUT",
              `no valid reply from ${server.name} (${server.host}:${server.port})`,
            ),
        );
      }, Math.max(0, deadline - mono()));
      onAbort = () => reject(aborted());
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      if (opts.signal?.aborted) onAbort();
      socket.bind(0, () => send());
    });
  } finally {
    finished = true;
    if (onAbort) opts.signal?.removeEventListener("abort", onAbort);
    clearTimeout(retryTimer);
    clearTimeout(deadlineTimer);
    await new Promise<void>((resolve) => {
      try {
        socket.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}
