import assert from "node:assert/strict";
import fc from "fast-check";
import {
  boundedReadDeadline,
  effectiveDeadline,
  isVisible,
  MAX_TTL_MS,
  MAX_UNREAD_MS,
  MIN_TTL_MS,
  msUntilNextDeadline,
  parseTtl,
  parseTtlMode,
  provedSentAt,
  readDeadline,
  receiverDeadline,
  unreadDeadline,
} from "../client/expiry.ts";
import { deadlinePassed } from "../clock/mod.ts";

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
  const plain = { sentAt: 0, ttlMs: null, ttlMode: null, expiresAt: null };
  const sendMode = { sentAt: 0, ttlMs: 5000, ttlMode: "send" as const, expiresAt: 10_000 };
  const unread = { sentAt: 0, ttlMs: 5000, ttlMode: "read" as const, expiresAt: null };
  assert.equal(isVisible(plain, null), true);
  assert.equal(isVisible(sendMode, null), false);
  assert.equal(isVisible(unread, null), false);
  assert.equal(isVisible(unread, t(0, 1)), true);
  assert.equal(isVisible(sendMode, t(9000, 9999)), true);
  // The interval reaches the deadline: it may have passed, so the message is gone.
  assert.equal(isVisible(sendMode, t(4000, 10_000)), false);
  fc.assert(fc.property(fc.integer(), fc.integer({ min: 0, max: 1e6 }), fc.integer(), (e, w, d) => {
    const time = t(e, e + w);
    const m = { sentAt: 0, ttlMs: 1000, ttlMode: "send" as const, expiresAt: d };
    assert.equal(isVisible(m, time), deadlinePassed(d, time) === false);
  }));
  assert.equal(deadlinePassed(5, null), null);
  assert.equal(readDeadline(1000, 5000), 6000);
  assert.equal(msUntilNextDeadline([5000, 3000], t(0, 1000)), 2000);
  assert.equal(msUntilNextDeadline([], t(0, 1000)), null);
  assert.equal(msUntilNextDeadline([1], null), null);
  assert.equal(msUntilNextDeadline([5000, NaN], t(0, 1000)), 0);
});

Deno.test("one deadline rule: NaN (and -Infinity) has passed, wherever it is judged; Infinity never", () => {
  const time = t(0, 1000);
  assert.equal(deadlinePassed(Infinity, time), false);
  for (const bad of [NaN, -Infinity]) {
    assert.equal(deadlinePassed(bad, time), true);
    assert.equal(deadlinePassed(bad, null), null);
    // Fail closed everywhere the rule is used: never shown, due at once.
    assert.equal(isVisible({ sentAt: 0, ttlMs: 1000, ttlMode: "send", expiresAt: bad }, time), false);
    assert.equal(msUntilNextDeadline([bad], time), 0);
  }
  assert.equal(deadlinePassed(1000, time), true);
  assert.equal(deadlinePassed(1001, time), false);
});

Deno.test("unread 'after read' bound: MAX_UNREAD_MS is a real, bounded constant and the default", () => {
  assert.ok(Number.isSafeInteger(MAX_UNREAD_MS) && MAX_UNREAD_MS > 0);
  assert.equal(MAX_UNREAD_MS, 7 * 24 * 3600_000);
  const unread = { sentAt: 1_000, ttlMs: 5000, ttlMode: "read" as const, expiresAt: null };
  assert.equal(effectiveDeadline(unread), 1_000 + MAX_UNREAD_MS);
  // Visible just before the bound on the latest possible time, gone once it may have passed.
  assert.equal(isVisible(unread, t(0, 1_000 + MAX_UNREAD_MS - 1)), true);
  assert.equal(isVisible(unread, t(0, 1_000 + MAX_UNREAD_MS)), false);
  // "send" messages and messages without a lifetime are untouched by the bound.
  assert.equal(effectiveDeadline({ sentAt: 0, ttlMs: 5000, ttlMode: "send", expiresAt: 5000 }), 5000);
  assert.equal(effectiveDeadline({ sentAt: 0, ttlMs: null, ttlMode: null, expiresAt: null }), null);
  assert.equal(isVisible({ sentAt: 0, ttlMs: null, ttlMode: null, expiresAt: null }, t(0, 1e15)), true);
});

Deno.test("property: an unread 'after read' message's deadline is never later than sentAt + MAX_UNREAD_MS (receiver: proof-bounded sentAt)", () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 2e12 }),
    fc.integer({ min: 0, max: 2e12 }),
    fc.integer({ min: 0, max: 10_000 }),
    fc.integer({ min: MIN_TTL_MS, max: MAX_TTL_MS }),
    fc.integer({ min: 1, max: MAX_UNREAD_MS }),
    fc.integer({ min: 0, max: 1e6 }),
    fc.integer({ min: -1e6, max: 1e6 }),
    (claimed, mid, radius, ttl, maxUnread, width, offset) => {
      // The sender's copy, on its own send time.
      const sender = { sentAt: claimed, ttlMs: ttl, ttlMode: "read" as const, expiresAt: null };
      const ds = effectiveDeadline(sender, maxUnread)!;
      assert.ok(ds <= claimed + maxUnread);
      assert.equal(ds, unreadDeadline(claimed, maxUnread));
      // The receiver's copy, on the proof-bounded send time: never later than the claim nor the proof allow.
      const proved = provedSentAt(claimed, mid, radius);
      const receiver = { sentAt: proved, ttlMs: ttl, ttlMode: "read" as const, expiresAt: null };
      const dr = effectiveDeadline(receiver, maxUnread)!;
      assert.ok(dr <= claimed + maxUnread);
      assert.ok(dr <= mid + radius + maxUnread);
      assert.ok(dr <= ds);
      assert.equal(
        dr,
        receiverDeadline({
          claimedSentAt: claimed,
          proofMidpointMs: mid,
          proofRadiusMs: radius,
          ttlMs: maxUnread,
        }),
      );
      // Visibility agrees with the bound on any trusted interval: shown only while it certainly has not passed.
      const latest = dr + offset;
      const time = t(latest - width, latest);
      assert.equal(isVisible(receiver, time, maxUnread), latest < dr);
      assert.equal(isVisible(receiver, null, maxUnread), false);
    },
  ));
});

Deno.test("property: once read, the deadline counts from the display but is never later than sentAt + MAX_UNREAD_MS + ttlMs", () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 2e12 }),
    fc.integer({ min: -1e6, max: 2e9 }),
    fc.integer({ min: MIN_TTL_MS, max: MAX_TTL_MS }),
    fc.integer({ min: 1, max: MAX_UNREAD_MS }),
    (sentAt, readDelay, ttl, maxUnread) => {
      const readAt = sentAt + readDelay;
      const d = boundedReadDeadline({
        readAtMs: readAt,
        sentAtMs: sentAt,
        ttlMs: ttl,
        maxUnreadMs: maxUnread,
      });
      assert.ok(d <= sentAt + maxUnread + ttl);
      assert.ok(d <= readAt + ttl);
      // Read before the bound (the only way a display can happen): exactly the read-based deadline.
      if (readDelay <= maxUnread) assert.equal(d, readDeadline(readAt, ttl));
      else assert.equal(d, sentAt + maxUnread + ttl);
      // The recorded deadline then governs (the unread bound no longer applies).
      const m = { sentAt, ttlMs: ttl, ttlMode: "read" as const, expiresAt: d };
      assert.equal(effectiveDeadline(m, maxUnread), d);
    },
  ));
});
