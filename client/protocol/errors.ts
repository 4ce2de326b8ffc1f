/** Typed errors of the frame protocol. The `code` is sent to the peer in an `error` frame and is stable. */
import { CodedError } from "../../coded_error.ts";
export type ProtocolErrorCode =
  | "FRAME_TOO_LARGE"
  | "EMPTY_FRAME"
  | "TRUNCATED"
  | "BAD_UTF8"
  | "BAD_JSON"
  | "FORBIDDEN_KEY"
  | "UNKNOWN_TYPE"
  | "BAD_FIELD"
  | "VERSION"
  | "BAD_HELLO"
  | "BAD_HELLO_SIGNATURE"
  | "SENDER_MISMATCH"
  | "BAD_TTL"
  | "BAD_TIME_PROOF"
  | "UNEXPECTED_FRAME"
  | "IDLE_TIMEOUT"
  | "HELLO_TIMEOUT"
  | "TOO_MANY_CONNECTIONS"
  | "DUPLICATE_SESSION"
  | "CERTIFICATE"
  | "KEY_CHANGED"
  | "STORE_FAILED"
  | "RATE_LIMITED"
  | "BLOCKED"
  | "QUOTA_EXCEEDED"
  | "REQUESTS_FULL";

export class ProtocolError extends CodedError<ProtocolErrorCode> {}
