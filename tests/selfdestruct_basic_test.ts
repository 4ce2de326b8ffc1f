import assert from "node:assert/strict";
import { join } from "node:path";
import type { HomeState } from "../client/home.ts";
import { dbFiles, deadUdpPort, filesContain, startClient, until, withPair } from "./helpers/chat.ts";

const enc = new TextEncoder();
const TTL = 8000;
/** The read-mode test's lifetimes: the margin a message has on arrival, and alice's copy after the read
 * receipt, is about this long (both sides' intervals are the same 3 s wide), so it must dwarf a delivery on a
 * loaded machine (1.5 s was too short: a marker arrived already dead, hence without an event, in CI). */
const READ_TTL = 3000;

Deno.test("self-destruct (send mode): both copies die at the deadline and the text is gone from the files", async () => {
  await withPair(async (_pb, aliceHome, bobHome) => {
    const alice = await startClient(aliceHome);
    const bob = await startClient(bobHome);
    try {
      const secret = `secret-${crypto.randomUUID()}`;
      // Longer than the test Roughtime server's uncertainty (3 s radius), so it is alive on arrival.
      const m = await alice.engine.send("bob", secret, { ttlMs: TTL });
      assert.equal(m.ttlMs, TTL);
      assert.equal(m.expiresAt, m.sentAt + TTL);
      const got = await bob.log.waitFor("message", (e) => e.message.id === m.id);
      assert.equal(got.message.text, secret);
      assert.ok(got.message.expiresAt !== null && got.message.expiresAt <= m.sentAt + TTL);
      await alice.log.waitFor("delivered", (e) => e.id === m.id);
      // Encrypted at rest while alive: the plaintext is in neither file.
      assert.equal(await filesContain(dbFiles(bobHome), enc.encode(secret)), false);
      assert.equal(await filesContain(dbFiles(aliceHome), enc.encode(secret)), false);
      assert.equal(bob.engine.history("alice").length, 1);

      await bob.log.waitFor("expired", (e) => e.id === m.id, TTL + 5000);
      await alice.log.waitFor("expired", (e) => e.id === m.id, TTL + 5000);
      // Never shown after the deadline on trusted time.
      const t = bob.engine.timeStatus().time!;
      assert.ok(t.latestMs >= got.message.expiresAt!);
      assert.deepEqual(bob.engine.history("alice"), []);
      assert.deepEqual(alice.engine.history("bob"), []);
      assert.equal(bob.store((s) => s.expiring()).length, 0);
      const ex = bob.log.of("expired").find((e) => e.id === m.id)!;
      assert.deepEqual(Object.keys(ex).sort(), ["event", "id", "peer"]);
    } finally {
      await alice.stop();
      await bob.stop();
    }
    // After the engines closed: neither the id-bound key nor any row of it remains.
    const db = new (await import("node:sqlite")).DatabaseSync(join(bobHome.dir, "chat.db"));
    assert.equal((db.prepare("SELECT COUNT(*) AS n FROM message_keys").get() as { n: number }).n, 0);
    assert.equal((db.prepare("SELECT COUNT(*) AS n FROM messages").get() as { n: number }).n, 0);
    db.close();
  });
});

