/**
 * "Peer sessions (mutual TLS)" of security-tests.md: every bad certificate is refused by the listener (the
 * attacker dials us) and by the dialer (we dial the attacker), with the specific reason.
 */
import assert from "node:assert/strict";
import { makeKnock } from "../contract/mod.ts";
import { ALL_DEFECTS, type LeafDefect, makeTestCa, makeTestLeaf, type TestLeaf } from "./helpers/pki.ts";
import { tls13ClientWithAnyKey } from "./helpers/tls13_liar.ts";
import { FakeDirectory, rawDial, rawListen, type RawPeer, startTestEngine, until } from "./helpers/chat.ts";

const EXPECTED: Record<Exclude<LeafDefect, "none">, { listener: string; dialer: string }> = {
  "self-signed": { listener: "NOT_FROM_CA", dialer: "NOT_FROM_CA" },
  "other-ca": { listener: "NOT_FROM_CA", dialer: "NOT_FROM_CA" },
  "other-ca-same-name": { listener: "NOT_FROM_CA", dialer: "NOT_FROM_CA" },
  // The listener learns the name from the certificate ("alice-x"); the hello then claims "alice".
  "wrong-name": { listener: "SENDER_MISMATCH", dialer: "WRONG_NAME" },
  "san-mismatch": { listener: "WRONG_NAME", dialer: "WRONG_NAME" },
  "expired": { listener: "EXPIRED", dialer: "EXPIRED" },
  "not-yet-valid": { listener: "NOT_YET_VALID", dialer: "NOT_YET_VALID" },
  "ca-true": { listener: "IS_CA", dialer: "IS_CA" },
  "key-cert-sign": { listener: "BAD_KEY_USAGE", dialer: "BAD_KEY_USAGE" },
  "no-eku": { listener: "BAD_EKU", dialer: "BAD_EKU" },
  "wrong-eku": { listener: "BAD_EKU", dialer: "BAD_EKU" },
  "client-only-eku": { listener: "BAD_EKU", dialer: "BAD_EKU" },
};

function refusalCodes(log: { events: { event: string; text?: string }[] }): string[] {
  return log.events.filter((e) => e.event === "log" && /refused: /.test(e.text ?? "")).map((e) =>
    e.text!.replace(/.*refused: /, "")
  );
}

/** Attacker dials bob as "alice" with `leaf`; returns what bob answered. Bob must never say hello. */
async function attackListener(port: number, leaf: TestLeaf | null): Promise<{ peer: RawPeer | null }> {
  let peer: RawPeer;
  try {
    peer = await rawDial(port, leaf ? { certPem: leaf.certPem, keyPem: leaf.keyPem } : null);
  } catch {
    return { peer: null }; // refused inside the TLS handshake
  }
  try {
    peer.send(peer.hello({ from: "alice", to: "bob", signKeyPem: leaf?.keyPem ?? (await makeKey()) }));
  } catch {
    // the socket may already be closed
  }
  await peer.closed;
  assert.equal(peer.frames.some((f) => f.t === "hello"), false, "bob said hello to an impostor");
  return { peer };
}

let spareKey: string | null = null;
async function makeKey(): Promise<string> {
  if (!spareKey) spareKey = (await makeTestLeaf(await makeTestCa(), "spare")).keyPem;
  return spareKey;
}

