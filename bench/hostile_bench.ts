/**
 * `deno task bench hostile`: an honest peer's messages/s and latency (send -> delivery receipt) to a victim
 * client in its own process, first alone and then while hostile peers flood it in the same run (pings,
 * typing, big messages and garbage in a loop of sessions, strangers writing 16 KiB messages, a scanner with
 * raw TCP and certificate-less TLS): the flood figure is reported against the quiet one. Also the victim's
 * resident memory, quiet and at its peak under the flood. The flood runs in this process beside the honest
 * sender, so both share its CPU (and the machine's): read the ratio, not the absolute figures.
 */
import { type BenchFigure, percentile } from "./harness.ts";
import { makeTestCa, makeTestLeaf } from "../tests/helpers/pki.ts";
import { FakeDirectory, startTestEngine, type TestEngine } from "../tests/helpers/chat.ts";
import { flood, startVictimProcess } from "../tests/helpers/hostile.ts";

const BURST = 1000;
const LATENCY_MESSAGES = 200;
const HOSTILE = 3;
const STRANGERS = 4;
const TEXT = "x".repeat(100);

/** `n` messages sent at once; resolves with messages/s to the last receipt. */
async function burst(alice: TestEngine, n: number): Promise<number> {
  const start = performance.now();
  const before = alice.log.of("delivered").length;
  await Promise.all(Array.from({ length: n }, () => alice.engine.send("bob", TEXT)));
  while (alice.log.of("delivered").length < before + n) await new Promise((r) => setTimeout(r, 2));
  return n / ((performance.now() - start) / 1000);
}

/** One message at a time: milliseconds from send to its receipt, sorted. */
async function latencies(alice: TestEngine, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const m = await alice.engine.send("bob", TEXT);
    await alice.log.waitFor("delivered", (e) => e.id === m.id, 30_000);
    out.push(performance.now() - t);
  }
  return out.sort((a, b) => a - b);
}

export async function run(): Promise<BenchFigure[]> {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const victim = await startVictimProcess(ca, bobLeaf, ["alice"]);
  const directory = new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint });
  directory.listAt("bob", bobLeaf.fingerprint, victim.port, victim.knock);
  const alice = await startTestEngine(ca, aliceLeaf, { directory });
  try {
    await burst(alice, 10); // warm-up: the session is open
    const quietRss = await victim.rss();
    const quietRate = await burst(alice, BURST);
    const quietLat = await latencies(alice, LATENCY_MESSAGES);

    const f = flood(ca, victim.port, "bob", { hostile: HOSTILE, strangers: STRANGERS });
    let peakRss = quietRss;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peakRss = Math.max(peakRss, await victim.rss());
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    await new Promise((r) => setTimeout(r, 2_000)); // let the flood build up
    const floodRate = await burst(alice, BURST);
    const floodLat = await latencies(alice, LATENCY_MESSAGES);
    sampling = false;
    await sampler;
    const stats = await f.stop();
    const counts = await victim.count("alice");
    const sent = alice.engine.history("bob").length;
    const floodNote = `${HOSTILE} hostile peers and ${STRANGERS} strangers in ${stats.sessions} sessions, ` +
      `${stats.frames} frames, ${stats.scans} scans; ended by ${JSON.stringify(stats.refused)}`;
    return [
      {
        name: "honest messages/s under a flood, send to delivery receipt",
        value: floodRate,
        unit: "msg/s",
        baseline: { name: "the same without the flood", value: quietRate },
        notes: `${BURST} messages at once; ${floodNote}`,
      },
      {
        name: "honest latency median under a flood",
        value: percentile(floodLat, 50),
        unit: "ms",
        baseline: { name: "without the flood", value: percentile(quietLat, 50) },
        notes: `${LATENCY_MESSAGES} messages one at a time`,
      },
      {
        name: "honest latency p99 under a flood",
        value: percentile(floodLat, 99),
        unit: "ms",
        baseline: { name: "without the flood", value: percentile(quietLat, 99) },
      },
      {
        name: "victim RSS, peak under the flood",
        value: peakRss / 2 ** 20,
        unit: "MiB",
        baseline: { name: "quiet, session open", value: quietRss / 2 ** 20 },
        notes:
          `victim holds ${counts.rows} messages from alice (${counts.distinct} distinct) of ${sent} sent`,
      },
    ];
  } finally {
    await alice.stop();
    await victim.stop();
  }
}
