/**
 * "After read" messages that are never displayed die at sentAt + maxUnreadMs on both sides (docs/protocol.md,
 * Self-destruct). The engine's maxUnreadMs option shortens the 7-day MAX_UNREAD_MS to a few seconds.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { HomeState } from "../client/home.ts";
import { dbFiles, deadUdpPort, filesContain, startClient, until, withPair } from "./helpers/chat.ts";

const enc = new TextEncoder();
/** Longer than the test Roughtime server's uncertainty (3 s radius), so the message is alive on arrival. */
const MAX_UNREAD = 6000;
const TTL = 2000;

/** The stored ciphertext and per-message key of one message (read through a second, short-lived connection). */
async function storedSecrets(home: HomeState, id: string): Promise<{ body: Uint8Array; key: Uint8Array }> {
  const db = new (await import("node:sqlite")).DatabaseSync(join(home.dir, "chat.db"));
  try {
    const m = db.prepare("SELECT body FROM messages WHERE id = ?").get(id) as
      | { body: Uint8Array }
      | undefined;
    const k = db.prepare("SELECT key FROM message_keys WHERE id = ?").get(id) as
      | { key: Uint8Array }
      | undefined;
    assert.ok(m && k, "the message and its key are stored while alive");
    return { body: new Uint8Array(m.body), key: new Uint8Array(k.key) };
  } finally {
    db.close();
  }
}

async function countRows(home: HomeState): Promise<{ messages: number; keys: number }> {
  const db = new (await import("node:sqlite")).DatabaseSync(join(home.dir, "chat.db"));
  try {
    const n = (sql: string) => (db.prepare(sql).get() as { n: number }).n;
    return {
      messages: n("SELECT COUNT(*) AS n FROM messages"),
      keys: n("SELECT COUNT(*) AS n FROM message_keys"),
    };
  } finally {
    db.close();
  }
}

Deno.test("self-destruct (read mode, never displayed): both copies die at sentAt + maxUnreadMs and the text is gone from the files", async () => {
  await withPair(async (_pb, aliceHome, bobHome) => {
    const alice = await startClient(aliceHome, { maxUnreadMs: MAX_UNREAD });
    const bob = await startClient(bobHome, { maxUnreadMs: MAX_UNREAD });
    let secrets: { alice: { body: Uint8Array; key: Uint8Array }; bob: { body: Uint8Array; key: Uint8Array } };
    const secret = `unread-${crypto.randomUUID()}`;
    try {
      const m = await alice.engine.send("bob", secret, { ttlMs: TTL, ttlMode: "read" });
      // Not displayed yet: expiresAt keeps meaning "starts when shown"; the unread bound is its own field.
      assert.equal(m.expiresAt, null);
      assert.equal(m.unreadExpiresAt, m.sentAt + MAX_UNREAD);
      const got = await bob.log.waitFor("message", (e) => e.message.id === m.id);
      assert.equal(got.message.text, secret);
      assert.equal(got.message.expiresAt, null);
      assert.equal(got.message.ttlMode, "read");
      // The receiver's bound counts from the proof-bounded send time: never later than the sender's.
      const bobBound = got.message.unreadExpiresAt!;
      assert.equal(bobBound, got.message.sentAt + MAX_UNREAD);
      assert.ok(bobBound <= m.sentAt + MAX_UNREAD);
      await alice.log.waitFor("delivered", (e) => e.id === m.id);
      secrets = { alice: await storedSecrets(aliceHome, m.id), bob: await storedSecrets(bobHome, m.id) };
      assert.equal(await filesContain(dbFiles(bobHome), enc.encode(secret)), false);

      // Unread and past its lifetime (TTL), it is still there: only the unread bound ends it.
      await new Promise((r) => setTimeout(r, TTL + 200));
      assert.equal(bob.engine.history("alice").length, 1);
      assert.equal(bob.engine.history("alice")[0].unreadExpiresAt, bobBound);
      assert.equal(alice.engine.history("bob").length, 1);

      // Never displayed: both copies die at the bound (never before it on trusted time).
      await bob.log.waitFor("expired", (e) => e.id === m.id, MAX_UNREAD + 5000);
      assert.ok(bob.engine.timeStatus().time!.latestMs >= bobBound);
      await alice.log.waitFor("expired", (e) => e.id === m.id, MAX_UNREAD + 5000);
      assert.ok(alice.engine.timeStatus().time!.latestMs >= m.sentAt + MAX_UNREAD);
      assert.deepEqual(bob.engine.history("alice"), []);
      assert.deepEqual(alice.engine.history("bob"), []);
      assert.equal(bob.store((s) => s.expiring()).length, 0);
      assert.equal(alice.store((s) => s.expiring()).length, 0);
      // Too late to display it now.
      assert.throws(() => bob.engine.markRead(m.id), { code: "NOT_FOUND" });
    } finally {
      await alice.stop();
      await bob.stop();
    }
    // After the engines closed: no row, no key, and neither the text, its ciphertext nor its key in any file.
    for (const [home, s] of [[aliceHome, secrets.alice], [bobHome, secrets.bob]] as const) {
      assert.deepEqual(await countRows(home), { messages: 0, keys: 0 });
      assert.equal(await filesContain(dbFiles(home), enc.encode(secret)), false);
      assert.equal(await filesContain(dbFiles(home), s.body), false);
      assert.equal(await filesContain(dbFiles(home), s.key), false);
    }
  });
});

Deno.test("self-destruct (read mode, never displayed): hidden after a restart without verified time, then deleted unseen once its bound may have passed", async () => {
  await withPair(async (_pb, aliceHome, bobHome) => {
    const port = await deadUdpPort();
    const blind: HomeState = { ...bobHome, roughtime: bobHome.roughtime.map((r) => ({ ...r, port })) };
    const alice = await startClient(aliceHome, { maxUnreadMs: MAX_UNREAD });
    let bob = await startClient(bobHome, { maxUnreadMs: MAX_UNREAD });
    try {
      const m = await alice.engine.send("bob", "never shown", { ttlMs: TTL, ttlMode: "read" });
      await alice.log.waitFor("delivered", (e) => e.id === m.id);
      await bob.stop();
      // Blind (a receiver without time refuses new expiring messages; this one was stored before): fail
      // closed, not shown, not displayable, on local time alone.
      bob = await startClient(blind, { timeQueryTimeoutMs: 300, maxUnreadMs: MAX_UNREAD });
      assert.equal(bob.engine.timeStatus().state, "unverified");
      assert.deepEqual(bob.engine.history("alice"), []);
      assert.throws(() => bob.engine.markRead(m.id), { code: "NOT_FOUND" });
      assert.equal(bob.store((s) => s.expiring()).length, 1);
      await bob.stop();
      await until(async () => (await alice.engine.contacts()).every((c) => !c.online), 5000, "bob offline");
      await alice.log.waitFor("expired", (e) => e.id === m.id, MAX_UNREAD + 5000);
      // Back with verified time after the bound: deleted at start without being shown again.
      bob = await startClient(bobHome, { maxUnreadMs: MAX_UNREAD });
      await bob.log.waitFor("expired", (e) => e.id === m.id, 5000);
      assert.deepEqual(bob.engine.history("alice"), []);
      assert.equal(bob.store((s) => s.expiring()).length, 0);
      assert.equal(await filesContain(dbFiles(bobHome), enc.encode("never shown")), false);
    } finally {
      await alice.stop();
      await bob.stop();
    }
  });
});
