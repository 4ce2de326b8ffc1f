/**
 * The certificate profile our CA issues, as checks: what a CA certificate and a leaf must look like beyond
 * their signature. The verifier holds every certificate to what the template makes (ca.ts), so a buggy or
 * future CA, or a forged CA file, cannot widen what peers accept. Pure: no I/O, no clock of its own.
 */
import { x509 } from "./x509.ts";
import { CertificateError } from "./errors.ts";

export const OID_BASIC_CONSTRAINTS = "2.5.29.19";
export const OID_KEY_USAGE = "2.5.29.15";
export const OID_EXT_KEY_USAGE = "2.5.29.37";
export const OID_SAN = "2.5.29.17";
export const OID_SKI = "2.5.29.14";
export const OID_AKI = "2.5.29.35";
export const OID_NAME_CONSTRAINTS = "2.5.29.30";

/** RFC 5280 4.1.2.2: a serial is a positive integer of at most 20 octets. */
export const MAX_SERIAL_OCTETS = 20;

/** The SubjectPublicKeyInfo encodings of the only keys the CA issues for: an uncompressed P-256 point
 * (RFC 5480) and an Ed25519 key (RFC 8410). Compared as whole prefixes so an odd curve, a compressed point,
 * explicit parameters, RSA of any size, DSA and everything else fail the same way. */
const SPKI_P256_PREFIX = Uint8Array.from([
  0x30,
  0x59,
  0x30,
  0x13,
  0x06,
  0x07,
  0x2a,
  0x86,
  0x48,
  0xce,
  0x3d,
  0x02,
  0x01,
  0x06,
  0x08,
  0x2a,
  0x86,
  0x48,
  0xce,
  0x3d,
  0x03,
  0x01,
  0x07,
  0x03,
  0x42,
  0x00,
  0x04,
]);
const SPKI_P256_LENGTH = 91;
const SPKI_ED25519_PREFIX = Uint8Array.from([
  0x30,
  0x2a,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x03,
  0x21,
  0x00,
]);
const SPKI_ED25519_LENGTH = 44;

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  return bytes.length >= prefix.length && prefix.every((b, i) => bytes[i] === b);
}

/** True when `spki` (DER) is a P-256 or Ed25519 public key in the one encoding the CA's keys have. */
export function isIssuableKey(spki: Uint8Array): boolean {
  return issuableKeyAlgorithm(spki) !== null;
}

/** Which of the two issuable kinds `spki` (DER) is, or null for any other key or encoding. */
export function issuableKeyAlgorithm(spki: Uint8Array): "p256" | "ed25519" | null {
  if (spki.length === SPKI_P256_LENGTH && startsWith(spki, SPKI_P256_PREFIX)) return "p256";
  if (spki.length === SPKI_ED25519_LENGTH && startsWith(spki, SPKI_ED25519_PREFIX)) return "ed25519";
  return null;
}

/** The raw octets of the serial, as @peculiar/x509 reports them (the DER INTEGER contents). */
function serialOctets(cert: x509.X509Certificate): Uint8Array {
  const hex = cert.serialNumber;
  if (!/^([0-9a-f]{2})+$/i.test(hex)) return new Uint8Array();
  return Uint8Array.from(hex.match(/../g)!.map((h) => parseInt(h, 16)));
}

/** Throws unless the serial is positive, non-zero and at most 20 octets. */
export function checkSerial(cert: x509.X509Certificate, what: string, code: "MALFORMED" | "BAD_CA"): void {
  const o = serialOctets(cert);
  if (o.length === 0 || o.length > MAX_SERIAL_OCTETS) {
    throw new CertificateError(code, `${what} has a serial of ${o.length} octets (1-${MAX_SERIAL_OCTETS})`);
  }
  if (o[0] & 0x80) throw new CertificateError(code, `${what} has a negative serial`);
  if (o.every((b) => b === 0)) throw new CertificateError(code, `${what} has serial zero`);
}

