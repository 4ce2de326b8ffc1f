/**
 * The rules of self-destructing messages, as pure functions of trusted time (no clock is read here).
 * "Trusted time" is an interval [earliestMs, latestMs] that certainly contains the true time; a message is
 * deleted as soon as its deadline MAY have passed (latestMs >= deadline), so errors make it die early, never
 * late.
 */
import { CodedError } from "../coded_error.ts";
import { deadlinePassed, type TrustedTime } from "../clock/mod.ts";
import type { TtlMode } from "./engine_types.ts";
import { MAX_TTL_MS, MAX_UNREAD_MS, MIN_TTL_MS } from "./protocol/constants.ts";

export { MAX_TTL_MS, MAX_UNREAD_MS, MIN_TTL_MS };

export class ExpiryError extends CodedError<"BAD_TTL"> {
  constructor(message: string) {
    super("BAD_TTL", message);
  }
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };

/** "30s", "5m", "2h", "1d", "1500ms", or a number of ms. Throws ExpiryError unless the result is an integer
 * in [MIN_TTL_MS, MAX_TTL_MS]. */
export function parseTtl(input: unknown): number {
  let ms: number;
  if (typeof input === "number") {
    ms = input;
  } else if (typeof input === "string") {
    const m = /^\s*(\d{1,12})\s*(ms|s|m|h|d)?\s*$/.exec(input);
    if (!m) throw new ExpiryError(`bad lifetime "${input.slice(0, 40)}" (use e.g. 30s, 5m, 2h, 1d)`);
    ms = Number(m[1]) * UNITS[m[2] ?? "s"];
  } else {
    throw new ExpiryError("a lifetime must be a string like 30s or a number of ms");
  }
  if (!Number.isSafeInteger(ms) || ms < MIN_TTL_MS || ms > MAX_TTL_MS) {
    throw new ExpiryError(`lifetime must be from ${MIN_TTL_MS} ms to ${MAX_TTL_MS} ms`);
  }
  return ms;
}

export function parseTtlMode(input: unknown): TtlMode {
  if (input === undefined || input === null || input === "send") return "send";
  if (input === "read") return "read";
  throw new ExpiryError(`ttlMode must be "send" or "read"`);
}

/** The deadline the receiver enforces for a "send"-mode message. The sender claims `sentAt`; its Roughtime
 * proof shows the message existed by `proofMidpointMs + proofRadiusMs` at the latest. Whichever is earlier
 * is taken, so a sender that claims a later send time cannot make the message live longer. */
export function receiverDeadline(
  opts: { claimedSentAt: number; proofMidpointMs: number; proofRadiusMs: number; ttlMs: number },
): number {
  const provedBy = opts.proofMidpointMs + opts.proofRadiusMs;
  return Math.min(opts.claimedSentAt, provedBy) + opts.ttlMs;
}

/** The send time the receiver records: the claim, capped by the proof. */
export function provedSentAt(claimedSentAt: number, proofMidpointMs: number, proofRadiusMs: number): number {
  return Math.min(claimedSentAt, proofMidpointMs + proofRadiusMs);
}

/** The deadline of an "after read" message, counted from its first display (trusted time of display). */
export function readDeadline(readAtMs: number, ttlMs: number): number {
  return readAtMs + ttlMs;
}

/** The hard bound of an "after read" message that has not been displayed: `sentAtMs + maxUnreadMs`. Each
 * side passes the send time it recorded: the sender its own, the receiver the proof-bounded one
 * (provedSentAt: min(claimed sentAt, proof midpoint + radius)), so the receiver's copy never outlives the
 * sender's. */
export function unreadDeadline(sentAtMs: number, maxUnreadMs: number): number {
  return sentAtMs + maxUnreadMs;
}

/** The deadline of an "after read" message once displayed: its lifetime counted from the display, but never
 * later than `sentAtMs + maxUnreadMs + ttlMs` (a display claimed after the unread bound cannot extend it). */
export function boundedReadDeadline(
  opts: { readAtMs: number; sentAtMs: number; ttlMs: number; maxUnreadMs: number },
): number {
  return Math.min(
    readDeadline(opts.readAtMs, opts.ttlMs),
    unreadDeadline(opts.sentAtMs, opts.maxUnreadMs) + opts.ttlMs,
  );
}

export interface ExpiringView {
  sentAt: number;
  ttlMs: number | null;
  ttlMode: TtlMode | null;
  expiresAt: number | null;
}

/** The deadline a message is deleted at, on trusted time: its recorded `expiresAt` when it has one (a "send"
 * message, or an "after read" one already displayed), the unread bound for an "after read" message not
 * displayed yet, and null for a message without a lifetime. */
export function effectiveDeadline(m: ExpiringView, maxUnreadMs: number = MAX_UNREAD_MS): number | null {
  if (m.ttlMs === null) return null;
  if (m.expiresAt !== null) return m.expiresAt;
  return m.ttlMode === "read" ? unreadDeadline(m.sentAt, maxUnreadMs) : null;
}

/** Fail closed: a message with a lifetime is shown only when trusted time is known and its deadline has
 * certainly not passed. A message without a lifetime is always shown. An "after read" message not yet
 * displayed (expiresAt null) is shown while its unread bound has certainly not passed, because showing it
 * starts its clock. */
export function isVisible(
  m: ExpiringView,
  time: TrustedTime | null,
  maxUnreadMs: number = MAX_UNREAD_MS,
): boolean {
  if (m.ttlMs === null) return true;
  const deadline = effectiveDeadline(m, maxUnreadMs);
  if (deadline === null) return time !== null;
  return deadlinePassed(deadline, time) === false;
}

/** How long until the earliest deadline may have passed (>= 0), or null with no deadline or no time. */
export function msUntilNextDeadline(deadlines: Iterable<number>, time: TrustedTime | null): number | null {
  if (!time) return null;
  let next = Infinity;
  let any = false;
  for (const d of deadlines) {
    any = true;
    // A deadline that is not a number has passed (clock/deadline.ts): due at once.
    if (deadlinePassed(d, time)) return 0;
    next = Math.min(next, d);
  }
  return any ? Math.max(0, next - time.latestMs) : null;
}
