/**
 * verifyPeerCertificate against certificates our CA's template never makes but a buggy or future CA could
 * sign (the x509-limbo kind): unknown critical extensions, an extension twice, extra subject attributes and
 * SAN entries of other types. Each is refused; a harmless non-critical extension is accepted, which shows
 * the crafted certificates are otherwise good.
 */
import assert from "node:assert/strict";
import {
  BACKDATE_MS,
  CertificateError,
  generateKeyPair,
  randomSerial,
  signingAlgorithm,
  verifyPeerCertificate,
  x509,
} from "../pki/mod.ts";
import { makeTestCa, type TestCa } from "./helpers/pki.ts";

const DAY = 24 * 3600 * 1000;
const time = () => ({ earliestMs: Date.now() - 1000, latestMs: Date.now() + 1000 });

/** A leaf for "alice" signed by `ca`, with the template's extensions plus `extra`, under `subject`. */
async function craft(
  ca: TestCa,
  opts: { extra?: x509.Extension[]; subject?: string; san?: x509.JsonGeneralName[] } = {},
): Promise<Uint8Array> {
  const keys = await generateKeyPair("p256");
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: opts.subject ?? "CN=alice",
    issuer: ca.material.cert.subjectName,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + 30 * DAY),
    publicKey: keys.publicKey,
    signingKey: ca.material.keys.privateKey,
    signingAlgorithm: signingAlgorithm(ca.material.keys.algorithm),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.clientAuth,
        x509.ExtendedKeyUsage.serverAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(opts.san ?? [{ type: "dns", value: "alice" }]),
      // The CA template's authority key identifier: without one the leaf is malformed (RFC 5280 4.2.1.1).
      new x509.AuthorityKeyIdentifierExtension(
        ca.material.cert.getExtension<x509.SubjectKeyIdentifierExtension>("2.5.29.14")!.keyId,
      ),
      ...(opts.extra ?? []),
    ],
  });
  return new Uint8Array(cert.rawData);
}

async function refusedWith(ca: TestCa, der: Uint8Array, code: string): Promise<void> {
  await assert.rejects(
    verifyPeerCertificate({ certDer: der, caCertPem: ca.certPem, expectedName: "alice", time: time() }),
    (e: unknown) => e instanceof CertificateError && e.code === code,
  );
}

const NULL_VALUE = new Uint8Array([0x05, 0x00]);
const PRIVATE_OID = "1.3.6.1.4.1.55555.1.1";

Deno.test("verifyPeerCertificate: an unknown critical extension is refused, a non-critical one is not", async () => {
  const ca = await makeTestCa();
  const fine = await craft(ca, { extra: [new x509.Extension(PRIVATE_OID, false, NULL_VALUE)] });
  const peer = await verifyPeerCertificate({
    certDer: fine,
    caCertPem: ca.certPem,
    expectedName: "alice",
    time: time(),
  });
  assert.equal(peer.name, "alice");
  await refusedWith(
    ca,
    await craft(ca, { extra: [new x509.Extension(PRIVATE_OID, true, NULL_VALUE)] }),
    "MALFORMED",
  );
  // Name constraints or policy constraints marked critical are not understood here either.
  await refusedWith(
    ca,
    await craft(ca, { extra: [new x509.Extension("2.5.29.30", true, new Uint8Array([0x30, 0x00]))] }),
    "MALFORMED",
  );
});

Deno.test("verifyPeerCertificate: an extension that appears twice is refused (RFC 5280 4.2)", async () => {
  const ca = await makeTestCa();
  // A second SAN naming someone else, and a second BasicConstraints saying CA:TRUE.
  await refusedWith(
    ca,
    await craft(ca, { extra: [new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "bob" }])] }),
    "MALFORMED",
  );
  await refusedWith(
    ca,
    await craft(ca, { extra: [new x509.BasicConstraintsExtension(true, 0, true)] }),
    "MALFORMED",
  );
});

Deno.test("verifyPeerCertificate: the subject is exactly CN=<name>; SAN entries of other types are refused", async () => {
  const ca = await makeTestCa();
  for (
    const subject of ["CN=alice, O=securechat admins", "CN=alice, OU=x", "CN=alice+CN=alice", "O=x, CN=alice"]
  ) {
    await refusedWith(ca, await craft(ca, { subject }), "WRONG_NAME");
  }
  const others: x509.JsonGeneralName[] = [
    { type: "ip", value: "127.0.0.1" },
    { type: "url", value: "https://alice" },
    { type: "email", value: "alice@example.org" },
  ];
  for (const extra of others) {
    await refusedWith(ca, await craft(ca, { san: [{ type: "dns", value: "alice" }, extra] }), "WRONG_NAME");
  }
  await refusedWith(ca, await craft(ca, { san: [{ type: "dns", value: "Alice" }] }), "WRONG_NAME");
});
