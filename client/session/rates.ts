/**
 * Per-session rates of the frames a peer can send for free (they cost us work or output but store nothing
 * the sender pays for): token buckets, one per frame type. Pure: the caller passes the monotonic time.
 *
 * A peer past a bucket is cut off with `error RATE_LIMITED`: an honest client never comes close (it pings
 * once per KEEPALIVE_INTERVAL_MS when idle, the TUI sends typing at most every few seconds, and receipts
 * follow what we sent or what its user read), while a flood of pings would otherwise make us queue one pong
 * per ping for a peer that never reads them.
 */

export interface FrameRate {
  /** Frames accepted at once from a full bucket. */
  burst: number;
  /** Frames per second the bucket refills. */
  perSecond: number;
}

/** The rated frame types and their limits (docs/protocol.md, "Session limits"). Messages have their own
 * per-peer quota elsewhere; hello/error/bye end or start the session and need none. */
export const FRAME_RATES = {
  ping: { burst: 16, perSecond: 1 },
  pong: { burst: 16, perSecond: 1 },
  typing: { burst: 64, perSecond: 10 },
  /** A client back online sends a receipt per message its user read meanwhile. */
  read: { burst: 2048, perSecond: 200 },
  ack: { burst: 2048, perSecond: 200 },
} as const satisfies Record<string, FrameRate>;

export type RatedFrameType = keyof typeof FRAME_RATES;

export function isRated(t: string): t is RatedFrameType {
  return Object.hasOwn(FRAME_RATES, t);
}

/** Most receipts a session can be owed at once (far above any outbox flush). */
const MAX_OWED = 1 << 20;

/** One token bucket per rated frame type, starting full, plus receipts the peer is owed for messages we
 * sent it: a receipt that answers one of our messages is never limited (a burst of 10,000 messages earns
 * 10,000 acks), only unsolicited ones draw on the bucket. */
export class FrameRateLimiter {
  readonly #tokens = new Map<RatedFrameType, { tokens: number; atMs: number }>();
  readonly #owed = new Map<RatedFrameType, number>();
  readonly #rates: Record<RatedFrameType, FrameRate>;

  constructor(rates: Record<RatedFrameType, FrameRate> = FRAME_RATES) {
    this.#rates = rates;
  }

  /** We sent `n` frames that each entitle the peer to one frame of type `t` (a message: one ack, one read). */
  grant(t: RatedFrameType, n: number): void {
    this.#owed.set(t, Math.min(MAX_OWED, (this.#owed.get(t) ?? 0) + n));
  }

  /** Takes `n` tokens (default one: a frame; an `acks` frame takes one per receipt) of type `t` at `nowMs`:
   * what the peer is owed first, then the bucket for the rest; false (nothing taken) when they do not add
   * up to `n`. */
  take(t: RatedFrameType, nowMs: number, n = 1): boolean {
    const owed = this.#owed.get(t) ?? 0;
    if (owed >= n) {
      this.#owed.set(t, owed - n);
      return true;
    }
    const rest = n - owed;
    const rate = this.#rates[t];
    const b = this.#tokens.get(t) ?? { tokens: rate.burst, atMs: nowMs };
    const refilled = Math.min(rate.burst, b.tokens + Math.max(0, nowMs - b.atMs) * rate.perSecond / 1000);
    if (refilled < rest) {
      this.#tokens.set(t, { tokens: refilled, atMs: nowMs });
      return false;
    }
    this.#owed.set(t, 0);
    this.#tokens.set(t, { tokens: refilled - rest, atMs: nowMs });
    return true;
  }
}
