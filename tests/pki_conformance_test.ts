/**
 * Certificate checks as strict as the CA: one case per way a certificate, a CRL or the CA certificate itself
 * can differ from what our CA template makes (the single-CA cases of a public path-validation suite, the
 * x509-limbo kind). Every certificate is made here, signed by a CA made here, so each case differs from the
 * good control in exactly the fault it names. The controls (first rows) prove the builders make certificates
 * that pass, so a refusal below is caused by the fault and not by the builder.
 */
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync } from "node:crypto";
import { join } from "node:path";
import {
  BACKDATE_MS,
  CertificateError,
  checkCaCertificate,
  createCaCertificate,
  createCrl,
  generateKeyPair,
  issueUserCertificate,
  PkiError,
  randomSerial,
  verifyCrl,
  verifyPeerCertificate,
  x509,
} from "../pki/mod.ts";
import { DirectoryService } from "../server/directory.ts";
import { ApiError, ServerSetupError } from "../server/errors.ts";
import { FILES } from "../server/limits.ts";
import { SqliteDirectoryStore } from "../server/store_sqlite.ts";
import { loadOrCreateCa } from "../server/ca_state.ts";

const DAY = 24 * 3600 * 1000;
const NOW = Date.now();
const TIME = { earliestMs: NOW - 1000, latestMs: NOW + 1000 };

// DER of extension values the library cannot be asked to get wrong.
/** A SEQUENCE whose length runs past its end: no SAN/AIA decoder can read it. */
const TRUNCATED_SEQUENCE = new Uint8Array([0x30, 0x05, 0x82, 0x01]);
/** NameConstraints { permittedSubtrees [0] { GeneralSubtree { dNSName "alice" } } } (RFC 5280 4.2.1.10). */
const NAME_CONSTRAINTS_ALICE = new Uint8Array([
  0x30,
  0x0b,
  0xa0,
  0x09,
  0x30,
  0x07,
  0x82,
  0x05,
  0x61,
  0x6c,
  0x69,
  0x63,
  0x65,
]);
const NULL_VALUE = new Uint8Array([0x05, 0x00]);
const PRIVATE_OID = "1.3.6.1.4.1.55555.1.1";
const OID_AIA = "1.3.6.1.5.5.7.1.1";
const OID_DELTA_CRL_INDICATOR = "2.5.29.27";

interface Ca {
  cert: x509.X509Certificate;
  pem: string;
  privateKey: CryptoKey;
  signing: Algorithm | EcdsaParams | RsaHashedImportParams;
  skiHex: string;
}

type CaKeyKind = "p256" | "ed25519" | "rsa2048";

async function caKeys(kind: CaKeyKind): Promise<{ keys: CryptoKeyPair; signing: Algorithm | EcdsaParams }> {
  if (kind === "rsa2048") {
    const params = {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: "SHA-256",
    };
    const keys = await crypto.subtle.generateKey(params, true, ["sign", "verify"]) as CryptoKeyPair;
    return { keys, signing: { name: "RSASSA-PKCS1-v1_5" } };
  }
  const kp = await generateKeyPair(kind);
  return {
    keys: { privateKey: kp.privateKey, publicKey: kp.publicKey },
    signing: kind === "p256" ? { name: "ECDSA", hash: "SHA-256" } as EcdsaParams : { name: "Ed25519" },
  };
}

/** A self-signed CA; every field defaults to what createCaCertificate makes. */
async function makeCa(o: {
  key?: CaKeyKind;
  /** null: no basicConstraints at all. */
  basic?: { ca: boolean; critical: boolean } | null;
  usages?: x509.KeyUsageFlags | null;
  ski?: boolean;
  eku?: boolean;
  extra?: x509.Extension[];
  notBefore?: number;
  notAfter?: number;
} = {}): Promise<Ca> {
  const { keys, signing } = await caKeys(o.key ?? "p256");
  const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey);
  const basic = o.basic === undefined ? { ca: true, critical: true } : o.basic;
  const usages = o.usages === undefined
    ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign
    : o.usages;
  const extensions: x509.Extension[] = [];
  if (basic) extensions.push(new x509.BasicConstraintsExtension(basic.ca, 0, basic.critical));
  if (usages !== null) extensions.push(new x509.KeyUsagesExtension(usages, true));
  if (o.ski !== false) extensions.push(ski);
  if (o.eku) extensions.push(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]));
  extensions.push(...(o.extra ?? []));
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: "CN=conformance CA",
    notBefore: new Date(o.notBefore ?? NOW - BACKDATE_MS),
    notAfter: new Date(o.notAfter ?? NOW + 365 * DAY),
    keys,
    signingAlgorithm: signing,
    extensions,
  });
  return { cert, pem: cert.toString("pem") + "\n", privateKey: keys.privateKey, signing, skiHex: ski.keyId };
}

