/**
 * The application-level check of a peer's leaf certificate. The TLS layer may have been told not to judge
 * validity (it would use the local clock, which the user or an attacker can move), so this check decides,
 * on trusted time, against the one CA we trust.
 */
import { x509 } from "./x509.ts";
import { CertificateError } from "./errors.ts";
import { isCanonicalUsername } from "./username.ts";
import { fingerprintOf, keyFingerprintOf, normalizeSerial, pemToDer } from "./encoding.ts";
import {
  checkCaCertificate,
  checkExtensionSet,
  checkSerial,
  decodeFully,
  isIssuableKey,
  OID_AKI,
  OID_BASIC_CONSTRAINTS,
  OID_EXT_KEY_USAGE,
  OID_KEY_USAGE,
  OID_NAME_CONSTRAINTS,
  OID_SAN,
  OID_SKI,
  subjectKeyIdOf,
} from "./profile.ts";

export interface VerifiedPeer {
  name: string;
  /** SHA-256 of the certificate's DER (changes at every renewal; TLS-level binding such as the hello). */
  fingerprint: string;
  /** SHA-256 of the certificate's SubjectPublicKeyInfo: the identity pinned and shown to people. */
  keyFingerprint: string;
  /** Normalised serial: lowercase hex without leading zeros. */
  serial: string;
  subject: string;
  issuer: string;
  notBefore: number;
  notAfter: number;
}

export interface VerifyPeerOptions {
  certDer: Uint8Array;
  caCertPem: string;
  expectedName?: string;
  /** Valid only if notBefore <= earliestMs and latestMs <= notAfter. */
  time: { earliestMs: number; latestMs: number };
  /** Normalised serials (see normalizeSerial). */
  revokedSerials?: ReadonlySet<string>;
}

/** The extensions this check understands. A critical extension outside this set must make the certificate
 * unusable (RFC 5280 4.2): whatever it restricts, we would not enforce it. */
const UNDERSTOOD_EXTENSIONS = new Set([
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  OID_EXT_KEY_USAGE,
  OID_SAN,
  OID_SKI,
  OID_AKI,
]);

const caCache = new Map<string, x509.X509Certificate>();

/** The trusted CA, parsed once per PEM. A PEM that does not parse is an unfit CA (BAD_CA). */
function parseCa(pem: string): x509.X509Certificate {
  let ca = caCache.get(pem);
  if (!ca) {
    try {
      ca = new x509.X509Certificate(pemToDer(pem, "CERTIFICATE"));
      decodeFully(ca);
    } catch {
      throw new CertificateError("BAD_CA", "the CA certificate cannot be parsed");
    }
    if (caCache.size > 16) caCache.clear();
    caCache.set(pem, ca);
  }
  return ca;
}

/** Checks, in order: the CA certificate itself (BAD_CA, see checkCaCertificate); the leaf parses, every extension included (MALFORMED); issuer name equals the CA's and the signature
 * verifies with the CA key (NOT_FROM_CA, so a CA with the same name but another key fails); a P-256 or
 * Ed25519 key (BAD_KEY); a positive serial of at most 20 octets, no repeated extension, no unknown critical
 * one, a non-critical AKI naming the CA's key, a non-critical SKI if any, no name constraints (MALFORMED); not
 * a CA (IS_CA); key usage is digitalSignature without keyCertSign/cRLSign (BAD_KEY_USAGE); EKU has clientAuth
 * and serverAuth (BAD_EKU); the subject is exactly CN=<one canonical username>, every SAN is that same DNS
 * name, and it equals expectedName when given (WRONG_NAME); serial not revoked (REVOKED); the whole
 * trusted-time interval inside the validity period (NOT_YET_VALID, EXPIRED), and inside the CA's (BAD_CA). Resolves with the peer's
 * identity or throws CertificateError, never another error, whatever the bytes. */
export async function verifyPeerCertificate(opts: VerifyPeerOptions): Promise<VerifiedPeer> {
  try {
    return await verify(opts);
  } catch (e) {
    if (e instanceof CertificateError) throw e;
    // A library error on input we did not anticipate is still a refusal of that input, not a crash.
    throw new CertificateError("MALFORMED", "peer certificate cannot be decoded");
  }
}

