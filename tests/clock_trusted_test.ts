/**
 * TrustedClock: verified / stale / unverified, carry-forward on the monotonic clock with a drift bound,
 * immunity to wall-clock changes, majority voting (a liar is outvoted, two disagreeing servers leave the time
 * unverified), bounded waits with unreachable servers, "never late" deadlines, and time proofs.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import fc from "fast-check";
import {
  DRIFT_PPM,
  RoughtimeError,
  type ServerSpec,
  type TimeStatus,
  TrustedClock,
  verifyTimeProof,
} from "../clock/mod.ts";
import { publicKeyFromSeed, randomBytes } from "../clock/roughtime/crypto.ts";
import { b64, startLocalServers, toB64 } from "./helpers/roughtime.ts";

const HOUR = 3600_000;

function fakeMono(start = 10_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

async function deadPort(): Promise<number> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function unreachable(n: number): Promise<ServerSpec[]> {
  const out: ServerSpec[] = [];
  for (let i = 0; i < n; i++) {
    out.push({
      name: `dead${i}`,
      host: "127.0.0.1",
      port: await deadPort(),
      publicKey: publicKeyFromSeed(randomBytes(32)),
    });
  }
  return out;
}

Deno.test("trusted clock: unverified before any answer (now null, deadlinePassed null)", () => {
  const clock = new TrustedClock({ servers: [] });
  const s = clock.status();
  assert.equal(s.state, "unverified");
  assert.equal(s.time, null);
  assert.equal(s.uncertaintyMs, null);
  assert.equal(clock.now(), null);
  assert.equal(clock.deadlinePassed(0), null);
});

Deno.test("trusted clock: three honest servers verify the time; the interval holds the true time", async () => {
  const local = await startLocalServers([{ version: "rfc" }, { version: "draft" }, { version: "google" }]);
  try {
    const clock = new TrustedClock({ servers: local.specs, queryTimeoutMs: 2000 });
    const before = Date.now();
    const s = await clock.sync();
    const after = Date.now();
    assert.equal(s.state, "verified");
    assert.equal(s.configured, 3);
    assert.equal(s.answered, 3);
    assert.equal(s.agreeing, 3);
    assert.equal(s.singleSource, false);
    assert.ok(s.time && s.time.earliestMs <= before && after <= s.time.latestMs, JSON.stringify(s.time));
    // IETF servers round to the second with RADI 3 s: the half-width stays a few seconds.
    assert.ok(s.uncertaintyMs !== null && s.uncertaintyMs >= 3000 && s.uncertaintyMs < 10_000);
    assert.ok(s.lastVerifiedMs !== null && Math.abs(s.lastVerifiedMs - before) < 5000);
  } finally {
    await local.close();
  }
});

Deno.test("trusted clock: one reachable server verifies the time but reports single-source", async () => {
  const local = await startLocalServers([{}]);
  try {
    const clock = new TrustedClock({
      servers: [...local.specs, ...(await unreachable(1))],
      queryTimeoutMs: 500,
    });
    const s = await clock.sync();
    assert.equal(s.state, "verified");
    assert.equal(s.singleSource, true);
    assert.equal(s.configured, 2);
    assert.equal(s.answered, 1);
  } finally {
    await local.close();
  }
});

Deno.test("trusted clock: carried forward on the monotonic clock, uncertainty grows by the drift bound, then stale", async () => {
  const local = await startLocalServers([{}, {}]);
  const mono = fakeMono();
  try {
    const clock = new TrustedClock({ servers: local.specs, monotonicNow: mono.now, staleAfterMs: HOUR });
    const states: TimeStatus["state"][] = [];
    const unsubscribe = clock.subscribe((s) => states.push(s.state));
    const s0 = await clock.sync();
    assert.equal(s0.state, "verified");
    const t0 = clock.now()!;
    mono.advance(HOUR - 1);
    const t1 = clock.now()!;
    const drift = ((HOUR - 1) * DRIFT_PPM) / 1e6;
    assert.ok(Math.abs(t1.earliestMs - (t0.earliestMs + HOUR - 1 - drift)) < 1e-3);
    assert.ok(Math.abs(t1.latestMs - (t0.latestMs + HOUR - 1 + drift)) < 1e-3);
    assert.equal(clock.status().state, "verified");
    clock.checkState();
    mono.advance(1);
    clock.checkState();
    assert.equal(clock.status().state, "stale");
    assert.ok(clock.status().time !== null, "a stale clock still carries its time forward");
    assert.deepEqual(states, ["verified", "stale"]);
    unsubscribe();
    await clock.sync();
    assert.equal(clock.status().state, "verified");
    assert.deepEqual(states, ["verified", "stale"], "no calls after unsubscribe");
  } finally {
    await local.close();
  }
});

Deno.test("trusted clock: once verified, changing the wall clock (Date.now) changes nothing", async () => {
  const local = await startLocalServers([{}]);
  const mono = fakeMono();
  const realNow = Date.now;
  try {
    const clock = new TrustedClock({ servers: local.specs, monotonicNow: mono.now });
    await clock.sync();
    const a = clock.now();
    const deadline = a!.latestMs + 1000;
    for (const fake of [0, realNow() + 365 * 24 * HOUR, realNow() - 10 * HOUR]) {
      Date.now = () => fake;
      assert.deepEqual(clock.now(), a);
      assert.equal(clock.deadlinePassed(deadline), false);
      assert.equal(clock.status().state, "verified");
    }
  } finally {
    Date.now = realNow;
    await local.close();
  }
});

Deno.test("trusted clock: a server an hour off among three honest ones is outvoted", async () => {
  const local = await startLocalServers([{}, { version: "draft" }, { version: "google" }, {
    now: () => Date.now() - HOUR,
  }]);
  try {
    const clock = new TrustedClock({ servers: local.specs, queryTimeoutMs: 2000 });
    const before = Date.now();
    const s = await clock.sync();
    assert.equal(s.state, "verified");
    assert.equal(s.answered, 4);
    assert.equal(s.agreeing, 3);
    assert.ok(s.time && s.time.earliestMs <= before && before - HOUR + 10_000 < s.time.earliestMs);
    assert.ok(s.uncertaintyMs! < 10_000, "the liar does not widen the answer");
    assert.equal(s.disagreeing, 1);
    await clock.idle(); // the background proof (tests/clock_report_test.ts checks what it proves)
  } finally {
    await local.close();
  }
});

Deno.test("trusted clock: two disagreeing servers leave the time unverified", async () => {
  const local = await startLocalServers([{}, { now: () => Date.now() + HOUR }]);
  try {
    const clock = new TrustedClock({ servers: local.specs, queryTimeoutMs: 2000 });
    const s = await clock.sync();
    assert.equal(s.state, "unverified");
    assert.equal(s.time, null);
    assert.equal(s.answered, 2);
    assert.equal(s.agreeing, 1);
    assert.equal(clock.deadlinePassed(0), null);
    assert.equal(s.disagreeing, 1);
    await clock.idle();
    // With no majority the chain [A, B, A] still proves that one of the two lied.
    assert.equal(clock.status().reportAvailable, true);
  } finally {
    await local.close();
  }
});

Deno.test("trusted clock: all servers unreachable leaves it unverified, and sync returns within its bound", async () => {
  const clock = new TrustedClock({ servers: await unreachable(3), queryTimeoutMs: 400 });
  const t0 = performance.now();
  const s = await clock.sync();
  const took = performance.now() - t0;
  assert.equal(s.state, "unverified");
  assert.equal(s.answered, 0);
  assert.ok(took < 400 + 1500, `sync took ${took} ms`);
  assert.deepEqual(clock.lastOutcomes().map((o) => (o.ok ? "ok" : o.error.code)), [
    "TIMEOUT",
    "TIMEOUT",
    "TIMEOUT",
  ]);
});

Deno.test("trusted clock: a verified time survives a later sync where every server is down", async () => {
  const local = await startLocalServers([{}]);
  const mono = fakeMono();
  const clock = new TrustedClock({ servers: local.specs, monotonicNow: mono.now, queryTimeoutMs: 300 });
  await clock.sync();
  const before = clock.now()!;
  await local.close();
  mono.advance(5000);
  const s = await clock.sync();
  assert.equal(s.state, "verified");
  assert.equal(s.answered, 0);
  assert.equal(s.singleSource, true);
  assert.ok(Math.abs(clock.now()!.earliestMs - (before.earliestMs + 5000 - 0.5)) < 1e-3);
});

Deno.test("trusted clock: deadlinePassed is never late (property over deadlines and elapsed time)", async () => {
  const T0 = Date.UTC(2026, 10, 28, 12, 0, 0, 400);
  const local = await startLocalServers([{ now: () => T0 }, { now: () => T0, version: "google" }, {
    now: () => T0,
  }]);
  const mono = fakeMono(0);
  try {
    const clock = new TrustedClock({ servers: local.specs, monotonicNow: mono.now });
    await clock.sync();
    // True time at the sync instant is T0 (what every server read); it then advances with the monotonic clock.
    let elapsed = 0;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10 * HOUR }),
        fc.integer({ min: -20_000, max: 20_000 }),
        (step, offset) => {
          mono.advance(step);
          elapsed += step;
          const trueNow = T0 + elapsed;
          const deadline = trueNow + offset;
          const passed = clock.deadlinePassed(deadline);
          if (trueNow >= deadline) assert.equal(passed, true, `late: deadline ${offset} ms ago not reported`);
          // Early deletion is bounded: beyond the interval's width it is never reported early.
          if (deadline > clock.now()!.latestMs) assert.equal(passed, false);
        },
      ),
      { numRuns: 300 },
    );
  } finally {
    await local.close();
  }
});

Deno.test("trusted clock: start() syncs in the background and notifies; stop() ends the refresh", async () => {
  const local = await startLocalServers([{}]);
  try {
    const clock = new TrustedClock({ servers: local.specs, refreshIntervalMs: 60_000 });
    const first = new Promise<TimeStatus>((resolve) => clock.subscribe(resolve));
    clock.start();
    assert.equal((await first).state, "verified");
    clock.stop();
    await clock.idle();
  } finally {
    await local.close();
  }
});

Deno.test("time proof: signed for a nonce derived from the data; checked against trusted keys", async () => {
  const local = await startLocalServers([{ version: "rfc" }, { version: "google" }]);
  try {
    const data = new TextEncoder().encode("message id 42");
    for (const spec of local.specs) {
      const clock = new TrustedClock({ servers: [spec] });
      const proof = await clock.proveTime(data);
      assert.equal(proof.version, spec.version);
      assert.equal(proof.publicKey, toB64(spec.publicKey));
      const t = verifyTimeProof(proof, data, [randomBytes(32), spec.publicKey]);
      assert.ok(Math.abs(t.midpointMs - Date.now()) < 5000);
      assert.ok(t.radiusMs >= 1000);
      const code = (fn: () => unknown) => {
        try {
          fn();
        } catch (e) {
          assert.ok(e instanceof RoughtimeError);
          return e.code;
        }
        return "accepted";
      };
      assert.equal(
        code(() => verifyTimeProof(proof, new TextEncoder().encode("message id 43"), [spec.publicKey])),
        "NONCE_MISMATCH",
      );
      assert.equal(
        code(() => verifyTimeProof(proof, data, [publicKeyFromSeed(randomBytes(32))])),
        "UNTRUSTED_KEY",
      );
      const resp = b64(proof.response);
      resp[resp.length - 40] ^= 1;
      assert.notEqual(
        code(() => verifyTimeProof({ ...proof, response: toB64(resp) }, data, [spec.publicKey])),
        "accepted",
      );
      assert.equal(
        code(() => verifyTimeProof({ ...proof, rand: "%%%" }, data, [spec.publicKey])),
        "BAD_ARGUMENT",
      );
    }
  } finally {
    await local.close();
  }
});

Deno.test("time proof: falls over to the next server, and fails typed when none answers", async () => {
  const local = await startLocalServers([{}]);
  try {
    const clock = new TrustedClock({
      servers: [...(await unreachable(1)), ...local.specs],
      queryTimeoutMs: 1000,
    });
    const proof = await clock.proveTime(new Uint8Array([1, 2, 3]));
    verifyTimeProof(proof, new Uint8Array([1, 2, 3]), [local.specs[0].publicKey]);
  } finally {
    await local.close();
  }
  const none = new TrustedClock({ servers: await unreachable(2), queryTimeoutMs: 300 });
  await assert.rejects(
    none.proveTime(new Uint8Array()),
    (e: unknown) => e instanceof RoughtimeError && e.code === "TIMEOUT",
  );
  await assert.rejects(
    new TrustedClock({ servers: [] }).proveTime(new Uint8Array()),
    (e: unknown) => e instanceof RoughtimeError && e.code === "NO_SERVERS",
  );
});

Deno.test("trusted clock: a running clock announces 'stale' on its own when no refresh comes in time", async () => {
  const local = await startLocalServers([{}]);
  try {
    const clock = new TrustedClock({ servers: local.specs, refreshIntervalMs: 60_000, staleAfterMs: 50 });
    const seen: string[] = [];
    const stale = new Promise<void>((resolve) =>
      clock.subscribe((s) => {
        seen.push(s.state);
        if (s.state === "stale") resolve();
      })
    );
    clock.start();
    await stale;
    clock.stop();
    await clock.idle();
    assert.deepEqual(seen, ["verified", "stale"]);
    assert.ok(clock.now() !== null);
  } finally {
    await local.close();
  }
});

Deno.test("trusted clock: a suspend (boot clock ahead of the monotonic one) moves time forward, never late", async () => {
  const local = await startLocalServers([{}]);
  const mono = fakeMono();
  let boot = 5_000_000;
  try {
    const clock = new TrustedClock({
      servers: local.specs,
      monotonicNow: mono.now,
      bootClock: { now: () => boot, resolutionMs: 10 },
    });
    await clock.sync();
    const t0 = clock.now()!;
    // Awake for 1 s: both clocks agree; the boot clock adds only its resolution to the latest bound.
    mono.advance(1000);
    boot += 1000;
    const t1 = clock.now()!;
    assert.ok(Math.abs(t1.earliestMs - (t0.earliestMs + 1000 - 0.1)) < 1e-6);
    assert.ok(Math.abs(t1.latestMs - (t0.latestMs + 1000 + 0.1)) < 1e-6);
    // Asleep for 8 h: the monotonic clock stood still, the boot clock did not.
    boot += 8 * HOUR;
    const t2 = clock.now()!;
    const slept = 8 * HOUR + 1000 - 10; // boot clock elapsed minus one reading's resolution
    assert.ok(Math.abs(t2.earliestMs - (t0.earliestMs + slept - (slept * DRIFT_PPM) / 1e6)) < 1e-3);
    assert.ok(t2.latestMs >= t0.latestMs + 8 * HOUR + 1000);
    assert.equal(clock.deadlinePassed(t0.latestMs + 8 * HOUR), true);
    assert.equal(clock.status().state, "stale");
    // A boot clock that lags (or jumps back) never moves time back: the monotonic clock is the floor.
    boot -= 10 * HOUR;
    mono.advance(1000);
    const t3 = clock.now()!;
    assert.ok(Math.abs(t3.earliestMs - (t0.earliestMs + 2000 - 0.2)) < 1e-6);
  } finally {
    await local.close();
  }
});

Deno.test("trusted clock: after a suspend a running clock resyncs at once instead of waiting for its refresh", async () => {
  const local = await startLocalServers([{}]);
  const mono = fakeMono();
  let boot = 1_000_000;
  try {
    const clock = new TrustedClock({
      servers: local.specs,
      monotonicNow: mono.now,
      bootClock: { now: () => boot, resolutionMs: 1000 },
      refreshIntervalMs: 3600_000,
    });
    let syncs = 0;
    let second: () => void = () => {};
    const resynced = new Promise<void>((resolve) => (second = resolve));
    const first = new Promise<void>((resolve) =>
      clock.subscribe(() => {
        syncs++;
        if (syncs === 1) resolve();
        if (syncs === 2) second();
      })
    );
    clock.start();
    await first;
    boot += 8 * HOUR; // the machine slept; the next refresh would be an hour away on the monotonic clock
    assert.equal(clock.status().state, "stale");
    await resynced;
    assert.equal(clock.status().state, "verified");
    clock.stop();
    await clock.idle();
  } finally {
    await local.close();
  }
});

Deno.test("time proof: only the proof servers sign, while every configured server votes on the time", async () => {
  const local = await startLocalServers([{}, {}]);
  try {
    const [voter, signer] = local.specs;
    const clock = new TrustedClock({
      servers: [voter, signer],
      proofServers: [signer],
      queryTimeoutMs: 1000,
    });
    const status = await clock.sync();
    assert.equal(status.state, "verified");
    assert.equal(status.answered, 2);
    assert.equal(status.singleSource, false);
    const data = new Uint8Array([4, 5, 6]);
    const proof = await clock.proveTime(data);
    assert.equal(proof.publicKey, toB64(signer.publicKey));
    verifyTimeProof(proof, data, [signer.publicKey]);
    assert.throws(
      () => verifyTimeProof(proof, data, [voter.publicKey]),
      (e: unknown) => e instanceof RoughtimeError && e.code === "UNTRUSTED_KEY",
    );
  } finally {
    await local.close();
  }
});
