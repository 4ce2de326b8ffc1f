/**
 * Per-peer inbox limits (issue 11): unread bytes per peer and a message rate per peer, enforced before the
 * store. A flood of large messages stores at most the quota and the victim stays responsive; a refusal ends
 * the session with a code the sender's outbox reports and retries later; no acknowledged message is lost.
 */
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { makeTestCa, makeTestLeaf, type TestLeaf } from "./helpers/pki.ts";
import { FakeDirectory, rawDial, type RawPeer, startTestEngine, until } from "./helpers/chat.ts";
import { encodeFrame, type Frame, type MsgFrame } from "../client/protocol/frames.ts";
import { MAX_TEXT_BYTES, PEER_UNREAD_BYTES } from "../client/protocol/constants.ts";
import { PeerQuota } from "../client/peer_quota.ts";

function msg(from: string, to: string, text: string): MsgFrame {
  return { t: "msg", id: crypto.randomBytes(16).toString("hex"), from, to, text, sentAt: Date.now() };
}

async function connect(port: number, leaf: TestLeaf, to: string): Promise<RawPeer> {
  const p = await rawDial(port, leaf);
  p.send(p.hello({ from: leaf.name, to, signKeyPem: leaf.keyPem }));
  await p.waitFrame((f) => f.t === "hello");
  return p;
}

/** Writes `frames` as fast as the socket takes them (waiting only for drain), until done or closed. */
async function flood(p: RawPeer, frames: Frame[]): Promise<number> {
  let written = 0;
  for (const f of frames) {
    if (p.isClosed() || p.socket.destroyed) break;
    written++;
    if (!p.socket.write(encodeFrame(f))) {
      await Promise.race([new Promise((r) => p.socket.once("drain", r)), p.closed]);
    }
  }
  return written;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, x) => n + x.length, 0));
  let at = 0;
  for (const x of parts) {
    out.set(x, at);
    at += x.length;
  }
  return out;
}

const acked = (p: RawPeer) =>
  new Set(p.frames.filter((f) => f.t === "ack").map((f) => (f as { id: string }).id));

Deno.test("quota: 1,500 messages of 16 KiB from one peer as fast as it can store at most the quota; the victim stays responsive", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const mallory = await makeTestLeaf(ca, "mallory");
  const carol = await makeTestLeaf(ca, "carol");
  const bob = await startTestEngine(ca, bobLeaf);
  try {
    const port = bob.engine.address.port;
    const big = "m".repeat(MAX_TEXT_BYTES);
    const frames = Array.from({ length: 1500 }, () => msg("mallory", "bob", big));
    const p = await connect(port, mallory, "bob");
    await flood(p, frames);
    const err = await p.waitFrame((f) => f.t === "error", 30_000);
    assert.equal(err.t === "error" && err.code, "QUOTA_EXCEEDED");
    await p.closed;
    const stored = bob.store((s) => s.unreadBytes("mallory"));
    assert.ok(stored <= PEER_UNREAD_BYTES, `stored ${stored} bytes, quota ${PEER_UNREAD_BYTES}`);
    assert.ok(stored >= PEER_UNREAD_BYTES - 2 * MAX_TEXT_BYTES, `the quota was used (${stored})`);
    // Every message acknowledged is stored (and only those can be counted on by the sender).
    const ids = new Set(bob.store((s) => s.history("mallory")).map((m) => m.id));
    for (const id of acked(p)) assert.ok(ids.has(id), `acknowledged ${id} is stored`);

    // A new session of the same peer is refused at its first message: the quota is per peer, not per session.
    const again = await connect(port, mallory, "bob");
    again.send(msg("mallory", "bob", "one more"));
    const err2 = await again.waitFrame((f) => f.t === "error");
    assert.equal(err2.t === "error" && err2.code, "QUOTA_EXCEEDED");
    assert.equal(bob.store((s) => s.history("mallory")).length, ids.size);

    // The victim is responsive: another peer's message is stored and acknowledged.
    const c = await connect(port, carol, "bob");
    const hi = msg("carol", "bob", "still there?");
    c.send(hi);
    await c.waitFrame((f) => f.t === "ack" && f.id === hi.id);
    c.socket.destroy();

    // Reading makes room again.
    for (const m of bob.engine.history("mallory").slice(0, 4)) bob.engine.markRead(m.id);
    const after = await connect(port, mallory, "bob");
    const ok = msg("mallory", "bob", "after a read");
    after.send(ok);
    await after.waitFrame((f) => f.t === "ack" && f.id === ok.id);
    after.socket.destroy();
  } finally {
    await bob.stop();
  }
});

