/**
 * Peer trust with real certificates from a test CA and an in-memory pin store: first use pins, a changed
 * key warns once and is refused until accepted, the phonebook's listed fingerprint binds a first dial, our
 * own name and revoked or foreign certificates are refused, and "no revocation list" refuses everyone.
 * Identity is the key: a renewed certificate for the same key is accepted without a word, and pins from
 * older versions (a certificate's fingerprint) convert to key pins where that certificate is seen again.
 */
import assert from "node:assert/strict";
import { PeerTrust } from "../client/peer_trust.ts";
import { MemoryPins } from "./helpers/chat.ts";
import type { EngineEvent } from "../client/engine_types.ts";
import { RevocationUnknownError } from "../client/revocation/mod.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import { codeOf } from "../coded_error.ts";

const ca = await makeTestCa();
const bob1 = await makeTestLeaf(ca, "bob");
const bob2 = await makeTestLeaf(ca, "bob");
/** bob1's key in a new certificate (a renewal). */
const bob1Renewed = await makeTestLeaf(ca, "bob", { keys: bob1.keys });
const alice = await makeTestLeaf(ca, "alice");
const otherCa = await makeTestCa({ name: "securechat test CA" });
const foreignBob = await makeTestLeaf(otherCa, "bob");

function rig(opts: { revoked?: string[]; noList?: boolean } = {}) {
  const pins = new MemoryPins();
  const events: EngineEvent[] = [];
  const trust = new PeerTrust({
    ownName: "alice",
    caPem: ca.certPem,
    certTime: () => ({ earliestMs: Date.now() - 1000, latestMs: Date.now() + 1000 }),
    revokedSerials: () =>
      opts.noList
        ? Promise.reject(new RevocationUnknownError())
        : Promise.resolve(new Set(opts.revoked ?? [])),
    pins,
    emit: (e) => events.push(e),
  });
  return { pins, events, trust };
}

async function refusal(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return codeOf(e);
  }
  return "accepted";
}

Deno.test("peer trust: first use pins; a changed key is said once and refused until accepted", async () => {
  const r = rig();
  const v = await r.trust.authenticate(bob1.certDer, "bob", "dialer");
  assert.equal(v.fingerprint, bob1.fingerprint);
  assert.equal(v.keyFingerprint, bob1.keyFingerprint);
  assert.equal(
    r.trust.pinnedFingerprint("bob"),
    bob1.keyFingerprint,
    "the key is pinned, not the certificate",
  );
  assert.equal(r.trust.pinState("bob"), "pinned");
  assert.equal(await refusal(r.trust.authenticate(bob2.certDer, "bob", "dialer")), "KEY_CHANGED");
  assert.equal(await refusal(r.trust.authenticate(bob2.certDer, null, "listener")), "KEY_CHANGED");
  const warned = r.events.filter((e) => e.event === "key-changed");
  assert.equal(warned.length, 1, "one warning per new key");
  assert.deepEqual(warned[0], {
    event: "key-changed",
    name: "bob",
    oldFingerprint: bob1.keyFingerprint,
    newFingerprint: bob2.keyFingerprint,
  });
  assert.equal(r.trust.pinState("bob"), "changed");
  r.trust.acceptKey("bob");
  assert.equal((await r.trust.authenticate(bob2.certDer, "bob", "dialer")).fingerprint, bob2.fingerprint);
  assert.equal(r.trust.pinnedFingerprint("bob"), bob2.keyFingerprint);
  assert.throws(() => r.trust.acceptKey("bob"), (e: unknown) => codeOf(e) === "NO_PENDING_KEY");
});

Deno.test("peer trust: a first dial is bound to the fingerprint the phonebook lists (not a listener's)", async () => {
  const r = rig();
  r.trust.noteListed("bob", bob1.fingerprint);
  assert.equal(await refusal(r.trust.authenticate(bob2.certDer, "bob", "dialer")), "CERTIFICATE");
  assert.equal(r.pins.contact("bob")?.pinnedFingerprint ?? null, null, "nothing pinned on a refusal");
  const r2 = rig();
  r2.trust.noteListed("bob", bob1.fingerprint);
  assert.equal((await r2.trust.authenticate(bob2.certDer, null, "listener")).name, "bob");
});

Deno.test("peer trust: our own name, another CA (same CA name), a wrong name and a revoked serial are refused", async () => {
  const r = rig({ revoked: [bob1.serial] });
  assert.equal(await refusal(r.trust.authenticate(alice.certDer, null, "listener")), "CERTIFICATE");
  assert.notEqual(await refusal(r.trust.authenticate(foreignBob.certDer, "bob", "dialer")), "accepted");
  assert.notEqual(await refusal(r.trust.authenticate(bob2.certDer, "carol", "dialer")), "accepted");
  assert.notEqual(await refusal(r.trust.authenticate(bob1.certDer, "bob", "dialer")), "accepted");
  assert.equal(r.pins.rows.size, 0);
});

