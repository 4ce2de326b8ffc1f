/**
 * Internal to pki/ (ca.ts is the front): the user certificate template as DER, for the enrollment hot path.
 *
 * Building a certificate through @peculiar/x509 costs about four times its ECDSA signature, nearly all of it
 * general ASN.1 encoding of parts that are the same in every certificate a CA issues. Here everything
 * constant per CA (version, signature algorithm, issuer Name, basicConstraints, keyUsage, extKeyUsage and
 * authorityKeyIdentifier) is encoded once, by the library, and each certificate only writes its serial,
 * validity, subject, SAN, subject key identifier and key around them and signs. The output is byte for byte
 * what issueCertificate (the library path) makes from the same inputs; tests/pki_user_template_test.ts holds
 * the two to that.
 */
import { KeyObject, sign } from "node:crypto";
import { x509 } from "./x509.ts";
import type { KeyAlgorithm, KeyPair } from "./keys.ts";
import { keyIdentifierBytes } from "./_key_id.ts";
import { normalizeSerial, toHex } from "./encoding.ts";
import {
  DerError,
  OID_DER,
  readChildren,
  readElement,
  SIGNATURE_ALGORITHM_DER,
  TAG,
  time,
  tlv,
  unsignedInteger,
} from "./_der.ts";

/** A certificate the template made, with what the directory stores about it. */
export interface TemplateCertificate {
  der: Uint8Array<ArrayBuffer>;
  /** Normalised serial (see normalizeSerial). */
  serial: string;
  /** The validity as encoded (whole seconds). */
  notBeforeMs: number;
  notAfterMs: number;
}

/** X.509 v3: [0] EXPLICIT INTEGER 2. */
const VERSION_V3 = new Uint8Array([0xa0, 0x03, 0x02, 0x01, 0x02]);
/** The library writes a name value as PrintableString when every character allows it (this is its test),
 * otherwise UTF8String; a username with `_` is the latter. */
const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;
const ASCII = new TextEncoder();

/** The parts of a CA's user certificates that never change, encoded. */
interface CaParts {
  algorithm: KeyAlgorithm;
  signingKey: KeyObject;
  signatureAlgorithm: Uint8Array;
  issuerName: Uint8Array;
  /** basicConstraints, keyUsage, extKeyUsage: the extensions before the SAN, in the library's order. */
  leadingExtensions: Uint8Array;
  authorityKeyIdentifier: Uint8Array;
}

const partsCache = new WeakMap<x509.X509Certificate, Map<CryptoKey, Promise<CaParts>>>();

/** The subject Name of a certificate exactly as encoded in it (the issuer of what it signs must match it
 * octet for octet, RFC 5280 7.1). */
function subjectNameDer(certDer: Uint8Array): Uint8Array {
  const cert = readChildren(readElement(certDer, 0).value);
  const tbs = readChildren(cert[0].value);
  // version [0], serialNumber, signature, issuer, validity, subject
  const i = tbs[0].tag === TAG.CONTEXT_0 ? 5 : 4;
  if (!tbs[i] || tbs[i].tag !== TAG.SEQUENCE) throw new DerError("no subject in the CA certificate");
  return tbs[i].whole;
}

async function caParts(cert: x509.X509Certificate, keys: KeyPair): Promise<CaParts> {
  const leading = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(
      [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth],
      false,
    ),
  ].map((e) => new Uint8Array(e.rawData));
  const caSpki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const aki = new x509.AuthorityKeyIdentifierExtension(toHex(keyIdentifierBytes(caSpki)));
  let n = 0;
  for (const e of leading) n += e.length;
  const leadingExtensions = new Uint8Array(n);
  n = 0;
  for (const e of leading) {
    leadingExtensions.set(e, n);
    n += e.length;
  }
  return {
    algorithm: keys.algorithm,
    // KeyObject.from works on a non-extractable CryptoKey too; node:crypto signs as fast as WebCrypto for
    // P-256 and faster for Ed25519, and its ECDSA output is already the DER the certificate carries.
    signingKey: KeyObject.from(keys.privateKey),
    signatureAlgorithm: SIGNATURE_ALGORITHM_DER[keys.algorithm],
    issuerName: subjectNameDer(new Uint8Array(cert.rawData)),
    leadingExtensions,
    authorityKeyIdentifier: new Uint8Array(aki.rawData),
  };
}

