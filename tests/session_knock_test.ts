/**
 * Issue 11, finding 5: a scan of a user's listener read its certificate ("Subject: bob"). Now a connection
 * must knock first (contract/knock.ts); without a valid knock the listener closes it without sending one
 * byte. Real sockets: `openssl s_client` against the listener, a raw TLS client with no knock, with a knock
 * made with another secret, an old one and a replayed one, each through a counting relay that proves the
 * listener sent nothing and closed the connection; then a peer with the right secret gets the certificate.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { FakeDirectory, rawDial, startTestEngine, startTestListener, until } from "./helpers/chat.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import { useTool } from "./helpers/tools.ts";
import { KNOCK_SLOT_MS, KNOCK_SLOT_SKEW, makeKnock, newKnockSecret } from "../contract/mod.ts";

/** A TCP relay in front of `port` that counts, per connection, the bytes the listener sent back and whether
 * the listener closed its side. */
async function countingRelay(port: number) {
  const legs: { fromListener: number; listenerClosed: Promise<void> }[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("error", () => {});
    const up = net.connect({ host: "127.0.0.1", port });
    sockets.add(up);
    up.on("error", () => {});
    const leg = {
      fromListener: 0,
      listenerClosed: new Promise<void>((r) => up.once("close", () => r())),
    };
    legs.push(leg);
    up.on("data", (b: Uint8Array) => {
      leg.fromListener += b.length;
      client.write(b);
    });
    client.on("data", (b: Uint8Array) => up.write(b));
    up.once("close", () => client.destroy());
    client.once("close", () => up.end());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    last: () => legs[legs.length - 1],
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

Deno.test("scan: openssl s_client gets no certificate and no byte, and the connection is closed", async () => {
  if (!useTool("openssl", "the openssl scan of a listener")) return;
  const ca = await makeTestCa();
  const bob = await makeTestLeaf(ca, "bob");
  const l = await startTestListener(ca, bob);
  const relay = await countingRelay(l.address.port);
  try {
    for (const port of [l.address.port, relay.port]) {
      const child = new Deno.Command("openssl", {
        args: ["s_client", "-connect", `127.0.0.1:${port}`, "-showcerts"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // Bounded: a listener that held the connection open would leave s_client waiting.
      const kill = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const out = await child.output();
      clearTimeout(kill);
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.notEqual(out.signal, "SIGKILL", "s_client returned: the listener closed the connection");
      assert.doesNotMatch(text, /BEGIN CERTIFICATE|Subject|subject=|bob|Certificate chain/, text);
      assert.match(text, /no peer certificate available/, text);
      assert.match(text, /handshake has read 0 bytes/, text);
    }
    assert.equal(relay.last().fromListener, 0, "the listener sent nothing");
    await relay.last().listenerClosed;
    assert.equal(l.sessions.stats.knockRefused, 2);
  } finally {
    await relay.close();
    await l.stop();
  }
});

Deno.test("scan: no knock, another secret, an old knock and a replayed one are closed unanswered", async () => {
  const ca = await makeTestCa();
  const bob = await makeTestLeaf(ca, "bob");
  const alice = await makeTestLeaf(ca, "alice");
  const l = await startTestListener(ca, bob);
  const relay = await countingRelay(l.address.port);
  const secret = l.sessions.knockSecret;
  try {
    // The right secret: the handshake completes and bob's certificate is what the knocker sees.
    const sniffed = makeKnock(secret);
    const good = await rawDial(l.address.port, alice, {}, { knockBytes: sniffed });
    assert.equal(good.socket.getPeerCertificate().subject?.CN, "bob");
    good.socket.destroy();

    const old = Date.now() - (KNOCK_SLOT_SKEW + 2) * KNOCK_SLOT_MS;
    const cases: [string, { knock?: Uint8Array | null; knockBytes?: Uint8Array }][] = [
      ["no knock (a plain TLS client)", { knock: null }],
      ["a knock made with another secret", { knock: newKnockSecret() }],
      ["a knock from minutes ago", { knockBytes: makeKnock(secret, old) }],
      ["a sniffed knock replayed", { knockBytes: sniffed }],
      ["random bytes of a knock's length", { knockBytes: crypto.getRandomValues(new Uint8Array(40)) }],
    ];
    for (const [what, opts] of cases) {
      const before = l.sessions.stats.knockRefused;
      await assert.rejects(rawDial(relay.port, alice, {}, opts), Error, `${what}: no TLS handshake`);
      await relay.last().listenerClosed;
      assert.equal(relay.last().fromListener, 0, `${what}: the listener sent nothing`);
      assert.equal(l.sessions.stats.knockRefused, before + 1, `${what}: counted`);
    }
    assert.equal(l.sessions.sessionCount(), 0, "none of them became a session");

    // And an honest peer with the secret still gets in after the scan.
    const again = await rawDial(relay.port, alice, {}, { knock: secret });
    assert.equal(again.socket.getPeerCertificate().subject?.CN, "bob");
    assert.ok(relay.last().fromListener > 0);
    again.socket.destroy();
  } finally {
    await relay.close();
    await l.stop();
  }
});

Deno.test("restart: a callee with a new secret is looked up again by the dialer, and the message arrives once", async () => {
  const ca = await makeTestCa();
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const limits = { dropReportIntervalMs: 50 };
  const shared = new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint });
  const bobDirectory = () =>
    new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint }, shared.entries);
  const alice = await startTestEngine(ca, aliceLeaf, { directory: shared, limits });
  let bob = await startTestEngine(ca, bobLeaf, { directory: bobDirectory(), limits });
  const bobDir = bob.dir;
  try {
    const m1 = await alice.engine.send("bob", "before the restart");
    await alice.log.waitFor("delivered", (e) => e.id === m1.id);
    const oldKnock = shared.entries.get("bob")!.knock!;

    // bob restarts (same folder): a new listener, a new secret, published again.
    await bob.engine.close();
    await until(() => alice.engine.connection("bob") === null, 5000, "alice sees bob gone");
    bob = await startTestEngine(ca, bobLeaf, { directory: bobDirectory(), limits, dir: bobDir });
    const current = shared.entries.get("bob")!;
    assert.notEqual(current.knock, oldKnock, "a new run, a new secret");
    // alice's next look-up is answered as just before bob published: his address, his old secret.
    shared.staleOnce.set("bob", { ...current, knock: oldKnock });
    const looked = shared.lookups.get("bob") ?? 0;

    const m2 = await alice.engine.send("bob", "after the restart");
    const got = await bob.log.waitFor("message", (e) => e.message.id === m2.id, 15_000);
    assert.equal(got.message.text, "after the restart");
    await alice.log.waitFor("delivered", (e) => e.id === m2.id);
    assert.equal(shared.staleOnce.size, 0, "the stale answer was used");
    assert.ok((shared.lookups.get("bob") ?? 0) >= looked + 2, "alice looked bob up again after the refusal");
    // Within the same attempt: alice never reported bob unreachable (the outbox's later retry would have
    // delivered too, after a PEER_UNANSWERED error shown to the user).
    assert.deepEqual(alice.log.of("error").filter((e) => e.code.startsWith("PEER_")).map((e) => e.code), []);
    // bob's listener refused the old knock silently, and said so once, as a summary.
    const summary = await bob.log.waitFor("log", (e) => e.text.includes("KNOCK_REFUSED"), 5000);
    assert.match(summary.text, /closed unanswered/);
    assert.equal(bob.store((s) => s.history("alice").filter((m) => m.id === m2.id).length), 1, "once");
  } finally {
    await alice.stop();
    await bob.engine.close();
    await Deno.remove(bobDir, { recursive: true }).catch(() => {});
  }
});
