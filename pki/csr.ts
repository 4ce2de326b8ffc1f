/**
 * Certificate signing requests: made by `enroll`, checked by the CA. The check proves possession of the key
 * (the CSR's signature) and that the CSR names the user it is for; everything else the CSR asks for (CA:TRUE,
 * extra names, key usages) is ignored because the CA issues from its own template.
 */
import { x509 } from "./x509.ts";
import { CsrError } from "./errors.ts";
import { type KeyAlgorithm, type KeyPair, signingAlgorithm } from "./keys.ts";
import { pemBlocks } from "./encoding.ts";
import type { Buffer } from "node:buffer";
import { createPublicKey, verify as nodeVerify } from "node:crypto";
import { issuableKeyAlgorithm } from "./profile.ts";
import {
  bytesEqual,
  checkWellFormed,
  DerError,
  OID_DER,
  readChildren,
  readElement,
  SIGNATURE_ALGORITHM_DER,
  TAG,
} from "./_der.ts";

/** A CSR in PEM is a few hundred bytes; anything much larger is not one of ours. */
export const MAX_CSR_PEM_LENGTH = 8192;

export async function createCsr(name: string, keys: KeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [name] }],
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: signingAlgorithm(keys.algorithm),
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "dns", value: name }])],
  });
  return csr.toString("pem");
}

export interface CheckedCsr {
  /** The subject's public key, ready for the CA to certify. */
  publicKey: CryptoKey;
  algorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo DER: the key's identity for "a name belongs to its first key". */
  spki: Uint8Array;
}

/** Parses and checks a PEM CSR for `expectedName`. Throws CsrError with code MALFORMED_CSR,
 * BAD_CSR_SIGNATURE, CSR_NAME_MISMATCH or UNSUPPORTED_KEY. */
export async function checkCsr(pem: unknown, expectedName: string): Promise<CheckedCsr> {
  if (typeof pem !== "string" || pem.length === 0) {
    throw new CsrError("MALFORMED_CSR", "csr must be a PEM string");
  }
  if (pem.length > MAX_CSR_PEM_LENGTH) throw new CsrError("MALFORMED_CSR", "csr is too large");
  let blocks: Uint8Array<ArrayBuffer>[];
  try {
    blocks = pemBlocks(pem, "CERTIFICATE REQUEST");
  } catch {
    throw new CsrError("MALFORMED_CSR", "csr is not valid PEM");
  }
  if (blocks.length !== 1) {
    throw new CsrError("MALFORMED_CSR", "csr must be exactly one PEM block 'CERTIFICATE REQUEST'");
  }
  const fast = await checkCommonCsr(blocks[0], expectedName);
  if (fast) return fast;
  return await checkCsrWithLibrary(blocks[0], expectedName);
}

/** The CN values a CSR's subject may carry on the fast path: the string types the CSR makers we know use
 * (another type sends the CSR down the library path). */
const CN_STRING_TAGS = new Set<number>([TAG.PRINTABLE_STRING, TAG.UTF8_STRING, TAG.IA5_STRING]);
const UTF8 = new TextDecoder();
const IMPORT_PARAMS: Record<KeyAlgorithm, EcKeyImportParams | Algorithm> = {
  p256: { name: "ECDSA", namedCurve: "P-256" } as EcKeyImportParams,
  ed25519: { name: "Ed25519" },
};

/** The enrollment hot path: a strict-DER reading of the CSR shape our clients (and openssl) make, checked
 * with node:crypto over the CertificationRequestInfo octets as they arrived. The general parser of
 * @peculiar/x509 costs half a signature check per CSR. Returns null, never an error, for anything that is not
 * a plainly good CSR for `expectedName` (odd encodings, other algorithms, a bad signature, the wrong name):
 * the library path then gives the verdict and its error. So the fast path refuses nothing itself, and accepts
 * only what the library path accepts too (tests/pki_csr_fast_test.ts). */