/** SubjectPublicKeyInfo DER of a key the CA does not issue for, made by node:crypto. */
/** A P-192 public key (made once with `openssl ecparam -name prime192v1 -genkey | openssl ec -pubout`):
 * node:crypto in Deno cannot generate that curve. */
const P192_SPKI = "3049301306072a8648ce3d020106082a8648ce3d03010103320004ca4f917ee8c96563d3521d4d1507591c" +
  "da7f1be5b924cd21a1bd8ebb0ba7c6f15147f7058c29033172f9a8e5e2748222";

function foreignSpki(
  kind: "rsa1024" | "rsa2047" | "dsa" | "p192" | "p384" | "secp256k1",
): Uint8Array<ArrayBuffer> {
  if (kind === "p192") return Uint8Array.from(P192_SPKI.match(/../g)!.map((h) => parseInt(h, 16)));
  const pair = kind === "rsa1024"
    ? generateKeyPairSync("rsa", { modulusLength: 1024 })
    : kind === "rsa2047"
    ? generateKeyPairSync("rsa", { modulusLength: 2047 })
    : kind === "dsa"
    ? generateKeyPairSync("dsa", { modulusLength: 2048, divisorLength: 256 })
    : generateKeyPairSync("ec", { namedCurve: kind === "p384" ? "secp384r1" : "secp256k1" });
  return new Uint8Array(pair.publicKey.export({ type: "spki", format: "der" }));
}

/** A leaf for "alice" as the CA template makes it, unless told otherwise. */
async function makeLeaf(ca: Ca, o: {
  spki?: Uint8Array<ArrayBuffer>;
  keyKind?: "p256" | "ed25519";
  serial?: string;
  aki?: "normal" | "critical" | "none";
  skiCritical?: boolean;
  san?: x509.Extension;
  extra?: x509.Extension[];
  notAfter?: number;
} = {}): Promise<Uint8Array> {
  const publicKey = o.spki ?? (await generateKeyPair(o.keyKind ?? "p256")).publicKey;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth]),
    o.san ?? new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "alice" }]),
    // The library imports a key to hash it, and WebCrypto cannot import every foreign key: hash the SPKI here.
    new x509.SubjectKeyIdentifierExtension(
      createHash("sha1").update(
        o.spki ?? new Uint8Array(await crypto.subtle.exportKey("spki", publicKey as CryptoKey)),
      )
        .digest("hex"),
      o.skiCritical ?? false,
    ),
  ];
  const aki = o.aki ?? "normal";
  if (aki !== "none") {
    extensions.push(new x509.AuthorityKeyIdentifierExtension(ca.skiHex, aki === "critical"));
  }
  extensions.push(...(o.extra ?? []));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: o.serial ?? randomSerial(),
    subject: "CN=alice",
    issuer: ca.cert.subjectName,
    notBefore: new Date(NOW - BACKDATE_MS),
    notAfter: new Date(o.notAfter ?? NOW + 30 * DAY),
    publicKey,
    signingKey: ca.privateKey,
    signingAlgorithm: ca.signing,
    extensions,
  });
  return new Uint8Array(cert.rawData);
}

async function makeCrl(ca: Ca, o: { number?: boolean; extra?: x509.Extension[] } = {}): Promise<Uint8Array> {
  const extensions: x509.Extension[] = [new x509.AuthorityKeyIdentifierExtension(ca.skiHex)];
  if (o.number !== false) extensions.push(new x509.Extension("2.5.29.20", false, new Uint8Array([2, 1, 7])));
  extensions.push(...(o.extra ?? []));
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.cert.subjectName,
    thisUpdate: new Date(NOW - BACKDATE_MS),
    nextUpdate: new Date(NOW + DAY),
    signingKey: ca.privateKey,
    signingAlgorithm: ca.signing,
    extensions,
    entries: [{ serialNumber: "0badc0de", revocationDate: new Date(NOW - DAY) }],
  });
  return new Uint8Array(crl.rawData);
}

import { withRawSerial } from "./helpers/pki.ts";

const verifyLeaf = (ca: Ca, der: Uint8Array, time = TIME) =>
  verifyPeerCertificate({ certDer: der, caCertPem: ca.pem, expectedName: "alice", time });

type Outcome = "accepted" | { certificate: string } | { crl: string };

interface Case {
  name: string;
  want: Outcome;
  run: () => Promise<unknown>;
}

const good = await makeCa();
const goodEd = await makeCa({ key: "ed25519" });

