/**
 * The store's writer thread (client/store/writer_thread.ts, writer_worker.ts): the group commit's batches
 * applied by a worker with its own connection to chat.db. What a burst, a failure and a close do there, that
 * order and seqs hold across its connection and the store's own, and that a message alone stays on the
 * store's connection (no hop for one row).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { setImmediate } from "node:timers";
import { ChatStore, type OutgoingMessage, StoreError } from "../client/store/store.ts";
import { LOCAL_MAX } from "../client/store/writer_thread.ts";

interface Opened {
  store: ChatStore;
  path: string;
  commits: { ops: number; durable: boolean }[];
}

/** A chat.db path in a folder of its own, removed after `fn`. */
async function withChatDb(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "securechat-writer-" });
  try {
    await fn(join(dir, "chat.db"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function withThreadStore(fn: (o: Opened) => Promise<void>, maxBatch?: number): Promise<void> {
  await withChatDb(async (path) => {
    const commits: { ops: number; durable: boolean }[] = [];
    const store = new ChatStore(path, {
      writerThread: true,
      groupCommit: { maxBatch, onCommit: (ops, durable) => commits.push({ ops, durable }) },
    });
    try {
      assert.equal(await store.writerThreadOpened(), true, "the writer thread opened chat.db");
      await fn({ store, path, commits });
    } finally {
      store.close();
    }
  });
}

let counter = 0;
function ours(text: string, id?: string): OutgoingMessage {
  const n = counter++;
  return {
    id: id ?? n.toString(16).padStart(32, "0"),
    peer: "bob",
    from: "alice",
    text,
    sentAt: 1_000 + n,
    expiresAt: null,
    ttlMs: null,
    ttlMode: null,
    proof: null,
    state: "sending",
  };
}

const nextTurn = () => new Promise<void>((r) => setImmediate(r));

Deno.test("writer thread: a burst is stored by the worker, one transaction per batch, seqs in the order sent", async () => {
  await withThreadStore(async ({ store, commits }) => {
    const sent = Array.from({ length: 1000 }, (_, i) => ours(`m${i}`));
    const seqs = await Promise.all(sent.map((m) => store.queueOutgoing(m)));
    assert.deepEqual(commits, Array.from({ length: 10 }, () => ({ ops: 100, durable: true })));
    // Each batch with more queued behind it goes to the worker; the last may find it idle and stay here.
    assert.ok(store.threadBatches! >= 9, `${store.threadBatches} batches at the worker`);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seq ${i} after seq ${i - 1}`);
    // Visible to the store's own connection, in order, with the seqs the enqueuers were given.
    const history = store.history("bob");
    assert.deepEqual(history.map((m) => m.text), sent.map((m) => m.text));
    assert.deepEqual(history.map((m) => m.seq), seqs);
  }, 100);
});

Deno.test("writer thread: a message alone, a few, or a batch with nothing queued behind it stay on the store's own connection", async () => {
  await withThreadStore(async ({ store }) => {
    const seq = await store.queueOutgoing(ours("alone"));
    assert.equal(store.threadBatches, 0);
    const few = await Promise.all(
      Array.from({ length: LOCAL_MAX }, (_, i) => store.queueOutgoing(ours(`f${i}`))),
    );
    assert.ok(few.every((s) => s > seq));
    await Promise.all(Array.from({ length: 500 }, (_, i) => store.queueOutgoing(ours(`g${i}`))));
    assert.equal(store.threadBatches, 0, "500 in one batch, nothing behind it: no hop");
    // A burst longer than a batch: the first batch (more queued behind it) goes to the worker.
    await Promise.all(Array.from({ length: 1500 }, (_, i) => store.queueOutgoing(ours(`h${i}`))));
    assert.ok(store.threadBatches! >= 1);
    assert.equal(store.history("bob").length, 1 + LOCAL_MAX + 500 + 1500);
  });
});

Deno.test("writer thread: a batch that fails there rolls back whole, each of its operations rejects with STORE_FAILED, the next is stored", async () => {
  await withThreadStore(async ({ store }) => {
    await store.queueOutgoing(ours("before"));
    // Three batches of 10; two messages of the second have the same id: the unique index refuses the second
    // of them, inside the worker.
    const burst = Array.from({ length: 30 }, (_, i) => ours(`b${i}`));
    burst[12] = ours("b12", "f".repeat(32));
    burst[15] = ours("b15", "f".repeat(32));
    const settled = await Promise.allSettled(burst.map((m) => store.queueOutgoing(m)));
    assert.ok(store.threadBatches! >= 2, "the failing batch went to the worker");
    settled.forEach((s, i) => {
      if (i < 10 || i >= 20) {
        assert.equal(s.status, "fulfilled", `b${i} is in a batch that commits`);
        return;
      }
      assert.equal(s.status, "rejected", `b${i}`);
      const e = (s as PromiseRejectedResult).reason;
      assert.ok(e instanceof StoreError);
      assert.equal(e.code, "STORE_FAILED");
      assert.match(e.message, /10 operations rolled back.*UNIQUE/);
    });
    const texts = store.history("bob").map((m) => m.text);
    assert.deepEqual(texts, [
      "before",
      ...burst.slice(0, 10).map((m) => m.text),
      ...burst.slice(20).map((m) => m.text),
    ]);
  }, 10);
});

Deno.test("writer thread: close settles the batches at the worker and the ones still queued, and all of them are on disk", async () => {
  await withChatDb(async (path) => {
    const store = new ChatStore(path, { writerThread: true, groupCommit: { maxBatch: 500 } });
    assert.ok(await store.writerThreadOpened());
    const sent = Array.from({ length: 3000 }, (_, i) => ours(`c${i}`));
    const results: (number | Error)[] = new Array(sent.length);
    const all = sent.map((m, i) => store.queueOutgoing(m).then((s) => results[i] = s, (e) => results[i] = e));
    // Two turns: the first batches are at the worker, the rest still queued here.
    await nextTurn();
    await nextTurn();
    assert.ok(store.threadBatches! >= 1, "a batch is at the worker before close");
    assert.ok(store.committer.pending > 0, "some are still queued before close");
    store.close();
    await Promise.all(all);
    assert.ok(results.every((r) => typeof r === "number"), "every enqueuer got its seq");
    const again = new ChatStore(path);
    try {
      assert.deepEqual(again.history("bob").map((m) => m.text), sent.map((m) => m.text));
      assert.deepEqual(again.history("bob").map((m) => m.seq), results);
    } finally {
      again.close();
    }
  });
});

Deno.test("writer thread: a seq is never given twice, across the worker's connection, the store's own and a restart", async () => {
  await withChatDb(async (path) => {
    const store = new ChatStore(path, { writerThread: true, groupCommit: { maxBatch: 10 } });
    assert.ok(await store.writerThreadOpened());
    const seqs = await Promise.all(Array.from({ length: 20 }, (_, i) => store.queueOutgoing(ours(`s${i}`))));
    assert.ok(store.threadBatches! >= 1);
    const last = store.history("bob").at(-1)!;
    assert.equal(last.seq, seqs.at(-1));
    // The newest message goes (it expired): the next one, written on the store's own connection, must not
    // take its seq again (the outbox's cursor has seen it).
    store.deleteMessages([{ peer: "bob", id: last.id }]);
    store.addOutgoing(ours("local"));
    const local = store.history("bob").at(-1)!;
    assert.equal(local.text, "local");
    assert.ok(local.seq > last.seq, `${local.seq} > ${last.seq}`);
    store.deleteMessages([{ peer: "bob", id: local.id }]);
    store.close();
    const again = new ChatStore(path, { writerThread: true });
    try {
      assert.ok(await again.writerThreadOpened());
      const seq = await again.queueOutgoing(ours("after restart"));
      assert.ok(seq > local.seq, `${seq} > ${local.seq}`);
    } finally {
      again.close();
    }
  });
});

Deno.test("writer thread: received messages through the worker are stored once, a repeat in the batch or later is a duplicate", async () => {
  await withThreadStore(async ({ store }) => {
    const incoming = (i: number) => ({
      message: {
        id: i.toString(16).padStart(32, "0"),
        peer: "carol",
        from: "carol",
        text: `r${i}`,
        sentAt: 5_000 + i,
        expiresAt: null,
        ttlMs: null,
        ttlMode: null,
        proof: null,
      },
    });
    // Batches of 10: a repeat inside the first batch (index 9 repeats 2) and one in a later batch (7).
    const items = Array.from({ length: 30 }, (_, i) => incoming(i === 9 ? 2 : i));
    items.push(incoming(7));
    const first = await Promise.all(items.map((it) => store.queueIncoming(it)));
    assert.ok(store.threadBatches! >= 3);
    assert.deepEqual(first.filter((r) => r === "duplicate").length, 2);
    assert.equal(first[9], "duplicate");
    assert.equal(first[30], "duplicate");
    const again = await Promise.all(
      [incoming(3), ...Array.from({ length: 10 }, (_, i) => incoming(100 + i))].map((
        it,
      ) => store.queueIncoming(it)),
    );
    assert.equal(again[0], "duplicate");
    assert.ok(again.slice(1).every((r) => r === "stored"));
    assert.equal(store.history("carol").length, 39);
  }, 10);
});

Deno.test("writer thread: rows it committed whose callers have not heard of them yet are left out of the outbox's known path", async () => {
  await withThreadStore(async ({ store, path }) => {
    await store.queueOutgoing(ours("earlier"));
    const all = Promise.all(Array.from({ length: 100 }, (_, i) => store.queueOutgoing(ours(`w${i}`))));
    await nextTurn(); // the first batch (50, more behind it) is handed to the worker
    // Without yielding (so its answer cannot be heard), wait until another connection sees the rows.
    const peek = new DatabaseSync(path, { readOnly: true });
    try {
      const until = performance.now() + 10_000;
      const count = () => (peek.prepare("SELECT COUNT(*) AS n FROM messages").get() as { n: number }).n;
      while (count() < 51 && performance.now() < until) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      }
      assert.ok(count() >= 51, "the worker committed the first batch");
    } finally {
      peek.close();
    }
    const before = store.outbox("bob", undefined, 0, new Map());
    assert.deepEqual(before.map((m) => m.text), ["earlier"], "only what a caller has heard of");
    await all;
    assert.equal(store.outbox("bob", undefined, 0, new Map()).length, 101);
    // The other path (no known messages) always reads everything.
    assert.equal(store.outbox("bob").length, 101);
  }, 50);
});

Deno.test("writer thread: one that cannot open chat.db leaves the store working on its own connection, and says why", async () => {
  await withChatDb(async (path) => {
    const store = new ChatStore(path, {
      writerThread: true,
      writerThreadWorker: new Worker(new URL("./helpers/broken_writer_worker.ts", import.meta.url).href, {
        type: "module",
      }),
      groupCommit: { maxBatch: 10 },
    });
    try {
      assert.equal(await store.writerThreadOpened(), false);
      assert.match(store.writerThreadFailure ?? "", /cannot open .*chat.db: refused/);
      // A burst (which would go to the worker) is stored all the same, here.
      const seqs = await Promise.all(
        Array.from({ length: 30 }, (_, i) => store.queueOutgoing(ours(`x${i}`))),
      );
      assert.equal(store.threadBatches, 0);
      assert.deepEqual(store.history("bob").map((m) => m.seq), seqs);
    } finally {
      store.close();
    }
  });
});

Deno.test("writer thread: one that fails after opening fails only the batches it held; the rest are stored on the store's own connection", async () => {
  await withChatDb(async (path) => {
    const store = new ChatStore(path, {
      writerThread: true,
      writerThreadWorker: new Worker(new URL("./helpers/dying_writer_worker.ts", import.meta.url).href, {
        type: "module",
      }),
      groupCommit: { maxBatch: 10 },
    });
    try {
      assert.equal(await store.writerThreadOpened(), true);
      const burst = Array.from({ length: 40 }, (_, i) => ours(`d${i}`));
      const settled = await Promise.allSettled(burst.map((m) => store.queueOutgoing(m)));
      const failed = settled.filter((s) => s.status === "rejected") as PromiseRejectedResult[];
      assert.ok(failed.length >= 10, "the batch at the worker failed");
      for (const f of failed) {
        assert.ok(f.reason instanceof StoreError);
        assert.equal(f.reason.code, "STORE_FAILED");
        assert.match(f.reason.message, /writer thread failed/);
      }
      assert.match(store.writerThreadFailure ?? "", /breaks at its first batch/);
      // What was not at the worker is stored, and nothing of what failed.
      const stored = settled.flatMap((s, i) => s.status === "fulfilled" ? [burst[i].text] : []);
      assert.deepEqual(store.history("bob").map((m) => m.text), stored);
      // Later writes go on here.
      await Promise.all(Array.from({ length: 30 }, (_, i) => store.queueOutgoing(ours(`later${i}`))));
      assert.equal(store.history("bob").length, stored.length + 30);
    } finally {
      store.close();
    }
  });
});
