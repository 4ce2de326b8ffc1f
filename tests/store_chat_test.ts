import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ChatStore } from "../client/store/store.ts";
import { open, seal } from "../client/store/crypto.ts";
import { filesContain } from "./helpers/chat.ts";

const enc = new TextEncoder();

async function withStore(fn: (s: ChatStore, path: string) => Promise<void> | void) {
  const dir = await Deno.makeTempDir({ prefix: "securechat-store-" });
  const path = join(dir, "chat.db");
  const s = new ChatStore(path);
  try {
    await fn(s, path);
  } finally {
    s.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const files = (p: string) => [p, `${p}-wal`, `${p}-shm`];
const base = {
  peer: "bob",
  from: "bob",
  sentAt: 1000,
  expiresAt: null,
  ttlMs: null,
  ttlMode: null,
  proof: null,
};

Deno.test("store: the database file is private (0600)", async () => {
  await withStore((_s, path) => {
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
  });
});

Deno.test("store: expiring messages are encrypted at rest; deleting one removes text and key from the files", async () => {
  await withStore(async (s, path) => {
    const secret = `expiring-${crypto.randomUUID()}`;
    const plain = `plain-${crypto.randomUUID()}`;
    s.addIncoming({
      ...base,
      id: "a".repeat(32),
      text: secret,
      ttlMs: 60_000,
      ttlMode: "send",
      expiresAt: 9e12,
    });
    s.addIncoming({ ...base, id: "b".repeat(32), text: plain });
    s.checkpoint();
    assert.equal(await filesContain(files(path), enc.encode(secret)), false);
    assert.equal(await filesContain(files(path), enc.encode(plain)), true);
    assert.deepEqual(s.history("bob").map((m) => m.text), [secret, plain]);
    // Grab the key bytes to search for them after deletion.
    const { DatabaseSync } = await import("node:sqlite");
    const peek = new DatabaseSync(path, { readOnly: true });
    const key = (peek.prepare("SELECT key FROM message_keys").get() as { key: Uint8Array }).key;
    const body =
      (peek.prepare("SELECT body FROM messages WHERE ttl_ms IS NOT NULL").get() as { body: Uint8Array })
        .body;
    peek.close();
    assert.equal(await filesContain(files(path), key), true);

    s.deleteMessages([{ peer: "bob", id: "a".repeat(32) }]);
    assert.equal(await filesContain(files(path), key), false, "message key still in the files");
    assert.equal(await filesContain(files(path), body), false, "ciphertext still in the files");
    assert.deepEqual(s.history("bob").map((m) => m.text), [plain]);
    assert.equal(s.integrityCheck(), "ok");
  });
});

Deno.test("store: a received id is stored once, and remembered after the message is deleted", async () => {
  await withStore((s) => {
    const id = "c".repeat(32);
    assert.equal(s.addIncoming({ ...base, id, text: "one" }), "stored");
    assert.equal(s.addIncoming({ ...base, id, text: "two" }), "duplicate");
    s.deleteMessages([{ peer: "bob", id }]);
    assert.equal(s.addIncoming({ ...base, id, text: "three" }), "duplicate");
    assert.deepEqual(s.history("bob"), []);
    // The same id from another peer is another message.
    assert.equal(s.addIncoming({ ...base, peer: "carol", from: "carol", id, text: "carol's" }), "stored");
  });
});

Deno.test("store: a received message is one row; its id is remembered only once it is deleted, and survives a reopen", async () => {
  await withStore((s, path) => {
    const kept = "e".repeat(32);
    const gone = "f".repeat(32);
    assert.deepEqual(
      s.addIncomingBatch([{ message: { ...base, id: kept, text: "kept" } }, {
        message: { ...base, id: gone, text: "gone" },
      }]),
      ["stored", "stored"],
    );
    const raw = () => new DatabaseSync(path, { readOnly: true });
    const remembered = () => {
      const db = raw();
      try {
        return (db.prepare("SELECT id FROM received_ids ORDER BY id").all() as { id: string }[]).map((r) =>
          r.id
        );
      } finally {
        db.close();
      }
    };
    assert.deepEqual(remembered(), [], "no second row while the message exists");
    assert.ok(s.hasReceived("bob", kept) && s.hasReceived("bob", gone));
    s.deleteMessages([{ peer: "bob", id: gone }]);
    assert.deepEqual(remembered(), [gone]);
    s.close();
    const again = new ChatStore(path);
    try {
      assert.deepEqual(
        again.addIncomingBatch([
          { message: { ...base, id: kept, text: "resent" } },
          { message: { ...base, id: gone, text: "resent" } },
          { message: { ...base, id: "0".repeat(32), text: "new" } },
        ]),
        ["duplicate", "duplicate", "stored"],
      );
      assert.deepEqual(again.history("bob").map((m) => m.text), ["kept", "new"]);
    } finally {
      again.close();
    }
  });
});

Deno.test("store: a message whose id is one of ours to that peer is a duplicate, and the rest of its batch is stored", async () => {
  await withStore((s) => {
    const ours = "a".repeat(32);
    s.addOutgoing({ ...base, from: "alice", id: ours, text: "mine", state: "sending" });
    assert.equal(s.hasReceived("bob", ours), true, "counts as known, so it takes no room in the inbox");
    const other = "b".repeat(32);
    // Before, the unique index refused the whole batch (and every resend of it): one hostile id stalled all.
    assert.deepEqual(
      s.addIncomingBatch([{ message: { ...base, id: ours, text: "echo" } }, {
        message: { ...base, id: other, text: "real" },
      }]),
      ["duplicate", "stored"],
    );
    assert.deepEqual(s.history("bob").map((m) => [m.direction, m.text]), [["out", "mine"], ["in", "real"]]);
  });
});

Deno.test("store: a run of receipts is one update; an id twice changes once, and runs keep their order", async () => {
  await withStore((s) => {
    const ids = ["1", "2", "3"].map((c) => c.repeat(32));
    for (const id of ids) s.addOutgoing({ ...base, from: "alice", id, text: id, state: "sending" });
    assert.deepEqual(
      s.setStates([
        { peer: "bob", id: ids[0], state: "sent" },
        { peer: "bob", id: ids[1], state: "sent" },
        // failed, then sent again, in this order: ids[0] ends "sent" (the reverse order would leave "failed").
        { peer: "bob", id: ids[0], state: "failed" },
        { peer: "bob", id: ids[0], state: "sent" },
        { peer: "bob", id: ids[1], state: "delivered" },
        { peer: "bob", id: ids[2], state: "delivered" },
        { peer: "bob", id: ids[1], state: "delivered" },
        { peer: "carol", id: ids[2], state: "failed" },
      ]),
      [true, true, true, true, true, true, false, false],
    );
    assert.deepEqual(ids.map((id) => s.get("bob", id)!.state), ["sent", "delivered", "delivered"]);
    assert.deepEqual(s.outbox("bob").map((m) => m.id), [ids[0]]);
  });
});

Deno.test("store: outbox, states, read marks (first one wins, deadlines only move earlier)", async () => {
  await withStore((s) => {
    const id = "d".repeat(32);
    s.addOutgoing({ ...base, from: "alice", id, text: "hi", state: "sending", ttlMs: 5000, ttlMode: "read" });
    assert.deepEqual(s.outbox("bob").map((m) => m.id), [id]);
    s.setState("bob", id, "delivered");
    assert.deepEqual(s.outbox(), []);
    s.setState("bob", id, "failed");
    assert.deepEqual(s.outbox().map((m) => m.id), [id], "back in the outbox");
    s.setState("bob", id, "delivered");
    assert.deepEqual(s.outboxPeers(), []);
    s.markRead("bob", id, 100, 5100);
    s.markRead("bob", id, 50, 9000);
    const m = s.get("bob", id)!;
    assert.equal(m.readAt, 100);
    assert.equal(m.expiresAt, 5100);
    s.markRead("bob", id, 200, 4000);
    assert.equal(s.get("bob", id)!.expiresAt, 4000);
  });
});

Deno.test("store: pins, pending key changes and the verified mark", async () => {
  await withStore((s) => {
    s.pin("bob", "1".repeat(64));
    s.setVerified("bob", true);
    assert.equal(s.contact("bob")!.verified, true);
    s.setPending("bob", "2".repeat(64));
    assert.equal(s.contact("bob")!.pinnedFingerprint, "1".repeat(64));
    s.pin("bob", "2".repeat(64));
    const c = s.contact("bob")!;
    assert.equal(c.pinnedFingerprint, "2".repeat(64));
    assert.equal(c.pendingFingerprint, null);
    assert.equal(c.verified, false, "a new key is not verified");
  });
});

Deno.test("store crypto: a sealed text opens only with its key and its row's binding", () => {
  const key = new Uint8Array(32).fill(1);
  const sealed = seal(key, "hello", "bob\nid1");
  assert.equal(open(key, sealed, "bob\nid1"), "hello");
  assert.throws(() => open(key, sealed, "bob\nid2"));
  assert.throws(() => open(new Uint8Array(32).fill(2), sealed, "bob\nid1"));
  const tampered = { iv: sealed.iv, body: sealed.body.slice() };
  tampered.body[0] ^= 1;
  assert.throws(() => open(key, tampered, "bob\nid1"));
});

Deno.test("store: two connections to one chat.db take turns writing; each batch numbers its messages after the other's", async () => {
  await withStore(async (s, path) => {
    // A second connection (a tool, a test's look at the file) adds messages between this one's writes. With
    // a counter cached by each connection the second batch here reused a seq and failed (UNIQUE).
    const other = new ChatStore(path);
    try {
      s.addIncoming({ ...base, id: "1".repeat(32), text: "first" });
      other.addIncomingBatch([
        { message: { ...base, id: "2".repeat(32), text: "second" } },
        { message: { ...base, id: "3".repeat(32), text: "third" } },
      ]);
      assert.equal(
        await s.queueIncoming({ message: { ...base, id: "4".repeat(32), text: "fourth" } }),
        "stored",
      );
      other.addOutgoing({ ...base, id: "5".repeat(32), from: "alice", text: "fifth", state: "sending" });
      const history = s.history("bob");
      assert.deepEqual(history.map((m) => m.text), ["first", "second", "third", "fourth", "fifth"]);
      const seqs = history.map((m) => m.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
      assert.equal(new Set(seqs).size, 5);
    } finally {
      other.close();
    }
  });
});

Deno.test("store: while another program reads chat.db the WAL cannot be truncated: deleteMessages says so, and a later checkpoint removes the text", async () => {
  await withStore(async (s, path) => {
    const secret = `expiring-${crypto.randomUUID()}`;
    s.addIncoming({
      ...base,
      id: "d".repeat(32),
      text: secret,
      ttlMs: 60_000,
      ttlMode: "send",
      expiresAt: 9e12,
    });
    assert.equal(s.checkpoint(), true);
    const peek = new DatabaseSync(path, { readOnly: true });
    const key = (peek.prepare("SELECT key FROM message_keys").get() as { key: Uint8Array }).key;
    // A reader in the middle of a transaction (a backup, an sqlite3 shell) holds its snapshot.
    peek.exec("BEGIN");
    peek.prepare("SELECT count(*) FROM messages").get();
    try {
      assert.equal(s.deleteMessages([{ peer: "bob", id: "d".repeat(32) }]), false);
      assert.equal(s.walResidue, true);
      assert.deepEqual(s.history("bob"), [], "the row is deleted all the same");
      assert.equal(await filesContain(files(path), key), true, "the old pages are still on disk");
      assert.equal(s.checkpoint(), false, "still held");
    } finally {
      peek.exec("COMMIT");
      peek.close();
    }
    assert.equal(s.checkpoint(), true);
    assert.equal(s.walResidue, false);
    assert.equal(await filesContain(files(path), key), false, "message key still in the files");
    assert.equal(s.integrityCheck(), "ok");
  });
});

Deno.test("store: opening chat.db finishes the checkpoint of a run killed between a deletion and its checkpoint", async () => {
  await withStore(async (s, path) => {
    s.addIncoming({
      ...base,
      id: "e".repeat(32),
      text: "dies",
      ttlMs: 60_000,
      ttlMode: "send",
      expiresAt: 9e12,
    });
    s.checkpoint();
    const peek = new DatabaseSync(path, { readOnly: true });
    const key = (peek.prepare("SELECT key FROM message_keys").get() as { key: Uint8Array }).key;
    peek.close();
    s.close();
    // Another process deletes the message (secure_delete on, no automatic checkpoint) and is killed before
    // it checkpoints: the zeroed pages are only in the WAL, the key still in chat.db.
    const script = `
      import { DatabaseSync } from "node:sqlite";
      const db = new DatabaseSync(${JSON.stringify(path)});
      db.exec("PRAGMA secure_delete=ON; PRAGMA wal_autocheckpoint=0;");
      db.exec("DELETE FROM message_keys; DELETE FROM messages;");
      Deno.kill(Deno.pid, "SIGKILL");`;
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", script],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(r.signal, "SIGKILL", new TextDecoder().decode(r.stderr));
    assert.ok(Deno.statSync(`${path}-wal`).size > 0, "the killed run left its WAL");
    assert.equal(await filesContain(files(path), key), true, "the key is still in chat.db");
    const again = new ChatStore(path);
    try {
      assert.equal(again.walResidue, false);
      assert.equal(await filesContain(files(path), key), false, "the key is gone once the store is open");
      assert.deepEqual(again.history("bob"), []);
    } finally {
      again.close();
    }
  });
});

Deno.test("store: close says whether deleted messages may be left in the files (a reader held the last checkpoint off); the next open clears them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "securechat-store-close-" });
  const path = join(dir, "chat.db");
  const reader = new DatabaseSync(path);
  try {
    // A reader alone does not make close complain: nothing was deleted.
    let s = new ChatStore(path);
    s.addIncoming({
      ...base,
      id: "f".repeat(32),
      text: "dies",
      ttlMs: 60_000,
      ttlMode: "send",
      expiresAt: 9e12,
    });
    s.checkpoint();
    const key = (reader.prepare("SELECT key FROM message_keys").get() as { key: Uint8Array }).key;
    reader.exec("BEGIN");
    reader.prepare("SELECT count(*) FROM messages").get();
    assert.equal(s.close(), true, "no deletion: nothing to say");
    s = new ChatStore(path);
    assert.equal(s.deleteMessages([{ peer: "bob", id: "f".repeat(32) }]), false);
    assert.equal(s.close(), false, "deleted and held: said");
    reader.exec("COMMIT");
    assert.equal(await filesContain(files(path), key), true, "left in the files by the held close");
    s = new ChatStore(path);
    assert.equal(await filesContain(files(path), key), false, "cleared when chat.db is opened again");
    assert.equal(s.close(), true);
  } finally {
    reader.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("store: a seq is never given twice, even after the message that had the highest was deleted", async () => {
  await withStore(async (s) => {
    const out = { ...base, from: "alice", state: "sending" as const };
    const first = await s.queueOutgoing({ ...out, id: "7".repeat(32), text: "first" });
    s.deleteMessages([{ peer: "bob", id: "7".repeat(32) }]);
    // The outbox's cursor has seen `first`: a new message with that seq again would be skipped, never sent.
    const second = await s.queueOutgoing({ ...out, id: "8".repeat(32), text: "second" });
    assert.ok(second > first, `seq ${second} after ${first}`);
    s.addOutgoing({ ...out, id: "9".repeat(32), text: "third" });
    assert.ok(s.get("bob", "9".repeat(32))!.seq > second);
  });
});