Deno.test("listener and dialer refuse every defective certificate, with the specific reason", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const directory = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory });
  try {
    const port = bob.engine.address.port;
    for (const defect of ALL_DEFECTS) {
      const leaf = await makeTestLeaf(ca, "alice", { defect });
      const expected = EXPECTED[defect as Exclude<LeafDefect, "none">];

      // Listener side.
      const before = refusalCodes(bob.log).length;
      await attackListener(port, leaf);
      await until(() => refusalCodes(bob.log).length > before, 5000, `listener refusal for ${defect}`);
      assert.equal(refusalCodes(bob.log).at(-1), expected.listener, `listener, ${defect}`);

      // Dialer side: the phonebook lists "alice" at the attacker's address, with the attacker's fingerprint.
      const seen: RawPeer[] = [];
      const evil = await rawListen({ certPem: leaf.certPem, keyPem: leaf.keyPem }, (p) => seen.push(p));
      const name = `alice${ALL_DEFECTS.indexOf(defect)}`;
      directory.listAt(name, leaf.fingerprint, evil.port);
      const n0 = refusalCodes(bob.log).length;
      const m = await bob.engine.send(name, `for ${defect}`);
      await until(() => refusalCodes(bob.log).length > n0, 5000, `dialer refusal for ${defect}`);
      const dialCode = refusalCodes(bob.log).at(-1);
      // The dialer expects `name`, so a certificate for "alice" is also the wrong name; the other checks
      // (CA, validity, usage) come first.
      const want = expected.dialer === "WRONG_NAME" || expected.dialer === "NOT_FROM_CA" ||
          expected.listener === "SENDER_MISMATCH"
        ? expected.dialer
        : "WRONG_NAME";
      assert.ok(dialCode === want || dialCode === expected.dialer, `dialer, ${defect}: ${dialCode}`);
      assert.equal(bob.engine.history(name).find((x) => x.id === m.id)?.state, "sending");
      for (const p of seen) {
        assert.equal(
          p.frames.some((f) => f.t === "hello" || f.t === "msg"),
          false,
          `dialer said hello (${defect})`,
        );
      }
      assert.equal(bob.engine.connection(name), null);
      directory.entries.delete(name);
      await evil.close();
    }
    assert.equal(bob.log.of("peer-online").length, 0);
  } finally {
    await bob.stop();
  }
});

Deno.test("dialer checks each defect against the exact name it meant (defective certs named as dialed)", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const directory = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory });
  try {
    for (const defect of ALL_DEFECTS) {
      const leaf = await makeTestLeaf(ca, "alice", { defect });
      const evil = await rawListen({ certPem: leaf.certPem, keyPem: leaf.keyPem }, () => {});
      directory.listAt("alice", leaf.fingerprint, evil.port);
      const n0 = refusalCodes(bob.log).length;
      if (!bob.engine.history("alice").length) await bob.engine.send("alice", "hi");
      await until(() => refusalCodes(bob.log).length > n0, 5000, `dialer refusal for ${defect}`);
      assert.equal(
        refusalCodes(bob.log).at(-1),
        EXPECTED[defect as Exclude<LeafDefect, "none">].dialer,
        defect,
      );
      await evil.close();
    }
  } finally {
    await bob.stop();
  }
});

