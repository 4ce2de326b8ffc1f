/**
 * The PKI surface other folders use: fingerprints, usernames, key pairs, CSRs, the CA template, CRLs and the
 * peer-certificate check. Import from here only.
 */
export { x509 } from "./x509.ts";
export {
  CertificateError,
  type CertificateErrorCode,
  CsrError,
  type CsrErrorCode,
  PkiError,
  type PkiErrorCode,
  UsernameError,
} from "./errors.ts";
export {
  canonicalUsername,
  isCanonicalUsername,
  USERNAME_MAX_LENGTH,
  USERNAME_MIN_LENGTH,
} from "./username.ts";
export {
  derToPem,
  fingerprintOf,
  fromBase64,
  keyFingerprintOf,
  normalizeFingerprint,
  normalizeSerial,
  pemBlocks,
  pemToDer,
  randomSerial,
  toBase64,
  toHex,
} from "./encoding.ts";
export {
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  type KeyAlgorithm,
  type KeyPair,
  restrictDirectory,
  signingAlgorithm,
  spkiOf,
  writeSecretFile,
} from "./keys.ts";
export {
  BACKDATE_MS,
  type CaMaterial,
  type CertificateSpec,
  createCaCertificate,
  createCrl,
  CRL_VALIDITY_MS,
  type IssuableKey,
  issueCertificate,
  issueServerCertificate,
  issueUserCertificate,
  issueUserCertificateDer,
  MAX_USER_CERT_VALIDITY_DAYS,
  RELAY_CN,
  type RevokedEntry,
  type SanEntry,
  serialOf,
  USER_CERT_VALIDITY_DAYS,
} from "./ca.ts";
export { checkCsr, type CheckedCsr, createCsr, MAX_CSR_PEM_LENGTH } from "./csr.ts";
export { type VerifiedPeer, verifyPeerCertificate, type VerifyPeerOptions } from "./verify.ts";
export { parseCrl, type ParsedCrl, verifyCrl } from "./crl.ts";
export { checkCaCertificate, isIssuableKey } from "./profile.ts";
