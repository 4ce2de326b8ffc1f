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
  | "REQUESTS_FULL"
  | "REFUSED";

export class ProtocolError extends CodedError<ProtocolErrorCode> {}

/** The one refusal a peer gets when the user blocked it, or declined (or let expire) its message request and
 * it asks again too soon: the same code and words for all of them, so the peer cannot tell which (the local
 * side still logs the reason, e.g. BLOCKED). */
export const REFUSED_MESSAGE = "not accepted";
