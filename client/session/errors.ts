/** Why a peer session was refused or ended. `code` is stable (tests and the headless interface use it). */
export type SessionErrorCode =
  | "NO_CERTIFICATE"
  | "CERTIFICATE"
  | "KEY_CHANGED"
  | "TLS"
  | "CONNECT_FAILED"
  | "PEER_OFFLINE"
  | "HANDSHAKE"
  | "CLOSED"
  | "TOO_MANY_CONNECTIONS"
  | "TIMEOUT";

export class SessionError extends Error {
  constructor(readonly code: SessionErrorCode, message: string, readonly detail?: string) {
    super(message);
    this.name = "SessionError";
  }
}
