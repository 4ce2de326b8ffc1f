/**
 * The Certificate Authority: making the CA itself, issuing certificates from a fixed template, and signing
 * revocation lists. Pure with respect to storage: callers pass keys and times in and persist what comes out.
 */
import { isIP } from "node:net";
import { x509 } from "./x509.ts";
import { type KeyAlgorithm, type KeyPair, signingAlgorithm } from "./keys.ts";
import { normalizeSerial, randomSerial, toHex } from "./encoding.ts";
import { canonicalUsername } from "./username.ts";
import { type IssuableKey, keyIdentifierBytes, spkiBytes } from "./_key_id.ts";
import { issueFromTemplate, type TemplateCertificate } from "./_user_template.ts";

export type { IssuableKey };

/** Template constants: what every user certificate says, whatever its CSR asked for. */
export const USER_CERT_VALIDITY_DAYS = 30;
/** The longest user certificate the template signs (the CA/Browser limit for TLS certificates). */
export const MAX_USER_CERT_VALIDITY_DAYS = 397;
export const CA_VALIDITY_DAYS = 3650;
export const SERVER_CERT_VALIDITY_DAYS = 397;
/** Backdating absorbs small clock differences between the CA and the peers that check its certificates. */
export const BACKDATE_MS = 5 * 60 * 1000;
export const CRL_VALIDITY_MS = 7 * 24 * 3600 * 1000;
const DAY_MS = 24 * 3600 * 1000;

export interface CaMaterial {
  cert: x509.X509Certificate;
  certPem: string;
  keys: KeyPair;
}

export type SanEntry = { type: "dns" | "ip"; value: string };

/** Everything a certificate can say; used by the CA template and, with odd values, by test helpers. */
export interface CertificateSpec {
  subjectCN: string;
  /** Issuer certificate and key; omit for a self-signed certificate (then `keys` signs). */
  issuer?: { cert: x509.X509Certificate; keys: KeyPair };
  publicKey: IssuableKey;
  /** Only needed for self-signed certificates. */
  selfKeys?: KeyPair;
  san: SanEntry[];
  isCa: boolean;
  pathLength?: number;
  keyUsage: x509.KeyUsageFlags | null;
  eku: string[] | null;
  notBefore: Date;
  notAfter: Date;
  serial?: string;
}

async function keyIdentifier(publicKey: IssuableKey): Promise<string> {
  return toHex(keyIdentifierBytes(await spkiBytes(publicKey)));
}

/** The CA's AuthorityKeyIdentifier is the same for every certificate it signs: computed once per key. */
const akiCache = new WeakMap<CryptoKey, x509.AuthorityKeyIdentifierExtension>();
async function authorityKeyIdentifier(caPublicKey: CryptoKey): Promise<x509.AuthorityKeyIdentifierExtension> {
  let aki = akiCache.get(caPublicKey);
  if (!aki) {
    aki = new x509.AuthorityKeyIdentifierExtension(await keyIdentifier(caPublicKey));
    akiCache.set(caPublicKey, aki);
  }
  return aki;
}

/** The end of a certificate issued by `ca`: never after the CA's own (RFC 5280 6.1.3 would reject the chain
 * from then on anyway, and peers should not learn it from a failure). */
function clampToCa(ca: CaMaterial, notAfterMs: number): Date {
  return new Date(Math.min(notAfterMs, ca.cert.notAfter.getTime()));
}