function partsFor(cert: x509.X509Certificate, keys: KeyPair): Promise<CaParts> {
  let byKey = partsCache.get(cert);
  if (!byKey) {
    byKey = new Map();
    partsCache.set(cert, byKey);
  }
  let p = byKey.get(keys.privateKey);
  if (!p) {
    p = caParts(cert, keys);
    byKey.set(keys.privateKey, p);
    // A failure is not remembered: the next call tries again.
    p.catch(() => byKey.delete(keys.privateKey));
  }
  return p;
}

/** Throws TypeError unless `spki` is one DER SEQUENCE { AlgorithmIdentifier, BIT STRING } (the library path
 * would refuse anything else while parsing it). */
function checkSpkiShape(spki: Uint8Array): void {
  try {
    const outer = readElement(spki, 0);
    if (outer.tag !== TAG.SEQUENCE || outer.whole.length !== spki.length) {
      throw new DerError("not one SEQUENCE");
    }
    const parts = readChildren(outer.value);
    if (parts.length !== 2 || parts[0].tag !== TAG.SEQUENCE || parts[1].tag !== TAG.BIT_STRING) {
      throw new DerError("not an SPKI");
    }
  } catch (e) {
    if (e instanceof DerError) {
      throw new TypeError(`the public key is not a SubjectPublicKeyInfo: ${e.message}`);
    }
    throw e;
  }
}

/** A user certificate from `ca` for `name` (already checked canonical) and `spki`, valid over the given
 * times (already clamped), with `serialHex` or a fresh random serial. */
export async function issueFromTemplate(
  ca: { cert: x509.X509Certificate; keys: KeyPair },
  name: string,
  spki: Uint8Array,
  notBeforeMs: number,
  notAfterMs: number,
  serialHex: string,
): Promise<TemplateCertificate> {
  checkSpkiShape(spki);
  const parts = await partsFor(ca.cert, ca.keys);
  const nameBytes = ASCII.encode(name);
  const subject = tlv(
    TAG.SEQUENCE,
    tlv(
      TAG.SET,
      tlv(
        TAG.SEQUENCE,
        OID_DER.commonName,
        tlv(PRINTABLE.test(name) ? TAG.PRINTABLE_STRING : TAG.UTF8_STRING, nameBytes),
      ),
    ),
  );
  const san = tlv(
    TAG.SEQUENCE,
    OID_DER.subjectAltName,
    tlv(TAG.OCTET_STRING, tlv(TAG.SEQUENCE, tlv(TAG.CONTEXT_2_PRIMITIVE, nameBytes))),
  );
  const ski = tlv(
    TAG.SEQUENCE,
    OID_DER.subjectKeyIdentifier,
    tlv(TAG.OCTET_STRING, tlv(TAG.OCTET_STRING, keyIdentifierBytes(spki))),
  );
  const serial = Uint8Array.from(serialHex.match(/../g)!.map((h) => parseInt(h, 16)));
  const tbs = tlv(
    TAG.SEQUENCE,
    VERSION_V3,
    unsignedInteger(serial),
    parts.signatureAlgorithm,
    parts.issuerName,
    tlv(TAG.SEQUENCE, time(notBeforeMs), time(notAfterMs)),
    subject,
    spki,
    tlv(
      TAG.CONTEXT_3,
      tlv(TAG.SEQUENCE, parts.leadingExtensions, san, ski, parts.authorityKeyIdentifier),
    ),
  );
  const signature = sign(parts.algorithm === "p256" ? "sha256" : null, tbs, parts.signingKey);
  const der = tlv(
    TAG.SEQUENCE,
    tbs,
    parts.signatureAlgorithm,
    tlv(TAG.BIT_STRING, new Uint8Array([0]), new Uint8Array(signature)),
  );
  return {
    der,
    serial: normalizeSerial(serialHex),
    notBeforeMs: Math.floor(notBeforeMs / 1000) * 1000,
    notAfterMs: Math.floor(notAfterMs / 1000) * 1000,
  };
}