async function verify(opts: VerifyPeerOptions): Promise<VerifiedPeer> {
  const ca = parseCa(opts.caCertPem);
  await checkCaCertificate(ca);
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(new Uint8Array(opts.certDer));
    decodeFully(cert);
  } catch {
    throw new CertificateError("MALFORMED", "peer certificate cannot be parsed");
  }

  let signedByCa = false;
  if (cert.issuer === ca.subject) {
    try {
      signedByCa = await cert.verify({ publicKey: ca.publicKey, signatureOnly: true });
    } catch {
      signedByCa = false;
    }
  }
  if (!signedByCa) throw new CertificateError("NOT_FROM_CA", "peer certificate is not signed by our CA");
  if (!isIssuableKey(new Uint8Array(cert.publicKey.rawData))) {
    throw new CertificateError("BAD_KEY", "peer certificate's key is not P-256 or Ed25519");
  }

  checkSerial(cert, "peer certificate", "MALFORMED");
  checkExtensionSet(cert, UNDERSTOOD_EXTENSIONS, "peer certificate", "MALFORMED");
  checkLeafIdentifiers(cert, ca);

  let bc: x509.BasicConstraintsExtension | null;
  let ku: x509.KeyUsagesExtension | null;
  let eku: x509.ExtendedKeyUsageExtension | null;
  let san: x509.SubjectAlternativeNameExtension | null;
  try {
    bc = cert.getExtension<x509.BasicConstraintsExtension>(OID_BASIC_CONSTRAINTS);
    ku = cert.getExtension<x509.KeyUsagesExtension>(OID_KEY_USAGE);
    eku = cert.getExtension<x509.ExtendedKeyUsageExtension>(OID_EXT_KEY_USAGE);
    san = cert.getExtension<x509.SubjectAlternativeNameExtension>(OID_SAN);
  } catch {
    throw new CertificateError("MALFORMED", "peer certificate has unreadable extensions");
  }
  if (bc?.ca) throw new CertificateError("IS_CA", "peer certificate is a CA certificate");
  if (ku) {
    const forbidden = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign;
    if (ku.usages & forbidden) {
      throw new CertificateError("BAD_KEY_USAGE", "peer certificate may sign certificates");
    }
    if (!(ku.usages & x509.KeyUsageFlags.digitalSignature)) {
      throw new CertificateError("BAD_KEY_USAGE", "peer certificate lacks digitalSignature key usage");
    }
  } else {
    throw new CertificateError("BAD_KEY_USAGE", "peer certificate has no key usage extension");
  }
  const usages = (eku?.usages ?? []).map(String);
  if (
    !usages.includes(x509.ExtendedKeyUsage.clientAuth) || !usages.includes(x509.ExtendedKeyUsage.serverAuth)
  ) {
    throw new CertificateError("BAD_EKU", "peer certificate must allow both clientAuth and serverAuth");
  }

  // The subject is exactly one RDN holding one CN: other attributes (O=..., OU=...) could be shown to a user
  // or matched by other software as if the CA had vouched for them.
  const rdns = cert.subjectName.toJSON();
  const onlyCn = rdns.length === 1 && Object.keys(rdns[0]).length === 1 && rdns[0].CN?.length === 1;
  const name = onlyCn ? rdns[0].CN[0] : "";
  const sanItems = san ? san.names.items : [];
  const sanOk = sanItems.length > 0 && sanItems.every((n) => n.type === "dns" && n.value === name);
  if (!isCanonicalUsername(name) || !sanOk) {
    throw new CertificateError(
      "WRONG_NAME",
      "peer certificate does not carry exactly one canonical username",
    );
  }
  if (opts.expectedName !== undefined && name !== opts.expectedName) {
    throw new CertificateError("WRONG_NAME", `peer certificate is for "${name}", not "${opts.expectedName}"`);
  }

  const serial = normalizeSerial(cert.serialNumber);
  if (opts.revokedSerials?.has(serial)) {
    throw new CertificateError("REVOKED", "peer certificate has been revoked");
  }

  const notBefore = cert.notBefore.getTime();
  const notAfter = cert.notAfter.getTime();
  if (!(notBefore <= opts.time.earliestMs)) {
    throw new CertificateError("NOT_YET_VALID", "peer certificate is not valid yet");
  }
  if (!(opts.time.latestMs <= notAfter)) {
    throw new CertificateError("EXPIRED", "peer certificate has expired");
  }
  // Last, so a leaf's own fault is the one reported: the CA must be valid over the same trusted interval.
  await checkCaCertificate(ca, opts.time);

  return {
    name,
    fingerprint: fingerprintOf(opts.certDer),
    keyFingerprint: keyFingerprintOf(opts.certDer),
    serial,
    subject: cert.subject,
    issuer: cert.issuer,
    notBefore,
    notAfter,
  };
}

/** RFC 5280 4.2.1.1/4.2.1.2: AKI must be present in a CA-issued certificate and both identifiers must be
 * non-critical; the AKI names the CA's key. Name constraints belong in CA certificates only (4.2.1.10). */
function checkLeafIdentifiers(cert: x509.X509Certificate, ca: x509.X509Certificate): void {
  const malformed = (why: string) => new CertificateError("MALFORMED", `peer certificate ${why}`);
  const aki = cert.extensions.find((e) => e.type === OID_AKI);
  const ski = cert.extensions.find((e) => e.type === OID_SKI);
  if (!aki) throw malformed("has no authority key identifier");
  if (aki.critical) throw malformed("marks its authority key identifier critical");
  if (ski?.critical) throw malformed("marks its subject key identifier critical");
  if (cert.extensions.some((e) => e.type === OID_NAME_CONSTRAINTS)) {
    throw malformed("carries name constraints");
  }
  const keyId = (aki as x509.AuthorityKeyIdentifierExtension).keyId?.toLowerCase();
  if (!keyId || keyId !== subjectKeyIdOf(ca)) throw malformed("names another authority key");
}
