/**
 * Pins in chat.db: a file written before keys were pinned (no pin_kind/peer_cert columns) opens, its pins
 * read as certificate pins with their verified mark, convert in place to key pins, and the last certificate
 * a peer proved is kept.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { ChatStore } from "../client/store/store.ts";

/** The contacts table exactly as the first version created it. */
const OLD_CONTACTS = `CREATE TABLE contacts (
  name TEXT PRIMARY KEY,
  pinned_fp TEXT,
  pending_fp TEXT,
  verified INTEGER NOT NULL DEFAULT 0,
  default_ttl_ms INTEGER
);`;

Deno.test("store pins: an old chat.db's pins are certificate pins, convert to key pins, keep verified", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = join(dir, "chat.db");
    const old = new DatabaseSync(path);
    old.exec(OLD_CONTACTS);
    old.prepare("INSERT INTO contacts (name, pinned_fp, verified) VALUES (?, ?, 1)").run(
      "bob",
      "a".repeat(64),
    );
    old.prepare("INSERT INTO contacts (name) VALUES (?)").run("carol");
    old.close();

    const store = new ChatStore(path);
    try {
      const bob = store.contact("bob")!;
      assert.equal(bob.pinKind, "certificate");
      assert.equal(bob.verified, true);
      assert.equal(bob.certificateDer, null);
      assert.equal(store.contact("carol")!.pinKind, null, "no pin, no kind");
      // Only the certificate pin named converts.
      store.convertPin("bob", "b".repeat(64), "c".repeat(64));
      assert.equal(store.contact("bob")!.pinnedFingerprint, "a".repeat(64));
      store.convertPin("bob", "a".repeat(64), "c".repeat(64));
      assert.deepEqual(
        { fp: store.contact("bob")!.pinnedFingerprint, kind: store.contact("bob")!.pinKind },
        { fp: "c".repeat(64), kind: "key" },
      );
      assert.equal(store.contact("bob")!.verified, true, "a conversion is the same identity");
      store.saveCertificate("bob", new Uint8Array([1, 2, 3]));
      store.pin("carol", "d".repeat(64));
      assert.equal(store.contact("carol")!.pinKind, "key");
    } finally {
      store.close();
    }
    const again = new ChatStore(path);
    try {
      assert.deepEqual(again.contact("bob")!.certificateDer, new Uint8Array([1, 2, 3]));
      assert.equal(again.contact("bob")!.pinKind, "key");
    } finally {
      again.close();
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
