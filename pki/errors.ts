/** Typed errors of the PKI layer. Each carries a stable `code` that callers and tests compare. */
import { CodedError } from "../coded_error.ts";

/** A username that is not in the one canonical form (see username.ts). */
export class UsernameError extends CodedError<"BAD_USERNAME"> {
  constructor(message: string, readonly reason: "TYPE" | "LENGTH" | "CHARACTERS" | "FIRST_CHARACTER") {
    super("BAD_USERNAME", message);
  }
}

export type CertificateErrorCode =
  | "MALFORMED"
  | "NOT_FROM_CA"
  | "EXPIRED"
  | "NOT_YET_VALID"
  | "REVOKED"
  | "WRONG_NAME"
  | "IS_CA"
  | "BAD_KEY_USAGE"
  | "BAD_EKU"
  /** A leaf key the CA never issues for (only P-256 and Ed25519). */
  | "BAD_KEY"
  /** The trusted CA certificate itself is unfit (see profile.ts checkCaCertificate) or not valid now. */
  | "BAD_CA";

/** A peer's certificate failed the application-level check (verify.ts). */
export class CertificateError extends CodedError<CertificateErrorCode> {}

export type CsrErrorCode =
  | "MALFORMED_CSR"
  | "BAD_CSR_SIGNATURE"
  | "CSR_NAME_MISMATCH"
  | "UNSUPPORTED_KEY";

/** A certificate signing request the CA refuses. */
export class CsrError extends CodedError<CsrErrorCode> {}

export type PkiErrorCode = "BAD_FINGERPRINT" | "BAD_PEM" | "BAD_KEY" | "BAD_PASSPHRASE" | "BAD_CRL";

/** Other PKI input errors: fingerprints, PEM blocks, key files, CRLs. */
export class PkiError extends CodedError<PkiErrorCode> {}