/** Issues one certificate exactly as `spec` says (no policy here: see issueUserCertificate for the template). */
export async function issueCertificate(spec: CertificateSpec): Promise<x509.X509Certificate> {
  const subject = [{ CN: [spec.subjectCN] }];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(spec.isCa, spec.pathLength, true),
  ];
  if (spec.keyUsage !== null) extensions.push(new x509.KeyUsagesExtension(spec.keyUsage, true));
  if (spec.eku !== null) extensions.push(new x509.ExtendedKeyUsageExtension(spec.eku, false));
  if (spec.san.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension(spec.san, false));
  }
  // One SPKI for both the key identifier and the certificate (exported once when given a CryptoKey).
  const spki = await spkiBytes(spec.publicKey);
  extensions.push(new x509.SubjectKeyIdentifierExtension(await keyIdentifier(spki)));
  const serialNumber = spec.serial ?? randomSerial();
  if (spec.issuer) {
    extensions.push(await authorityKeyIdentifier(spec.issuer.keys.publicKey));
    return await x509.X509CertificateGenerator.create({
      serialNumber,
      subject,
      issuer: spec.issuer.cert.subjectName,
      notBefore: spec.notBefore,
      notAfter: spec.notAfter,
      publicKey: spki,
      signingKey: spec.issuer.keys.privateKey,
      signingAlgorithm: signingAlgorithm(spec.issuer.keys.algorithm),
      extensions,
    });
  }
  if (!spec.selfKeys) throw new TypeError("a self-signed certificate needs selfKeys");
  return await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber,
    name: subject,
    notBefore: spec.notBefore,
    notAfter: spec.notAfter,
    keys: { privateKey: spec.selfKeys.privateKey, publicKey: spec.selfKeys.publicKey },
    signingAlgorithm: signingAlgorithm(spec.selfKeys.algorithm),
    extensions,
  });
}

/** A new self-signed CA certificate (CA:TRUE, pathlen 0: it signs leaves only). */
export async function createCaCertificate(
  keys: KeyPair,
  opts: { name?: string; nowMs?: number; validityDays?: number } = {},
): Promise<x509.X509Certificate> {
  const now = opts.nowMs ?? Date.now();
  return await issueCertificate({
    subjectCN: opts.name ?? "securechat CA",
    publicKey: keys.publicKey,
    selfKeys: keys,
    san: [],
    isCa: true,
    pathLength: 0,
    keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
    eku: null,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + (opts.validityDays ?? CA_VALIDITY_DAYS) * DAY_MS),
  });
}

/** The user certificate template: CN and SAN carry the name; CA:FALSE; digitalSignature only; EKU clientAuth
 * + serverAuth (every user both dials and listens); short validity; random serial. Nothing from the CSR
 * except its public key is copied. Returns the DER with what the directory stores about it; the certificate
 * is the one issueCertificate would make from the same inputs, written by the template (_user_template.ts)
 * because the enrollment path cannot afford the general encoder. Throws UsernameError or RangeError for an
 * input the template refuses, TypeError for a key that is not a SubjectPublicKeyInfo. */
export async function issueUserCertificateDer(
  ca: CaMaterial,
  name: string,
  publicKey: IssuableKey,
  opts: { nowMs?: number; validityDays?: number; serial?: string } = {},
): Promise<TemplateCertificate> {
  // The template guards itself rather than trusting every caller: the CA signs only canonical usernames
  // (never a look-alike, a wildcard or a host name) and short, whole-day validities.
  canonicalUsername(name);
  const days = opts.validityDays ?? USER_CERT_VALIDITY_DAYS;
  if (!Number.isInteger(days) || days < 1 || days > MAX_USER_CERT_VALIDITY_DAYS) {
    throw new RangeError(`validityDays must be an integer 1-${MAX_USER_CERT_VALIDITY_DAYS}`);
  }
  const serial = opts.serial ?? randomSerial();
  // RFC 5280 4.1.2.2: positive, at most 20 octets as encoded (a set top bit costs a 00 octet).
  const octets = serial.length / 2 + (/^[89a-f]/.test(serial) ? 1 : 0);
  if (!/^([0-9a-f]{2})+$/.test(serial) || /^(00)+$/.test(serial) || octets > 20) {
    throw new RangeError("serial must be lowercase hex octets, not zero, at most 20 octets as encoded");
  }
  const now = opts.nowMs ?? Date.now();
  return await issueFromTemplate(
    ca,
    name,
    await spkiBytes(publicKey),
    now - BACKDATE_MS,
    clampToCa(ca, now + days * DAY_MS).getTime(),
    serial,
  );
}

