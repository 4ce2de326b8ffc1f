/**
 * The CA's own certificate and the user template, checked field by field on the DER (what openssl shows),
 * plus the template's own guard: whatever a caller passes, the CA never signs a name that is not a canonical
 * username nor a validity outside 1-397 days.
 */
import assert from "node:assert/strict";
import {
  checkCsr,
  createCaCertificate,
  createCsr,
  generateKeyPair,
  issueServerCertificate,
  issueUserCertificate,
  x509,
} from "../pki/mod.ts";

const DAY = 24 * 3600 * 1000;

async function makeCa(algorithm: "p256" | "ed25519" = "p256") {
  const keys = await generateKeyPair(algorithm);
  const cert = await createCaCertificate(keys);
  return { cert, certPem: cert.toString("pem"), keys };
}

Deno.test("CA certificate: CA:TRUE pathlen 0 (critical), keyCertSign+cRLSign only (critical), SKI", async () => {
  for (const alg of ["p256", "ed25519"] as const) {
    const ca = await makeCa(alg);
    const bc = ca.cert.getExtension(x509.BasicConstraintsExtension)!;
    assert.equal(bc.ca, true);
    assert.equal(bc.pathLength, 0);
    assert.equal(bc.critical, true);
    const ku = ca.cert.getExtension(x509.KeyUsagesExtension)!;
    assert.equal(ku.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    assert.equal(ku.critical, true);
    assert.ok(ca.cert.getExtension(x509.SubjectKeyIdentifierExtension));
    assert.equal(ca.cert.getExtension(x509.ExtendedKeyUsageExtension), null);
    assert.ok(await ca.cert.verify({ publicKey: ca.cert.publicKey, signatureOnly: true }), "self-signed");
  }
});

Deno.test("user template: issuer is byte-for-byte the CA subject, AKI = CA SKI, random positive 128-bit serials", async () => {
  const ca = await makeCa();
  const keys = await generateKeyPair("p256");
  const csr = await checkCsr(await createCsr("alice", keys), "alice");
  const caSki = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
  const serials = new Set<string>();
  for (let i = 0; i < 64; i++) {
    const leaf = await issueUserCertificate(ca, "alice", csr.publicKey);
    assert.deepEqual(
      new Uint8Array(leaf.issuerName.toArrayBuffer()),
      new Uint8Array(ca.cert.subjectName.toArrayBuffer()),
    );
    assert.equal(leaf.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId, caSki);
    const s = leaf.serialNumber;
    assert.equal(s.length, 32, "16 octets");
    assert.ok(parseInt(s.slice(0, 2), 16) < 0x80, "positive without a sign octet");
    serials.add(s);
    assert.equal(leaf.signatureAlgorithm.name, "ECDSA");
  }
  assert.equal(serials.size, 64, "no repeated serial");
});

Deno.test("user template refuses a non-canonical name and a validity outside 1-397 days", async () => {
  const ca = await makeCa();
  const keys = await generateKeyPair("p256");
  for (const name of ["Alice", "alice.example.org", "*", "al", "аlice", "alice\u200b", ""]) {
    await assert.rejects(
      issueUserCertificate(ca, name, keys.publicKey),
      (e: unknown) => (e as { code?: string }).code === "BAD_USERNAME",
      JSON.stringify(name),
    );
  }
  for (const validityDays of [0, -1, 398, 3650, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    await assert.rejects(issueUserCertificate(ca, "alice", keys.publicKey, { validityDays }), RangeError);
  }
  const ok = await issueUserCertificate(ca, "alice", keys.publicKey, { validityDays: 397, nowMs: 0 });
  assert.equal(ok.notAfter.getTime(), 397 * DAY);
});

Deno.test("no certificate outlives its CA: near the CA's end, user and server certificates stop with it", async () => {
  const keys = await generateKeyPair("p256");
  const cert = await createCaCertificate(keys, { validityDays: 10 });
  const ca = { cert, certPem: cert.toString("pem"), keys };
  const user = await generateKeyPair("p256");
  const leaf = await issueUserCertificate(ca, "alice", user.publicKey);
  assert.ok(leaf.notAfter.getTime() <= cert.notAfter.getTime(), "user certificate ends with the CA");
  assert.equal(leaf.notAfter.getTime(), cert.notAfter.getTime());
  const server = await issueServerCertificate(ca, ["localhost"], await generateKeyPair("p256"));
  assert.equal(server.notAfter.getTime(), cert.notAfter.getTime(), "server certificate ends with the CA");
  // Far from the CA's end, the template's own validity applies.
  const longCa = await makeCa();
  const normal = await issueUserCertificate(longCa, "alice", user.publicKey, { nowMs: Date.now() });
  assert.ok(normal.notAfter.getTime() - normal.notBefore.getTime() > 29 * DAY);
});