export async function checkCommonCsr(der: Uint8Array, expectedName: string): Promise<CheckedCsr | null> {
  let cri: Uint8Array;
  let spki: Uint8Array;
  let signature: Uint8Array;
  let algorithm: KeyAlgorithm;
  const cns: Uint8Array[] = [];
  try {
    const outer = readElement(der, 0);
    if (outer.tag !== TAG.SEQUENCE || outer.whole.length !== der.length) return null;
    // A general BER parser reads every constructed element before anything else: so must we.
    checkWellFormed(outer);
    const top = readChildren(outer.value);
    if (top.length !== 3 || top[0].tag !== TAG.SEQUENCE || top[2].tag !== TAG.BIT_STRING) return null;
    const info = readChildren(top[0].value);
    // CertificationRequestInfo ::= SEQUENCE { version INTEGER (0), subject Name, subjectPKInfo, [0] attributes }
    if (info.length !== 4 || !bytesEqual(info[0].whole, VERSION_0)) return null;
    if (info[1].tag !== TAG.SEQUENCE || info[2].tag !== TAG.SEQUENCE || info[3].tag !== TAG.CONTEXT_0) {
      return null;
    }
    for (const rdn of readChildren(info[1].value)) {
      if (rdn.tag !== TAG.SET) return null;
      for (const atv of readChildren(rdn.value)) {
        const pair = atv.tag === TAG.SEQUENCE ? readChildren(atv.value) : [];
        if (pair.length !== 2 || pair[0].tag !== TAG.OID) return null;
        if (!bytesEqual(pair[0].whole, OID_DER.commonName)) continue;
        if (!CN_STRING_TAGS.has(pair[1].tag)) return null;
        cns.push(pair[1].value);
      }
    }
    spki = info[2].whole;
    const kind = issuableKeyAlgorithm(spki);
    if (kind === null) return null;
    algorithm = kind;
    if (!bytesEqual(top[1].whole, SIGNATURE_ALGORITHM_DER[algorithm])) return null;
    if (top[2].value.length < 1 || top[2].value[0] !== 0) return null;
    cri = top[0].whole;
    signature = top[2].value.subarray(1);
  } catch (e) {
    if (e instanceof DerError) return null;
    throw e;
  }
  if (cns.length !== 1 || UTF8.decode(cns[0]) !== expectedName) return null;
  let ok = false;
  try {
    const key = createPublicKey({ key: spki as Buffer, format: "der", type: "spki" });
    ok = nodeVerify(algorithm === "p256" ? "sha256" : null, cri, key, signature);
  } catch {
    ok = false;
  }
  if (!ok) return null;
  let publicKey: CryptoKey;
  try {
    publicKey = await crypto.subtle.importKey("spki", new Uint8Array(spki), IMPORT_PARAMS[algorithm], true, [
      "verify",
    ]);
  } catch {
    return null;
  }
  return { publicKey, algorithm, spki: new Uint8Array(spki) };
}

const VERSION_0 = new Uint8Array([TAG.INTEGER, 0x01, 0x00]);

/** The general path: @peculiar/x509 parses and checks the CSR (also the reference the fast path is tested
 * against). */
export async function checkCsrWithLibrary(
  der: Uint8Array<ArrayBuffer>,
  expectedName: string,
): Promise<CheckedCsr> {
  let csr: x509.Pkcs10CertificateRequest;
  let algorithm: KeyAlgorithm;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
    const alg = csr.publicKey.algorithm as EcKeyAlgorithm;
    if (alg.name === "ECDSA" && alg.namedCurve === "P-256") algorithm = "p256";
    else if (alg.name === "Ed25519") algorithm = "ed25519";
    else throw new CsrError("UNSUPPORTED_KEY", "only P-256 and Ed25519 keys are accepted");
  } catch (e) {
    if (e instanceof CsrError) throw e;
    throw new CsrError("MALFORMED_CSR", "csr cannot be parsed as PKCS#10");
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) {
    throw new CsrError("BAD_CSR_SIGNATURE", "csr signature does not verify (no proof of key possession)");
  }
  const cns = csr.subjectName.getField("CN");
  if (cns.length !== 1 || cns[0] !== expectedName) {
    throw new CsrError("CSR_NAME_MISMATCH", "csr subject CN must be exactly the requested username");
  }
  let publicKey: CryptoKey;
  try {
    publicKey = await csr.publicKey.export();
  } catch {
    throw new CsrError("UNSUPPORTED_KEY", "csr public key cannot be imported");
  }
  return { publicKey, algorithm, spki: new Uint8Array(csr.publicKey.rawData) };
}
