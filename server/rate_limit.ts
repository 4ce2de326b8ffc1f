/** Token buckets per source address. Pure: the caller passes the time. */
import { RATE_BUCKET_IDLE_MS, RATE_MAX_BUCKETS } from "./limits.ts";

interface Bucket {
  tokens: number;
  lastMs: number;
}

export class RateLimiter {
  #buckets = new Map<string, Bucket>();
  constructor(readonly perSecond: number, readonly burst: number) {}

  /** Takes `cost` tokens for `key`; returns 0 when allowed, else the seconds to wait before retrying. */
  take(key: string, costIn: number, nowMs: number): number {
    // A cost above the burst could never be paid: it empties a full bucket instead.
    const cost = Math.min(costIn, this.burst);
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= RATE_MAX_BUCKETS) this.#sweep(nowMs);
      b = { tokens: this.burst, lastMs: nowMs };
      this.#buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((nowMs - b.lastMs) / 1000) * this.perSecond);
      b.lastMs = nowMs;
    }
    if (b.tokens >= cost) {
      b.tokens -= cost;
      return 0;
    }
    return Math.max(1, Math.ceil((cost - b.tokens) / this.perSecond));
  }

  get size(): number {
    return this.#buckets.size;
  }

  #sweep(nowMs: number): void {
    for (const [k, b] of this.#buckets) {
      if (nowMs - b.lastMs > RATE_BUCKET_IDLE_MS) this.#buckets.delete(k);
    }
    // Still full (an address flood): drop the oldest half rather than grow without bound.
    if (this.#buckets.size >= RATE_MAX_BUCKETS) {
      let n = Math.floor(this.#buckets.size / 2);
      for (const k of this.#buckets.keys()) {
        if (n-- <= 0) break;
        this.#buckets.delete(k);
      }
    }
  }
}
