/**
 * Self-destruct on a clock the receiver cannot move: the receiver runs as `securechat chat --headless` under
 * faketime. With FAKETIME_DONT_FAKE_MONOTONIC=1 (a user who changes the system clock) the message dies on
 * time whether the clock is set back or forward a year; with the monotonic clock slowed too (an attacker who
 * preloads a library) it dies once a fresh Roughtime answer arrives.
 */
import assert from "node:assert/strict";
import {
  enrollUser,
  type HeadlessEvent,
  type HeadlessProc,
  type Phonebook,
  spawnHeadless,
  startClient,
  startPhonebook,
} from "./helpers/chat.ts";
import { withTools } from "./helpers/tools.ts";

const TTL = 8000;

async function scenario(
  fake: { spec: string; fakeMonotonic?: boolean; args?: string[] },
  check: (
    o: { bob: HeadlessProc; got: HeadlessEvent; sentAt: number; expiresAt: number; sentPerf: number },
  ) => Promise<void>,
) {
  const pb: Phonebook = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  // The receiver publishes itself and fetches its revocation list under the moved clock: the phonebook's
  // certificate is judged on trusted time (tests/trusted_time_device_test.ts).
  const bob = spawnHeadless(bobHome.dir, {
    faketime: fake.spec,
    fakeMonotonic: fake.fakeMonotonic,
    args: fake.args,
  });
  const alice = await startClient(aliceHome);
  try {
    const ready = await bob.waitEvent((e) => e.event === "ready", 60_000, "bob ready");
    assert.equal(ready.time, "verified", "the receiver's trusted clock must be verified by Roughtime");
    const sentPerf = performance.now();
    const m = await alice.engine.send("bob", "tick tock", { ttlMs: TTL });
    const got = await bob.waitEvent((e) => e.event === "message" && e.id === m.id, 30_000, "message at bob");
    await check({ bob, got, sentAt: m.sentAt, expiresAt: m.expiresAt!, sentPerf });
    // Gone from the receiver's history too.
    await bob.cmd({ cmd: "history", with: "alice", ref: "h" });
    const h = await bob.waitEvent((e) => e.event === "history" && e.ref === "h", 30_000, "history");
    assert.deepEqual(h.messages, []);
  } finally {
    await bob.kill();
    await alice.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
}

/** The receiver's copy is shown with the trusted deadline and dies no later than that deadline. */
async function diesOnTime(
  o: { bob: HeadlessProc; got: HeadlessEvent; sentAt: number; expiresAt: number; sentPerf: number },
) {
  // Timestamps are on trusted time, not the receiver's (moved) wall clock: within seconds of the real time.
  assert.ok(Math.abs((o.got.sentAt as number) - o.sentAt) < 10_000, `sentAt ${o.got.sentAt} vs ${o.sentAt}`);
  assert.ok((o.got.expiresAt as number) <= o.expiresAt, "the receiver never extends the sender's deadline");
  assert.ok((o.got.expiresAt as number) > Date.now() - 10_000, "deadline is on real time, not a year off");
  await o.bob.waitEvent((e) => e.event === "expired" && e.id === o.got.id, TTL + 10_000, "expired at bob");
  // It died by the deadline (on the test's own, unmoved clock), plus the sweep and pipe latency.
  const elapsed = performance.now() - o.sentPerf;
  assert.ok(elapsed <= TTL + 3000, `died ${elapsed} ms after sending (lifetime ${TTL} ms)`);
}

Deno.test(withTools("faketime", {
  name: "faketime: receiver's wall clock set back a year: the message still dies on time",
  fn: () => scenario({ spec: "-365d" }, diesOnTime),
}));

Deno.test(withTools("faketime", {
  name: "faketime: receiver's wall clock set forward a year: shown, and dies on time (not at once)",
  fn: () => scenario({ spec: "+365d" }, diesOnTime),
}));

Deno.test(withTools("faketime", {
  name: "faketime: monotonic clock slowed too: the message dies once a fresh Roughtime answer arrives",
  fn: () =>
    // Time runs at a tenth of its speed for the receiver (wall and monotonic); it asks Roughtime every
    // second of its own (slowed) time, i.e. every ~10 real seconds.
    scenario({ spec: "+0 x0.1", fakeMonotonic: true, args: ["--time-refresh", "1"] }, async (o) => {
      const expired = await o.bob.waitEvent(
        (e) => e.event === "expired" && e.id === o.got.id,
        60_000,
        "expired",
      );
      const elapsed = performance.now() - o.sentPerf;
      const idx = o.bob.events.indexOf(expired);
      const arrived = o.bob.events.indexOf(o.got);
      // Fresh Roughtime answers came in between (the clock re-asks on schedule, and at once when the time
      // since boot, which faketime does not slow, runs ahead of the monotonic clock).
      const fresh = o.bob.events.slice(arrived, idx).filter((e) =>
        e.event === "time" && e.state === "verified"
      );
      assert.ok(fresh.length > 0, "no fresh Roughtime answer before the deletion");
      // Late by at most one refresh period of the slowed clock (1 s at a tenth of the speed) plus slack: on a
      // 10x slowed clock alone it would have lived 80 s.
      assert.ok(elapsed <= TTL + 15_000, `died ${elapsed} ms after sending`);
    }),
}));