/** Throws when an extension appears twice or a critical one is not in `understood` (RFC 5280 4.2). */
export function checkExtensionSet(
  cert: x509.X509Certificate,
  understood: ReadonlySet<string>,
  what: string,
  code: "MALFORMED" | "BAD_CA",
): void {
  const seen = new Set<string>();
  for (const ext of cert.extensions) {
    if (seen.has(ext.type)) throw new CertificateError(code, `${what} repeats extension ${ext.type}`);
    seen.add(ext.type);
    if (ext.critical && !understood.has(ext.type)) {
      throw new CertificateError(code, `${what} has an unknown critical extension ${ext.type}`);
    }
  }
}

/** Forces every lazily decoded part of a parsed certificate, so a malformed field fails here, inside the
 * caller's parse step, and not later as an untyped error from deep in the library. */
export function decodeFully(cert: x509.X509Certificate): void {
  void cert.subject;
  void cert.issuer;
  void cert.subjectName.toJSON();
  void cert.serialNumber;
  void cert.notBefore;
  void cert.notAfter;
  void cert.publicKey.rawData;
  for (const ext of cert.extensions) void ext.critical;
}

const CA_UNDERSTOOD = new Set([OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, OID_SKI, OID_AKI]);

/** The parsed CA certificates already found structurally sound (the checks include a signature). */
const soundCas = new WeakSet<x509.X509Certificate>();

/** Checks the CA certificate itself, as the CA template makes it: parses; self-signed by its own key;
 * basicConstraints present, critical, CA:TRUE; keyUsage with keyCertSign and cRLSign; a subject key
 * identifier; no extended key usage; no unknown critical extension; a P-256 or Ed25519 key; a sane serial.
 * With `time`, also valid over the whole trusted-time interval. Throws CertificateError("BAD_CA"). */
export async function checkCaCertificate(
  ca: x509.X509Certificate,
  time?: { earliestMs: number; latestMs: number },
): Promise<void> {
  if (!soundCas.has(ca)) {
    await checkCaStructure(ca);
    soundCas.add(ca);
  }
  if (time) {
    if (!(ca.notBefore.getTime() <= time.earliestMs)) {
      throw new CertificateError("BAD_CA", "the CA certificate is not valid yet");
    }
    if (!(time.latestMs <= ca.notAfter.getTime())) {
      throw new CertificateError("BAD_CA", "the CA certificate has expired");
    }
  }
}

async function checkCaStructure(ca: x509.X509Certificate): Promise<void> {
  const bad = (why: string) => new CertificateError("BAD_CA", `the CA certificate ${why}`);
  let bc: x509.BasicConstraintsExtension | null;
  let ku: x509.KeyUsagesExtension | null;
  try {
    decodeFully(ca);
    bc = ca.getExtension<x509.BasicConstraintsExtension>(OID_BASIC_CONSTRAINTS);
    ku = ca.getExtension<x509.KeyUsagesExtension>(OID_KEY_USAGE);
  } catch {
    throw bad("cannot be decoded");
  }
  checkExtensionSet(ca, CA_UNDERSTOOD, "the CA certificate", "BAD_CA");
  checkSerial(ca, "the CA certificate", "BAD_CA");
  if (!isIssuableKey(new Uint8Array(ca.publicKey.rawData))) {
    throw bad("has a key that is not P-256 or Ed25519");
  }
  if (!bc || !bc.critical || !bc.ca) throw bad("lacks a critical basicConstraints CA:TRUE");
  const needed = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;
  if (!ku || (ku.usages & needed) !== needed) throw bad("lacks keyCertSign and cRLSign key usage");
  if (ca.extensions.some((e) => e.type === OID_EXT_KEY_USAGE)) throw bad("carries an extended key usage");
  if (!ca.extensions.some((e) => e.type === OID_SKI)) throw bad("has no subject key identifier");
  let selfSigned = false;
  try {
    selfSigned = ca.subject === ca.issuer &&
      await ca.verify({ publicKey: ca.publicKey, signatureOnly: true });
  } catch {
    selfSigned = false;
  }
  if (!selfSigned) throw bad("is not self-signed by its own key");
}

/** The key identifier the CA's SKI holds, lowercase hex. */
export function subjectKeyIdOf(cert: x509.X509Certificate): string | null {
  const ski = cert.getExtension<x509.SubjectKeyIdentifierExtension>(OID_SKI);
  return ski ? ski.keyId.toLowerCase() : null;
}
