/**
 * "Never late" on the paths a plain carry-forward misses: a suspend that falls inside a sync (after a reply
 * arrived, before the clock anchored it), and a resync where a weaker answer (one server left reachable,
 * lying an hour behind) would move the time back below what a majority had proven. Both are checked on a
 * real TrustedClock against local servers, and the anchor rule itself by properties.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { nextAnchorInterval, type SupportedInterval, TrustedClock } from "../clock/mod.ts";
import { startLocalServers } from "./helpers/roughtime.ts";

const HOUR = 3600_000;
const MINUTE = 60_000;

function frozenMono(start = 10_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

Deno.test("never late: a suspend between a server's reply and the clock's anchor is counted", async () => {
  let boot = 2_000_000;
  let sleepOnSign = false;
  const SLEPT = 8 * HOUR;
  // The server signs, then the machine sleeps 8 h before the client anchors the reply: the monotonic clock
  // stands still, the boot clock does not.
  const local = await startLocalServers([{
    now: () => {
      if (sleepOnSign) {
        sleepOnSign = false;
        boot += SLEPT;
      }
      return Date.now();
    },
  }]);
  try {
    const mono = frozenMono();
    const clock = new TrustedClock({
      servers: local.specs,
      monotonicNow: mono.now,
      bootClock: { now: () => boot, resolutionMs: 10 },
    });
    sleepOnSign = true;
    const s = await clock.sync();
    assert.equal(sleepOnSign, false, "the server signed during the sync");
    assert.equal(s.state, "verified");
    // True time is now the reply's time plus the sleep.
    const trueNow = Date.now() + SLEPT;
    assert.equal(clock.deadlinePassed(trueNow - MINUTE), true, "a deadline a minute ago is reported passed");
    assert.ok(clock.now()!.latestMs >= trueNow);
    // The clock cannot know whether the sleep fell before or after the server signed: the interval says so.
    assert.ok(clock.status().uncertaintyMs! > SLEPT / 2 - 10_000);
  } finally {
    await local.close();
  }
});

Deno.test("never late: after three servers agreed, one remaining server an hour behind cannot move time back", async () => {
  let shift = 0;
  const first = await startLocalServers([{ now: () => Date.now() + shift }]);
  const others = await startLocalServers([{ version: "draft" }, { version: "google" }]);
  let othersOpen = true;
  try {
    const mono = frozenMono();
    const clock = new TrustedClock({
      servers: [...first.specs, ...others.specs],
      monotonicNow: mono.now,
      bootClock: null,
      queryTimeoutMs: 300,
    });
    const s1 = await clock.sync();
    assert.equal(s1.agreeing, 3);
    // The other two become unreachable (blocked, or down) and the last one starts lying.
    await others.close();
    othersOpen = false;
    shift = -HOUR;
    mono.advance(5000);
    const s2 = await clock.sync();
    assert.equal(s2.answered, 1);
    assert.equal(s2.state, "verified");
    const trueNow = Date.now();
    assert.equal(clock.deadlinePassed(trueNow - 30 * MINUTE), true, "late: the liar moved the time back");
    assert.equal(clock.deadlinePassed(trueNow - 10_000), true);
    assert.ok(clock.now()!.latestMs >= trueNow);
    // The lie is not hidden: the interval now spans both answers.
    assert.ok(clock.status().uncertaintyMs! > 25 * MINUTE);
    await clock.idle();
  } finally {
    await first.close();
    if (othersOpen) await others.close();
  }
});

const interval = fc.record({
  earliestMs: fc.integer({ min: 0, max: 10 * HOUR }),
  width: fc.integer({ min: 0, max: HOUR }),
  support: fc.integer({ min: 1, max: 9 }),
}).map(({ earliestMs, width, support }): SupportedInterval => ({
  earliestMs,
  latestMs: earliestMs + width,
  support,
}));

Deno.test("never late: a weaker answer only widens the interval; a majority of the configured servers replaces it", () => {
  fc.assert(
    fc.property(interval, interval, fc.integer({ min: 1, max: 9 }), (carried, fresh, configured) => {
      const u = nextAnchorInterval(carried, fresh, configured);
      const strong = fresh.support * 2 > configured || fresh.support >= carried.support;
      assert.equal(u.replaced, strong);
      if (strong) {
        assert.deepEqual(u.interval, fresh);
      } else {
        // Whatever true time the carried interval held, the latest bound still covers it.
        assert.ok(u.interval.latestMs >= carried.latestMs && u.interval.latestMs >= fresh.latestMs);
        assert.ok(u.interval.earliestMs <= carried.earliestMs && u.interval.earliestMs <= fresh.earliestMs);
        assert.equal(u.interval.support, carried.support);
      }
      const apart = fresh.latestMs < carried.earliestMs || fresh.earliestMs > carried.latestMs;
      assert.equal(u.contradicts, apart);
    }),
    { numRuns: 500 },
  );
  const fresh = { earliestMs: 100, latestMs: 200, support: 1 };
  assert.deepEqual(nextAnchorInterval(null, fresh, 3), {
    interval: fresh,
    contradicts: false,
    replaced: true,
  });
  // Two of three configured servers are a majority of all of them: they replace a three-server answer.
  const carried = { earliestMs: 1000, latestMs: 1100, support: 3 };
  assert.equal(nextAnchorInterval(carried, { ...fresh, support: 2 }, 3).replaced, true);
  assert.equal(nextAnchorInterval(carried, { ...fresh, support: 2 }, 5).replaced, false);
});

Deno.test("never late: a NaN deadline counts as passed; an infinite one never does", async () => {
  const local = await startLocalServers([{}]);
  try {
    const clock = new TrustedClock({ servers: local.specs, monotonicNow: frozenMono().now });
    assert.equal(clock.deadlinePassed(Number.NaN), null, "unverified stays null");
    await clock.sync();
    assert.equal(clock.deadlinePassed(Number.NaN), true);
    assert.equal(clock.deadlinePassed(-Infinity), true);
    assert.equal(clock.deadlinePassed(Infinity), false);
  } finally {
    await local.close();
  }
});
