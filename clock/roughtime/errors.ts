/** The one error type of `clock/`: every failure carries a stable `code` callers and tests compare. */
import { CodedError } from "../../coded_error.ts";

export type RoughtimeErrorCode =
  // Codec: the bytes are not a well-formed Roughtime message or packet.
  | "TRUNCATED"
  | "BAD_HEADER"
  | "BAD_OFFSETS"
  | "BAD_TAG_ORDER"
  | "MISSING_TAG"
  | "BAD_FIELD_LENGTH"
  | "BAD_VALUE"
  // Reply verification (RFC 10049 section 5.4 plus the checks in roughtime.md).
  | "RESPONSE_TOO_LARGE"
  | "BAD_TYPE"
  | "BAD_DELEGATION_SIGNATURE"
  | "BAD_SIGNATURE"
  | "MIDP_OUT_OF_RANGE"
  | "BAD_PATH"
  | "PATH_TOO_LONG"
  | "BAD_INDEX"
  | "MERKLE_MISMATCH"
  | "NONCE_MISMATCH"
  | "VERSION_NOT_OFFERED"
  | "DOWNGRADE"
  | "BAD_RADIUS"
  | "RADIUS_TOO_LARGE"
  | "UNTRUSTED_KEY"
  // Network and orchestration.
  | "TIMEOUT"
  | "ABORTED"
  | "UNREACHABLE"
  | "NO_SERVERS"
  | "BAD_SERVER_SPEC"
  | "BAD_REPORT"
  | "BAD_KEY_FILE"
  | "BAD_ARGUMENT";

export class RoughtimeError extends CodedError<RoughtimeErrorCode> {}

/** Throws a RoughtimeError: a shorthand that keeps the checks one line each. */
export function fail(code: RoughtimeErrorCode, message: string): never {
  throw new RoughtimeError(code, message);
}
