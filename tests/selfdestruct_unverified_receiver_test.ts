/**
 * No keeping a message by blocking time: a receiver whose Roughtime server is blocked (its requests go to a
 * socket that never answers) refuses an expiring message with `refuse TIME_UNVERIFIED` instead of storing
 * and acknowledging it; nothing of it reaches its chat.db. The sender keeps it queued ("failed", sent again),
 * its own copy dies on time, and messages that do not expire still get through on the same session.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { CHAT_DB_FILE } from "../client/engine.ts";
import { enrollUser, startClient, startPhonebook } from "./helpers/chat.ts";

Deno.test("a receiver without verified time refuses expiring messages; the sender's copy dies on time", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  // Bob's time server is black-holed: a socket that reads and never answers.
  const hole = dgram.createSocket("udp4");
  await new Promise<void>((r) => hole.bind(0, "127.0.0.1", r));
  hole.on("message", () => {});
  const blocked = {
    ...bobHome,
    roughtime: bobHome.roughtime.map((r) => ({ ...r, port: hole.address().port })),
  };
  const alice = await startClient(aliceHome);
  const bob = await startClient(blocked);
  try {
    assert.equal(bob.engine.timeStatus().state, "unverified");
    assert.equal(alice.engine.timeStatus().state, "verified");
    const secret = `expiring-${crypto.randomUUID()}`;
    const m = await alice.engine.send("bob", secret, { ttlMs: 4000 });
    const failed = await alice.log.waitFor("failed", (e) => e.id === m.id, 10_000);
    assert.match(failed.reason, /cannot verify the time/);
    // The same session still carries messages that do not expire.
    const plain = await alice.engine.send("bob", "no lifetime");
    await bob.log.waitFor("message", (e) => e.message.id === plain.id, 10_000);
    assert.ok(bob.log.of("log").some((e) => /refused an expiring message from alice/.test(e.text)));
    assert.equal(bob.log.of("message").some((e) => e.message.id === m.id), false, "never shown");
    assert.equal(alice.log.of("delivered").some((e) => e.id === m.id), false, "never acknowledged");
    // The sender's copy dies at its deadline (it was never delivered).
    await alice.log.waitFor("expired", (e) => e.id === m.id, 10_000);
    assert.equal(alice.engine.history("bob").some((x) => x.id === m.id), false);
  } finally {
    await bob.stop();
    await alice.stop();
    hole.close();
    await pb.close();
  }
  // Nothing of it on bob's disk: no row, no key, no text.
  const path = join(bobHome.dir, CHAT_DB_FILE);
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const n = db.prepare("SELECT count(*) AS n FROM messages WHERE direction = 'in' AND ttl_ms IS NOT NULL")
      .get() as { n: number };
    assert.equal(Number(n.n), 0);
  } finally {
    db.close();
  }
  await Deno.remove(aliceHome.dir, { recursive: true });
  await Deno.remove(bobHome.dir, { recursive: true });
});