const cases: Case[] = [
  // Controls: the builders make what passes.
  { name: "control: P-256 leaf", want: "accepted", run: async () => verifyLeaf(good, await makeLeaf(good)) },
  {
    name: "control: Ed25519 leaf",
    want: "accepted",
    run: async () => verifyLeaf(good, await makeLeaf(good, { keyKind: "ed25519" })),
  },
  {
    name: "control: Ed25519 CA",
    want: "accepted",
    run: async () => verifyLeaf(goodEd, await makeLeaf(goodEd)),
  },
  { name: "control: CRL", want: "accepted", run: async () => verifyCrl(await makeCrl(good), good.pem) },

  // Leaf keys the CA never issues.
  ...(["rsa1024", "rsa2047", "dsa", "p192", "p384", "secp256k1"] as const).map((k): Case => ({
    name: `leaf key ${k}`,
    want: { certificate: "BAD_KEY" },
    run: async () => verifyLeaf(good, await makeLeaf(good, { spki: foreignSpki(k) })),
  })),

  // Malformed extensions: a typed refusal, never a library error.
  {
    name: "leaf with an undecodable SAN",
    want: { certificate: "MALFORMED" },
    run: async () =>
      verifyLeaf(
        good,
        await makeLeaf(good, { san: new x509.Extension("2.5.29.17", false, TRUNCATED_SEQUENCE) }),
      ),
  },
  {
    name: "leaf with an undecodable AIA",
    want: { certificate: "MALFORMED" },
    run: async () =>
      verifyLeaf(
        good,
        await makeLeaf(good, { extra: [new x509.Extension(OID_AIA, false, TRUNCATED_SEQUENCE)] }),
      ),
  },

  // Leaf encoding faults.
  {
    name: "leaf serial zero",
    want: { certificate: "MALFORMED" },
    // The library replaces a zero serial by a random one: the zero is written into the DER and re-signed.
    run: async () =>
      verifyLeaf(good, await withRawSerial(await makeLeaf(good), new Uint8Array([0]), good.privateKey)),
  },
  {
    name: "leaf serial negative",
    want: { certificate: "MALFORMED" },
    run: async () =>
      verifyLeaf(good, await withRawSerial(await makeLeaf(good), new Uint8Array([0x80, 1]), good.privateKey)),
  },
  {
    name: "control: a re-signed leaf with a good raw serial",
    want: "accepted",
    run: async () =>
      verifyLeaf(good, await withRawSerial(await makeLeaf(good), new Uint8Array([0x4a, 1]), good.privateKey)),
  },
  {
    name: "leaf serial of 21 octets",
    want: { certificate: "MALFORMED" },
    run: async () => verifyLeaf(good, await makeLeaf(good, { serial: "01" + "00".repeat(20) })),
  },
  {
    name: "leaf with a critical AKI",
    want: { certificate: "MALFORMED" },
    run: async () => verifyLeaf(good, await makeLeaf(good, { aki: "critical" })),
  },
  {
    name: "leaf with a critical SKI",
    want: { certificate: "MALFORMED" },
    run: async () => verifyLeaf(good, await makeLeaf(good, { skiCritical: true })),
  },
  {
    name: "leaf without AKI",
    want: { certificate: "MALFORMED" },
    run: async () => verifyLeaf(good, await makeLeaf(good, { aki: "none" })),
  },
  {
    name: "leaf with name constraints",
    want: { certificate: "MALFORMED" },
    run: async () =>
      verifyLeaf(
        good,
        await makeLeaf(good, { extra: [new x509.Extension("2.5.29.30", false, NAME_CONSTRAINTS_ALICE)] }),
      ),
  },

  // CRLs.
  {
    name: "CRL without a CRL Number",
    want: { crl: "BAD_CRL" },
    run: async () => verifyCrl(await makeCrl(good, { number: false }), good.pem),
  },
  {
    name: "CRL with an unknown critical extension",
    want: { crl: "BAD_CRL" },
    run: async () =>
      verifyCrl(
        await makeCrl(good, { extra: [new x509.Extension(PRIVATE_OID, true, NULL_VALUE)] }),
        good.pem,
      ),
  },
  {
    name: "CRL that is a delta CRL (critical indicator)",
    want: { crl: "BAD_CRL" },
    run: async () =>
      verifyCrl(
        await makeCrl(good, {
          extra: [new x509.Extension(OID_DELTA_CRL_INDICATOR, true, new Uint8Array([2, 1, 1]))],
        }),
        good.pem,
      ),
  },
  {
    name: "CRL from an issuer without cRLSign",
    want: { crl: "BAD_CRL" },
    run: async () => {
      const ca = await makeCa({ usages: x509.KeyUsageFlags.keyCertSign });
      return verifyCrl(await makeCrl(ca), ca.pem);
    },
  },

  // The CA certificate itself, at each use.
  {
    name: "CA expired on trusted time (leaf still valid)",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ notAfter: NOW + DAY });
      const later = { earliestMs: NOW + 2 * DAY, latestMs: NOW + 2 * DAY };
      return verifyLeaf(ca, await makeLeaf(ca), later);
    },
  },
  {
    name: "CA not yet valid on trusted time",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ notBefore: NOW + DAY });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA basicConstraints not critical",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ basic: { ca: true, critical: false } });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA with CA:FALSE",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ basic: { ca: false, critical: true } });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA without basicConstraints",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ basic: null });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA without keyCertSign",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ usages: x509.KeyUsageFlags.cRLSign });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA without cRLSign",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ usages: x509.KeyUsageFlags.keyCertSign });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA without SKI",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ ski: false });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA with an unknown critical extension",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ extra: [new x509.Extension(PRIVATE_OID, true, NULL_VALUE)] });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA with an extended key usage",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ eku: true });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
  {
    name: "CA with an RSA-2048 key",
    want: { certificate: "BAD_CA" },
    run: async () => {
      const ca = await makeCa({ key: "rsa2048" });
      return verifyLeaf(ca, await makeLeaf(ca));
    },
  },
];

