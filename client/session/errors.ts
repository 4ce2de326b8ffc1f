/** Why a peer session was refused or ended. `code` is stable (tests and the headless interface use it). */
import { CodedError } from "../../coded_error.ts";
export type SessionErrorCode =
  | "NO_CERTIFICATE"
  | "CERTIFICATE"
  | "KEY_CHANGED"
  | "TLS"
  | "CONNECT_FAILED"
  /** Connected, then closed before any TLS answer (a refused knock: docs/protocol.md "What a scanner learns"). */
  | "UNANSWERED"
  | "PEER_OFFLINE"
  | "HANDSHAKE"
  | "CLOSED"
  | "TOO_MANY_CONNECTIONS"
  | "TIMEOUT"
  | "BLOCKED";

export class SessionError extends CodedError<SessionErrorCode> {
  /** A finer cause, e.g. the CertificateError code behind CERTIFICATE (REVOKED, EXPIRED...). */
  constructor(code: SessionErrorCode, message: string, readonly detail?: string) {
    super(code, message);
  }
}
