/**
 * The fast user-certificate template (pki/_user_template.ts, behind issueUserCertificateDer) against the
 * general library path (issueCertificate with the user template's fields): for the same inputs the
 * to-be-signed part is the same octets (and for Ed25519, whose signatures are deterministic, the whole
 * certificate), the signature verifies under the CA key, the peer check accepts it, and openssl reads it.
 */
import assert from "node:assert/strict";
import {
  BACKDATE_MS,
  checkCsr,
  createCaCertificate,
  createCsr,
  generateKeyPair,
  issueCertificate,
  issueUserCertificateDer,
  type KeyAlgorithm,
  randomSerial,
  verifyPeerCertificate,
  x509,
} from "../pki/mod.ts";
import { useTool } from "./helpers/tools.ts";

const DAY = 24 * 3600 * 1000;

async function makeCa(algorithm: KeyAlgorithm, nowMs?: number, validityDays?: number) {
  const keys = await generateKeyPair(algorithm);
  const cert = await createCaCertificate(keys, { nowMs, validityDays });
  return { cert, certPem: cert.toString("pem"), keys };
}

/** The user template's fields, issued by the general encoder of @peculiar/x509. */
function libraryUserCert(
  ca: Awaited<ReturnType<typeof makeCa>>,
  name: string,
  spki: Uint8Array,
  notBeforeMs: number,
  notAfterMs: number,
  serial: string,
): Promise<x509.X509Certificate> {
  return issueCertificate({
    subjectCN: name,
    issuer: { cert: ca.cert, keys: ca.keys },
    publicKey: spki,
    san: [{ type: "dns", value: name }],
    isCa: false,
    keyUsage: x509.KeyUsageFlags.digitalSignature,
    eku: [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth],
    notBefore: new Date(notBeforeMs),
    notAfter: new Date(notAfterMs),
    serial,
  });
}

/** The TBSCertificate octets of a DER certificate (its first element). */
function tbsOf(der: Uint8Array): Uint8Array {
  // Certificate ::= SEQUENCE { tbsCertificate, ... }: skip the outer header, read the first element's.
  const outerLen = der[1] & 0x80 ? 2 + (der[1] & 0x7f) : 2;
  const inner = der.subarray(outerLen);
  const n = inner[1] & 0x80 ? inner[1] & 0x7f : 0;
  let len = n ? 0 : inner[1];
  for (let i = 0; i < n; i++) len = len * 256 + inner[2 + i];
  return inner.subarray(0, 2 + n + len);
}

const NAMES = ["alice", "bob_smith", "x-1", "0day", "a".repeat(32)];

for (const caAlg of ["p256", "ed25519"] as const) {
  for (const leafAlg of ["p256", "ed25519"] as const) {
    Deno.test(`user template (${caAlg} CA, ${leafAlg} key): same TBS octets as the library path`, async () => {
      const ca = await makeCa(caAlg);
      const keys = await generateKeyPair(leafAlg);
      for (const name of NAMES) {
        const csr = await checkCsr(await createCsr(name, keys), name);
        const now = Date.now() + Math.floor(Math.random() * 1000);
        const serial = randomSerial();
        const fast = await issueUserCertificateDer(ca, name, csr.spki, { nowMs: now, serial });
        const lib = await libraryUserCert(ca, name, csr.spki, now - BACKDATE_MS, now + 30 * DAY, serial);
        const libDer = new Uint8Array(lib.rawData);
        assert.deepEqual(tbsOf(fast.der), tbsOf(libDer), `${name}: TBSCertificate`);
        if (caAlg === "ed25519") assert.deepEqual(fast.der, libDer, `${name}: Ed25519 is deterministic`);
        const parsed = new x509.X509Certificate(fast.der);
        assert.ok(await parsed.verify({ publicKey: ca.cert.publicKey, signatureOnly: true }), "CA signature");
        assert.equal(fast.serial, serial.replace(/^0+/, ""));
        assert.equal(fast.notAfterMs, parsed.notAfter.getTime());
        assert.equal(fast.notBeforeMs, parsed.notBefore.getTime());
        const peer = await verifyPeerCertificate({
          certDer: fast.der,
          caCertPem: ca.certPem,
          expectedName: name,
          time: { earliestMs: now, latestMs: now },
        });
        assert.equal(peer.name, name);
      }
    });
  }
}

