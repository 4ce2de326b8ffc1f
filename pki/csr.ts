/**
 * Certificate signing requests: made by `enroll`, checked by the CA. The check proves possession of the key
 * (the CSR's signature) and that the CSR names the user it is for; everything else the CSR asks for (CA:TRUE,
 * extra names, key usages) is ignored because the CA issues from its own template.
 */
import { x509 } from "./x509.ts";
import { CsrError } from "./errors.ts";
import { type KeyAlgorithm, type KeyPair, signingAlgorithm } from "./keys.ts";
import { pemBlocks } from "./encoding.ts";

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
  let csr: x509.Pkcs10CertificateRequest;
  let algorithm: KeyAlgorithm;
  try {
    csr = new x509.Pkcs10CertificateRequest(blocks[0]);
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
