/**
 * "Crashes and faults" of security-tests.md: the receiver is killed with SIGKILL while messages pour in, many
 * times; a peer dies in the middle of a send.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { DirectoryClient } from "../client/directory_client.ts";
import { ChatStore } from "../client/store/store.ts";
import {
  enrollUser,
  rawListen,
  type RawPeer,
  spawnHeadless,
  startClient,
  startPhonebook,
  until,
  withStore,
} from "./helpers/chat.ts";

const KILLS = 6;
const TTL = 8000;
const BURST = 40;

Deno.test("kill -9 during a write loop, many times: database intact, no acknowledged message lost, no half or duplicate message, expired still deleted after restart", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  // bob talks with alice already (else her messages would be a message request, held to 5).
  withStore(join(bobHome.dir, "chat.db"), (s) => s.setAccepted("alice"));
  const alice = await startClient(aliceHome);
  const sent = new Map<string, { text: string; ttl: boolean }>();
  let sending = true;
  // Bursts of sends issued together: they share commits at alice, arrive together at bob and share commits
  // there too, so the kill lands in the middle of batches (the group-commit path), not of single writes.
  const loop = (async () => {
    let n = 0;
    while (sending) {
      const burst = Array.from({ length: 1 + (n % BURST) }, () => {
        const ttl = n % 5 === 0;
        const text = `msg-${n}-${"y".repeat(n % 97)}`;
        n++;
        return alice.engine.send("bob", text, ttl ? { ttlMs: TTL } : {}).then((m) =>
          sent.set(m.id, { text, ttl })
        );
      });
      await Promise.all(burst);
      await new Promise((r) => setTimeout(r, 3));
    }
  })();
  try {
    for (let k = 0; k < KILLS; k++) {
      const bob = spawnHeadless(bobHome.dir);
      await bob.waitEvent((e) => e.event === "ready", 30_000, "bob ready");
      const before = alice.log.of("delivered").length;
      // Let messages flow, then kill in the middle of it.
      await until(() => alice.log.of("delivered").length > before + 20, 20_000, "deliveries");
      await new Promise((r) => setTimeout(r, 50 + Math.floor(Math.random() * 200)));
      await bob.kill("SIGKILL");
      await alice.log.waitFor("peer-offline", () => alice.log.of("peer-offline").length > k, 10_000);

      const store = new ChatStore(join(bobHome.dir, "chat.db"));
      try {
        assert.equal(store.integrityCheck(), "ok");
        const history = store.history("alice");
        // Every row is whole: each decrypts and is exactly a text alice sent under that id.
        for (const m of history) assert.equal(m.text, sent.get(m.id)?.text, `message ${m.id}`);
        assert.equal(new Set(history.map((m) => m.id)).size, history.length, "duplicate message");
        const raw = new DatabaseSync(join(bobHome.dir, "chat.db"), { readOnly: true });
        const rows = (raw.prepare("SELECT COUNT(*) AS n FROM messages").get() as { n: number }).n;
        raw.close();
        assert.equal(rows, history.length, "a stored row could not be read back");
        // Acknowledged means stored: every delivery receipt alice holds is in bob's database, as a message or
        // (one that expired since) as a remembered id.
        for (const d of alice.log.of("delivered")) {
          assert.ok(store.hasReceived("alice", d.id), `acknowledged ${d.id} lost`);
        }
      } finally {
        store.close();
      }
    }
    sending = false;
    await loop;
    const commits = alice.engine.stats().commits;
    assert.ok(commits < sent.size, `sends were batched (${commits} commits for ${sent.size} messages)`);
    // Back for good: everything still queued is delivered exactly once.
    const bob = await startClient(bobHome);
    try {
      await until(() => alice.store((s) => s.outbox("bob")).length === 0, 30_000, "outbox drained");
      const delivered = new Set(alice.log.of("delivered").map((d) => d.id));
      const expiredAtAlice = new Set(alice.log.of("expired").map((e) => e.id));
      for (const id of sent.keys()) {
        assert.ok(delivered.has(id) || expiredAtAlice.has(id), `never delivered: ${id}`);
      }
      const ids = bob.store((s) => s.history("alice")).map((m) => m.id);
      assert.equal(new Set(ids).size, ids.length);
      // Expiring messages stored before the crashes are deleted once their time is up, after the restart.
      const deadline = Math.max(...alice.store((s) => s.expiring()).map((r) => r.expiresAt ?? 0), 0);
      await until(
        () => bob.store((s) => s.expiring()).length === 0,
        TTL + 15_000,
        `expiring messages deleted (last deadline ${deadline})`,
      );
      for (const [id, s] of sent) if (!s.ttl && delivered.has(id)) assert.ok(ids.includes(id), `lost ${id}`);
      assert.equal(bob.store((s) => s.integrityCheck()), "ok");
    } finally {
      await bob.stop();
    }
  } finally {
    sending = false;
    await loop.catch(() => {});
    await alice.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("a peer killed mid-send: the sender shows not delivered, resends once, and the receiver holds one copy", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = await startClient(aliceHome);
  // A "bob" that takes the message and dies before it can acknowledge it.
  const got: string[] = [];
  const dying = await rawListen({ certPem: bobHome.certPem, keyPem: bobHome.keyPem }, (p: RawPeer) => {
    (async () => {
      await p.waitFrame((f) => f.t === "hello");
      p.send(p.hello({ from: "bob", to: "alice", signKeyPem: bobHome.keyPem }));
      const f = await p.waitFrame((x) => x.t === "msg");
      if (f.t === "msg") got.push(f.id);
      p.socket.destroy();
    })().catch(() => {});
  });
  const d = new DirectoryClient({
    url: bobHome.server,
    caPem: bobHome.caPem,
    certPem: bobHome.certPem,
    keyPem: bobHome.keyPem,
  });
  try {
    await d.publish("127.0.0.1", dying.port, 300);
    const m = await alice.engine.send("bob", "are you there?");
    const failed = await alice.log.waitFor("failed", (e) => e.id === m.id);
    assert.equal(failed.reason, "not delivered");
    assert.equal(alice.engine.history("bob")[0].state, "failed");
    assert.deepEqual(got, [m.id]);
    await dying.close();

    // The real bob comes back (and publishes his real address): the message is sent once more.
    const bob = await startClient(bobHome);
    try {
      await alice.log.waitFor("delivered", (e) => e.id === m.id, 15_000);
      const receivedAt = await bob.log.waitFor("message", (e) => e.message.id === m.id);
      assert.equal(receivedAt.message.text, "are you there?");
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(alice.log.of("sent").filter((e) => e.id === m.id).length, 2, "sent once, resent once");
      assert.equal(bob.log.of("message").filter((e) => e.message.id === m.id).length, 1);
      assert.deepEqual(bob.engine.history("alice").map((x) => x.id), [m.id]);
    } finally {
      await bob.stop();
    }
  } finally {
    d.close();
    await alice.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});
