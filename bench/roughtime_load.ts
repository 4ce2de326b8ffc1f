/**
 * The Roughtime benchmark's load generator, run as its own process (so it does not share an event loop, or a
 * CPU, with the server it measures): a closed loop keeping WINDOW requests in flight against one UDP target
 * for LOAD_MS, then a check of every reply it got. Only replies that pass count:
 *   - "roughtime": the client's own verifyReply (delegation and SREP signatures, nonce, Merkle path to ROOT,
 *     versions, MINT <= MIDP <= MAXT, reply no larger than request) against the request with that nonce;
 *   - "echo": the bytes must be the first `echoSize` bytes of a request we sent (the baselines send back a
 *     datagram the size of a Roughtime reply).
 * The checks run after the timed window, for both kinds alike: during the window the generator does the
 * same work whatever answers (receive, keep a copy, send the next request), so a costlier check cannot slow
 * one target's figure more than the other's. A nonce answered more often than it was sent counts once per
 * send. Prints one JSON line (LoadResult). Uses Deno.listenDatagram (`--unstable-net`), the faster UDP API.
 */
import { decodeMessage, unwrapPacket } from "../clock/roughtime/wire.ts";
import { buildRequest, parseRequest, type RoughtimeRequest } from "../clock/roughtime/request.ts";
import { TAG } from "../clock/roughtime/constants.ts";
import { verifyReply } from "../clock/roughtime/verify.ts";
import { fromBase64 } from "../clock/roughtime/encoding.ts";

export interface LoadArgs {
  port: number;
  /** The server's long-term key (base64); also what the requests name in SRV. */
  publicKey: string;
  mode: "roughtime" | "echo";
  /** Bytes an echo target answers with. */
  echoSize?: number;
  loadMs: number;
  window: number;
}

export interface LoadResult {
  /** Replies that passed their check, per second of the timed window. */
  verifiedPerSecond: number;
  sent: number;
  received: number;
  verified: number;
  /** Replies that failed their check (must be 0), with the first reason. */
  failed: number;
  firstFailure?: string;
  meanReplyBytes: number;
  elapsedMs: number;
}

/** Distinct requests, reused round-robin: far more than WINDOW, so a nonce is rarely in flight twice. */
const POOL = 4096;

function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

async function main(args: LoadArgs): Promise<LoadResult> {
  const publicKey = fromBase64(args.publicKey);
  const pool: RoughtimeRequest[] = Array.from(
    { length: POOL },
    () => buildRequest({ serverPublicKey: publicKey }),
  );
  const bySlot = new Map<string, number>(pool.map((r, i) => [hex(r.nonce), i]));
  const sentPerSlot = new Uint32Array(POOL);
  // Where the nonce sits in our requests (all laid out alike): an echo carries it at the same place.
  const parsed = parseRequest(pool[0].packet);
  const nonceOffset = parsed.nonce.byteOffset - parsed.packet.byteOffset;

  const conn = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const target: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: args.port };
  const replies: Uint8Array[] = [];
  let next = 0;
  let sent = 0;
  const send = async () => {
    const slot = next++ % POOL;
    sentPerSlot[slot]++;
    sent++;
    await conn.send(pool[slot].packet, target);
  };

  let running = true;
  for (let i = 0; i < args.window; i++) await send();
  // Datagrams a busy server dropped shrink the window: refill it when nothing came back for a while.
  let last = 0;
  const topUp = setInterval(() => {
    if (replies.length === last) { for (let i = 0; i < args.window; i++) send().catch(() => {}); }
    last = replies.length;
  }, 100);
  const start = performance.now();
  const stop = setTimeout(() => {
    running = false;
    conn.close();
  }, args.loadMs);
  const buf = new Uint8Array(2048);
  try {
    while (running) {
      const [data] = await conn.receive(buf);
      replies.push(data.slice());
      await send();
    }
  } catch (e) {
    if (running) throw e;
  }
  const elapsedMs = performance.now() - start;
  clearInterval(topUp);
  clearTimeout(stop);

  const answered = new Uint32Array(POOL);
  let verified = 0;
  let failed = 0;
  let firstFailure: string | undefined;
  let bytes = 0;
  const failure = (why: string) => {
    failed++;
    firstFailure ??= why;
  };
  for (const reply of replies) {
    bytes += reply.length;
    try {
      let slot: number | undefined;
      if (args.mode === "roughtime") {
        const nonce = decodeMessage(unwrapPacket(reply)).get(TAG.NONC);
        slot = nonce && bySlot.get(hex(nonce));
        if (slot === undefined) throw new Error("reply to a nonce we never sent");
        verifyReply(pool[slot].packet, reply, publicKey);
      } else {
        slot = bySlot.get(hex(reply.subarray(nonceOffset, nonceOffset + 32)));
        if (slot === undefined) throw new Error("echo of a request we never sent");
        const want = pool[slot].packet.subarray(0, args.echoSize);
        if (reply.length !== want.length || reply.some((b, i) => b !== want[i])) {
          throw new Error("echo differs");
        }
      }
      if (++answered[slot] > sentPerSlot[slot]) throw new Error("more replies than requests for one nonce");
      verified++;
    } catch (e) {
      failure(e instanceof Error ? e.message : String(e));
    }
  }
  return {
    verifiedPerSecond: verified / (elapsedMs / 1000),
    sent,
    received: replies.length,
    verified,
    failed,
    firstFailure,
    meanReplyBytes: replies.length ? bytes / replies.length : 0,
    elapsedMs,
  };
}

if (import.meta.main) {
  const result = await main(JSON.parse(Deno.args[0]) as LoadArgs);
  console.log(JSON.stringify(result));
}
