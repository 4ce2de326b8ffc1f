/**
 * The receiving side (client/inbox.ts) without a network: a recording session, the real store (or a store
 * whose commits the test settles by hand), a local clock. Receipts only after the commit, in arrival order,
 * one write per committed batch; duplicates acknowledged; bounded pending per session; a failed commit fails
 * the session without a receipt.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TrustedClock } from "../clock/mod.ts";
import type { EngineEvent } from "../client/engine_types.ts";
import { Inbox, type InboxDeps, type InboxSession, type Receipt } from "../client/inbox.ts";
import { CAP_ACKS, MAX_ACK_IDS } from "../client/protocol/constants.ts";
import { ProtocolError } from "../client/protocol/errors.ts";
import { PeerQuota } from "../client/peer_quota.ts";
import { MessageRequests } from "../client/requests.ts";
import type { MsgFrame } from "../client/protocol/frames.ts";
import { timeProofData } from "../client/protocol/binding.ts";
import { ChatStore, type IncomingItem, type IncomingResult, StoreError } from "../client/store/store.ts";
import { startLocalServers } from "./helpers/roughtime.ts";

class RecordingSession implements InboxSession {
  state = "open";
  readonly peer = { name: "bob" };
  /** Each sendBatch call: the ids it acknowledged. */
  readonly writes: string[][] = [];
  /** Ids answered with a refusal instead of an ack, with its code. */
  readonly refused: string[] = [];
  failed: { code: string; message: string } | null = null;
  sendBatch(frames: readonly Receipt[]): Promise<void> {
    if (this.state !== "open") return Promise.reject(new Error("closed"));
    this.writes.push(frames.flatMap((f) => f.t === "ack" ? [f.id] : f.t === "acks" ? f.ids : []));
    for (const f of frames) if (f.t === "refuse") this.refused.push(`${f.id}:${f.code}`);
    return Promise.resolve();
  }
  fail(code: string, message: string): void {
    this.failed = { code, message };
    this.state = "closed";
  }
  get acked(): string[] {
    return this.writes.flat();
  }
}

/** A session of a peer whose hello listed CAP_ACKS: records the frames of each write. */
class BatchingSession extends RecordingSession {
  readonly peerCaps = new Set([CAP_ACKS]);
  readonly frames: Receipt[][] = [];
  override sendBatch(frames: readonly Receipt[]): Promise<void> {
    this.frames.push([...frames]);
    return super.sendBatch(frames);
  }
}

/** A store whose commits settle only when the test says so. */
class HandStore {
  readonly queued: {
    item: IncomingItem;
    resolve: (r: IncomingResult) => void;
    reject: (e: Error) => void;
  }[] = [];
  queueIncoming(item: IncomingItem): Promise<IncomingResult> {
    return new Promise((resolve, reject) => this.queued.push({ item, resolve, reject }));
  }
}

const localTime = () => {
  const t = Date.now();
  return { earliestMs: t - 10, latestMs: t + 10, nowMs: t };
};

function deps(
  store: InboxDeps["store"],
  extra: Partial<InboxDeps> = {},
): InboxDeps & { events: EngineEvent[]; shown: string[]; hidden: string[] } {
  const events: EngineEvent[] = [];
  const shown: string[] = [];
  const hidden: string[] = [];
  return {
    name: "alice",
    timeKeys: [],
    maxUnreadMs: 60_000,
    clock: { now: localTime, deadlinePassed: (d) => localTime().latestMs >= d },
    store,
    emit: (e) => events.push(e),
    announce: (m) => shown.push(m.id),
    hide: (_peer, id) => hidden.push(id),
    events,
    shown,
    hidden,
    ...extra,
  };
}

const hex = (n: number) => n.toString(16).padStart(32, "0");
const msg = (n: number, extra: Partial<MsgFrame> = {}): MsgFrame => ({
  t: "msg",
  id: hex(n),
  from: "bob",
  to: "alice",
  text: `hello ${n}`,
  sentAt: Date.now(),
  ...extra,
});

/** Lets queued commits (setImmediate) and the receipts after them (microtasks) run. */
const settle = () => new Promise((r) => setTimeout(r, 5));

