/**
 * The revocation list kept in chat.db is the signed DER, verified again at every start: with the phonebook
 * away, an intact stored list still lets peers in, while one changed on disk (a revocation removed, a
 * signature broken) is refused at start, said plainly (STORED_CRL_REFUSED), and every peer is refused
 * until a fresh list is fetched (fail closed).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { DatabaseSync } from "node:sqlite";
import { CHAT_DB_FILE } from "../client/engine.ts";
import { enrollUser, startClient, startPhonebook, until } from "./helpers/chat.ts";

/** Changes one byte of the stored CRL's DER (its signature is at the end). */
function tamperStoredCrl(dbPath: string): void {
  const db = new DatabaseSync(dbPath);
  try {
    const row = db.prepare("SELECT v FROM meta WHERE k = 'crl.v1'").get() as { v: string };
    const j = JSON.parse(row.v);
    assert.equal(typeof j.der, "string", "the DER is kept");
    const der = Buffer.from(j.der, "base64");
    der[der.length - 3] ^= 0x01;
    j.der = der.toString("base64");
    db.prepare("UPDATE meta SET v = ? WHERE k = 'crl.v1'").run(JSON.stringify(j));
  } finally {
    db.close();
  }
}

Deno.test("stored CRL: verified again at start; intact it serves while the phonebook is away, tampered it is refused", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  // Both fetch and keep a list while the phonebook is up.
  await (await startClient(aliceHome)).stop();
  await (await startClient(bobHome)).stop();
  await pb.server.close();
  const alice = await startClient(aliceHome);
  try {
    // Intact: bob (phonebook away) judges alice on the stored list.
    let bob = await startClient(bobHome);
    try {
      assert.equal(bob.log.of("error").some((e) => e.code === "STORED_CRL_REFUSED"), false);
      await alice.engine.connectTo("bob", bob.engine.address.host, bob.engine.address.port, bob.knockSecret);
    } finally {
      await bob.stop();
    }
    tamperStoredCrl(join(bobHome.dir, CHAT_DB_FILE));
    bob = await startClient(bobHome);
    try {
      const refused = bob.log.of("error").find((e) => e.code === "STORED_CRL_REFUSED");
      assert.ok(refused, "the tampered list is refused at start, and said");
      assert.match(refused.message, /does not verify/);
      await assert.rejects(
        alice.engine.connectTo("bob", bob.engine.address.host, bob.engine.address.port, bob.knockSecret),
      );
      await until(
        () => bob.log.of("log").some((e) => /REVOCATION_UNKNOWN/.test(e.text)),
        10_000,
        "bob refuses alice: no revocation list",
      );
    } finally {
      await bob.stop();
    }
  } finally {
    await alice.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});
