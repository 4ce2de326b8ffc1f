/**
 * The group committer (client/store/group_commit.ts) and the store's batch forms: writes queued together
 * share one transaction, a failed batch leaves nothing behind, order is kept, batches are bounded, and ids
 * are deduplicated within a batch as across batches.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { type BatchKind, GroupCommitter } from "../client/store/group_commit.ts";
import { ChatStore, type IncomingMessage, type OutgoingMessage, StoreError } from "../client/store/store.ts";
import { FakeDirectory, startTestEngine, until } from "./helpers/chat.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "securechat-groupcommit-" });
}

/** A bare table and a committer over it, counting commits through the injected hook. */
async function withTable(
  fn: (db: DatabaseSync, gc: GroupCommitter, commits: { ops: number; durable: boolean }[]) => Promise<void>,
  maxBatch?: number,
) {
  const dir = await tempDir();
  const db = new DatabaseSync(join(dir, "t.db"));
  db.exec("PRAGMA journal_mode=WAL; CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  const commits: { ops: number; durable: boolean }[] = [];
  const gc = new GroupCommitter(db, { maxBatch, onCommit: (ops, durable) => commits.push({ ops, durable }) });
  try {
    await fn(db, gc, commits);
  } finally {
    gc.close();
    db.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function insertKind(
  db: DatabaseSync,
  opts: { failOn?: string; durable?: boolean } = {},
): BatchKind<string, number> {
  const ins = db.prepare("INSERT INTO t (v) VALUES (?)");
  return {
    name: "insert",
    durable: opts.durable ?? true,
    apply: (items) =>
      items.map((v) => {
        if (v === opts.failOn) throw new Error(`refusing ${v}`);
        return Number(ins.run(v).lastInsertRowid);
      }),
  };
}

const rows = (db: DatabaseSync) =>
  (db.prepare("SELECT v FROM t ORDER BY k").all() as { v: string }[]).map((r) => r.v);

Deno.test("group commit: 100 operations enqueued in one turn commit in ONE durable transaction", async () => {
  await withTable(async (db, gc, commits) => {
    const kind = insertKind(db);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => gc.enqueue(kind, `v${i}`)));
    assert.deepEqual(commits, [{ ops: 100, durable: true }]);
    assert.equal(gc.commits, 1);
    assert.equal(rows(db).length, 100);
    // Each enqueuer gets its own result (the rowid of its row), in order.
    assert.deepEqual(results, Array.from({ length: 100 }, (_, i) => i + 1));
  });
});

Deno.test("group commit: a promise resolves only after its transaction is committed", async () => {
  await withTable(async (db, gc) => {
    const kind = insertKind(db);
    const peek = new DatabaseSync(db.location()!, { readOnly: true });
    try {
      const p = gc.enqueue(kind, "x");
      // Not yet applied: nothing visible to another connection, and nothing committed.
      assert.equal(gc.commits, 0);
      assert.equal((peek.prepare("SELECT COUNT(*) AS n FROM t").get() as { n: number }).n, 0);
      await p;
      assert.equal((peek.prepare("SELECT COUNT(*) AS n FROM t").get() as { n: number }).n, 1);
    } finally {
      peek.close();
    }
  });
});

Deno.test("group commit: a failure rolls back the whole batch and rejects every operation of it with STORE_FAILED", async () => {
  await withTable(async (db, gc, commits) => {
    await gc.enqueue(insertKind(db), "before");
    const kind = insertKind(db, { failOn: "bad" });
    const other = insertKind(db, { durable: false });
    // The failing item comes after others of the same batch (of two kinds): they must not stay.
    const batch = [
      gc.enqueue(kind, "a"),
      gc.enqueue(other, "b"),
      gc.enqueue(kind, "bad"),
      gc.enqueue(kind, "c"),
    ];
    const settled = await Promise.allSettled(batch);
    for (const s of settled) {
      assert.equal(s.status, "rejected");
      const e = (s as PromiseRejectedResult).reason;
      assert.ok(e instanceof StoreError);
      assert.equal(e.code, "STORE_FAILED");
      assert.match(e.message, /refusing bad/);
    }
    assert.deepEqual(rows(db), ["before"]);
    assert.equal(commits.length, 1, "the failed batch is not counted as a commit");
    // The committer goes on: the next batch is stored.
    await gc.enqueue(insertKind(db), "after");
    assert.deepEqual(rows(db), ["before", "after"]);
  });
});

Deno.test("group commit: order is kept across kinds and batches; batches are bounded by maxBatch", async () => {
  await withTable(async (db, gc, commits) => {
    const a = insertKind(db);
    const b = insertKind(db, { durable: false });
    const order: string[] = [];
    const ps: Promise<number>[] = [];
    for (let i = 0; i < 25; i++) {
      const v = `${i % 3 === 0 ? "b" : "a"}${i}`;
      ps.push(
        gc.enqueue(i % 3 === 0 ? b : a, v).then((r) => {
          order.push(v);
          return r;
        }),
      );
    }
    await Promise.all(ps);
    assert.deepEqual(commits.map((c) => c.ops), [10, 10, 5]);
    const expected = Array.from({ length: 25 }, (_, i) => `${i % 3 === 0 ? "b" : "a"}${i}`);
    assert.deepEqual(rows(db), expected, "rows in enqueue order");
    assert.deepEqual(order, expected, "promises settle in enqueue order");
  }, 10);
});

Deno.test("group commit: operations enqueued while a batch commits go to the next one", async () => {
  await withTable(async (db, gc, commits) => {
    const kind = insertKind(db);
    let inner: Promise<number> | null = null;
    const first = gc.enqueue(kind, "one").then((r) => {
      inner = gc.enqueue(kind, "two");
      return r;
    });
    await first;
    await inner;
    assert.deepEqual(commits.map((c) => c.ops), [1, 1]);
    assert.deepEqual(rows(db), ["one", "two"]);
  });
});

Deno.test("group commit: a state-only batch is not durable (no fsync asked); close commits what is queued, then refuses", async () => {
  await withTable(async (db, gc, commits) => {
    await gc.enqueue(insertKind(db, { durable: false }), "n");
    assert.deepEqual(commits, [{ ops: 1, durable: false }]);
    const queued = gc.enqueue(insertKind(db), "last");
    gc.close();
    assert.equal(await queued, 2);
    await assert.rejects(gc.enqueue(insertKind(db), "late"), (e) => e instanceof StoreError);
    assert.deepEqual(rows(db), ["n", "last"]);
  });
  assert.throws(() => new GroupCommitter({ exec() {} }, { maxBatch: 0 }), RangeError);
});

// ---- the store's batch forms ----

async function withStore(fn: (s: ChatStore, commits: number[], path: string) => Promise<void> | void) {
  const dir = await tempDir();
  const path = join(dir, "chat.db");
  const commits: number[] = [];
  const s = new ChatStore(path, { groupCommit: { onCommit: (ops) => commits.push(ops) } });
  try {
    await fn(s, commits, path);
  } finally {
    s.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const incoming = (id: string, text = `text of ${id}`): IncomingMessage => ({
  id,
  peer: "bob",
  from: "bob",
  text,
  sentAt: 1000,
  expiresAt: null,
  ttlMs: null,
  ttlMode: null,
  proof: null,
});

const outgoing = (id: string): OutgoingMessage => ({
  id,
  peer: "bob",
  from: "alice",
  text: `ours ${id}`,
  sentAt: 2000,
  expiresAt: null,
  ttlMs: null,
  ttlMode: null,
  state: "sending",
  proof: null,
});

const hex = (n: number) => n.toString(16).padStart(32, "0");

Deno.test("store batch: incoming messages queued together are one transaction; an id twice in one batch is stored once", async () => {
  await withStore(async (s, commits) => {
    const ids = Array.from({ length: 50 }, (_, i) => hex(i));
    const results = await Promise.all([
      ...ids.map((id) => s.queueIncoming({ message: incoming(id) })),
      s.queueIncoming({ message: incoming(ids[7], "a resend with other text") }),
    ]);
    assert.deepEqual(commits, [51]);
    assert.deepEqual(results, [...ids.map(() => "stored"), "duplicate"]);
    const h = s.history("bob");
    assert.deepEqual(h.map((m) => m.id), ids, "stored in arrival order");
    assert.equal(h[7].text, `text of ${ids[7]}`, "the duplicate changed nothing");
    // Across batches too.
    assert.equal(await s.queueIncoming({ message: incoming(ids[0]) }), "duplicate");
    assert.equal(s.history("bob").length, 50);
  });
});

Deno.test("store batch: a message dead on arrival keeps only its id (no text on disk); a resend is a duplicate", async () => {
  await withStore(async (s, _c, path) => {
    const secret = `dead-${crypto.randomUUID()}`;
    const dead = { ...incoming(hex(1), secret), ttlMs: 5000, ttlMode: "send" as const, expiresAt: 1 };
    assert.equal(await s.queueIncoming({ message: dead, idOnly: true }), "stored");
    assert.equal(s.get("bob", hex(1)), null);
    assert.equal(await s.queueIncoming({ message: dead }), "duplicate");
    s.checkpoint();
    const bytes = await Deno.readFile(path);
    assert.equal(new TextDecoder().decode(bytes).includes(secret), false);
  });
});

Deno.test("store batch: a failed incoming batch stores none of its messages nor their ids", async () => {
  await withStore(async (s) => {
    const boom: BatchKind<null, null> = {
      name: "boom",
      durable: false,
      apply: () => {
        throw new Error("disk on fire");
      },
    };
    const batch = [
      s.queueIncoming({ message: incoming(hex(1)) }),
      s.queueIncoming({ message: incoming(hex(2)) }),
      s.committer.enqueue(boom, null),
    ];
    const settled = await Promise.allSettled(batch);
    assert.deepEqual(settled.map((x) => x.status), ["rejected", "rejected", "rejected"]);
    assert.equal(((settled[0] as PromiseRejectedResult).reason as StoreError).code, "STORE_FAILED");
    assert.deepEqual(s.history("bob"), []);
    // The ids were not remembered either: the sender's retry is stored.
    assert.equal(await s.queueIncoming({ message: incoming(hex(1)) }), "stored");
  });
});

Deno.test("store batch: outgoing messages and their state changes; a change never moves a message backwards", async () => {
  await withStore(async (s, commits) => {
    const ids = [hex(1), hex(2), hex(3)];
    await Promise.all(ids.map((id) => s.queueOutgoing(outgoing(id))));
    assert.deepEqual(commits, [3]);
    assert.deepEqual(s.outbox("bob").map((m) => m.id), ids);
    const sent = await Promise.all(ids.map((id) => s.queueState({ peer: "bob", id, state: "sent" })));
    assert.deepEqual(sent, [true, true, true]);
    assert.deepEqual(
      await Promise.all([
        s.queueState({ peer: "bob", id: ids[0], state: "delivered" }),
        s.queueState({ peer: "bob", id: ids[0], state: "delivered" }), // a second ack
        s.queueState({ peer: "bob", id: ids[0], state: "failed" }), // a close after the ack
        s.queueState({ peer: "bob", id: ids[0], state: "sent" }), // a late write
        s.queueState({ peer: "bob", id: ids[1], state: "failed" }),
        s.queueReadReceipt({ peer: "bob", id: ids[2], readAt: 5000, expiresAt: null }),
        s.queueState({ peer: "bob", id: ids[2], state: "delivered" }), // the ack after the read receipt
        s.queueState({ peer: "bob", id: hex(9), state: "delivered" }), // unknown id
      ]),
      [true, false, false, false, true, true, false, false],
    );
    assert.deepEqual(ids.map((id) => s.get("bob", id)?.state), ["delivered", "failed", "read"]);
    assert.equal(s.get("bob", ids[2])?.readAt, 5000);
    // The outbox is what waits for a receipt: the failed one.
    assert.deepEqual(s.outbox("bob").map((m) => m.id), [ids[1]]);
    assert.deepEqual(s.outboxPeers(), ["bob"]);
    // skip leaves out what is in flight.
    assert.deepEqual(s.outbox("bob", new Set([ids[1]])), []);
  });
});

Deno.test("store batch: 70 messages of one batch (rows written several at a time), expiring ones with their keys, read back whole", async () => {
  await withStore(async (s, commits) => {
    // 70 = 64 + 4 + 1 + 1 rows: every statement size is used; every third message expires (own key).
    const ours = Array.from({ length: 70 }, (_, i) => ({
      ...outgoing(hex(100 + i)),
      text: `ours ${i} é`,
      ...(i % 3 === 0 ? { ttlMs: 60_000, ttlMode: "send" as const, expiresAt: 62_000 } : {}),
    }));
    const seqs = await Promise.all(ours.map((m) => s.queueOutgoing(m)));
    const theirs = Array.from({ length: 70 }, (_, i) => incoming(hex(300 + i), `theirs ${i}`));
    const got = await Promise.all(theirs.map((m) => s.queueIncoming({ message: m })));
    assert.deepEqual(commits, [70, 70]);
    assert.deepEqual(got, new Array(70).fill("stored"));
    assert.deepEqual(seqs, Array.from({ length: 70 }, (_, i) => seqs[0] + i), "seqs in queue order");
    const history = s.history("bob");
    assert.deepEqual(history.map((m) => m.text), [...ours.map((m) => m.text), ...theirs.map((m) => m.text)]);
    assert.deepEqual(history.slice(0, 70).map((m) => m.ttlMs), ours.map((m) => m.ttlMs));
    assert.deepEqual(history.map((m) => m.seq), [...seqs, ...history.slice(70).map((m) => m.seq)]);
    assert.equal(s.expiring().length, 24);
  });
});

Deno.test("store batch: queueOutgoing resolves with the seq; an outbox read takes the rows the caller holds from it", async () => {
  await withStore(async (s) => {
    const ids = [hex(1), hex(2), hex(3), hex(4)];
    const seqs = await Promise.all(ids.map((id) => s.queueOutgoing(outgoing(id))));
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
    assert.equal(new Set(seqs).size, 4);
    const stored = s.outbox("bob");
    assert.deepEqual(stored.map((m) => m.seq), seqs);
    // The caller holds copies of the 1st and 3rd; the 4th is deleted although the caller still holds it.
    const held = new Map([stored[0], stored[2], stored[3]].map((m) => [m.seq, { ...m }]));
    s.deleteMessages([{ peer: "bob", id: ids[3] }]);
    const got = s.outbox("bob", new Set<string>(), 0, held);
    assert.deepEqual(got.map((m) => m.id), ids.slice(0, 3), "in seq order, the deleted one left out");
    assert.equal(got[0], held.get(seqs[0]), "a held copy is used as is");
    assert.deepEqual(got[1], stored[1], "a missing one is read");
    assert.deepEqual(s.outbox("bob", new Set([ids[0]]), seqs[0] - 1, held).map((m) => m.id), ids.slice(1, 3));
    assert.deepEqual(
      s.outbox("bob", undefined, seqs[1], held).map((m) => m.id),
      [ids[2]],
      "after the cursor",
    );
  });
});

Deno.test("store batch: an incoming message never takes a state change meant for ours", async () => {
  await withStore(async (s) => {
    await s.queueIncoming({ message: incoming(hex(4)) });
    assert.equal(await s.queueState({ peer: "bob", id: hex(4), state: "failed" }), false);
    assert.equal(await s.queueReadReceipt({ peer: "bob", id: hex(4), readAt: 1, expiresAt: null }), false);
    assert.equal(s.get("bob", hex(4))?.state, "delivered");
    assert.equal(s.get("bob", hex(4))?.readAt, null);
  });
});

Deno.test("store: a database of the first layout (keyed on peer, id) is migrated whole at open", async () => {
  const dir = await tempDir();
  const path = join(dir, "chat.db");
  try {
    const old = new DatabaseSync(path);
    old.exec(`CREATE TABLE messages (peer TEXT NOT NULL, id TEXT NOT NULL, sender TEXT NOT NULL,
      direction TEXT NOT NULL CHECK (direction IN ('in','out')), encrypted INTEGER NOT NULL, iv BLOB,
      body BLOB NOT NULL, sent_at INTEGER NOT NULL, expires_at INTEGER, ttl_ms INTEGER, ttl_mode TEXT,
      state TEXT NOT NULL, read_at INTEGER, proof TEXT, seq INTEGER NOT NULL, PRIMARY KEY (peer, id))
      WITHOUT ROWID;
      CREATE INDEX messages_by_id ON messages (id);
      CREATE INDEX messages_by_seq ON messages (peer, seq);`);
    const ins = old.prepare(
      "INSERT INTO messages (peer, id, sender, direction, encrypted, body, sent_at, state, seq) VALUES (?,?,?,?,0,?,1,?,?)",
    );
    const enc = new TextEncoder();
    // Keyed order (by id) differs from insertion order (seq) on purpose.
    ins.run("bob", hex(9), "bob", "in", enc.encode("first"), "delivered", 1);
    ins.run("bob", hex(1), "alice", "out", enc.encode("second"), "sent", 2);
    ins.run("bob", hex(5), "alice", "out", enc.encode("third"), "delivered", 3);
    old.close();

    const s = new ChatStore(path);
    try {
      assert.deepEqual(s.history("bob").map((m) => m.text), ["first", "second", "third"]);
      assert.deepEqual(s.outbox("bob").map((m) => m.id), [hex(1)], "unacknowledged ones are the outbox");
      await s.queueOutgoing(outgoing(hex(7)));
      assert.equal(s.history("bob").at(-1)?.seq, 4, "new rows continue the old sequence");
      assert.equal(s.integrityCheck(), "ok");
    } finally {
      s.close();
    }
    // Opening again changes nothing.
    const again = new ChatStore(path);
    assert.equal(again.history("bob").length, 4);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- through two engines over a real mutual-TLS session ----

Deno.test("engines: thousands queued while the peer is away go out in batches on its return; each arrives once, in order, in few commits", async () => {
  const ca = await makeTestCa();
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const shared = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const alice = await startTestEngine(ca, aliceLeaf, {
    directory: new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint }, shared.entries),
  });
  let bob: Awaited<ReturnType<typeof startTestEngine>> | null = null;
  const N = 3000;
  try {
    const before = alice.engine.stats().commits;
    const sent = await Promise.all(
      Array.from({ length: N }, (_, i) => alice.engine.send("bob", `queued ${i}`)),
    );
    assert.ok(
      alice.engine.stats().commits - before <= Math.ceil(N / 1024) + 2,
      `sends issued together share commits (${alice.engine.stats().commits - before} for ${N})`,
    );
    assert.equal(alice.store((s) => s.outbox("bob")).length, N);
    bob = await startTestEngine(ca, bobLeaf, { directory: shared });
    await until(() => alice.log.of("delivered").length >= N, 60_000, "all delivered");
    const ids = bob.store((s) => s.history("alice")).map((m) => m.id);
    assert.deepEqual(ids, sent.map((m) => m.id), "each message once, in the order sent");
    assert.equal(new Set(alice.log.of("delivered").map((d) => d.id)).size, N);
    assert.equal(bob.log.of("message").length, N);
    // Received in batches: far fewer transactions than messages.
    assert.ok(bob.engine.stats().commits < N / 4, `${bob.engine.stats().commits} commits`);
    await until(() => alice.store((s) => s.outbox("bob")).length === 0, 10_000, "outbox empty");
  } finally {
    await bob?.stop();
    await alice.stop();
  }
});
