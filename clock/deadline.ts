/**
 * The one rule for "has this deadline passed", used by the trusted clock, the expiry rules and the sweeper.
 * Self-destruct deletes early, never late: a deadline passes as soon as the LATEST the time may be reaches
 * it, and a deadline that is not a number (NaN: a corrupted row, a failed computation) counts as passed, so a
 * bad value can only shorten a message's life. +Infinity is "never" and -Infinity "always" (plain order).
 */
import type { TrustedTime } from "./types.ts";

/** True when `deadlineMs` may have passed on `time`; null when time is unknown (decide nothing). */
export function deadlinePassed(deadlineMs: number, time: TrustedTime | null): boolean | null {
  if (!time) return null;
  return Number.isNaN(deadlineMs) || time.latestMs >= deadlineMs;
}