Deno.test("quota: a message rate per peer name, across sessions; acknowledged messages are all stored", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const mallory = await makeTestLeaf(ca, "mallory");
  const bob = await startTestEngine(ca, bobLeaf, { inboxLimits: { burst: 50, perMinute: 6 } });
  try {
    const port = bob.engine.address.port;
    const p = await connect(port, mallory, "bob");
    await flood(p, Array.from({ length: 200 }, (_, i) => msg("mallory", "bob", `spam ${i}`)));
    const err = await p.waitFrame((f) => f.t === "error");
    assert.equal(err.t === "error" && err.code, "RATE_LIMITED");
    await p.closed;
    const stored = bob.store((s) => s.history("mallory"));
    assert.equal(stored.length, 50);
    const ids = new Set(stored.map((m) => m.id));
    for (const id of acked(p)) assert.ok(ids.has(id));
    // A fresh session does not get a fresh bucket.
    const q = await connect(port, mallory, "bob");
    q.send(msg("mallory", "bob", "again"));
    const err2 = await q.waitFrame((f) => f.t === "error");
    assert.equal(err2.t === "error" && err2.code, "RATE_LIMITED");
  } finally {
    await bob.stop();
  }
});

// It hung under load (2 of 4 full-suite runs; 1 in 12 runs alone with 4 in parallel beside 2 busy loops): when
// the 10th message arrived before the first 9 were committed, the refusal ended the session before their
// receipts went out; alice then resent all 20, bob counted the 9 duplicates against the quota again and refused
// the next new one before their receipts went out, for ever. Fixed in client/inbox.ts (the receipts go out
// before the refusal, a message already held takes no room); the next test pins both down.
Deno.test({
  name:
    "quota: the sender's outbox reports the refusal, keeps its messages and delivers them once there is room",
  fn: async () => {
    const ca = await makeTestCa();
    const aliceLeaf = await makeTestLeaf(ca, "alice");
    const bobLeaf = await makeTestLeaf(ca, "bob");
    const entries = new Map();
    const bob = await startTestEngine(ca, bobLeaf, {
      directory: new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint }, entries),
      inboxLimits: { unreadBytes: 10_000 },
    });
    const alice = await startTestEngine(ca, aliceLeaf, {
      directory: new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint }, entries),
    });
    try {
      const sent = await Promise.all(
        Array.from({ length: 20 }, (_, i) => alice.engine.send("bob", `${i} ${"x".repeat(1000)}`)),
      );
      const f = await alice.log.waitFor("failed", (e) => /QUOTA_EXCEEDED/.test(e.reason));
      assert.match(f.reason, /retried later/);
      await until(() => bob.engine.history("alice").length >= 9, 10_000, "bob stored up to his quota");
      assert.ok(bob.store((s) => s.unreadBytes("alice")) <= 10_000);
      // bob reads what he has, again and again: the rest arrives, each message exactly once.
      await until(
        () => {
          for (const m of bob.engine.history("alice")) bob.engine.markRead(m.id);
          return bob.engine.history("alice").length === sent.length;
        },
        30_000,
        "every message delivered",
      ).catch((e) => {
        // Say what each side saw (the wait alone says nothing about why).
        const tail = (xs: unknown[]) => JSON.stringify(xs.slice(-15));
        throw new Error(
          `${(e as Error).message}: bob has ${bob.engine.history("alice").length}/${sent.length}; alice saw ${
            tail(alice.log.events.filter((x) => x.event !== "time"))
          }; bob saw ${tail(bob.log.events.filter((x) => x.event !== "time" && x.event !== "message"))}`,
        );
      });
      const ids = bob.engine.history("alice").map((m) => m.id).sort();
      assert.deepEqual(ids, sent.map((m) => m.id).sort());
      await until(() =>
        alice.engine.history("bob").every((m) => m.state === "delivered" || m.state === "read")
      );
      // Each refusal is reported once per message, not at every retry.
      const failedIds = alice.log.of("failed").filter((e) => /QUOTA_EXCEEDED/.test(e.reason)).map((e) =>
        e.id
      );
      assert.equal(new Set(failedIds).size, failedIds.length, `one failed event per message: ${failedIds}`);
      assert.equal(
        alice.log.of("log").filter((e) => /bob refuses more of our messages/.test(e.text)).length,
        1,
        "one line for bob's change of state",
      );
    } finally {
      await alice.stop();
      await bob.stop();
    }
  },
});

