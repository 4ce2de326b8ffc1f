/** Token buckets per source address. Pure: the caller passes the time. */
import { isIP } from "node:net";
import { RATE_BUCKET_IDLE_MS, RATE_MAX_BUCKETS } from "./limits.ts";

export interface Bucket {
  tokens: number;
  lastMs: number;
}

/** One token-bucket step: refills `b` (null = a new, full bucket) for the time since it was last touched,
 * then takes `cost` if it is there. Returns the bucket afterwards and 0, or the seconds to wait. The stores
 * run the same step on their shared buckets. */
export function takeFromBucket(
  b: Bucket | null,
  costIn: number,
  nowMs: number,
  spec: { perSecond: number; burst: number },
): { bucket: Bucket; wait: number } {
  // A cost above the burst could never be paid: it empties a full bucket instead.
  const cost = Math.min(costIn, spec.burst);
  // A clock that went back refills nothing (and never drains).
  const tokens = b === null
    ? spec.burst
    : Math.min(spec.burst, b.tokens + (Math.max(0, nowMs - b.lastMs) / 1000) * spec.perSecond);
  if (tokens >= cost) return { bucket: { tokens: tokens - cost, lastMs: nowMs }, wait: 0 };
  return {
    bucket: { tokens, lastMs: nowMs },
    wait: Math.max(1, Math.ceil((cost - tokens) / spec.perSecond)),
  };
}

export class RateLimiter {
  #buckets = new Map<string, Bucket>();
  constructor(readonly perSecond: number, readonly burst: number) {}

  /** Takes `cost` tokens for `key`; returns 0 when allowed, else the seconds to wait before retrying. */
  take(key: string, cost: number, nowMs: number): number {
    const b = this.#buckets.get(key) ?? null;
    if (!b && this.#buckets.size >= RATE_MAX_BUCKETS) this.#sweep(nowMs);
    const r = takeFromBucket(b, cost, nowMs, this);
    this.#buckets.set(key, r.bucket);
    return r.wait;
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

/** The 8 groups of an IPv6 address (no zone), or null when `addr` is not one. */
function ipv6Groups(addr: string): number[] | null {
  const s = addr.split("%")[0].toLowerCase();
  if (isIP(s) !== 6) return null;
  let text = s;
  // A trailing dotted IPv4 part is two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    text = text.slice(0, v4.index) + ((a << 8) | b).toString(16) + ":" + ((c << 8) | d).toString(16);
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, null];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = tail === null ? [] : new Array(8 - h.length - t.length).fill("0");
  const groups = [...h, ...fill, ...t].map((g) => parseInt(g, 16));
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : null;
}

/** The rate limiter's notion of one source: an IPv4 address; an IPv6 /64 (one host or LAN usually holds a
 * whole /64 and could send each request from a fresh address); an IPv4-mapped IPv6 address as its IPv4
 * address (dual-stack sockets report IPv4 clients that way). Anything else is used as it is. */
export function rateLimitKey(remoteAddress: string): string {
  const g = ipv6Groups(remoteAddress);
  if (!g) return remoteAddress;
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
    return [g[6] >> 8, g[6] & 0xff, g[7] >> 8, g[7] & 0xff].join(".");
  }
  return g.slice(0, 4).map((x) => x.toString(16)).join(":") + "::/64";
}
