/**
 * Test certificates: a test CA and leaf certificates with chosen defects, as PEM key + certificate pairs, for
 * tests that must prove a peer or the directory refuses each kind of bad certificate.
 */
import {
  BACKDATE_MS,
  type CaMaterial,
  createCaCertificate,
  exportPrivateKeyPem,
  fingerprintOf,
  generateKeyPair,
  issueCertificate,
  type KeyAlgorithm,
  keyFingerprintOf,
  type KeyPair,
  normalizeSerial,
  pemToDer,
  type SanEntry,
  x509,
} from "../../pki/mod.ts";

export interface TestCa {
  name: string;
  certPem: string;
  keyPem: string;
  fingerprint: string;
  material: CaMaterial;
}

/** What is wrong with a leaf. "none" is a good certificate, exactly what the real CA issues. */
export type LeafDefect =
  | "none"
  /** Self-signed, carrying the victim's name. */
  | "self-signed"
  /** Signed by another CA with another name. */
  | "other-ca"
  /** Signed by another CA whose name is identical to the real CA's (only its key differs). */
  | "other-ca-same-name"
  /** From the right CA, for another name ("<name>-x"). */
  | "wrong-name"
  /** From the right CA, CN is the name but the SAN names someone else. */
  | "san-mismatch"
  | "expired"
  | "not-yet-valid"
  /** A leaf with CA:TRUE. */
  | "ca-true"
  /** A leaf whose key usage includes keyCertSign. */
  | "key-cert-sign"
  /** No extended key usage extension at all. */
  | "no-eku"
  /** EKU without clientAuth/serverAuth (codeSigning only). */
  | "wrong-eku"
  /** EKU with clientAuth only. */
  | "client-only-eku";

export const ALL_DEFECTS: readonly LeafDefect[] = [
  "self-signed",
  "other-ca",
  "other-ca-same-name",
  "wrong-name",
  "san-mismatch",
  "expired",
  "not-yet-valid",
  "ca-true",
  "key-cert-sign",
  "no-eku",
  "wrong-eku",
  "client-only-eku",
];

export interface TestLeaf {
  /** The name the certificate was requested for (the victim's name for impostor defects). */
  name: string;
  defect: LeafDefect;
  certPem: string;
  certDer: Uint8Array;
  keyPem: string;
  fingerprint: string;
  /** SHA-256 of the SPKI (the same for two leaves made with the same `keys`). */
  keyFingerprint: string;
  keys: KeyPair;
  serial: string;
  notBefore: number;
  notAfter: number;
}

const DAY = 24 * 3600 * 1000;

export async function makeTestCa(
  opts: { name?: string; algorithm?: KeyAlgorithm; nowMs?: number } = {},
): Promise<TestCa> {
  const name = opts.name ?? "securechat test CA";
  const keys = await generateKeyPair(opts.algorithm ?? "p256");
  const cert = await createCaCertificate(keys, { name, nowMs: opts.nowMs });
  const certPem = cert.toString("pem") + "\n";
  return {
    name,
    certPem,
    keyPem: await exportPrivateKeyPem(keys),
    fingerprint: fingerprintOf(certPem),
    material: { cert, certPem, keys },
  };
}