/** issueUserCertificateDer, parsed (for callers that go on to read the certificate). */
export async function issueUserCertificate(
  ca: CaMaterial,
  name: string,
  publicKey: IssuableKey,
  opts: { nowMs?: number; validityDays?: number } = {},
): Promise<x509.X509Certificate> {
  return new x509.X509Certificate((await issueUserCertificateDer(ca, name, publicKey, opts)).der);
}

/** The directory's own TLS certificate, for the given DNS names and IP addresses. */
/** The common name of a standalone relay's certificate: a server certificate that is not the directory's
 * (clients refuse it as the phonebook). */
export const RELAY_CN = "securechat-relay";

export async function issueServerCertificate(
  ca: CaMaterial,
  hostnames: string[],
  keys: KeyPair,
  nowMs = Date.now(),
  /** The subject's common name (default the first host name); a relay's says it is one (RELAY_CN). */
  subjectCN?: string,
): Promise<x509.X509Certificate> {
  const san: SanEntry[] = hostnames.map((h) => ({ type: isIP(h) ? "ip" : "dns", value: h }));
  return await issueCertificate({
    subjectCN: subjectCN ?? hostnames[0] ?? "localhost",
    issuer: { cert: ca.cert, keys: ca.keys },
    publicKey: keys.publicKey,
    san,
    isCa: false,
    keyUsage: x509.KeyUsageFlags.digitalSignature,
    eku: [x509.ExtendedKeyUsage.serverAuth],
    notBefore: new Date(nowMs - BACKDATE_MS),
    notAfter: clampToCa(ca, nowMs + SERVER_CERT_VALIDITY_DAYS * DAY_MS),
  });
}

export interface RevokedEntry {
  serial: string;
  revokedAtMs: number;
}

export const OID_CRL_NUMBER = "2.5.29.20";

/** DER INTEGER of a non-negative integer (minimal octets, a leading 00 when the top bit is set). */
function derUnsignedInteger(n: bigint): Uint8Array<ArrayBuffer> {
  if (n < 0n) throw new RangeError("CRL number must not be negative");
  const bytes: number[] = [];
  for (let v = n; v > 0n; v >>= 8n) bytes.unshift(Number(v & 0xffn));
  if (bytes.length === 0 || bytes[0] & 0x80) bytes.unshift(0);
  // RFC 5280 5.2.3: at most 20 octets.
  if (bytes.length > 20) throw new RangeError("CRL number exceeds 20 octets");
  return new Uint8Array([0x02, bytes.length, ...bytes]);
}

/** A signed X.509 v2 CRL listing every revoked serial. It carries the CRL Number RFC 5280 5.2.3 requires of
 * a conforming CA: `opts.crlNumber` (the directory keeps a persistent counter), else `nowMs`, which grows as
 * long as the CA's clock does. */
export async function createCrl(
  ca: CaMaterial,
  entries: RevokedEntry[],
  nowMs = Date.now(),
  opts: {
    crlNumber?: number | bigint;
    /** Exact times (tests that need a list of a given age); default from nowMs. null: no nextUpdate. */
    thisUpdateMs?: number;
    nextUpdateMs?: number | null;
  } = {},
): Promise<x509.X509Crl> {
  const number = BigInt(opts.crlNumber ?? Math.floor(nowMs));
  const next = opts.nextUpdateMs === undefined ? nowMs + CRL_VALIDITY_MS : opts.nextUpdateMs;
  return await x509.X509CrlGenerator.create({
    issuer: ca.cert.subjectName,
    thisUpdate: new Date(opts.thisUpdateMs ?? nowMs - BACKDATE_MS),
    ...(next === null ? {} : { nextUpdate: new Date(next) }),
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithm(ca.keys.algorithm),
    extensions: [
      await authorityKeyIdentifier(ca.keys.publicKey),
      new x509.Extension(OID_CRL_NUMBER, false, derUnsignedInteger(number)),
    ],
    entries: entries.map((e) => ({
      serialNumber: e.serial,
      revocationDate: new Date(e.revokedAtMs),
    })),
  });
}

/** Normalised serial of a parsed certificate (see normalizeSerial). */
export function serialOf(cert: x509.X509Certificate): string {
  return normalizeSerial(cert.serialNumber);
}

export type { KeyAlgorithm };
