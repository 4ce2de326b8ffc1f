/**
 * The application-level check of a peer's leaf certificate. The TLS layer may have been told not to judge
 * validity (it would use the local clock, which the user or an attacker can move), so this check decides,
 * on trusted time, against the one CA we trust.
 */
import { x509 } from "./x509.ts";
import { CertificateError } from "./errors.ts";
import { isCanonicalUsername } from "./username.ts";
import { fingerprintOf, normalizeSerial, pemToDer } from "./encoding.ts";

export interface VerifiedPeer {
  name: string;
  fingerprint: string;
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

const OID_BASIC_CONSTRAINTS = "2.5.29.19";
const OID_KEY_USAGE = "2.5.29.15";
const OID_EXT_KEY_USAGE = "2.5.29.37";
const OID_SAN = "2.5.29.17";
const OID_SKI = "2.5.29.14";
const OID_AKI = "2.5.29.35";
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

function parseCa(pem: string): x509.X509Certificate {
  let ca = caCache.get(pem);
  if (!ca) {
    ca = new x509.X509Certificate(pemToDer(pem, "CERTIFICATE"));
    if (caCache.size > 16) caCache.clear();
    caCache.set(pem, ca);
  }
  return ca;
}

/** Checks, in order: parses (MALFORMED); issuer name equals the CA's and the signature verifies with the CA
 * key (NOT_FROM_CA, so a CA with the same name but another key fails); no repeated extension and no unknown
 * critical one (MALFORMED); not a CA (IS_CA); key usage is digitalSignature without keyCertSign/cRLSign
 * (BAD_KEY_USAGE); EKU has clientAuth and serverAuth (BAD_EKU); the subject is exactly CN=<one canonical
 * username>, every SAN is that same DNS name, and it equals expectedName when given (WRONG_NAME); serial not
 * revoked (REVOKED); the whole trusted-time interval inside the validity period (NOT_YET_VALID, EXPIRED).
 * Resolves with the peer's identity or throws CertificateError. */
export async function verifyPeerCertificate(opts: VerifyPeerOptions): Promise<VerifiedPeer> {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(new Uint8Array(opts.certDer));
  } catch {
    throw new CertificateError("MALFORMED", "peer certificate cannot be parsed");
  }
  const ca = parseCa(opts.caCertPem);

  let signedByCa = false;
  if (cert.issuer === ca.subject) {
    try {
      signedByCa = await cert.verify({ publicKey: ca.publicKey, signatureOnly: true });
    } catch {
      signedByCa = false;
    }
  }
  if (!signedByCa) throw new CertificateError("NOT_FROM_CA", "peer certificate is not signed by our CA");

  // RFC 5280 4.2: at most one instance of each extension (getExtension would read only the first one), and
  // no critical extension we do not understand.
  const seen = new Set<string>();
  for (const ext of cert.extensions) {
    if (seen.has(ext.type)) {
      throw new CertificateError("MALFORMED", `peer certificate repeats extension ${ext.type}`);
    }
    seen.add(ext.type);
    if (ext.critical && !UNDERSTOOD_EXTENSIONS.has(ext.type)) {
      throw new CertificateError(
        "MALFORMED",
        `peer certificate has an unknown critical extension ${ext.type}`,
      );
    }
  }

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

  return {
    name,
    fingerprint: fingerprintOf(opts.certDer),
    serial,
    subject: cert.subject,
    issuer: cert.issuer,
    notBefore,
    notAfter,
  };
}
