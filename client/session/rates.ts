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

/** One token bucket per rated frame type, starting full. */
export class FrameRateLimiter {
  readonly #tokens = new Map<RatedFrameType, { tokens: number; atMs: number }>();

  constructor(private readonly rates: Record<RatedFrameType, FrameRate> = FRAME_RATES) {}

  /** Takes one token for a frame of type `t` at `nowMs`; false when the bucket is empty. */
  take(t: RatedFrameType, nowMs: number): boolean {
    const rate = this.rates[t];
    const b = this.#tokens.get(t) ?? { tokens: rate.burst, atMs: nowMs };
    const refilled = Math.min(rate.burst, b.tokens + Math.max(0, nowMs - b.atMs) * rate.perSecond / 1000);
    if (refilled < 1) {
      this.#tokens.set(t, { tokens: refilled, atMs: nowMs });
      return false;
    }
    this.#tokens.set(t, { tokens: refilled - 1, atMs: nowMs });
    return true;
  }
}
