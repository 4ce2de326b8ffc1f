/**
 * Per-peer inbox limits, checked by the inbox (inbox.ts) before a message is handed to the store: bytes of
 * message bodies stored unread from that peer (PEER_UNREAD_BYTES) and a message rate per peer name, across
 * its sessions (a token bucket of PEER_MESSAGE_BURST refilled at PEER_MESSAGES_PER_MINUTE). A refusal throws
 * ProtocolError QUOTA_EXCEEDED or RATE_LIMITED; the session then ends and the sender keeps every message not
 * acknowledged (receipts only follow commits), so nothing acknowledged is lost.
 *
 * The unread bytes are read from the store once per peer and then kept up to date in memory: a message in
 * flight is reserved at admission (so a flood's messages still committing count too), moved to the stored
 * count when committed, released when it turned out a duplicate or its commit failed. Reading or deleting
 * messages drops the cached count (`invalidate`), which is read again at the next message.
 */
import { PEER_MESSAGE_BURST, PEER_MESSAGES_PER_MINUTE, PEER_UNREAD_BYTES } from "./protocol/constants.ts";
import { ProtocolError } from "./protocol/errors.ts";

export interface PeerQuotaLimits {
  unreadBytes: number;
  burst: number;
  perMinute: number;
}

export const DEFAULT_QUOTA_LIMITS: PeerQuotaLimits = {
  unreadBytes: PEER_UNREAD_BYTES,
  burst: PEER_MESSAGE_BURST,
  perMinute: PEER_MESSAGES_PER_MINUTE,
};

/** What the quota reads from the store (ChatStore satisfies it). */
export interface QuotaStore {
  /** Bytes of the bodies of messages from `peer` stored and not read yet. */
  unreadBytes(peer: string): number;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

export class PeerQuota {
  readonly limits: PeerQuotaLimits;
  readonly #store: QuotaStore;
  readonly #stored = new Map<string, number>();
  readonly #reserved = new Map<string, number>();
  readonly #buckets = new Map<string, Bucket>();
  /** Refusals so far (diagnostics and tests). */
  refused = 0;

  constructor(store: QuotaStore, limits: Partial<PeerQuotaLimits> = {}) {
    this.limits = { ...DEFAULT_QUOTA_LIMITS, ...limits };
    for (const [k, v] of Object.entries(this.limits)) {
      if (!(v > 0)) throw new RangeError(`quota limit ${k} must be positive`);
    }
    this.#store = store;
  }

  /** Unread bytes from `peer`, stored and in flight. */
  used(peer: string): number {
    const reserved = this.#reserved.get(peer) ?? 0;
    let s = this.#stored.get(peer);
    if (s === undefined) {
      s = this.#store.unreadBytes(peer);
      // Only a reading taken with nothing in flight is kept: one taken while messages are committing may
      // already include some of them, and their settle() would then count them twice, for good (the quota
      // would stay full after everything was read).
      if (reserved === 0) this.#stored.set(peer, s);
    }
    return s + reserved;
  }

  /** Admits one message of `bytes` from `peer` (reserving them) or throws ProtocolError. */
  admit(peer: string, bytes: number, nowMs = performance.now()): void {
    const l = this.limits;
    const b = this.#buckets.get(peer) ?? { tokens: l.burst, atMs: nowMs };
    b.tokens = Math.min(l.burst, b.tokens + ((nowMs - b.atMs) * l.perMinute) / 60_000);
    b.atMs = nowMs;
    this.#buckets.set(peer, b);
    if (b.tokens < 1) {
      this.refused++;
      throw new ProtocolError(
        "RATE_LIMITED",
        `more than ${l.burst} messages at once or ${l.perMinute} a minute: try again later`,
      );
    }
    if (this.used(peer) + bytes > l.unreadBytes) {
      this.refused++;
      throw new ProtocolError(
        "QUOTA_EXCEEDED",
        `${l.unreadBytes} bytes of your messages wait unread here: try again later`,
      );
    }
    b.tokens -= 1;
    this.#reserved.set(peer, (this.#reserved.get(peer) ?? 0) + bytes);
  }

  /** The admitted message is settled: stored (its bytes now count as stored) or not (released). */
  settle(peer: string, bytes: number, stored: boolean): void {
    const r = (this.#reserved.get(peer) ?? 0) - bytes;
    if (r > 0) this.#reserved.set(peer, r);
    else this.#reserved.delete(peer);
    if (!stored) return;
    const s = this.#stored.get(peer);
    if (s !== undefined) this.#stored.set(peer, s + bytes);
  }

  /** Messages of `peer` were read or deleted: the stored count is read again at its next message. */
  invalidate(peer: string): void {
    this.#stored.delete(peer);
  }
}
