/**
 * The contract between the chat engine (client/engine.ts) and its front ends: the headless JSON-lines
 * interface and the terminal UI (client/tui/). Events mirror the headless protocol one to one.
 */
import type { TimeStatus } from "../clock/types.ts";

export type TtlMode = "send" | "read";
export type DeliveryState = "sending" | "sent" | "delivered" | "read" | "failed";
export type PinState = "verified" | "first-use" | "pinned" | "changed";

export interface ChatMessage {
  id: string;
  /** Conversation peer (the other user), and who wrote it. */
  peer: string;
  from: string;
  direction: "in" | "out";
  text: string;
  /** Unix ms on trusted time (sender's claim for incoming, checked against its Roughtime proof). */
  sentAt: number;
  /** Unix ms on trusted time when it dies, or null for a message that does not expire, or when an
   * "after read" message has not been displayed yet. */
  expiresAt: number | null;
  ttlMs: number | null;
  ttlMode: TtlMode | null;
  /** Only for an "after read" message not displayed yet (expiresAt null): Unix ms on trusted time when it
   * dies unread (send time + MAX_UNREAD_MS, docs/protocol.md "Self-destruct"). Optional: added after the
   * first version of this contract. */
  unreadExpiresAt?: number;
  state: DeliveryState;
}

export interface Contact {
  name: string;
  online: boolean;
  unread: number;
  pin: PinState;
  /** Conversation default lifetime, ms, or null. */
  defaultTtlMs: number | null;
  /** True when the contact's certificate is revoked (never shown online). Optional: added after the first version of this contract. */
  revoked?: boolean;
  /** How the open session runs ("direct (lan ...)", "relayed via ..."); absent without one. Optional: added
   * with reachability. */
  path?: string;
  /** True when the user blocked this contact (`/block`): never shown online. Optional: added later. */
  blocked?: boolean;
  /** True while this peer is a stranger with a pending message request (accept or decline it). Optional. */
  request?: boolean;
}

export interface PeerInfo {
  name: string;
  subject: string;
  issuer: string;
  serial: string;
  notBefore: number;
  notAfter: number;
  /** Judged on trusted time; null when time is unverified. */
  validNow: boolean | null;
  /** SHA-256 of the peer's public key (SPKI): the identity compared out of band, the same across renewals. */
  fingerprint: string;
  /** The key fingerprint pinned (or, for a pin from an older version not converted yet, the SHA-256 of the
   * certificate seen then). */
  pinnedFingerprint: string | null;
  /** SHA-256 of the certificate's DER (changes at each renewal). Optional: added after the first version. */
  certificateFingerprint?: string;
  revoked: boolean;
  /** True when `revoked` was judged on a revocation list past its nextUpdate (no newer one could be fetched):
   * a recent revocation may be missing. Optional: added after the first version of this contract. */
  revocationStale?: boolean;
  pin: PinState;
  tlsVersion: string | null;
  cipher: string | null;
  connected: boolean;
  /** Added with reachability: how the session runs, e.g. "direct (lan 192.168.1.10:4000)" or "relayed via
   * 198.18.0.1:10041"; absent without a session. */
  path?: string;
  /** "local", "lan", "ipv6", "public", "mapped", "punched" (direct) or "relayed". */
  pathKind?: "local" | "lan" | "ipv6" | "public" | "mapped" | "punched" | "relayed";
  /** The peer's address (direct) or the relay's (relayed), HOST:PORT. */
  pathAddress?: string;
}

/** Our own certificate (client/renewal.ts): "renewing" from two thirds of its lifetime until a new one is in
 * use; "expired" and "revoked" need `fix`. */
export type OwnCertificateState = "valid" | "renewing" | "expired" | "revoked";

export interface OwnCertificateStatus {
  state: OwnCertificateState;
  /** Unix ms the certificate in use expires. */
  notAfter: number;
  /** Unix ms renewal starts (two thirds of the lifetime). */
  renewAt: number;
  /** It lapses soon (the last sixth of its lifetime) and is not renewed yet: warn. */
  expiringSoon: boolean;
  /** Judged on the local clock: time is not verified yet (no renewal is attempted then). */
  timeUnverified: boolean;
  /** Why the last renewal attempt failed, or null. */
  lastError: string | null;
  /** The command that fixes an expired or revoked certificate, else null. */
  fix: string | null;
}

export type EngineEvent =
  | { event: "ready"; name: string; address: string }
  | { event: "message"; message: ChatMessage }
  | { event: "sent"; id: string; to: string }
  | { event: "delivered"; id: string; to: string }
  | { event: "read"; id: string; by: string }
  | { event: "expired"; id: string; peer: string }
  | { event: "failed"; id: string; to: string; reason: string }
  | { event: "typing"; from: string }
  /** The first message of a stranger (never written to nor accepted): held as a message request. */
  | { event: "request"; from: string }
  /** A new stranger was turned away because message requests from REQUEST_MAX_STRANGERS strangers are
   * pending; said once until there is room again (decline some, or wait for them to expire). */
  | { event: "requests-full"; strangers: number }
  | { event: "peer-online"; name: string }
  | { event: "peer-offline"; name: string }
  | { event: "key-changed"; name: string; oldFingerprint: string; newFingerprint: string }
  | { event: "time"; status: TimeStatus }
  | { event: "certificate"; status: OwnCertificateStatus }
  | { event: "log"; level: "info" | "warn" | "error"; text: string }
  | { event: "error"; code: string; message: string };

export interface SendOptions {
  ttlMs?: number | null;
  ttlMode?: TtlMode;
}

/** What a front end may ask of the engine. */
export interface ChatEngineApi {
  readonly name: string;
  subscribe(listener: (e: EngineEvent) => void): () => void;
  send(to: string, text: string, opts?: SendOptions): Promise<ChatMessage>;
  contacts(): Promise<Contact[]>;
  /** Visible messages only: expiring ones are left out while time is unverified (fail closed). */
  history(peer: string): ChatMessage[];
  markRead(id: string): void;
  setDefaultTtl(peer: string, ttlMs: number | null): void;
  acceptKey(peer: string): void;
  markVerified(peer: string): void;
  peerInfo(peer: string): PeerInfo | null;
  ownFingerprint(): string;
  typing(peer: string): void;
  timeStatus(): TimeStatus;
  close(): Promise<void>;
  // Added after the first version of this contract: optional, so other implementations need not have them.
  /** Whether the phonebook answered our last address publication, and why not. */
  phonebookStatus?(): PhonebookStatus;
  /** Our own certificate's state (valid until, renewing, expired, revoked). */
  certificateStatus?(): OwnCertificateStatus;
  /** Blocks a peer (persisted); returns the canonical name. Throws EngineError BAD_NAME or SELF. */
  block?(name: string): string;
  /** Unblocks a peer; returns the canonical name. Throws EngineError BAD_NAME or NOT_FOUND. */
  unblock?(name: string): string;
  /** The blocked names, sorted. */
  blocked?(): string[];
  /** Accepts a stranger's message request (writing to them does too). Throws EngineError BAD_NAME. */
  acceptRequest?(name: string): string;
  /** Declines a message request: deletes its messages. Throws EngineError BAD_NAME or NOT_FOUND. */
  declineRequest?(name: string): string;
}

/** Whether a name can be written to (`ChatEngine.recipientStatus`): "unknown" is refused. */
export type RecipientStatus = "known" | "listed" | "revoked" | "unknown" | "unreachable";

/** What the front ends say when the phonebook cannot be reached (at start, before any event). */
export interface PhonebookStatus {
  reachable: boolean;
  /** The last error, when not reachable. */
  reason: string | null;
}