Deno.test("no client certificate, a revoked certificate, and TLS 1.2 are refused on both sides", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const alice = await makeTestLeaf(ca, "alice");
  const directory = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory });
  try {
    const port = bob.engine.address.port;
    // No client certificate.
    const r = await attackListener(port, null);
    await until(() => refusalCodes(bob.log).includes("NO_CERTIFICATE"), 5000, "NO_CERTIFICATE");
    if (r.peer) assert.ok(r.peer.frames.some((f) => f.t === "error" && f.code === "CERTIFICATE"));

    // Revoked (the directory's CRL lists alice's serial): listener...
    directory.revoked.add(alice.serial);
    await bob.engine.refreshRevocations();
    await attackListener(port, alice);
    await until(() => refusalCodes(bob.log).includes("REVOKED"), 5000, "REVOKED (listener)");
    // ...and dialer.
    const evil = await rawListen({ certPem: alice.certPem, keyPem: alice.keyPem }, () => {});
    directory.listAt("alice", alice.fingerprint, evil.port);
    const n = refusalCodes(bob.log).filter((c) => c === "REVOKED").length;
    await bob.engine.send("alice", "to a revoked peer");
    await until(
      () => refusalCodes(bob.log).filter((c) => c === "REVOKED").length > n,
      5000,
      "REVOKED (dialer)",
    );
    await evil.close();
    directory.revoked.clear();
    await bob.engine.refreshRevocations();

    // TLS 1.2: a TLS 1.2-only client cannot complete a handshake with our listener...
    await assert.rejects(
      rawDial(port, { certPem: alice.certPem, keyPem: alice.keyPem }, {
        minVersion: "TLSv1.2",
        maxVersion: "TLSv1.2",
      }),
    );
    // ...and our dialer refuses a TLS 1.2-only listener.
    const old = await rawListen({ certPem: alice.certPem, keyPem: alice.keyPem }, () => {}, {
      minVersion: "TLSv1.2",
      maxVersion: "TLSv1.2",
    });
    directory.listAt("alice", alice.fingerprint, old.port);
    const errors0 = bob.log.of("error").length;
    await until(() => bob.log.of("error").length > errors0, 5000, "TLS 1.2 dial refused");
    assert.equal(bob.engine.connection("alice"), null);
    assert.equal(bob.log.of("peer-online").length, 0);
    await old.close();
  } finally {
    await bob.stop();
  }
});

Deno.test("possession of the key: a hello not signed by the certificate's key is refused (both sides)", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const alice = await makeTestLeaf(ca, "alice");
  const mallory = await makeTestLeaf(ca, "mallory");
  const directory = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory });
  try {
    // Listener: TLS with alice's certificate, hello signed with mallory's key.
    const p = await rawDial(bob.engine.address.port, { certPem: alice.certPem, keyPem: alice.keyPem });
    p.send(p.hello({ from: "alice", to: "bob", signKeyPem: mallory.keyPem }));
    const err = await p.waitFrame((f) => f.t === "error");
    assert.equal(err.t === "error" && err.code, "BAD_HELLO_SIGNATURE");
    await p.closed;
    assert.equal(p.frames.some((f) => f.t === "hello"), false);

    // Dialer: the "alice" we dial answers with a hello signed by mallory's key.
    const evil = await rawListen({ certPem: alice.certPem, keyPem: alice.keyPem }, (peer) => {
      peer.waitFrame((f) => f.t === "hello").then(() => {
        peer.send(peer.hello({ from: "alice", to: "bob", signKeyPem: mallory.keyPem }));
      }).catch(() => {});
    });
    directory.listAt("alice", alice.fingerprint, evil.port);
    const m = await bob.engine.send("alice", "only for the real alice");
    await until(() => refusalCodes(bob.log).includes("BAD_HELLO_SIGNATURE"), 5000, "dialer refusal");
    assert.equal(bob.engine.history("alice").find((x) => x.id === m.id)?.state, "sending");
    assert.equal(bob.log.of("peer-online").length, 0);
    await evil.close();
  } finally {
    await bob.stop();
  }
});