Deno.test("user template: GeneralizedTime past 2049 and the CA's end clamp match the library path", async () => {
  // A CA that lives until 2060, and a leaf issued in 2049 that crosses into 2050.
  const start = Date.UTC(2049, 11, 20, 12, 0, 0, 789);
  const ca = await makeCa("ed25519", start - DAY, 11 * 365);
  const keys = await generateKeyPair("ed25519");
  const csr = await checkCsr(await createCsr("carol", keys), "carol");
  const serial = randomSerial();
  const fast = await issueUserCertificateDer(ca, "carol", csr.spki, { nowMs: start, serial });
  const lib = await libraryUserCert(ca, "carol", csr.spki, start - BACKDATE_MS, start + 30 * DAY, serial);
  assert.deepEqual(fast.der, new Uint8Array(lib.rawData));
  // And one whose 30 days would outlive its CA: cut at the CA's end, like the library path is.
  const shortCa = await makeCa("ed25519", Date.UTC(2030, 0, 1), 10);
  const clipped = await issueUserCertificateDer(shortCa, "carol", csr.spki, {
    nowMs: Date.UTC(2030, 0, 2),
    serial,
  });
  assert.equal(clipped.notAfterMs, shortCa.cert.notAfter.getTime());
});

Deno.test("user template: a key that is not a SubjectPublicKeyInfo or a bad serial is refused", async () => {
  const ca = await makeCa("p256");
  for (const bad of [new Uint8Array(0), new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]), new Uint8Array(91)]) {
    await assert.rejects(issueUserCertificateDer(ca, "alice", bad), TypeError);
  }
  const keys = await generateKeyPair("p256");
  const spki = (await checkCsr(await createCsr("alice", keys), "alice")).spki;
  // Zero, not hex, or 21 octets as encoded (20 with the top bit set need a 00 before them) are refused;
  // 20 octets with the top bit clear are taken.
  for (const serial of ["00", "0000", "xyz0", "8" + "0".repeat(39), "ab".repeat(21)]) {
    await assert.rejects(issueUserCertificateDer(ca, "alice", spki, { serial }), RangeError, serial);
  }
  const longest = await issueUserCertificateDer(ca, "alice", spki, { serial: "7f" + "ff".repeat(19) });
  assert.equal(new x509.X509Certificate(longest.der).serialNumber, "7f" + "ff".repeat(19));
});

Deno.test("user template: openssl reads the certificate and verifies it against the CA", async () => {
  if (!useTool("openssl")) return;
  const ca = await makeCa("p256");
  const keys = await generateKeyPair("p256");
  const csr = await checkCsr(await createCsr("dave_1", keys), "dave_1");
  const fast = await issueUserCertificateDer(ca, "dave_1", csr.spki);
  const dir = await Deno.makeTempDir({ prefix: "securechat-template-" });
  try {
    await Deno.writeFile(`${dir}/leaf.der`, fast.der);
    await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
    const text = await new Deno.Command("openssl", {
      args: ["x509", "-inform", "DER", "-in", `${dir}/leaf.der`, "-noout", "-text"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(text.success, new TextDecoder().decode(text.stderr));
    const out = new TextDecoder().decode(text.stdout);
    assert.match(out, /Subject: CN ?= ?dave_1/);
    assert.match(out, /DNS:dave_1/);
    assert.match(out, /CA:FALSE/);
    assert.match(out, /X509v3 Key Usage: critical\s+Digital Signature\n/);
    assert.match(out, /TLS Web Client Authentication, TLS Web Server Authentication/);
    assert.match(out, /Signature Algorithm: ecdsa-with-SHA256/);
    await new Deno.Command("openssl", {
      args: ["x509", "-inform", "DER", "-in", `${dir}/leaf.der`, "-out", `${dir}/leaf.pem`],
    }).output();
    const verify = await new Deno.Command("openssl", {
      args: ["verify", "-CAfile", `${dir}/ca.pem`, "-purpose", "sslclient", `${dir}/leaf.pem`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(
      verify.success,
      new TextDecoder().decode(verify.stdout) + new TextDecoder().decode(verify.stderr),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