Deno.test("self-destruct (read mode): the lifetime starts at first display, on both sides", async () => {
  await withPair(async (_pb, aliceHome, bobHome) => {
    const alice = await startClient(aliceHome);
    const bob = await startClient(bobHome);
    try {
      const m = await alice.engine.send("bob", "read me then forget me", {
        ttlMs: READ_TTL,
        ttlMode: "read",
      });
      assert.equal(m.expiresAt, null);
      const got = await bob.log.waitFor("message", (e) => e.message.id === m.id);
      assert.equal(got.message.expiresAt, null);
      assert.equal(got.message.ttlMode, "read");
      // Not read yet: it stays past its lifetime. A "send" message of the same lifetime sent after it marks
      // the time: once bob's copy of that one has died, m's lifetime counted from sending has certainly run
      // out on bob's trusted time (its deadline would be earlier than the marker's).
      const marker = await alice.engine.send("bob", "marker", { ttlMs: READ_TTL });
      await bob.log.waitFor("message", (e) => e.message.id === marker.id, 10_000);
      await bob.log.waitFor("expired", (e) => e.id === marker.id, 10_000);
      assert.deepEqual(bob.engine.history("alice").map((x) => x.id), [m.id]);
      bob.engine.markRead(m.id);
      const shown = bob.engine.history("alice")[0];
      assert.ok(shown.expiresAt !== null);
      await alice.log.waitFor("read", (e) => e.id === m.id);
      // By id: alice's marker may still be there (her own interval, hence its deadline, may be later).
      const mine = alice.engine.history("bob").find((x) => x.id === m.id);
      assert.ok(mine, "alice's copy is there right after the read receipt");
      assert.ok(mine.expiresAt !== null && mine.expiresAt <= shown.expiresAt! + 1000);
      await bob.log.waitFor("expired", (e) => e.id === m.id, READ_TTL + 5000);
      await alice.log.waitFor("expired", (e) => e.id === m.id, READ_TTL + 5000);
      await alice.log.waitFor("expired", (e) => e.id === marker.id, READ_TTL + 5000);
      assert.deepEqual(bob.engine.history("alice"), []);
      assert.deepEqual(alice.engine.history("bob"), []);
    } finally {
      await alice.stop();
      await bob.stop();
    }
  });
});

Deno.test("self-destruct: without verified time an expiring message is refused; one stored earlier stays hidden after a restart until time is verified, then it is deleted", async () => {
  await withPair(async (_pb, aliceHome, bobHome) => {
    const port = await deadUdpPort();
    const blind: HomeState = { ...bobHome, roughtime: bobHome.roughtime.map((r) => ({ ...r, port })) };
    const alice = await startClient(aliceHome);
    let bob = await startClient(blind, { timeQueryTimeoutMs: 300 });
    try {
      assert.equal(bob.engine.timeStatus().state, "unverified");
      const plain = await alice.engine.send("bob", "no lifetime");
      const refused = await alice.engine.send("bob", "refused without time", { ttlMs: TTL });
      await alice.log.waitFor(
        "failed",
        (e) => e.id === refused.id && /cannot verify the time/.test(e.reason),
      );
      await bob.log.waitFor("message", (e) => e.message.id === plain.id);
      // Not stored, not acknowledged: nothing of it on bob's side (docs/protocol.md "refuse").
      assert.equal(bob.log.of("message").some((e) => e.message.id === refused.id), false);
      assert.deepEqual(bob.engine.history("alice").map((m) => m.id), [plain.id]);
      assert.equal(bob.store((s) => s.expiring()).length, 0);
      await bob.stop();

      // Stored while bob's time is verified...
      bob = await startClient(bobHome);
      const secret = await alice.engine.send("bob", "hidden without time", { ttlMs: TTL });
      await bob.log.waitFor("message", (e) => e.message.id === secret.id);
      await bob.stop();
      // ...then a restart, blind: hidden (fail closed), not shown on local time alone.
      bob = await startClient(blind, { timeQueryTimeoutMs: 300 });
      assert.deepEqual(bob.engine.history("alice").map((m) => m.id), [plain.id]);
      assert.throws(() => bob.engine.markRead(secret.id), { code: "NOT_FOUND" });
      await bob.stop();
      await until(async () => (await alice.engine.contacts()).every((c) => !c.online), 5000, "bob offline");
      // Once the deadline may have passed on trusted time (alice's copies are gone), restart with time: bob's
      // copy is deleted without being shown again.
      await alice.log.waitFor("expired", (e) => e.id === secret.id, TTL + 5000);
      await alice.log.waitFor("expired", (e) => e.id === refused.id, TTL + 5000);
      await new Promise((r) => setTimeout(r, 500));
      bob = await startClient(bobHome);
      await bob.log.waitFor("expired", (e) => e.id === secret.id, 5000);
      assert.deepEqual(bob.engine.history("alice").map((m) => m.id), [plain.id]);
      assert.equal(await filesContain(dbFiles(bobHome), enc.encode("hidden without time")), false);
      assert.equal(await filesContain(dbFiles(bobHome), enc.encode("refused without time")), false);
    } finally {
      await alice.stop();
      await bob.stop();
    }
  });
});