Deno.test("peer trust: without any revocation list every peer is refused (REVOCATION_UNKNOWN)", async () => {
  const r = rig({ noList: true });
  assert.equal(await refusal(r.trust.authenticate(bob1.certDer, "bob", "dialer")), "REVOCATION_UNKNOWN");
});

Deno.test("peer trust: markVerified needs a pin; verified survives only while the key does", async () => {
  const r = rig();
  assert.throws(() => r.trust.markVerified("bob"), (e: unknown) => codeOf(e) === "NOT_FOUND");
  await r.trust.authenticate(bob1.certDer, "bob", "dialer");
  r.trust.markVerified("bob");
  assert.equal(r.trust.pinState("bob"), "verified");
  await refusal(r.trust.authenticate(bob2.certDer, "bob", "dialer"));
  r.trust.acceptKey("bob");
  assert.equal(r.trust.pinState("bob"), "pinned");
});

Deno.test("peer trust: a renewed certificate for the pinned key is accepted silently and kept", async () => {
  assert.notEqual(bob1Renewed.fingerprint, bob1.fingerprint, "a new certificate");
  assert.equal(bob1Renewed.keyFingerprint, bob1.keyFingerprint, "for the same key");
  const r = rig();
  await r.trust.authenticate(bob1.certDer, "bob", "dialer");
  r.trust.markVerified("bob");
  const v = await r.trust.authenticate(bob1Renewed.certDer, "bob", "dialer");
  assert.equal(v.serial, bob1Renewed.serial);
  assert.equal(r.events.filter((e) => e.event === "key-changed").length, 0, "no alarm for a renewal");
  assert.equal(r.trust.pinState("bob"), "verified", "the verified mark survives a renewal");
  assert.deepEqual(r.pins.contact("bob")?.certificateDer, bob1Renewed.certDer, "the newest certificate kept");
  assert.equal((await r.trust.authenticate(bob1Renewed.certDer, null, "listener")).name, "bob");
});

Deno.test("peer trust: an old certificate pin converts silently when that certificate is presented", async () => {
  const r = rig();
  r.pins.legacyPin("bob", bob1.fingerprint, true);
  await r.trust.authenticate(bob1.certDer, "bob", "dialer");
  assert.equal(r.events.length, 0);
  assert.equal(r.pins.contact("bob")?.pinKind, "key");
  assert.equal(r.trust.pinnedFingerprint("bob"), bob1.keyFingerprint);
  assert.equal(r.trust.pinState("bob"), "verified", "the same identity: the verified mark stays");
  // From then on a renewal is silent.
  await r.trust.authenticate(bob1Renewed.certDer, "bob", "dialer");
  assert.equal(r.events.length, 0);
});

Deno.test("peer trust: an old pin converts from the phonebook's listing of the pinned certificate", async () => {
  const r = rig();
  r.pins.legacyPin("bob", bob1.fingerprint);
  // A listing of another certificate teaches nothing (its hash is not the pin).
  assert.equal(r.trust.convertFromListing("bob", bob1Renewed.certPem), false);
  assert.equal(r.pins.contact("bob")?.pinKind, "certificate");
  assert.equal(r.trust.convertFromListing("bob", "not a certificate"), false);
  r.trust.noteListed("bob", bob1.fingerprint, bob1.certPem);
  assert.equal(r.pins.contact("bob")?.pinKind, "key");
  await r.trust.authenticate(bob1Renewed.certDer, "bob", "dialer");
  assert.equal(r.events.length, 0, "renewed after the conversion: silent");
});

Deno.test("peer trust: an old pin whose certificate was never seen again cannot convert: one alarm", async () => {
  const r = rig();
  r.pins.legacyPin("bob", bob1.fingerprint);
  assert.equal(await refusal(r.trust.authenticate(bob1Renewed.certDer, "bob", "dialer")), "KEY_CHANGED");
  const warned = r.events.filter((e) => e.event === "key-changed");
  assert.equal(warned.length, 1);
  assert.deepEqual(warned[0], {
    event: "key-changed",
    name: "bob",
    oldFingerprint: bob1.fingerprint,
    newFingerprint: bob1.keyFingerprint,
  });
  r.trust.acceptKey("bob");
  assert.equal(r.pins.contact("bob")?.pinKind, "key");
  await r.trust.authenticate(bob1Renewed.certDer, "bob", "dialer");
});

Deno.test("peer trust: a different key is still the alarm after a renewal was accepted", async () => {
  const r = rig();
  await r.trust.authenticate(bob1.certDer, "bob", "dialer");
  await r.trust.authenticate(bob1Renewed.certDer, "bob", "dialer");
  assert.equal(await refusal(r.trust.authenticate(bob2.certDer, "bob", "listener")), "KEY_CHANGED");
  assert.equal(r.events.filter((e) => e.event === "key-changed").length, 1);
  assert.deepEqual(r.pins.contact("bob")?.certificateDer, bob1Renewed.certDer, "a refused one is not kept");
});
