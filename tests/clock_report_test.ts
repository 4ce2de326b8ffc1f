/**
 * TrustedClock keeps a proof when its servers disagree: a background chained query (liar between honest
 * servers) whose malfeasance report checkReport and `securechat time verify-report` accept as a proven lie.
 * All honest: no report. The chain never delays sync(), is bounded, keeps nothing that proves nothing, and
 * stop() abandons it cleanly (Deno's sanitizers check that no socket or timer is left).
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  checkReport,
  type MalfeasanceReport,
  proofOrder,
  type ServerSpec,
  type TimeStatus,
  TrustedClock,
} from "../clock/mod.ts";
import { runCli } from "./helpers/cli.ts";
import { startLocalServers, toB64 } from "./helpers/roughtime.ts";

const HOUR = 3600_000;

/** A UDP relay to `target` that passes only the first `pass` requests (and their replies), then drops
 * everything: a server that answers the clock's parallel query but not the chained one. */
async function onceRelay(
  target: ServerSpec,
  pass = 1,
): Promise<{ spec: ServerSpec; close(): Promise<void> }> {
  const front = dgram.createSocket("udp4");
  const back = dgram.createSocket("udp4");
  let client: dgram.RemoteInfo | null = null;
  let seen = 0;
  front.on("message", (msg, rinfo) => {
    if (seen++ >= pass) return;
    client = rinfo;
    back.send(msg, target.port, target.host);
  });
  back.on("message", (msg) => {
    if (client) front.send(msg, client.port, client.address);
  });
  await new Promise<void>((r) => front.bind(0, "127.0.0.1", () => r()));
  await new Promise<void>((r) => back.bind(0, "127.0.0.1", () => r()));
  const close = (s: dgram.Socket) => new Promise<void>((r) => s.close(() => r()));
  return {
    spec: { ...target, name: `relay-${target.name}`, port: front.address().port },
    close: async () => void (await Promise.all([close(front), close(back)])),
  };
}

