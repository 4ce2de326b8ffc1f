/**
 * The relay on loopback, with real engines: relay-only users reach each other through it, the session runs
 * end to end inside the circuit (the relay forwards bytes that never contain the messages), the path is
 * shown as relayed, per-user limits refuse with a clear error, and a revoked certificate cannot hold a
 * control connection.
 */
import assert from "node:assert/strict";
import tls from "node:tls";
import { enrollUser, startClient, startPhonebook, until } from "./helpers/chat.ts";
import { decodeRelayNotice } from "../contract/mod.ts";
import { DirectoryClient } from "../client/directory_client.ts";
import { revokeUser } from "../server/mod.ts";

function contains(hay: Uint8Array[], needle: string): boolean {
  const all = new Uint8Array(hay.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of hay) {
    all.set(c, o);
    o += c.length;
  }
  return Buffer.from(all).includes(Buffer.from(needle));
}

Deno.test("relay: relay-only users chat through the relay, which forwards only ciphertext", async () => {
  const forwarded: Uint8Array[] = [];
  const pb = await startPhonebook({ onRelayForward: (c) => forwarded.push(new Uint8Array(c)) });
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = await startClient(aliceHome, { relayOnly: true });
  const bob = await startClient(bobHome, { relayOnly: true });
  try {
    // The phonebook lists bob online with no address of his: only the relay.
    const entry = await new DirectoryClient({ url: pb.server.url, caPem: aliceHome.caPem }).lookup("bob");
    assert.equal(entry?.online, true);
    assert.equal(entry?.address, null);
    assert.deepEqual(entry?.candidates, []);
    assert.equal(entry?.relay?.port, pb.server.relay!.port);

    const secret1 = "the eagle lands at noon " + crypto.randomUUID();
    const m1 = await alice.engine.send("bob", secret1);
    const got = await bob.log.waitFor("message", (e) => e.message.id === m1.id);
    assert.equal(got.message.text, secret1);
    await alice.log.waitFor("delivered", (e) => e.id === m1.id);
    const secret2 = "reply with the second code " + crypto.randomUUID();
    const m2 = await bob.engine.send("alice", secret2);
    await alice.log.waitFor("message", (e) => e.message.id === m2.id);

    const info = alice.engine.peerInfo("bob")!;
    assert.equal(info.pathKind, "relayed");
    assert.equal(info.pathAddress, `127.0.0.1:${pb.server.relay!.port}`);
    assert.match(info.path!, /^relayed via 127\.0\.0\.1:/);
    assert.equal(info.tlsVersion, "TLSv1.3");
    assert.equal(bob.engine.peerInfo("alice")!.pathKind, "relayed");
    assert.match((await alice.engine.contacts()).find((c) => c.name === "bob")!.path!, /^relayed/);

    // The relay carried the session (TLS records) and never the texts, nor the names inside the session.
    const stats = pb.server.relay!.stats();
    assert.ok(stats.bytesForwarded > 1000, `relay forwarded ${stats.bytesForwarded} bytes`);
    assert.equal(forwarded.reduce((n, c) => n + c.length, 0), stats.bytesForwarded);
    assert.ok(forwarded.some((c) => c[0] === 0x16 || c[0] === 0x17), "TLS records pass the relay");
    for (const s of [secret1, secret2, "the eagle", '"t":"msg"']) assert.ok(!contains(forwarded, s), s);
  } finally {
    await alice.stop();
    await bob.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("relay: a user over its circuit limit gets a clear error and the message waits", async () => {
  const pb = await startPhonebook({ relayLimits: { maxCircuitsPerUser: 0 } });
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = await startClient(aliceHome, { relayOnly: true });
  const bob = await startClient(bobHome, { relayOnly: true });
  try {
    const m = await alice.engine.send("bob", "over the limit");
    const err = await alice.log.waitFor("error", (e) => e.code === "PEER_LIMIT_CIRCUITS");
    assert.match(err.message, /relayed circuits \(the relay's limit per user\)/);
    assert.equal(alice.engine.history("bob").find((x) => x.id === m.id)?.state, "sending");
    assert.equal(pb.server.relay!.stats().refused.LIMIT_CIRCUITS >= 1, true);
  } finally {
    await alice.stop();
    await bob.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("relay: a control connection needs a current certificate (revoked ones are refused)", async () => {
  const pb = await startPhonebook();
  const home = await enrollUser(pb, "carol");
  const connect = () =>
    new Promise<string>((resolve, reject) => {
      const s = tls.connect({
        host: "127.0.0.1",
        port: pb.server.relay!.port,
        cert: home.certPem,
        key: home.keyPem,
        ca: [home.caPem],
      });
      let buf = "";
      s.on("data", (d: Uint8Array) => {
        buf += new TextDecoder().decode(d);
        if (buf.includes("\n")) {
          s.destroy();
          resolve(buf.slice(0, buf.indexOf("\n")));
        }
      });
      s.on("error", reject);
    });
  try {
    assert.deepEqual(decodeRelayNotice(JSON.parse(await connect())), { t: "ready", name: "carol" });
    await until(() => pb.server.relay!.stats().controls === 0, 5000, "control closed");
    await revokeUser(`${pb.dir}/data`, "carol");
    const n = decodeRelayNotice(JSON.parse(await connect()));
    assert.equal(n.t, "error");
    assert.equal(n.t === "error" && n.code, "UNAUTHENTICATED");
  } finally {
    await pb.close();
    await Deno.remove(home.dir, { recursive: true });
  }
});

Deno.test("relay: circuits cut at the byte and duration limits are said clearly; no message is lost or doubled", async () => {
  const pb = await startPhonebook({ relayLimits: { maxCircuitBytes: 20_000, maxCircuitMs: 1500 } });
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = await startClient(aliceHome, { relayOnly: true });
  const bob = await startClient(bobHome, { relayOnly: true });
  try {
    // Two bursts: the first fits in one circuit; the second takes the circuit past its byte limit, so it is
    // cut and what had no receipt goes again over a new circuit (where it fits: the limit is per circuit).
    const ids: string[] = [];
    for (const burst of [0, 1]) {
      const batch: string[] = [];
      for (let i = 0; i < 6; i++) {
        batch.push((await alice.engine.send("bob", `${burst}.${i} `.padEnd(1500, "x"))).id);
      }
      for (const id of batch) await alice.log.waitFor("delivered", (e) => e.id === id, 30_000);
      ids.push(...batch);
    }
    await alice.log.waitFor("log", (e) => /relay ended a circuit: .*\(LIMIT_BYTES\)/.test(e.text));
    assert.ok(pb.server.relay!.stats().refused.LIMIT_BYTES >= 1);
    // Idle past the duration limit: the circuit is ended, and the next message goes over a new one.
    await alice.log.waitFor("log", (e) => /\(LIMIT_DURATION\)/.test(e.text), 10_000);
    const late = await alice.engine.send("bob", "after the duration limit");
    await bob.log.waitFor("message", (e) => e.message.id === late.id, 30_000);
    const got = bob.engine.history("alice").map((m) => m.id);
    assert.deepEqual(got, [...ids, late.id], "each once, in order");
  } finally {
    await alice.stop();
    await bob.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("relay: a restarted relay is reconnected to, and the message sent while it was down gets through", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = await startClient(aliceHome, { relayOnly: true });
  const bob = await startClient(bobHome, { relayOnly: true });
  try {
    const m1 = await alice.engine.send("bob", "before the restart");
    await alice.log.waitFor("delivered", (e) => e.id === m1.id);
    await pb.restart({ downMs: 300 });
    await alice.log.waitFor("peer-offline", (e) => e.name === "bob");
    const m2 = await alice.engine.send("bob", "after the restart");
    // The restarted phonebook lost bob's relay-only publication (it lives in memory): bob's control
    // connection to the relay is what lists him online, reachable through it.
    const got = await bob.log.waitFor("message", (e) => e.message.id === m2.id, 30_000);
    assert.equal(got.message.text, "after the restart");
    await alice.log.waitFor("delivered", (e) => e.id === m2.id);
    assert.equal(alice.engine.peerInfo("bob")?.pathKind, "relayed");
    assert.deepEqual(bob.engine.history("alice").map((m) => m.id), [m1.id, m2.id]);
  } finally {
    await alice.stop();
    await bob.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

/** A raw control connection: lines in, notices out. */
async function control(port: number, home: { certPem: string; keyPem: string; caPem: string }) {
  const s = tls.connect({ host: "127.0.0.1", port, cert: home.certPem, key: home.keyPem, ca: [home.caPem] });
  const notices: Record<string, unknown>[] = [];
  let buf = "";
  s.on("data", (d: Uint8Array) => {
    buf += new TextDecoder().decode(d);
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      notices.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  await until(() => notices.some((n) => n.t === "ready"), 5000, "ready");
  return { notices, send: (o: unknown) => s.write(JSON.stringify(o) + "\n"), close: () => s.destroy() };
}

Deno.test("relay: a dial-back request reaches the callee as a name only, and is limited per minute", async () => {
  const pb = await startPhonebook({ relayLimits: { maxReversalsPerMinute: 3 } });
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const port = pb.server.relay!.port;
  const alice = await control(port, aliceHome);
  const bob = await control(port, bobHome);
  try {
    for (let id = 1; id <= 4; id++) alice.send({ t: "reverse", id, to: "bob" });
    alice.send({ t: "reverse", id: 5, to: "nobody" });
    await until(() => alice.notices.filter((n) => n.t !== "ready").length === 5, 5000, "answers");
    const answers = alice.notices.filter((n) => n.t !== "ready");
    assert.deepEqual(answers.slice(0, 3).map((n) => n.t), ["reversing", "reversing", "reversing"]);
    assert.equal(answers[3].code, "LIMIT_REVERSALS");
    assert.equal(answers[4].code, "OFFLINE");
    await until(() => bob.notices.filter((n) => n.t === "dial-back").length === 3, 5000, "dial-backs");
    for (const n of bob.notices.filter((x) => x.t === "dial-back")) {
      assert.deepEqual(n, { t: "dial-back", from: "alice" });
    }
  } finally {
    alice.close();
    bob.close();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});