Deno.test("a changed key is refused on both sides with a key-changed warning until explicitly accepted", async () => {
  const ca = await makeTestCa();
  const aliceOld = await makeTestLeaf(ca, "alice");
  const aliceNew = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const bobDir = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory: bobDir });
  const aliceDir = (leaf: typeof aliceOld) =>
    new FakeDirectory({ name: "alice", fingerprint: leaf.fingerprint }, bobDir.entries);
  let alice = await startTestEngine(ca, aliceOld, { directory: aliceDir(aliceOld) });
  try {
    // First use pins alice's old certificate.
    const m1 = await alice.engine.send("bob", "first");
    await bob.log.waitFor("message", (e) => e.message.id === m1.id);
    assert.equal(bob.engine.peerInfo("alice")?.pinnedFingerprint, aliceOld.keyFingerprint);
    await alice.stop();
    await bob.log.waitFor("peer-offline", (e) => e.name === "alice");

    // alice comes back with another (valid, same CA) certificate. Listener side: bob refuses and warns.
    alice = await startTestEngine(ca, aliceNew, { directory: aliceDir(aliceNew) });
    const m2 = await alice.engine.send("bob", "new key");
    const kc = await bob.log.waitFor("key-changed", (e) => e.name === "alice");
    assert.equal(kc.oldFingerprint, aliceOld.keyFingerprint);
    assert.equal(kc.newFingerprint, aliceNew.keyFingerprint);
    assert.equal(bob.engine.peerInfo("alice")?.pin, "changed");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(bob.log.of("message").some((e) => e.message.id === m2.id), false);
    assert.equal(alice.engine.history("bob")[0].state, "sending");

    // Dialer side: bob dials the new alice (the phonebook lists her new address); still refused.
    const n = refusalCodes(bob.log).filter((c) => c === "KEY_CHANGED").length;
    await bob.engine.send("alice", "are you alice?");
    await until(() => refusalCodes(bob.log).filter((c) => c === "KEY_CHANGED").length > n, 5000, "dialer");
    assert.equal(bob.engine.peerInfo("alice")?.pinnedFingerprint, aliceOld.keyFingerprint);
    assert.equal(bob.engine.connection("alice"), null);
    // The warning was given once, not once per retry.
    assert.equal(bob.log.of("key-changed").length, 1);

    // Explicit acceptance: the new key is pinned and messages flow both ways.
    bob.engine.acceptKey("alice");
    await bob.log.waitFor("message", (e) => e.message.id === m2.id);
    assert.equal(bob.engine.peerInfo("alice")?.pinnedFingerprint, aliceNew.keyFingerprint);
    assert.throws(() => bob.engine.acceptKey("alice"), { code: "NO_PENDING_KEY" });
  } finally {
    await alice.stop();
    await bob.stop();
  }
});

Deno.test("a renewed certificate for the same key is accepted silently on both sides", async () => {
  const ca = await makeTestCa();
  const aliceOld = await makeTestLeaf(ca, "alice");
  const aliceRenewed = await makeTestLeaf(ca, "alice", { keys: aliceOld.keys });
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const bobDir = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory: bobDir });
  const aliceDir = (leaf: typeof aliceOld) =>
    new FakeDirectory({ name: "alice", fingerprint: leaf.fingerprint }, bobDir.entries);
  let alice = await startTestEngine(ca, aliceOld, { directory: aliceDir(aliceOld) });
  try {
    const m1 = await alice.engine.send("bob", "first");
    await bob.log.waitFor("message", (e) => e.message.id === m1.id);
    const before = bob.engine.peerInfo("alice")!;
    assert.equal(before.fingerprint, aliceOld.keyFingerprint);
    await alice.stop();
    await bob.log.waitFor("peer-offline", (e) => e.name === "alice");

    alice = await startTestEngine(ca, aliceRenewed, { directory: aliceDir(aliceRenewed) });
    assert.equal(alice.engine.ownFingerprint(), aliceOld.keyFingerprint, "our own fingerprint is the key's");
    const m2 = await alice.engine.send("bob", "renewed");
    await bob.log.waitFor("message", (e) => e.message.id === m2.id);
    // And bob dials the renewed alice: the listed (new) certificate carries the pinned key.
    const m3 = await bob.engine.send("alice", "welcome back");
    await alice.log.waitFor("message", (e) => e.message.id === m3.id);
    assert.equal(bob.log.of("key-changed").length, 0, "no alarm for a renewal");
    assert.equal(alice.log.of("key-changed").length, 0);
    const after = bob.engine.peerInfo("alice")!;
    assert.equal(after.serial, aliceRenewed.serial, "the renewed certificate is the one proved");
    assert.equal(after.fingerprint, before.fingerprint, "the fingerprint people compare did not change");
    assert.equal(after.certificateFingerprint, aliceRenewed.fingerprint);
    assert.equal(after.pin, "pinned");
  } finally {
    await alice.stop();
    await bob.stop();
  }
});