Deno.test("quota: a refusal comes after the receipts of every message before it, and a message already held takes no room", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const alice = await makeTestLeaf(ca, "alice");
  const bob = await startTestEngine(ca, bobLeaf, { inboxLimits: { unreadBytes: 10_000 } });
  try {
    const port = bob.engine.address.port;
    const first = Array.from({ length: 10 }, (_, i) => msg("alice", "bob", `${i} ${"x".repeat(1000)}`));
    // All ten in one write: the tenth is judged while the nine before it are still committing.
    const p = await connect(port, alice, "bob");
    p.raw(concat(first.map((f) => encodeFrame(f))));
    const err = await p.waitFrame((f) => f.t === "error");
    assert.equal(err.t === "error" && err.code, "QUOTA_EXCEEDED");
    const before = p.frames.slice(0, p.frames.indexOf(err));
    assert.deepEqual(
      before.filter((f) => f.t === "ack").map((f) => (f as { id: string }).id),
      first.slice(0, 9).map((f) => f.id),
      "the nine stored messages are acknowledged before the refusal",
    );
    await p.closed;
    assert.equal(bob.store((s) => s.history("alice")).length, 9);

    // The quota is still full (nothing read). A sender that lost those receipts resends the nine and the
    // tenth: the nine are acknowledged again (they are held, they take no room), the tenth is refused.
    const again = await connect(port, alice, "bob");
    again.raw(concat(first.map((f) => encodeFrame(f))));
    const err2 = await again.waitFrame((f) => f.t === "error");
    assert.equal(err2.t === "error" && err2.code, "QUOTA_EXCEEDED");
    assert.deepEqual(
      again.frames.slice(0, again.frames.indexOf(err2)).filter((f) => f.t === "ack").map((f) =>
        (f as { id: string }).id
      ),
      first.slice(0, 9).map((f) => f.id),
    );
    await again.closed;
    assert.equal(bob.store((s) => s.history("alice")).length, 9, "no duplicate stored");
    assert.ok(bob.store((s) => s.unreadBytes("alice")) <= 10_000);

    // Once bob has read them, the tenth gets in.
    for (const m of bob.engine.history("alice")) bob.engine.markRead(m.id);
    const third = await connect(port, alice, "bob");
    third.send(first[9]);
    await third.waitFrame((f) => f.t === "ack" && f.id === first[9].id);
    third.socket.destroy();
  } finally {
    await bob.stop();
  }
});

Deno.test("quota: the accounting reserves messages in flight and releases duplicates", () => {
  let onDisk = 100;
  const q = new PeerQuota({ unreadBytes: () => onDisk }, { unreadBytes: 1000, burst: 10, perMinute: 60 });
  q.admit("a", 400, 0);
  q.admit("a", 400, 0);
  assert.equal(q.used("a"), 900);
  assert.throws(() => q.admit("a", 200, 0), /QUOTA|bytes/);
  q.settle("a", 400, false); // a duplicate
  assert.equal(q.used("a"), 500);
  q.settle("a", 400, true);
  assert.equal(q.used("a"), 500);
  onDisk = 0; // read
  q.invalidate("a");
  assert.equal(q.used("a"), 0);
  for (let i = 0; i < 8; i++) q.admit("a", 0, 0); // 2 taken above; the refused one took none
  assert.throws(() => q.admit("a", 0, 0), (e: Error & { code?: string }) => e.code === "RATE_LIMITED");
  q.admit("a", 0, 1000); // one token a second comes back
  assert.throws(() => q.admit("a", 0, 1000), (e: Error & { code?: string }) => e.code === "RATE_LIMITED");
});

Deno.test("quota: a reading of the disk taken while a message is committing does not count that message twice", () => {
  let onDisk = 0;
  const q = new PeerQuota({ unreadBytes: () => onDisk }, { unreadBytes: 1000, burst: 100, perMinute: 6000 });
  q.admit("a", 400, 0); // in flight
  onDisk = 400; // its commit is on disk, its settle() not run yet
  q.invalidate("a"); // the user read something meanwhile: the next admission reads the disk again
  assert.equal(q.used("a"), 800, "on disk and still reserved: counted twice for this one judgement only");
  q.settle("a", 400, true);
  assert.equal(q.used("a"), 400, "once settled, the message counts once");
  onDisk = 0; // read
  q.invalidate("a");
  assert.equal(q.used("a"), 0, "after reading everything the quota is free again");
});