async function withStore(fn: (store: ChatStore, commits: number[]) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "securechat-inbox-" });
  const commits: number[] = [];
  const store = new ChatStore(join(dir, "chat.db"), { groupCommit: { onCommit: (n) => commits.push(n) } });
  try {
    await fn(store, commits);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("inbox: messages of one read share one commit; receipts go out after it, in arrival order, in one write", async () => {
  await withStore(async (store, commits) => {
    const d = deps(store);
    const inbox = new Inbox(d);
    const s = new RecordingSession();
    // As the session's pump does: each receive returns at once, so the next frame is decoded in the same turn.
    for (let i = 0; i < 40; i++) await inbox.receive(s, msg(i));
    assert.deepEqual(s.writes, [], "no receipt before the commit");
    assert.equal(inbox.pending(s), 40);
    await settle();
    assert.deepEqual(commits, [40]);
    assert.deepEqual(s.writes, [Array.from({ length: 40 }, (_, i) => hex(i))]);
    assert.deepEqual(d.shown, Array.from({ length: 40 }, (_, i) => hex(i)));
    assert.deepEqual(store.history("bob").map((m) => m.id), d.shown);
    assert.equal(inbox.pending(s), 0);
  });
});

Deno.test("inbox: a peer that takes `acks` gets a committed run in one frame, at most MAX_ACK_IDS ids each", async () => {
  await withStore(async (store) => {
    const inbox = new Inbox(deps(store, { maxPending: 4 * MAX_ACK_IDS }));
    const s = new BatchingSession();
    const n = MAX_ACK_IDS + 5;
    for (let i = 0; i < n; i++) await inbox.receive(s, msg(i));
    await inbox.receive(s, msg(0)); // a resend: acknowledged again, in its place
    for (let i = 0; i < 400 && s.acked.length < n + 1; i++) await settle();
    const ids = Array.from({ length: n }, (_, i) => hex(i));
    // (The store commits at most 1,024 operations at once: here that is one write per commit.)
    assert.deepEqual(s.frames.flat(), [
      { t: "acks", ids: ids.slice(0, MAX_ACK_IDS) },
      { t: "acks", ids: [...ids.slice(MAX_ACK_IDS), hex(0)] },
    ]);
    // A peer of an older version (no caps) gets one `ack` per message.
    const old = new RecordingSession();
    await inbox.receive(old, msg(n));
    await settle();
    assert.deepEqual(old.writes, [[hex(n)]]);
  });
});

Deno.test("inbox: a receipt waits for its own commit; acks keep arrival order when commits settle out of order", async () => {
  const store = new HandStore();
  const d = deps(store);
  const inbox = new Inbox(d);
  const s = new RecordingSession();
  await inbox.receive(s, msg(1));
  await inbox.receive(s, msg(2));
  await inbox.receive(s, msg(3));
  store.queued[1].resolve("stored");
  await settle();
  assert.deepEqual(s.acked, [], "2 is on disk but 1 is not: nothing yet");
  store.queued[0].resolve("stored");
  await settle();
  assert.deepEqual(s.acked, [hex(1), hex(2)]);
  store.queued[2].resolve("duplicate");
  await settle();
  assert.deepEqual(s.acked, [hex(1), hex(2), hex(3)], "a duplicate is acknowledged too");
  assert.deepEqual(d.shown, [hex(2), hex(1)], "shown as each is stored; the duplicate not again");
});

Deno.test("inbox: a resent id is acknowledged again, stored and shown once", async () => {
  await withStore(async (store) => {
    const d = deps(store);
    const inbox = new Inbox(d);
    const s = new RecordingSession();
    await inbox.receive(s, msg(7));
    await inbox.receive(s, msg(7, { text: "changed on the way" }));
    await settle();
    await inbox.receive(s, msg(7));
    await settle();
    assert.deepEqual(s.acked, [hex(7), hex(7), hex(7)]);
    assert.deepEqual(d.shown, [hex(7)]);
    assert.deepEqual(store.history("bob").map((m) => m.text), ["hello 7"]);
  });
});

Deno.test("inbox: beyond maxPending un-acknowledged messages, receive waits (the pump stops reading) until one is acknowledged", async () => {
  const store = new HandStore();
  const inbox = new Inbox(deps(store, { maxPending: 4 }));
  const s = new RecordingSession();
  for (let i = 0; i < 3; i++) await inbox.receive(s, msg(i));
  let released = false;
  const fourth = inbox.receive(s, msg(3)).then(() => released = true);
  await settle();
  assert.equal(released, false, "4 waiting: the fourth receive holds the pump");
  assert.equal(inbox.pending(s), 4);
  store.queued[0].resolve("stored");
  await fourth;
  assert.equal(released, true);
  assert.deepEqual(s.acked, [hex(0)]);
  assert.equal(inbox.pending(s), 3);
  // Another session is not held up by this one's backlog.
  const other = new RecordingSession();
  let otherDone = false;
  await inbox.receive(other, msg(10)).then(() => otherDone = true);
  assert.equal(otherDone, true);
  assert.throws(() => new Inbox(deps(store, { maxPending: 0 })), RangeError);
});

Deno.test("inbox: big messages are bounded by their total text, not only by count", async () => {
  const store = new HandStore();
  const inbox = new Inbox(deps(store, { maxPendingChars: 100 }));
  const s = new RecordingSession();
  await inbox.receive(s, msg(1, { text: "a".repeat(60) }));
  let released = false;
  const second = inbox.receive(s, msg(2, { text: "b".repeat(60) })).then(() => released = true);
  await settle();
  assert.equal(released, false, "120 characters waiting: over the bound of 100");
  store.queued[0].resolve("stored");
  await second;
  assert.deepEqual(s.acked, [hex(1)]);
  assert.throws(() => new Inbox(deps(store, { maxPendingChars: 0 })), RangeError);
});

Deno.test("inbox: a failed commit fails the session with STORE_FAILED and no receipt; the ones committed before are acknowledged", async () => {
  const store = new HandStore();
  const d = deps(store);
  const inbox = new Inbox(d);
  const s = new RecordingSession();
  await inbox.receive(s, msg(1));
  await inbox.receive(s, msg(2));
  await inbox.receive(s, msg(3));
  store.queued[0].resolve("stored");
  const err = new StoreError("STORE_FAILED", "store write failed: database or disk is full");
  store.queued[1].reject(err);
  store.queued[2].reject(err);
  await settle();
  assert.deepEqual(s.acked, [hex(1)]);
  assert.equal(s.failed?.code, "STORE_FAILED");
  assert.match(s.failed!.message, /disk is full/);
  const errors = d.events.filter((e) => e.event === "error");
  assert.equal(errors.length, 1);
  assert.equal(errors[0].event === "error" && errors[0].code, "STORE_FAILED");
  assert.deepEqual(d.shown, [hex(1)]);
  assert.equal(inbox.pending(s), 0);
});

Deno.test("inbox: a session closed before the commit gets no receipt (the sender resends) and releases its waiters", async () => {
  const store = new HandStore();
  const inbox = new Inbox(deps(store, { maxPending: 1 }));
  const s = new RecordingSession();
  const held = inbox.receive(s, msg(1));
  s.state = "closed";
  store.queued[0].resolve("stored");
  await held;
  await settle();
  assert.deepEqual(s.writes, []);
  assert.equal(inbox.pending(s), 0);
});

Deno.test("inbox: refused frames throw ProtocolError and queue nothing", () => {
  const store = new HandStore();
  const inbox = new Inbox(deps(store));
  const s = new RecordingSession();
  const code = (f: MsgFrame) => {
    try {
      void inbox.receive(s, f);
    } catch (e) {
      assert.ok(e instanceof ProtocolError);
      return e.code;
    }
    return "accepted";
  };
  assert.equal(code(msg(1, { from: "mallory" })), "SENDER_MISMATCH");
  assert.equal(code(msg(2, { to: "carol" })), "BAD_FIELD");
  assert.equal(code(msg(3, { ttlMs: 5000, ttlMode: "send" })), "BAD_TIME_PROOF");
  assert.equal(store.queued.length, 0);
  assert.equal(inbox.pending(s), 0);
});

/** A store and a real local Roughtime server whose key signs the time proofs `proved` adds to a frame. */
async function withProofs(
  fn: (store: ChatStore, proved: (f: MsgFrame) => Promise<MsgFrame>, timeKey: Uint8Array) => Promise<void>,
) {
  const local = await startLocalServers([{}]);
  try {
    const clock = new TrustedClock({ servers: local.specs });
    const proved = async (f: MsgFrame) => ({ ...f, proof: await clock.proveTime(timeProofData(f)) });
    await withStore((store) => fn(store, proved, local.specs[0].publicKey));
  } finally {
    await local.close();
  }
}

Deno.test("inbox: time proofs bound the deadline; dead on arrival keeps only the id (acknowledged, not shown); unknown time refuses", async () => {
  await withProofs(async (store, proved, timeKey) => {
    let timeKnown = true;
    const quota = new PeerQuota(store, { unreadBytes: 1_000_000, burst: 1000, perMinute: 60_000 });
    const requests = new MessageRequests(store, () => {});
    const d = deps(store, {
      quota,
      requests,
      timeKeys: [timeKey],
      clock: {
        now: () => timeKnown ? localTime() : null,
        deadlinePassed: (dl) => timeKnown ? localTime().latestMs >= dl : null,
      },
    });
    const inbox = new Inbox(d);
    const s = new RecordingSession();
    // Claims to be sent an hour from now: the proof caps the send time, so it dies within ~a minute.
    const late = await proved(msg(1, { ttlMs: 60_000, ttlMode: "send", sentAt: Date.now() + 3600_000 }));
    // Sent ten minutes ago with a lifetime of 5 s: already dead.
    const dead = await proved(msg(2, { ttlMs: 5000, ttlMode: "send", sentAt: Date.now() - 600_000 }));
    const caps: [string, number][] = [];
    d.cap = (_peer, id, afterMs) => caps.push([id, afterMs]);
    await inbox.receive(s, late);
    await inbox.receive(s, dead);
    await settle();
    assert.deepEqual(s.acked, [hex(1), hex(2)]);
    assert.deepEqual(d.shown, [hex(1)]);
    // The stored one gets a monotonic cap: its lifetime plus the proof's whole uncertainty, from arrival
    // (the dead one stored only its id: nothing to cap).
    assert.equal(caps.length, 1);
    assert.equal(caps[0][0], hex(1));
    assert.ok(caps[0][1] >= 60_000 && caps[0][1] <= 60_000 + 2 * 10_000, `cap ${caps[0][1]}`);
    const kept = store.get("bob", hex(1))!;
    assert.ok(kept.expiresAt! <= Date.now() + 60_000 + 15_000, `deadline ${kept.expiresAt} not capped`);
    assert.equal(store.get("bob", hex(2)), null, "a dead message's text is not stored");
    // The user is told one came (the sender sees it delivered), without its text.
    const said = () => d.events.filter((e) => e.event === "log" && /arrived after/.test(e.text));
    assert.deepEqual(said().map((e) => e.event === "log" && e.text), [
      "a message from bob arrived after its lifetime had run out on our trusted time: not shown, and its " +
      "text was never stored",
    ]);
    // Its id is remembered: a resend is a duplicate (acknowledged, nothing stored).
    await inbox.receive(s, dead);
    await settle();
    assert.deepEqual(s.acked, [hex(1), hex(2), hex(2)]);
    assert.equal(store.get("bob", hex(2)), null);
    assert.equal(said().length, 1, "a resent dead message is not said again");
    // Without trusted time an expiring message is refused (not stored, no ack: the sender keeps it), in its
    // place among the receipts; one that does not expire is still taken.
    timeKnown = false;
    await inbox.receive(s, await proved(msg(3, { ttlMs: 60_000, ttlMode: "send" })));
    await inbox.receive(s, msg(4));
    await settle();
    assert.deepEqual(s.refused, [`${hex(3)}:TIME_UNVERIFIED`]);
    assert.equal(store.get("bob", hex(3)), null, "nothing of it stored");
    assert.deepEqual(d.hidden, []);
    assert.deepEqual(s.acked, [hex(1), hex(2), hex(2), hex(4)]);
    // The refused one holds no room: neither quota bytes nor a place in bob's message request.
    assert.equal(quota.used("bob"), "hello 1".length + "hello 4".length, "the texts of 1 and 4 only");
    assert.deepEqual(requests.pending(), [{ name: "bob", messages: 3 }], "1, 2 (its id) and 4; not 3");
  });
});

Deno.test("inbox: messages that arrive dead together are said in one log line, without their text", async () => {
  await withProofs(async (store, proved, timeKey) => {
    const d = deps(store, { timeKeys: [timeKey] });
    const inbox = new Inbox(d);
    const s = new RecordingSession();
    const dead = (n: number) =>
      proved(msg(n, { text: `secret ${n}`, ttlMs: 5000, ttlMode: "send", sentAt: Date.now() - 600_000 }));
    const together = await Promise.all([1, 2, 3].map(dead));
    for (const f of together) void inbox.receive(s, f);
    await settle();
    assert.deepEqual(s.acked, [hex(1), hex(2), hex(3)]);
    const logs = () => d.events.flatMap((e) => e.event === "log" ? [e.text] : []);
    assert.deepEqual(logs(), [
      "3 messages from bob arrived after their lifetime had run out on our trusted time: not shown, and " +
      "their text was never stored",
    ]);
    // A later batch is a line of its own; a live message says nothing.
    await inbox.receive(s, await dead(4));
    await inbox.receive(s, msg(5));
    await settle();
    assert.equal(logs().length, 2);
    assert.match(logs()[1], /^a message from bob arrived after its lifetime/);
    assert.ok(logs().every((t) => !t.includes("secret")));
  });
});