for (const [how, offset] of [["behind", -HOUR], ["ahead", HOUR]] as const) {
  Deno.test(`clock report: a server an hour ${how} among three honest ones is outvoted and proven to lie`, async () => {
    const local = await startLocalServers([{}, { version: "draft" }, { now: () => Date.now() + offset }, {
      version: "google",
    }]);
    const dir = await Deno.makeTempDir();
    try {
      const called: MalfeasanceReport[] = [];
      const clock = new TrustedClock({
        servers: local.specs,
        queryTimeoutMs: 2000,
        onReport: (r) => called.push(r),
      });
      const events: TimeStatus[] = [];
      clock.subscribe((s) => events.push(s));
      const before = Date.now();
      const s = await clock.sync();
      assert.equal(s.state, "verified");
      assert.equal(s.agreeing, 3);
      assert.equal(s.disagreeing, 1);
      assert.ok(s.time && s.time.earliestMs <= before && before <= s.time.latestMs);
      // sync() answered before the chain could finish (it needs several more round trips).
      assert.equal(s.reportAvailable, false);
      assert.equal(clock.lastReport(), null);
      await clock.idle();
      const report = clock.lastReport();
      assert.ok(report, "a proof is kept");
      assert.equal(called.length, 1);
      assert.deepEqual(called[0], report);
      assert.equal(clock.status().reportAvailable, true);
      assert.equal(events.at(-1)?.reportAvailable, true, "subscribers hear of the report");
      const verdict = checkReport(JSON.parse(JSON.stringify(report)));
      assert.equal(verdict.kind, "malfeasance");
      if (verdict.kind !== "malfeasance") return;
      const liarKey = toB64(local.specs[2].publicKey);
      for (const i of verdict.inconsistencies) {
        const pair: string[] = [report.responses[i.earlier].publicKey, report.responses[i.later].publicKey];
        assert.ok(pair.includes(liarKey), "every proven inconsistency involves the liar");
        assert.ok(i.gapMs > HOUR - 20_000);
      }
      // The liar sits between agreeing servers in the chain.
      const keys = report.responses.map((r) => r.publicKey);
      const at = keys.indexOf(liarKey);
      assert.ok(at > 0 && at < keys.length - 1, JSON.stringify(keys));
      await Deno.writeTextFile(`${dir}/report.json`, JSON.stringify(report));
      const v = await runCli(["time", "verify-report", `${dir}/report.json`]);
      assert.equal(v.code, 3, v.stderr);
      assert.match(v.stderr, /^securechat: malfeasance: response \d+ \(key .+\) claims a time/);
    } finally {
      await local.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("clock report: all honest servers give no report and no disagreement", async () => {
  const local = await startLocalServers([{}, { version: "draft" }, { version: "google" }]);
  try {
    let called = 0;
    const clock = new TrustedClock({ servers: local.specs, onReport: () => called++ });
    const s = await clock.sync();
    await clock.idle();
    assert.equal(s.state, "verified");
    assert.equal(s.disagreeing, 0);
    assert.equal(clock.lastReport(), null);
    assert.equal(clock.status().reportAvailable, false);
    assert.equal(called, 0);
  } finally {
    await local.close();
  }
});

Deno.test("clock report: a chain whose liar stops answering proves nothing and is not kept; it never delays sync()", async () => {
  const local = await startLocalServers([{}, { version: "draft" }, { now: () => Date.now() - HOUR }, {}]);
  const relay = await onceRelay(local.specs[2]);
  try {
    const servers = [local.specs[0], local.specs[1], relay.spec, local.specs[3]];
    const clock = new TrustedClock({ servers, queryTimeoutMs: 500, proofTimeoutMs: 9000 });
    const t0 = performance.now();
    const s = await clock.sync();
    const syncMs = performance.now() - t0;
    assert.equal(s.state, "verified");
    assert.equal(s.disagreeing, 1);
    // The chain's link to the silent liar waits for its share of 9000 ms (3000 ms: it is the third of five
    // links); sync() returned within its own bound, so it did not wait for the chain.
    assert.ok(syncMs < 500 + 1500, `sync took ${syncMs} ms`);
    await clock.idle();
    const total = performance.now() - t0;
    assert.ok(total >= 2500, "the chain did wait for the silent liar");
    assert.ok(total < 500 + 9000 + 1500, `the proof is bounded (took ${total} ms)`);
    assert.equal(clock.lastReport(), null, "a consistent chain is no proof");
    assert.equal(clock.status().reportAvailable, false);
  } finally {
    await relay.close();
    await local.close();
  }
});

Deno.test("clock report: stop() abandons a running proof at once and leaves nothing behind", async () => {
  const local = await startLocalServers([{}, {}, { now: () => Date.now() + HOUR }]);
  const relay = await onceRelay(local.specs[2]);
  try {
    const clock = new TrustedClock({
      servers: [local.specs[0], local.specs[1], relay.spec],
      queryTimeoutMs: 1000,
      proofTimeoutMs: 30_000,
      refreshIntervalMs: 60_000,
    });
    const first = new Promise<TimeStatus>((resolve) => clock.subscribe(resolve));
    clock.start();
    assert.equal((await first).disagreeing, 1);
    // The chain is now waiting on the silent relay, with a 30 s budget.
    const t0 = performance.now();
    clock.stop();
    await clock.idle();
    const took = performance.now() - t0;
    assert.ok(took < 5000, `idle() after stop() took ${took} ms`);
    assert.equal(clock.lastReport(), null);
  } finally {
    await relay.close();
    await local.close();
  }
});

Deno.test("clock report: proofOrder puts every outlier between agreeing servers", () => {
  assert.deepEqual(proofOrder(4, [0, 1, 3]), [0, 1, 2, 0, 1]);
  assert.deepEqual(proofOrder(2, [1]), [1, 0, 1]);
  assert.deepEqual(proofOrder(5, [4, 2, 0]), [4, 2, 1, 3, 4, 2]);
  assert.deepEqual(proofOrder(3, [0, 1, 2]), [], "no outlier, no chain");
});
