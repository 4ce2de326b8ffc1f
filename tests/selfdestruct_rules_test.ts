import assert from "node:assert/strict";
import fc from "fast-check";
import {
  deadlineMayHavePassed,
  isVisible,
  MAX_TTL_MS,
  MIN_TTL_MS,
  msUntilNextDeadline,
  parseTtl,
  parseTtlMode,
  provedSentAt,
  readDeadline,
  receiverDeadline,
} from "../client/expiry.ts";

const t = (earliestMs: number, latestMs: number) => ({
  earliestMs,
  latestMs,
  nowMs: (earliestMs + latestMs) / 2,
});

Deno.test("parseTtl: units, bounds, and refusals", () => {
  assert.equal(parseTtl("30s"), 30_000);
  assert.equal(parseTtl("5m"), 300_000);
  assert.equal(parseTtl("2h"), 7_200_000);
  assert.equal(parseTtl("1d"), 86_400_000);
  assert.equal(parseTtl("1500ms"), 1500);
  assert.equal(parseTtl("45"), 45_000);
  assert.equal(parseTtl(2000), 2000);
  for (
    const bad of [
      "0s",
      "-5s",
      "NaN",
      "",
      "1y",
      "1.5s",
      "999ms",
      "31d",
      0,
      -1,
      NaN,
      Infinity,
      1.5,
      null,
      {},
      MAX_TTL_MS + 1,
    ]
  ) {
    assert.throws(() => parseTtl(bad), { code: "BAD_TTL" }, String(bad));
  }
  assert.equal(parseTtl(MIN_TTL_MS), MIN_TTL_MS);
  assert.equal(parseTtl(MAX_TTL_MS), MAX_TTL_MS);
  assert.equal(parseTtlMode(undefined), "send");
  assert.equal(parseTtlMode("read"), "read");
  assert.throws(() => parseTtlMode("later"), { code: "BAD_TTL" });
});

Deno.test("receiverDeadline never exceeds what the sender claimed nor what its proof allows", () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 2e12 }),
    fc.integer({ min: 0, max: 2e12 }),
    fc.integer({ min: 0, max: 10_000 }),
    fc.integer({ min: MIN_TTL_MS, max: MAX_TTL_MS }),
    (claimed, mid, radius, ttl) => {
      const d = receiverDeadline({
        claimedSentAt: claimed,
        proofMidpointMs: mid,
        proofRadiusMs: radius,
        ttlMs: ttl,
      });
      assert.ok(d <= claimed + ttl);
      assert.ok(d <= mid + radius + ttl);
      assert.equal(d - provedSentAt(claimed, mid, radius), ttl);
    },
  ));
  // A sender claiming a send time a day after its proof gains nothing.
  assert.equal(
    receiverDeadline({
      claimedSentAt: 86_400_000 + 1000,
      proofMidpointMs: 1000,
      proofRadiusMs: 3000,
      ttlMs: 5000,
    }),
    9000,
  );
});

Deno.test("visibility fails closed: no trusted time, no expiring message; dies when the deadline may have passed", () => {
  assert.equal(isVisible({ ttlMs: null, expiresAt: null }, null), true);
  assert.equal(isVisible({ ttlMs: 5000, expiresAt: 10_000 }, null), false);
  assert.equal(isVisible({ ttlMs: 5000, expiresAt: null }, null), false);
  assert.equal(isVisible({ ttlMs: 5000, expiresAt: null }, t(0, 1)), true);
  assert.equal(isVisible({ ttlMs: 5000, expiresAt: 10_000 }, t(9000, 9999)), true);
  // The interval reaches the deadline: it may have passed, so the message is gone.
  assert.equal(isVisible({ ttlMs: 5000, expiresAt: 10_000 }, t(4000, 10_000)), false);
  fc.assert(fc.property(fc.integer(), fc.integer({ min: 0, max: 1e6 }), fc.integer(), (e, w, d) => {
    const time = t(e, e + w);
    assert.equal(isVisible({ ttlMs: 1000, expiresAt: d }, time), deadlineMayHavePassed(d, time) === false);
  }));
  assert.equal(deadlineMayHavePassed(5, null), null);
  assert.equal(readDeadline(1000, 5000), 6000);
  assert.equal(msUntilNextDeadline([5000, 3000], t(0, 1000)), 2000);
  assert.equal(msUntilNextDeadline([], t(0, 1000)), null);
  assert.equal(msUntilNextDeadline([1], null), null);
});
