import assert from "node:assert/strict";
import {
  CertificateError,
  checkCsr,
  createCrl,
  createCsr,
  CsrError,
  generateKeyPair,
  importPrivateKeyPem,
  pemToDer,
  verifyCrl,
  verifyPeerCertificate,
  x509,
} from "../pki/mod.ts";
import { type LeafDefect, makeDefectiveLeaves, makeTestCa, makeTestLeaf } from "./helpers/pki.ts";

const now = () => ({ earliestMs: Date.now() - 1000, latestMs: Date.now() + 1000 });

Deno.test("verifyPeerCertificate accepts a good leaf and reports its identity", async () => {
  const ca = await makeTestCa();
  for (const algorithm of ["p256", "ed25519"] as const) {
    const leaf = await makeTestLeaf(ca, "alice", { algorithm });
    const peer = await verifyPeerCertificate({
      certDer: leaf.certDer,
      caCertPem: ca.certPem,
      expectedName: "alice",
      time: now(),
    });
    assert.equal(peer.name, "alice");
    assert.equal(peer.fingerprint, leaf.fingerprint);
    assert.equal(peer.keyFingerprint, leaf.keyFingerprint);
    assert.equal(peer.serial, leaf.serial);
    assert.equal(peer.notAfter, leaf.notAfter);
    // The key pair in the helper really belongs to the certificate.
    const kp = await importPrivateKeyPem(leaf.keyPem);
    assert.equal(kp.algorithm, algorithm);
  }
});

Deno.test("verifyPeerCertificate refuses every defect with its own code", async () => {
  const ca = await makeTestCa();
  const leaves = await makeDefectiveLeaves(ca, "alice");
  const expected: Record<Exclude<LeafDefect, "none">, string> = {
    "self-signed": "NOT_FROM_CA",
    "other-ca": "NOT_FROM_CA",
    "other-ca-same-name": "NOT_FROM_CA",
    "wrong-name": "WRONG_NAME",
    "san-mismatch": "WRONG_NAME",
    "expired": "EXPIRED",
    "not-yet-valid": "NOT_YET_VALID",
    "ca-true": "IS_CA",
    "key-cert-sign": "BAD_KEY_USAGE",
    "no-eku": "BAD_EKU",
    "wrong-eku": "BAD_EKU",
    "client-only-eku": "BAD_EKU",
  };
  for (const [defect, code] of Object.entries(expected)) {
    const leaf = leaves[defect as LeafDefect];
    await assert.rejects(
      verifyPeerCertificate({
        certDer: leaf.certDer,
        caCertPem: ca.certPem,
        expectedName: "alice",
        time: now(),
      }),
      (e: unknown) => e instanceof CertificateError && e.code === code,
      `${defect} should be ${code}`,
    );
  }
  await assert.rejects(
    verifyPeerCertificate({
      certDer: new Uint8Array([0x30, 0x03, 1, 2, 3]),
      caCertPem: ca.certPem,
      time: now(),
    }),
    (e: unknown) => e instanceof CertificateError && e.code === "MALFORMED",
  );
});

Deno.test("verifyPeerCertificate: expected name, revocation and the trusted-time interval", async () => {
  const ca = await makeTestCa();
  const leaf = await makeTestLeaf(ca, "alice");
  const base = { certDer: leaf.certDer, caCertPem: ca.certPem };
  await assert.rejects(
    verifyPeerCertificate({ ...base, expectedName: "bob", time: now() }),
    (e: unknown) => e instanceof CertificateError && e.code === "WRONG_NAME",
  );
  await assert.rejects(
    verifyPeerCertificate({ ...base, time: now(), revokedSerials: new Set([leaf.serial]) }),
    (e: unknown) => e instanceof CertificateError && e.code === "REVOKED",
  );
  // An interval that straddles notAfter is not good enough: the cert may already be dead.
  await assert.rejects(
    verifyPeerCertificate({
      ...base,
      time: { earliestMs: leaf.notAfter - 10, latestMs: leaf.notAfter + 10 },
    }),
    (e: unknown) => e instanceof CertificateError && e.code === "EXPIRED",
  );
  await assert.rejects(
    verifyPeerCertificate({
      ...base,
      time: { earliestMs: leaf.notBefore - 10, latestMs: leaf.notBefore + 10 },
    }),
    (e: unknown) => e instanceof CertificateError && e.code === "NOT_YET_VALID",
  );
  const ok = await verifyPeerCertificate({
    ...base,
    time: { earliestMs: leaf.notBefore, latestMs: leaf.notAfter },
    revokedSerials: new Set(["1234"]),
  });
  assert.equal(ok.name, "alice");
});

Deno.test("CRL: signed by the CA verifies; another CA's list with the same name is refused", async () => {
  const ca = await makeTestCa();
  const leaf = await makeTestLeaf(ca, "alice");
  const crl = await createCrl(ca.material, [{ serial: leaf.serial, revokedAtMs: Date.now() }]);
  const parsed = await verifyCrl(new Uint8Array(crl.rawData), ca.certPem);
  assert.deepEqual([...parsed.revokedSerials], [leaf.serial]);
  const evil = await makeTestCa({ name: ca.name });
  const forged = await createCrl(evil.material, []);
  await assert.rejects(
    verifyCrl(new Uint8Array(forged.rawData), ca.certPem),
    (e: unknown) => (e as { code: string }).code === "BAD_CRL",
  );
});

Deno.test("checkCsr: proof of possession, name binding, malformed input", async () => {
  const keys = await generateKeyPair("p256");
  const pem = await createCsr("alice", keys);
  const ok = await checkCsr(pem, "alice");
  assert.equal(ok.algorithm, "p256");
  const code = (c: string) => (e: unknown) => e instanceof CsrError && e.code === c;
  await assert.rejects(checkCsr(pem, "bob"), code("CSR_NAME_MISMATCH"));
  // Flip one bit in the signature (the last bytes of the DER).
  const der = pemToDer(pem, "CERTIFICATE REQUEST");
  der[der.length - 2] ^= 0x01;
  const b64 = btoa(String.fromCharCode(...der));
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
  await assert.rejects(checkCsr(tampered, "alice"), code("BAD_CSR_SIGNATURE"));
  await assert.rejects(checkCsr(pem.slice(0, pem.length / 2), "alice"), code("MALFORMED_CSR"));
  await assert.rejects(checkCsr("hello", "alice"), code("MALFORMED_CSR"));
  await assert.rejects(checkCsr(42, "alice"), code("MALFORMED_CSR"));
  await assert.rejects(checkCsr(pem + pem, "alice"), code("MALFORMED_CSR"));
  // Key types other than P-256 and Ed25519 are refused even with a valid signature.
  for (
    const params of [
      { name: "ECDSA", namedCurve: "P-384" },
      {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
    ]
  ) {
    const kp = await crypto.subtle.generateKey(params, true, ["sign", "verify"]) as CryptoKeyPair;
    const other = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=alice",
      keys: kp,
      signingAlgorithm: params.name === "ECDSA" ? { name: "ECDSA", hash: "SHA-384" } : params,
    });
    await assert.rejects(checkCsr(other.toString("pem"), "alice"), code("UNSUPPORTED_KEY"), params.name);
  }
  const truncated = `-----BEGIN CERTIFICATE REQUEST-----\n${
    b64.slice(0, 40)
  }\n-----END CERTIFICATE REQUEST-----\n`;
  await assert.rejects(checkCsr(truncated, "alice"), code("MALFORMED_CSR"));
});
