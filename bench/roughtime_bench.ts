/**
 * `deno task bench roughtime`: our Roughtime server's replies/s under a loopback load against a plain UDP
 * echo server in the same runtime (the ratio is the cost of parsing, batching, Merkle hashing and signing
 * over bare datagram I/O), the batch sizes the server reached under that load, and the client's cost of
 * verifying one reply against raw Ed25519 verifications (a reply needs two, plus hashing).
 */
import dgram from "node:dgram";
import { generateKeyPairSync, sign, verify } from "node:crypto";
import { type BenchFigure, opsPerSecond } from "./harness.ts";
import {
  generateLongTermSeed,
  type RunningRoughtimeServer,
  startRoughtimeServer,
  verifyReply,
} from "../clock/mod.ts";
import { buildRequest } from "../clock/roughtime/request.ts";
import { Responder } from "../clock/roughtime/responder.ts";
import { clearDelegationCache } from "../clock/roughtime/verify.ts";
import { publicKeyFromSeed } from "../clock/roughtime/crypto.ts";

const LOAD_MS = 3000;
/** Requests kept in flight by the load generator: enough for the server to see concurrent requests. */
const WINDOW = 128;

interface Target {
  port: number;
  close(): Promise<void>;
}

async function echoServer(): Promise<Target> {
  const s = dgram.createSocket("udp4");
  s.on("message", (msg: Uint8Array, r: dgram.RemoteInfo) => s.send(msg, r.port, r.address));
  await new Promise<void>((res) => s.bind(0, "127.0.0.1", () => res()));
  return { port: s.address().port, close: () => new Promise((res) => s.close(() => res())) };
}

/** Closed-loop load: WINDOW requests in flight, one new request per reply; re-primes if datagrams were lost. */
async function load(port: number, packets: Uint8Array[]): Promise<number> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((res) => s.bind(0, "127.0.0.1", () => res()));
  let replies = 0;
  let next = 0;
  let running = true;
  const send = () => s.send(packets[next++ % packets.length], port, "127.0.0.1");
  s.on("message", () => {
    replies++;
    if (running) send();
  });
  for (let i = 0; i < WINDOW; i++) send();
  let last = 0;
  const topUp = setInterval(() => {
    if (replies === last) { for (let i = 0; i < WINDOW; i++) send(); }
    last = replies;
  }, 100);
  const start = performance.now();
  await new Promise((res) => setTimeout(res, LOAD_MS));
  running = false;
  const rate = replies / ((performance.now() - start) / 1000);
  clearInterval(topUp);
  await new Promise<void>((res) => s.close(() => res()));
  return rate;
}

function batchNotes(server: RunningRoughtimeServer): string {
  const st = server.stats();
  const mean = st.batches ? st.answered / st.batches : 0;
  const top = Object.entries(st.batchSizes).sort((a, b) => b[1] - a[1]).slice(0, 4)
    .map(([size, n]) => `${size}x${n}`).join(" ");
  return `batches ${st.batches}, mean size ${
    mean.toFixed(1)
  }, largest ${st.largestBatch}, most common ${top}`;
}

export async function run(): Promise<BenchFigure[]> {
  const figures: BenchFigure[] = [];
  const seed = generateLongTermSeed();
  const pub = publicKeyFromSeed(seed);
  const requests = Array.from({ length: 256 }, () => buildRequest({ serverPublicKey: pub }).packet);

  const echo = await echoServer();
  const echoRate = await load(echo.port, requests);
  await echo.close();

  const server = await startRoughtimeServer({ longTermSeed: seed, port: 0 });
  const rtRate = await load(server.port, requests);
  const notes = batchNotes(server);
  await server.close();
  figures.push({
    name: "roughtime server replies/s (RFC, loopback, 128 in flight)",
    value: rtRate,
    unit: "replies/s",
    baseline: { name: "UDP echo server", value: echoRate },
    notes,
  });

  // Batching on its own, without the socket: signing cost per reply at batch size 1 vs 64.
  const responder = new Responder({ longTermSeed: seed });
  const one = [requests[0]];
  const sixtyFour = requests.slice(0, 64);
  const single = await opsPerSecond(() => void responder.respond(one), 1000);
  const batched = (await opsPerSecond(() => void responder.respond(sixtyFour), 1000)) * 64;
  figures.push({
    name: "responder replies/s in batches of 64 (no I/O)",
    value: batched,
    unit: "replies/s",
    baseline: { name: "batches of 1", value: single },
  });

  // Client side: full verification of one reply vs one raw Ed25519 verification.
  const req = buildRequest({ serverPublicKey: pub });
  const reply = responder.respond([req.packet])[0];
  if (!reply) throw new Error("responder did not answer");
  const verifies = await opsPerSecond(() => void verifyReply(req.packet, reply, pub), 1500);
  const coldVerifies = await opsPerSecond(() => {
    clearDelegationCache();
    verifyReply(req.packet, reply, pub);
  }, 1500);
  const kp = generateKeyPairSync("ed25519");
  const msg = new Uint8Array(100);
  const sig = sign(null, msg, kp.privateKey);
  const key = kp.publicKey;
  const raw = await opsPerSecond(() => void verify(null, msg, key, sig), 1500);
  figures.push({
    name: "client reply verifications/s (delegation cached: 1 signature check per reply)",
    value: verifies,
    unit: "ops/s",
    baseline: { name: "raw Ed25519 verifies (node:crypto)", value: raw },
    notes: `${(1e6 / verifies).toFixed(1)} us per reply`,
  });
  figures.push({
    name: "client reply verifications/s (first reply of a delegation: 2 signature checks)",
    value: coldVerifies,
    unit: "ops/s",
    baseline: { name: "raw Ed25519 verifies (node:crypto)", value: raw },
    notes: `${(1e6 / coldVerifies).toFixed(1)} us per reply`,
  });
  return figures;
}