for (const c of cases) {
  Deno.test(`conformance: ${c.name}`, async () => {
    if (c.want === "accepted") {
      await c.run();
      return;
    }
    const want = c.want;
    await assert.rejects(c.run(), (e: unknown) => {
      if ("certificate" in want) {
        assert.ok(e instanceof CertificateError, `want CertificateError, got ${e}`);
        assert.equal(e.code, want.certificate, e.message);
      } else {
        assert.ok(e instanceof PkiError, `want PkiError, got ${e}`);
        assert.equal(e.code, want.crl, e.message);
      }
      return true;
    });
  });
}

Deno.test("conformance: the CA template still makes a CA and leaves that pass every check", async () => {
  const keys = await generateKeyPair("p256");
  const cert = await createCaCertificate(keys, { nowMs: NOW });
  const material = { cert, certPem: cert.toString("pem") + "\n", keys };
  await checkCaCertificate(cert, TIME);
  const user = await generateKeyPair("ed25519");
  const leaf = await issueUserCertificate(material, "alice", user.publicKey, { nowMs: NOW });
  const peer = await verifyPeerCertificate({
    certDer: new Uint8Array(leaf.rawData),
    caCertPem: material.certPem,
    expectedName: "alice",
    time: TIME,
  });
  assert.equal(peer.name, "alice");
  await verifyCrl(new Uint8Array((await createCrl(material, [], NOW)).rawData), material.certPem);
});

Deno.test("conformance: a malformed client certificate gets the phonebook's 401, not a 500", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-conf-" });
  const store = new SqliteDirectoryStore(join(tmp, "test.db"));
  try {
    const { ca, fingerprint } = await loadOrCreateCa(tmp);
    const svc = new DirectoryService({
      store,
      ca,
      caFingerprint: fingerprint,
      inviteOnly: false,
      roughtime: null,
    });
    const caLike: Ca = {
      cert: ca.cert,
      pem: ca.certPem,
      privateKey: ca.keys.privateKey,
      signing: { name: "ECDSA", hash: "SHA-256" } as EcdsaParams,
      skiHex: ca.cert.getExtension<x509.SubjectKeyIdentifierExtension>("2.5.29.14")!.keyId,
    };
    const der = await makeLeaf(caLike, { san: new x509.Extension("2.5.29.17", false, TRUNCATED_SEQUENCE) });
    await assert.rejects(
      svc.authenticate(der),
      (e: unknown) => e instanceof ApiError && e.status === 401,
    );
  } finally {
    store.close();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("conformance: the phonebook refuses to load an unfit CA certificate", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-conf-" });
  try {
    await loadOrCreateCa(tmp);
    // Replace the certificate by one for the same key without cRLSign, as a hand-edited or forged file would.
    const { ca } = await loadOrCreateCa(tmp);
    const bad = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: ca.cert.subject,
      notBefore: new Date(NOW - BACKDATE_MS),
      notAfter: new Date(NOW + DAY),
      keys: { privateKey: ca.keys.privateKey, publicKey: ca.keys.publicKey },
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" } as EcdsaParams,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        await x509.SubjectKeyIdentifierExtension.create(ca.keys.publicKey),
      ],
    });
    await Deno.writeTextFile(join(tmp, FILES.caCert), bad.toString("pem") + "\n");
    await assert.rejects(
      loadOrCreateCa(tmp),
      (e: unknown) => e instanceof ServerSetupError && e.code === "CA_CERT",
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
