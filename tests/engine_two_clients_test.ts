import assert from "node:assert/strict";
import {
  enrollUser,
  FakeDirectory,
  startClient,
  startPhonebook,
  startTestEngine,
  until,
} from "./helpers/chat.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";

Deno.test("two clients and a phonebook: both ways, receipts, offline then delivered, restarts, no duplicates", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  let alice = await startClient(aliceHome);
  let bob = await startClient(bobHome);
  try {
    // alice -> bob, with delivery and read receipts.
    const m1 = await alice.engine.send("bob", "hello bob");
    assert.equal(m1.state, "sending");
    const got = await bob.log.waitFor("message", (e) => e.message.id === m1.id);
    assert.equal(got.message.text, "hello bob");
    assert.equal(got.message.from, "alice");
    assert.equal(got.message.expiresAt, null);
    await alice.log.waitFor("delivered", (e) => e.id === m1.id);
    bob.engine.markRead(m1.id);
    await alice.log.waitFor("read", (e) => e.id === m1.id && e.by === "bob");
    assert.equal(alice.engine.history("bob").find((m) => m.id === m1.id)?.state, "read");

    // bob -> alice over the same connection.
    const m2 = await bob.engine.send("alice", "hi alice");
    await alice.log.waitFor("message", (e) => e.message.id === m2.id);
    await bob.log.waitFor("delivered", (e) => e.id === m2.id);
    assert.equal(alice.engine.stats().sessions, 1);
    assert.equal(bob.engine.stats().sessions, 1);

    // bob goes away; alice's message waits in her outbox and is delivered when bob is back (restart).
    await bob.stop();
    await alice.log.waitFor("peer-offline", (e) => e.name === "bob");
    const m3 = await alice.engine.send("bob", "while you were out");
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(alice.engine.history("bob").find((m) => m.id === m3.id)?.state, "sending");
    bob = await startClient(bobHome);
    const got3 = await bob.log.waitFor("message", (e) => e.message.id === m3.id);
    assert.equal(got3.message.text, "while you were out");
    await alice.log.waitFor("delivered", (e) => e.id === m3.id);

    // alice restarts; bob's reply reaches her; nobody holds a duplicate.
    await alice.stop();
    const m4 = await bob.engine.send("alice", "welcome back");
    alice = await startClient(aliceHome);
    await alice.log.waitFor("message", (e) => e.message.id === m4.id);
    await bob.log.waitFor("delivered", (e) => e.id === m4.id);

    // alice reads bob's m4 while bob is away, and restarts: the read receipt still reaches bob.
    await bob.stop();
    await alice.log.waitFor("peer-offline", (e) => e.name === "bob");
    alice.engine.markRead(m4.id);
    await alice.stop();
    alice = await startClient(aliceHome);
    bob = await startClient(bobHome);
    await bob.log.waitFor("read", (e) => e.id === m4.id && e.by === "alice");

    const ids = (h: { id: string }[]) => h.map((m) => m.id);
    assert.deepEqual(ids(alice.engine.history("bob")), [m1.id, m2.id, m3.id, m4.id]);
    assert.deepEqual(ids(bob.engine.history("alice")), [m1.id, m2.id, m3.id, m4.id]);
    assert.equal(alice.engine.history("bob")[1].direction, "in");
    // Pins were taken on first use and match the certificates.
    const info = alice.engine.peerInfo("bob");
    assert.equal(info?.pinnedFingerprint, info?.fingerprint);
    assert.equal(info?.tlsVersion, "TLSv1.3");
    const contacts = await alice.engine.contacts();
    assert.deepEqual(contacts.map((c) => c.name), ["bob"]);
    assert.equal(contacts[0].online, true);
  } finally {
    await alice.stop();
    await bob.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("a burst of 5,000 messages in flight is delivered over one session: receipts for our own messages are never rate-limited", async () => {
  const ca = await makeTestCa();
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const shared = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory: shared });
  const alice = await startTestEngine(ca, aliceLeaf, {
    directory: new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint }, shared.entries),
  });
  try {
    const first = await alice.engine.send("bob", "hello");
    await alice.log.waitFor("delivered", (e) => e.id === first.id);
    const session = alice.engine.connection("bob")!.sessionId;
    const N = 5000;
    await Promise.all(Array.from({ length: N }, (_, i) => alice.engine.send("bob", `burst ${i}`)));
    await until(() => alice.log.of("delivered").length === N + 1, 60_000, "every receipt");
    assert.equal(alice.engine.connection("bob")?.sessionId, session, "the same session throughout");
    const refusals = [...alice.log.events, ...bob.log.events].filter((e) =>
      (e.event === "log" && /RATE_LIMITED/.test(e.text)) ||
      (e.event === "error" && /RATE_LIMITED/.test(e.code))
    );
    assert.deepEqual(refusals, []);
    assert.equal(alice.log.of("failed").length, 0);
    assert.equal(bob.log.of("message").length, N + 1);
  } finally {
    await alice.stop();
    await bob.stop();
  }
});
