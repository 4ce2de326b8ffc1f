/**
 * `deno task bench probe`: what the phonebook's reachability check costs (server/reach_probe.ts), on loopback
 * against a real chat listener (the engine's SessionManager):
 * - one probe (TCP, the knock, TLS 1.3 without a client certificate, the certificate check) vs a bare TLS
 *   handshake after a knock to the same listener in the same run (the difference is the certificate check);
 * - a round of nine candidates through the prober's limits (one listener, eight closed ports) vs one probe.
 */
import net from "node:net";
import tls from "node:tls";
import { makeKnock } from "../contract/mod.ts";
import type { BenchFigure } from "./harness.ts";
import { percentile } from "./harness.ts";
import { makeTestCa, makeTestLeaf } from "../tests/helpers/pki.ts";
import { startTestListener } from "../tests/helpers/chat.ts";
import { probeCandidate, ReachProber } from "../server/reach_probe.ts";

const RUNS = 30;

/** A bare TLS 1.3 handshake after the listener's knock (it answers nothing else). */
function bareHandshake(host: string, port: number, secret: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ host, port });
    raw.once("error", reject);
    raw.write(makeKnock(secret));
    const c = tls.connect({ socket: raw, rejectUnauthorized: false, minVersion: "TLSv1.3" }, () => {
      c.destroy();
      resolve();
    });
    c.once("error", reject);
  });
}

async function median(fn: () => Promise<unknown>): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return percentile(ms.sort((a, b) => a - b), 50);
}

export async function run(): Promise<BenchFigure[]> {
  const ca = await makeTestCa();
  const leaf = await makeTestLeaf(ca, "alice");
  const l = await startTestListener(ca, leaf, { limits: { maxPendingPerAddress: 1000 } });
  // The probe knocks with the secret of the publication it checks, as the phonebook's does.
  const expect = { name: "alice", fingerprint: leaf.fingerprint, knock: l.sessions.knockSecret };
  const closed: number[] = [];
  for (let i = 0; i < 8; i++) {
    const s = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    closed.push((s.addr as Deno.NetAddr).port);
    s.close();
  }
  const prober = new ReachProber({
    caCertPem: ca.certPem,
    ownPorts: () => [],
    rounds: { perSecond: 1000, burst: 1000 },
    perHost: { perSecond: 1000, burst: 100_000 },
  });
  try {
    const bare = await median(() => bareHandshake(l.address.host, l.address.port, l.sessions.knockSecret));
    const probe = await median(async () => {
      const o = await probeCandidate(l.address, expect, { caCertPem: ca.certPem });
      if (o !== "REACHABLE") throw new Error(`probe said ${o}`);
    });
    const candidates = [l.address, ...closed.map((port) => ({ host: "127.0.0.1", port }))];
    const round = await median(async () => {
      const r = await prober.check({ ...expect, candidates, observed: "127.0.0.1" }, 9);
      if (r?.reachable.length !== 1) throw new Error("round did not find the listener");
    });
    return [
      {
        name: "reach check: one probe, median",
        value: probe,
        unit: "ms",
        baseline: { name: "bare TLS 1.3 handshake", value: bare },
        notes: `${RUNS} runs`,
      },
      {
        name: "reach check: a round of 9 candidates (1 listener, 8 closed), median",
        value: round,
        unit: "ms",
        baseline: { name: "one probe", value: probe },
        notes: `${RUNS} runs, concurrency 16`,
      },
    ];
  } finally {
    await prober.close();
    await l.stop();
  }
}
