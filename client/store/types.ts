/**
 * The types chat.db's store takes and gives (its own module, so that the store and its writer share them
 * without importing each other).
 */
import type { ChatMessage, TtlMode } from "../engine_types.ts";
import type { TimeProof } from "../../clock/types.ts";

/** A message as stored: what the front ends see (ChatMessage), plus what only the engine needs. */
export interface StoredMessage extends Omit<ChatMessage, "unreadExpiresAt"> {
  readAt: number | null;
  proof: TimeProof | null;
  /** Insertion order (stable history order). */
  seq: number;
}

export interface StoredContact {
  name: string;
  /** The pinned key fingerprint (SHA-256 of the SPKI), or for a pin made before keys were pinned
   * (pinKind "certificate") the SHA-256 of the certificate that was seen then. */
  pinnedFingerprint: string | null;
  /** What pinnedFingerprint hashes: "key" (every pin made now), "certificate" (a pin stored by an older
   * version, converted to a key pin when that certificate is seen again), null with no pin. */
  pinKind: PinKind | null;
  /** A key fingerprint seen that differs from the pin, waiting for the user's acceptance. */
  pendingFingerprint: string | null;
  /** The last certificate the peer proved in a session (DER), kept so the pinned key can always be read
   * back from it; null for contacts not met since this was stored. */
  certificateDer: Uint8Array | null;
  verified: boolean;
  defaultTtlMs: number | null;
}

export type PinKind = "key" | "certificate";

export interface ExpiringRow {
  peer: string;
  id: string;
  /** The recorded send time (the receiver's is proof-bounded): an unread "after read" message dies at
   * sentAt + MAX_UNREAD_MS (client/expiry.ts, effectiveDeadline). */
  sentAt: number;
  expiresAt: number | null;
  ttlMs: number;
  ttlMode: TtlMode;
}

/** A received message as the store takes it (state "delivered" on our side). */
export type IncomingMessage = Omit<StoredMessage, "seq" | "direction" | "readAt" | "state">;
/** One of our messages as the store takes it. */
export type OutgoingMessage = Omit<StoredMessage, "seq" | "direction" | "readAt">;

export interface IncomingItem {
  message: IncomingMessage;
  /** Already dead on arrival: remember the id (so a resend is refused) but store no text. */
  idOnly?: boolean;
}

export type IncomingResult = "stored" | "duplicate";

/** A delivery state change of one of our messages. Each applies only from the states that lead to it, so
 * changes that arrive late or twice never move a message backwards: "sent" from sending/failed (written to a
 * connection; the outbox stores it only for a message still waiting for its ack a moment later), "delivered"
 * from anything but delivered/read (its ack), "failed" from sending/sent (the connection it was written to
 * closed before the ack; the outbox asks it only for a message it wrote). */
export interface StateChange {
  peer: string;
  id: string;
  state: "sent" | "delivered" | "failed";
}

/** A read receipt for one of our messages: records readAt (first only), moves an "after read" deadline
 * earlier (never later) and sets the state "read". */
export interface ReadReceipt {
  peer: string;
  id: string;
  readAt: number;
  expiresAt: number | null;
}
