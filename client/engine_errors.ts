/** Errors the chat engine and its parts give front ends (client/engine_types.ts says what each call throws). */
import { CodedError } from "../coded_error.ts";

export type EngineErrorCode =
  | "BAD_NAME"
  | "BAD_TEXT"
  | "BAD_TTL"
  | "TIME_UNVERIFIED"
  | "TIME_PROOF_FAILED"
  | "NOT_FOUND"
  | "NO_PENDING_KEY"
  | "SELF"
  | "NO_RELAY"
  | "CONNECT_FAILED"
  | "CLOSED"
  | "STORE_FAILED"
  | "BLOCKED"
  | "RENEW_UNSUPPORTED"
  | "BAD_CERTIFICATE";

export class EngineError extends CodedError<EngineErrorCode> {}
