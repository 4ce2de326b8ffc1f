import assert from "node:assert/strict";
import { DirectoryClient } from "../client/directory_client.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import {
  enrollUser,
  FakeDirectory,
  startClient,
  startPhonebook,
  startTestEngine,
  until,
} from "./helpers/chat.ts";

Deno.test("simultaneous dials are resolved to one connection, the same on both sides, with no duplicates", async () => {
  const ca = await makeTestCa();
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const shared = new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint });
  for (let round = 0; round < 5; round++) {
    const alice = await startTestEngine(ca, aliceLeaf, { directory: shared });
    const bob = await startTestEngine(ca, bobLeaf, {
      directory: new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint }, shared.entries),
    });
    try {
      // Both send at once: both dial.
      const [a, b] = await Promise.all([
        alice.engine.send("bob", `a${round}`),
        bob.engine.send("alice", `b${round}`),
      ]);
      await alice.log.waitFor("delivered", (e) => e.id === a.id);
      await bob.log.waitFor("delivered", (e) => e.id === b.id);
      await until(
        () => alice.engine.stats().sessions === 1 && bob.engine.stats().sessions === 1,
        5000,
        "one connection each",
      );
      // The kept connection is the one alice dialed ("alice" < "bob"), on both sides.
      assert.equal(alice.engine.connection("bob")?.role, "dialer");
      assert.equal(bob.engine.connection("alice")?.role, "listener");
      assert.equal(alice.log.of("message").length, 1);
      assert.equal(alice.log.of("peer-online").length, 1);
      assert.equal(bob.log.of("peer-online").length, 1);
      assert.equal(bob.log.of("message").length, 1);
      assert.deepEqual(alice.engine.history("bob").map((m) => m.text), [`a${round}`, `b${round}`].sort());
    } finally {
      await alice.stop();
      await bob.stop();
    }
  }
});

Deno.test("the address is published while running and withdrawn on exit; a directory restart does not stop chat", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const look = new DirectoryClient({
    url: bobHome.server,
    caPem: bobHome.caPem,
    certPem: bobHome.certPem,
    keyPem: bobHome.keyPem,
  });
  let alice = await startClient(aliceHome);
  let bob = await startClient(bobHome);
  try {
    const entry = await look.lookup("alice");
    assert.equal(entry?.online, true);
    assert.deepEqual(entry?.address, alice.engine.address);

    const m1 = await alice.engine.send("bob", "before the restart");
    await bob.log.waitFor("message", (e) => e.message.id === m1.id);

    // The directory goes down: the open session carries on.
    await pb.restart({ downMs: 300 });
    const m2 = await alice.engine.send("bob", "during and after the restart");
    await bob.log.waitFor("message", (e) => e.message.id === m2.id);

    // New sessions after the restart: certificates still verify, addresses are published again.
    await bob.stop();
    bob = await startClient(bobHome);
    const m3 = await alice.engine.send("bob", "new session");
    await bob.log.waitFor("message", (e) => e.message.id === m3.id);
    await alice.log.waitFor("delivered", (e) => e.id === m3.id);

    await alice.stop();
    await until(async () => (await look.lookup("alice"))?.online === false, 5000, "alice withdrawn");
    alice = await startClient(aliceHome);
  } finally {
    look.close();
    await alice.stop();
    await bob.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("keep-alive holds an idle session open past the idle timeout; typing notices arrive", async () => {
  const ca = await makeTestCa();
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const limits = { keepaliveIntervalMs: 100, idleTimeoutMs: 400 };
  const shared = new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint });
  const alice = await startTestEngine(ca, aliceLeaf, { directory: shared, limits });
  const bob = await startTestEngine(ca, bobLeaf, {
    directory: new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint }, shared.entries),
    limits,
  });
  try {
    const m = await alice.engine.send("bob", "hi");
    await alice.log.waitFor("delivered", (e) => e.id === m.id);
    const s = alice.engine.connection("bob")?.sessionId;
    assert.ok(s !== undefined);
    // Four idle timeouts (16 keep-alive rounds) with nothing to say: pings keep it alive.
    await until(() => (alice.engine.connection("bob")?.pongs ?? 0) >= 16, 10_000, "16 keep-alive rounds");
    assert.equal(alice.engine.connection("bob")?.sessionId, s);
    assert.equal(alice.log.of("peer-offline").length + bob.log.of("peer-offline").length, 0);
    alice.engine.typing("bob");
    const t = await bob.log.waitFor("typing");
    assert.equal(t.from, "alice");
    // Typing notices are not stored.
    assert.deepEqual(bob.engine.history("alice").map((x) => x.text), ["hi"]);
  } finally {
    await alice.stop();
    await bob.stop();
  }
});