Deno.test("self-destruct: a sender without verified time refuses to send an expiring message", async () => {
  await withPair(async (_pb, aliceHome) => {
    const port = await deadUdpPort();
    const blind: HomeState = { ...aliceHome, roughtime: aliceHome.roughtime.map((r) => ({ ...r, port })) };
    const alice = await startClient(blind, { timeQueryTimeoutMs: 300 });
    try {
      await assert.rejects(alice.engine.send("bob", "x", { ttlMs: 5000 }), { code: "TIME_UNVERIFIED" });
      await assert.rejects(alice.engine.send("bob", "x", { ttlMs: 0 }), { code: "BAD_TTL" });
      await assert.rejects(alice.engine.send("bob", "x", { ttlMs: NaN }), { code: "BAD_TTL" });
      assert.deepEqual(alice.engine.history("bob"), []);
    } finally {
      await alice.stop();
    }
  });
});

Deno.test("self-destruct: while another program reads chat.db the expired message's key stays in the files; the engine says so, and removes it once the program lets go", async () => {
  await withPair(async (_pb, aliceHome, bobHome) => {
    const alice = await startClient(aliceHome);
    const bob = await startClient(bobHome);
    const { DatabaseSync } = await import("node:sqlite");
    const reader = new DatabaseSync(join(bobHome.dir, "chat.db"), { readOnly: true });
    let reading = false;
    try {
      const m = await alice.engine.send("bob", `held-${crypto.randomUUID()}`, { ttlMs: TTL });
      await bob.log.waitFor("message", (e) => e.message.id === m.id);
      bob.store((s) => s.checkpoint());
      const key =
        (reader.prepare("SELECT key FROM message_keys WHERE id = ?").get(m.id) as { key: Uint8Array })
          .key;
      // A backup tool or an sqlite3 shell in the middle of a read: SQLite may not overwrite its pages.
      reader.exec("BEGIN");
      reader.prepare("SELECT count(*) FROM messages").get();
      reading = true;
      await bob.log.waitFor("expired", (e) => e.id === m.id, TTL + 5000);
      const warn = await bob.log.waitFor("log", (e) => e.level === "warn" && /chat\.db-wal/.test(e.text));
      assert.match(warn.text, /another program has chat\.db open/);
      assert.deepEqual(bob.engine.history("alice"), [], "deleted and not shown all the same");
      assert.equal(
        await filesContain(dbFiles(bobHome), key),
        true,
        "held in the files while the program reads",
      );
      reader.exec("COMMIT");
      reading = false;
      await bob.log.waitFor("log", (e) => e.level === "info" && /gone from chat\.db-wal/.test(e.text), 5000);
      assert.equal(
        await filesContain(dbFiles(bobHome), key),
        false,
        "the key is gone once the program let go",
      );

      // Held again, and still held when bob quits after another deletion: the engine says what stays behind.
      const m2 = await alice.engine.send("bob", `held-${crypto.randomUUID()}`, { ttlMs: TTL });
      await bob.log.waitFor("message", (e) => e.message.id === m2.id);
      reader.exec("BEGIN");
      reader.prepare("SELECT count(*) FROM messages").get();
      reading = true;
      await bob.log.waitFor("expired", (e) => e.id === m2.id, TTL + 5000);
      await bob.stop();
      assert.ok(
        bob.log.of("log").some((e) => e.level === "warn" && /until securechat next opens it/.test(e.text)),
        "the quit says deleted pages stay until the next start",
      );
    } finally {
      if (reading) reader.exec("COMMIT");
      reader.close();
      await alice.stop();
      await bob.stop();
    }
  });
});