/** A leaf certificate for `name` issued by `ca`, with the given defect. */
export async function makeTestLeaf(
  ca: TestCa,
  name: string,
  opts: {
    defect?: LeafDefect;
    algorithm?: KeyAlgorithm;
    nowMs?: number;
    validityDays?: number;
    /** Reuse a key pair (a renewal: a new certificate for the same key). */
    keys?: KeyPair;
  } = {},
): Promise<TestLeaf> {
  const defect = opts.defect ?? "none";
  const now = opts.nowMs ?? Date.now();
  const keys = opts.keys ?? await generateKeyPair(opts.algorithm ?? "p256");
  let issuer: CaMaterial | undefined = ca.material;
  let cn = name;
  let san: SanEntry[] = [{ type: "dns", value: name }];
  let isCa = false;
  let keyUsage: x509.KeyUsageFlags | null = x509.KeyUsageFlags.digitalSignature;
  let eku: string[] | null = [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth];
  let notBefore = now - BACKDATE_MS;
  let notAfter = now + (opts.validityDays ?? 30) * DAY;

  switch (defect) {
    case "none":
      break;
    case "self-signed":
      issuer = undefined;
      break;
    case "other-ca":
      issuer = (await makeTestCa({ name: "evil CA" })).material;
      break;
    case "other-ca-same-name":
      issuer = (await makeTestCa({ name: ca.name })).material;
      break;
    case "wrong-name":
      cn = `${name}-x`;
      san = [{ type: "dns", value: cn }];
      break;
    case "san-mismatch":
      san = [{ type: "dns", value: `${name}-x` }];
      break;
    case "expired":
      notBefore = now - 40 * DAY;
      notAfter = now - DAY;
      break;
    case "not-yet-valid":
      notBefore = now + DAY;
      notAfter = now + 30 * DAY;
      break;
    case "ca-true":
      isCa = true;
      break;
    case "key-cert-sign":
      keyUsage = x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyCertSign;
      break;
    case "no-eku":
      eku = null;
      break;
    case "wrong-eku":
      eku = [x509.ExtendedKeyUsage.codeSigning];
      break;
    case "client-only-eku":
      eku = [x509.ExtendedKeyUsage.clientAuth];
      break;
  }

  const cert = await issueCertificate({
    subjectCN: cn,
    issuer: issuer ? { cert: issuer.cert, keys: issuer.keys } : undefined,
    selfKeys: issuer ? undefined : keys,
    publicKey: keys.publicKey,
    san,
    isCa,
    keyUsage,
    eku,
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
  });
  const certPem = cert.toString("pem") + "\n";
  return {
    name,
    defect,
    certPem,
    certDer: pemToDer(certPem, "CERTIFICATE"),
    keyPem: await exportPrivateKeyPem(keys),
    fingerprint: fingerprintOf(certPem),
    keyFingerprint: keyFingerprintOf(certPem),
    keys,
    serial: normalizeSerial(cert.serialNumber),
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
  };
}

/** One leaf per defect in ALL_DEFECTS, all claiming `victimName`. */
export async function makeDefectiveLeaves(
  ca: TestCa,
  victimName: string,
): Promise<Record<LeafDefect, TestLeaf>> {
  const out = {} as Record<LeafDefect, TestLeaf>;
  out.none = await makeTestLeaf(ca, victimName);
  for (const d of ALL_DEFECTS) out[d] = await makeTestLeaf(ca, victimName, { defect: d });
  return out;
}

/** One DER TLV: tag, where its contents start and where it ends. */
function readTlv(der: Uint8Array, at: number): { tag: number; start: number; end: number } {
  const tag = der[at];
  let len = der[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i];
    start += n;
  }
  return { tag, start, end: start + len };
}

function encodeTlv(tag: number, body: Uint8Array): Uint8Array<ArrayBuffer> {
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Uint8Array.from([tag, ...len, ...body]);
}

/** DER INTEGER contents of an unsigned big-endian number (leading zeros dropped, a 00 kept for the sign). */
function unsignedIntegerBody(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const v = bytes.subarray(i);
  return v[0] & 0x80 ? Uint8Array.from([0, ...v]) : v;
}

/** A certificate whose serial's contents are replaced by `serial` (raw INTEGER octets, any value, even ones
 * the library refuses to write such as zero), re-signed by the P-256 `issuerKey` so only the fault differs. */
export async function withRawSerial(
  certDer: Uint8Array,
  serial: Uint8Array,
  issuerKey: CryptoKey,
): Promise<Uint8Array<ArrayBuffer>> {
  const outer = readTlv(certDer, 0);
  const tbs = readTlv(certDer, outer.start);
  const version = readTlv(certDer, tbs.start);
  const serialTlv = readTlv(certDer, version.end);
  const tbsBody = Uint8Array.from([
    ...certDer.subarray(tbs.start, version.end),
    ...encodeTlv(0x02, serial),
    ...certDer.subarray(serialTlv.end, tbs.end),
  ]);
  const newTbs = encodeTlv(0x30, tbsBody);
  const sigAlg = readTlv(certDer, tbs.end);
  const p1363 = new Uint8Array(
    await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, issuerKey, newTbs),
  );
  const sig = encodeTlv(
    0x30,
    Uint8Array.from([
      ...encodeTlv(0x02, unsignedIntegerBody(p1363.subarray(0, 32))),
      ...encodeTlv(0x02, unsignedIntegerBody(p1363.subarray(32))),
    ]),
  );
  return encodeTlv(
    0x30,
    Uint8Array.from([
      ...newTbs,
      ...certDer.subarray(tbs.end, sigAlg.end),
      ...encodeTlv(0x03, Uint8Array.from([0, ...sig])),
    ]),
  );
}