Deno.test("TLS level: a certificate configured with a key that is not its own never completes a handshake", async () => {
  // The platform (rustls under node:tls) refuses a certificate/key pair that does not match, on either side,
  // so a peer cannot even present someone else's certificate; the hello signature test above covers a peer
  // that could.
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const alice = await makeTestLeaf(ca, "alice");
  const mallory = await makeTestLeaf(ca, "mallory");
  const directory = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory });
  try {
    await assert.rejects(
      rawDial(bob.engine.address.port, { certPem: alice.certPem, keyPem: mallory.keyPem }),
    );
    const evil = await rawListen({ certPem: alice.certPem, keyPem: mallory.keyPem }, () => {});
    directory.listAt("alice", alice.fingerprint, evil.port);
    const m = await bob.engine.send("alice", "hello?");
    await bob.log.waitFor("error", (e) => e.code.startsWith("PEER_"), 5000);
    assert.equal(bob.engine.history("alice").find((x) => x.id === m.id)?.state, "sending");
    assert.equal(bob.log.of("peer-online").length, 0);
    await evil.close();
  } finally {
    await bob.stop();
  }
});

Deno.test("a peer revoked while connected is cut off at the next CRL refresh, and cannot come back", async () => {
  const ca = await makeTestCa();
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const bobDir = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  const bob = await startTestEngine(ca, bobLeaf, { directory: bobDir, crlMaxAgeMs: 200 });
  const alice = await startTestEngine(ca, aliceLeaf, {
    directory: new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint }, bobDir.entries),
  });
  try {
    const m = await alice.engine.send("bob", "hello");
    await bob.log.waitFor("message", (e) => e.message.id === m.id);
    bobDir.revoked.add(aliceLeaf.serial);
    await bob.log.waitFor("peer-offline", (e) => e.name === "alice", 5000);
    const m2 = await alice.engine.send("bob", "still there?");
    await until(() => refusalCodes(bob.log).includes("REVOKED"), 5000, "reconnection refused");
    assert.equal(bob.log.of("message").some((e) => e.message.id === m2.id), false);
  } finally {
    await alice.stop();
    await bob.stop();
  }
});

Deno.test("TLS level: a stolen certificate with a CertificateVerify by another key is refused by our listener", async () => {
  // Stock clients refuse a mismatched key before connecting, so this uses the hand-made TLS 1.3 client.
  // It shows that the TLS layer, although told not to judge certificates (rejectUnauthorized: false, so
  // that validity is decided on trusted time), still checks the CertificateVerify signature.
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const alice = await makeTestLeaf(ca, "alice");
  const stranger = await makeTestLeaf(ca, "stranger");
  const bob = await startTestEngine(ca, bobLeaf, { limits: { helloTimeoutMs: 300 } });
  try {
    const attempt = (signingKeyPem: string) =>
      tls13ClientWithAnyKey({
        host: "127.0.0.1",
        port: bob.engine.address.port,
        serverName: "bob",
        certDer: alice.certDer,
        signingKeyPem,
        request: "",
        knock: makeKnock(bob.knockSecret),
      });
    // The hand-made client works with the right key: the handshake completes (and, with no hello, our
    // session ends it with HELLO_TIMEOUT).
    const own = await attempt(alice.keyPem);
    assert.equal(own.handshakeDone, true);
    assert.match(own.response, /HELLO_TIMEOUT/);
    // Alice's certificate, CertificateVerify signed by another key: refused inside the handshake.
    const stolen = await attempt(stranger.keyPem);
    assert.equal(stolen.response, "");
    assert.equal(stolen.alert, 51, `expected a decrypt_error alert, got ${stolen.alert}`);
    assert.equal(bob.log.of("peer-online").length, 0);
  } finally {
    await bob.stop();
  }
});
