/**
 * The outbox against a real chat.db (with its group committer) and a hand-held session: written once per
 * session, "sent" then "delivered" on the ack (each event after its commit), "failed" when the session closes first and sent again on the next, nothing sent
 * after its deadline, read receipts kept until written, and a reader's read time bounded by ours.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Outbox, type OutboxSession, refusalDelayMs } from "../client/outbox.ts";
import { ChatStore, type StoredMessage } from "../client/store/store.ts";
import type { EngineEvent } from "../client/engine_types.ts";
import type { Frame } from "../client/protocol/frames.ts";
import { settle } from "./helpers/fake_scheduler.ts";

class HeldSession implements OutboxSession {
  static next = 1;
  readonly id = HeldSession.next++;
  state = "open";
  readonly frames: Frame[] = [];
  sendBatch(frames: readonly Frame[]): Promise<void> {
    if (this.state !== "open") return Promise.reject(new Error("closed"));
    this.frames.push(...frames);
    return Promise.resolve();
  }
}

const BACKOFF = { baseMs: 1000, maxMs: 8000 };

async function rig(opts: { sentStateDelayMs?: number } = {}) {
  const dir = await Deno.makeTempDir({ prefix: "securechat-outbox-" });
  const store = new ChatStore(join(dir, "chat.db"));
  const events: EngineEvent[] = [];
  const dialled: string[] = [];
  let session: HeldSession | null = null;
  let latest = 10_000;
  const clock = { now: 0, random: 0.5 };
  const outbox = new Outbox({
    ownName: "alice",
    store,
    session: () => session,
    connect: (peer) => dialled.push(peer),
    deadlinePassed: (d) => latest >= d,
    latestNowMs: () => latest,
    maxUnreadMs: 7 * 24 * 3600_000,
    emit: (e) => events.push(e),
    // At once unless a test says otherwise (the "sent" of a write is then stored within a settle()).
    sentStateDelayMs: opts.sentStateDelayMs ?? 0,
    now: () => clock.now,
    random: () => clock.random,
    refusalBackoff: BACKOFF,
  });
  return {
    store,
    outbox,
    clock,
    events,
    dialled,
    open: () => session = new HeldSession(),
    drop: (refusal?: string) => {
      const s = session!;
      s.state = "closed";
      session = null;
      outbox.onSessionClosed("bob", s.id, refusal ? `refused (${refusal})` : undefined, refusal);
    },
    /** A new session replaces the current one before the old one has closed (simultaneous dials). */
    replace: () => {
      const old = session!;
      session = new HeldSession();
      return {
        old,
        fresh: session,
        closeOld: () => (old.state = "closed", outbox.onSessionClosed("bob", old.id)),
      };
    },
    setLatest: (ms: number) => latest = ms,
    kinds: () => events.map((e) => e.event),
    done: async () => {
      await settle();
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function msg(
  id: string,
  extra: Partial<StoredMessage> = {},
): Omit<StoredMessage, "seq" | "direction" | "readAt"> {
  return {
    id,
    peer: "bob",
    from: "alice",
    text: `hello ${id}`,
    sentAt: 5000,
    expiresAt: null,
    ttlMs: null,
    ttlMode: null,
    state: "sending",
    proof: null,
    ...extra,
  };
}

Deno.test("outbox: no session -> stored and dialled; on a session: written once, sent, then delivered on the ack", async () => {
  const r = await rig();
  try {
    await r.outbox.queue(msg("m1"));
    assert.deepEqual(r.dialled, ["bob"]);
    assert.equal(r.store.outbox("bob").length, 1);
    const s = r.open();
    await r.outbox.flush("bob");
    await r.outbox.flush("bob");
    await settle();
    assert.equal(s.frames.filter((f) => f.t === "msg").length, 1, "in flight: not written twice");
    assert.deepEqual(r.kinds(), ["sent"]);
    r.outbox.onAck("bob", "m1");
    r.outbox.onAck("bob", "m1");
    await settle();
    assert.deepEqual(r.kinds(), ["sent", "delivered"]);
    assert.equal(r.store.get("bob", "m1")?.state, "delivered");
    assert.equal(r.store.outbox("bob").length, 0);
  } finally {
    await r.done();
  }
});

Deno.test("outbox: a session that closes before the ack marks 'failed'; the next session sends it again", async () => {
  const r = await rig();
  try {
    r.open();
    await r.outbox.queue(msg("m1"));
    await r.outbox.flush("bob");
    await settle();
    r.drop();
    await settle();
    assert.equal(r.store.get("bob", "m1")?.state, "failed");
    const failed = r.events.find((e) => e.event === "failed");
    assert.deepEqual(failed, { event: "failed", id: "m1", to: "bob", reason: "not delivered" });
    const s2 = r.open();
    await r.outbox.flush("bob");
    await settle();
    assert.equal(s2.frames.filter((f) => f.t === "msg" && f.id === "m1").length, 1);
    assert.equal(r.store.get("bob", "m1")?.state, "sent");
  } finally {
    await r.done();
  }
});

Deno.test("outbox: a message whose deadline passed while queued is never sent", async () => {
  const r = await rig();
  try {
    await r.outbox.queue(msg("dead", { ttlMs: 1000, ttlMode: "send", expiresAt: 9000 }));
    await r.outbox.queue(msg("alive", { ttlMs: 60_000, ttlMode: "send", expiresAt: 70_000 }));
    const s = r.open();
    await r.outbox.flush("bob");
    assert.deepEqual(s.frames.map((f) => f.t === "msg" ? f.id : f.t), ["alive"]);
    assert.equal((s.frames[0] as { ttlMs?: number }).ttlMs, 60_000);
  } finally {
    await r.done();
  }
});

Deno.test("outbox: read receipts wait in the store while offline and go out first on the next session", async () => {
  const r = await rig();
  try {
    r.outbox.queueReadReceipt("bob", "in1", 7000);
    assert.equal(r.store.pendingReads("bob").length, 1);
    await r.outbox.queue(msg("m1"));
    const s = r.open();
    r.outbox.retryAll();
    await r.outbox.flush("bob");
    assert.deepEqual(s.frames.map((f) => f.t), ["read", "msg"]);
    assert.equal(r.store.pendingReads("bob").length, 0);
  } finally {
    await r.done();
  }
});

Deno.test("outbox: a read receipt starts an 'after read' lifetime, its read time bounded by our trusted now", async () => {
  const r = await rig();
  try {
    r.open();
    await r.outbox.queue(msg("m1", { ttlMs: 5000, ttlMode: "read" }));
    await r.outbox.flush("bob");
    await settle();
    r.setLatest(20_000);
    // The reader claims it read it an hour from now: our deadline counts from our latest now instead.
    r.outbox.onReadReceipt("bob", { t: "read", id: "m1", readAt: 3_620_000 });
    await settle();
    const m = r.store.get("bob", "m1")!;
    assert.equal(m.state, "read");
    assert.equal(m.readAt, 20_000);
    assert.equal(m.expiresAt, 25_000);
    assert.deepEqual(r.kinds(), ["sent", "read"]);
  } finally {
    await r.done();
  }
});

Deno.test("outbox: later flushes on a session read only newer messages, yet nothing is lost when a replaced session closes", async () => {
  const r = await rig();
  try {
    r.open();
    await r.outbox.queue(msg("m1"));
    await r.outbox.flush("bob");
    // The replacing session's first flush skips m1 (still in flight on the old one) ...
    const { old, fresh, closeOld } = r.replace();
    await r.outbox.queue(msg("m2"));
    await r.outbox.flush("bob");
    assert.deepEqual(fresh.frames.map((f) => f.t === "msg" ? f.id : f.t), ["m2"]);
    await r.outbox.queue(msg("m3"));
    await r.outbox.flush("bob");
    assert.deepEqual(fresh.frames.map((f) => f.t === "msg" ? f.id : f.t), ["m2", "m3"], "each written once");
    // ... and when the old one closes without m1's receipt, m1 goes out on the new one.
    await settle();
    closeOld();
    await settle();
    await r.outbox.flush("bob");
    assert.deepEqual(fresh.frames.map((f) => f.t === "msg" ? f.id : f.t), ["m2", "m3", "m1"]);
    assert.deepEqual(old.frames.map((f) => f.t === "msg" ? f.id : f.t), ["m1"]);
  } finally {
    await r.done();
  }
});

Deno.test("outbox: a flush writes what the store says waits; a message deleted after it was queued is not written", async () => {
  const r = await rig();
  try {
    // Queued while offline: the outbox keeps copies of m1..m3 to write them without reading them back.
    for (const id of ["m1", "m2", "m3"]) await r.outbox.queue(msg(id));
    // m2 dies before a session opens (deleted as the sweeper does, without telling the outbox).
    r.store.deleteMessages([{ peer: "bob", id: "m2" }]);
    const s = r.open();
    await r.outbox.flush("bob");
    await settle();
    assert.deepEqual(s.frames.map((f) => f.t === "msg" ? f.id : f.t), ["m1", "m3"]);
    const m3 = s.frames.find((f) => f.t === "msg" && f.id === "m3");
    assert.deepEqual(m3, { t: "msg", id: "m3", from: "alice", to: "bob", text: "hello m3", sentAt: 5000 });
  } finally {
    await r.done();
  }
});

Deno.test("outbox: after the newest message expired and was deleted, the next one on the same session is still written", async () => {
  const r = await rig();
  try {
    const s = r.open();
    await r.outbox.queue(msg("m1", { ttlMs: 60_000, ttlMode: "send", expiresAt: 70_000 }));
    await r.outbox.flush("bob");
    r.outbox.onAck("bob", "m1");
    await settle();
    // m1 dies (the sweeper deletes it and tells the outbox); the session goes on.
    r.store.deleteMessages([{ peer: "bob", id: "m1" }]);
    r.outbox.forget("m1");
    // The flush cursor has seen m1's seq: m2 must not get it again, or this flush would skip m2.
    await r.outbox.queue(msg("m2"));
    await r.outbox.flush("bob");
    await settle();
    assert.deepEqual(s.frames.map((f) => f.t === "msg" ? f.id : f.t), ["m1", "m2"]);
  } finally {
    await r.done();
  }
});

Deno.test("outbox: an ack within the delay stores 'delivered' with no 'sent' before it; a message still waiting is stored 'sent'", async () => {
  const r = await rig({ sentStateDelayMs: 150 });
  try {
    const s = r.open();
    await r.outbox.queue(msg("m1"));
    await r.outbox.queue(msg("m2"));
    await r.outbox.flush("bob");
    await settle();
    assert.deepEqual(s.frames.map((f) => f.t === "msg" ? f.id : f.t), ["m1", "m2"]);
    assert.deepEqual(r.kinds(), ["sent", "sent"], "the events come at the write");
    assert.deepEqual(["m1", "m2"].map((id) => r.store.get("bob", id)?.state), ["sending", "sending"]);
    r.outbox.onAck("bob", "m1");
    await settle();
    assert.equal(r.store.get("bob", "m1")?.state, "delivered");
    // m2's ack does not come: after the delay its state says it was written.
    await new Promise((ok) => setTimeout(ok, 250));
    await settle();
    assert.equal(r.store.get("bob", "m2")?.state, "sent");
    assert.deepEqual(r.kinds(), ["sent", "sent", "delivered"]);
    // A close before the ack: "failed", whether or not "sent" was stored.
    await r.outbox.queue(msg("m3"));
    await r.outbox.flush("bob");
    r.drop();
    await settle();
    assert.deepEqual(["m2", "m3"].map((id) => r.store.get("bob", id)?.state), ["failed", "failed"]);
    await new Promise((ok) => setTimeout(ok, 250));
    await settle();
    assert.equal(r.store.get("bob", "m3")?.state, "failed", "no late 'sent' after the close");
  } finally {
    r.outbox.close();
    await r.done();
  }
});

Deno.test("outbox: the backoff delay doubles from the base to the bound, drawn from the upper half of each step", () => {
  const want = [1000, 2000, 4000, 8000, 8000, 8000];
  for (let a = 1; a <= want.length; a++) {
    assert.equal(refusalDelayMs(a, BACKOFF, 0), want[a - 1] / 2, `attempt ${a}, lowest draw`);
    assert.equal(refusalDelayMs(a, BACKOFF, 0.999999), want[a - 1] * 0.9999995, `attempt ${a}, highest draw`);
  }
  assert.equal(refusalDelayMs(1_000_000, BACKOFF, 0.5), 6000, "bounded for any count");
});

Deno.test("outbox: a peer's limit refusal holds it back (no dial, no write) with a growing delay, reported once per change; a receipt starts the delay over", async () => {
  const r = await rig();
  const count = (kind: string) => r.events.filter((e) => e.event === kind).length;
  const msgs = (s: { frames: Frame[] }) => s.frames.filter((f) => f.t === "msg").length;
  try {
    await r.outbox.queue(msg("m1"));
    await r.outbox.queue(msg("m2"));
    let s = r.open();
    await r.outbox.flush("bob");
    await settle();
    assert.equal(msgs(s), 2);
    r.drop("QUOTA_EXCEEDED");
    await settle();
    assert.equal(count("failed"), 2, "each message reported failed once");
    assert.match((r.events.find((e) => e.event === "failed") as { reason: string }).reason, /QUOTA_EXCEEDED/);
    assert.equal(count("log"), 1, "one line for the peer's change of state");
    // random 0.5: the first delay is 750 ms (in [500, 1000]).
    assert.equal(r.outbox.heldUntil("bob"), 750);

    // Before the delay is over: the retry tick does not dial, and a session the peer opens gets no message.
    const dials = r.dialled.length;
    r.clock.now = 700;
    r.outbox.retryAll();
    assert.equal(r.dialled.length, dials, "not dialled while held back");
    s = r.open();
    r.store.addPendingRead("bob", "x1", 5);
    await r.outbox.flush("bob");
    await settle();
    assert.equal(msgs(s), 0, "no message written while held back");
    assert.equal(s.frames.filter((f) => f.t === "read").length, 1, "read receipts still go out");

    // After it, the tick writes them again: no new `sent`, and the same refusal is not reported again.
    r.clock.now = 800;
    r.outbox.retryAll();
    await r.outbox.settle();
    await settle();
    assert.equal(msgs(s), 2);
    assert.equal(count("sent"), 2, "only the first write said sent");
    // A plain connection drop of those held-back messages is no news either.
    r.drop();
    await settle();
    assert.equal(count("failed"), 2);
    s = r.open();
    await r.outbox.flush("bob");
    await settle();
    assert.equal(msgs(s), 2);
    assert.equal(count("sent"), 2);
    r.drop("QUOTA_EXCEEDED");
    await settle();
    assert.equal(count("failed"), 2);
    assert.equal(count("log"), 1);
    assert.equal(r.outbox.heldUntil("bob"), 800 + 1500, "second refusal in a row: 2 s step, 1.5 s drawn");

    // Refusals in a row grow to the bound and stay there.
    let at = 800;
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      at = r.outbox.heldUntil("bob")!;
      r.clock.now = at;
      s = r.open();
      r.outbox.retryAll();
      await r.outbox.settle();
      await settle();
      r.drop("QUOTA_EXCEEDED");
      await settle();
      delays.push(r.outbox.heldUntil("bob")! - at);
    }
    assert.deepEqual(delays, [3000, 6000, 6000, 6000, 6000]);
    assert.equal(count("failed"), 2, "never reported again for the same refusal");

    // The peer dialling us ends the delay at once (it read, or unblocked us).
    assert.notEqual(r.outbox.heldUntil("bob"), null);
    r.outbox.onPeerDialled("bob");
    assert.equal(r.outbox.heldUntil("bob"), null);

    // A receipt is progress: the next refusal waits the shortest delay again.
    s = r.open();
    r.outbox.retryAll();
    await r.outbox.settle();
    await settle();
    r.outbox.onAck("bob", "m1");
    await settle();
    assert.equal(count("delivered"), 1);
    const t = r.clock.now;
    r.drop("QUOTA_EXCEEDED");
    await settle();
    assert.equal(r.outbox.heldUntil("bob"), t + 750, "back to the first step");
    assert.equal(count("failed"), 2);

    // Another refusal code is a change of state: said once more, and m2's failure with it.
    r.clock.now = r.outbox.heldUntil("bob")!;
    s = r.open();
    r.outbox.retryAll();
    await r.outbox.settle();
    await settle();
    r.drop("RATE_LIMITED");
    await settle();
    assert.equal(count("log"), 2);
    assert.equal(count("failed"), 3);

    // Everything delivered: the peer is no longer held back, and a later refusal is news again.
    r.clock.now = r.outbox.heldUntil("bob")!;
    s = r.open();
    r.outbox.retryAll();
    await r.outbox.settle();
    await settle();
    r.outbox.onAck("bob", "m2");
    await settle();
    r.outbox.retryAll();
    assert.equal(r.outbox.heldUntil("bob"), null);
    await r.outbox.queue(msg("m3"));
    await r.outbox.flush("bob");
    await settle();
    r.drop("RATE_LIMITED");
    await settle();
    assert.equal(count("log"), 3, "said again after a time without refusals");
  } finally {
    await r.done();
  }
});
