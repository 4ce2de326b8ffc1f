/**
 * Text the UI shows for times, lifetimes, fingerprints and the clock's state. Pure functions: every time is
 * passed in (trusted Unix ms from the engine), none is read from the system clock here.
 */
import type { TimeStatus } from "../../clock/types.ts";
import type { DeliveryState, OwnCertificateStatus, PinState } from "../engine_types.ts";
import { MAX_TTL_MS, MIN_TTL_MS } from "../protocol/constants.ts";

// The protocol's limits, so the UI refuses what the engine would refuse, with a friendlier message.
export { MAX_TTL_MS, MIN_TTL_MS };

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export class DurationError extends Error {
  readonly code = "BAD_DURATION";
  constructor(readonly input: string, why: string) {
    super(`bad lifetime "${input}": ${why} (examples: 30s, 5m, 1h, 1h30m, off)`);
    this.name = "DurationError";
  }
}

/**
 * Parses a lifetime such as "30s", "5m", "1h30m", "2d" or "off" (null). A bare number means seconds.
 * @throws DurationError for anything else, for 0, and above MAX_TTL_MS.
 */
export function parseDuration(input: string): number | null {
  const s = input.trim().toLowerCase();
  if (s === "off" || s === "none" || s === "never") return null;
  if (/^\d+$/.test(s)) return checkTtl(input, Number(s) * 1000);
  const re = /(\d+)([smhd])/g;
  let total = 0;
  let consumed = 0;
  for (const m of s.matchAll(re)) {
    if (m.index !== consumed) throw new DurationError(input, "unexpected characters");
    total += Number(m[1]) * UNIT_MS[m[2]];
    consumed += m[0].length;
  }
  if (consumed === 0 || consumed !== s.length) throw new DurationError(input, "unknown unit");
  return checkTtl(input, total);
}

function checkTtl(input: string, ms: number): number {
  if (!Number.isSafeInteger(ms) || ms < MIN_TTL_MS) throw new DurationError(input, "must be at least 1s");
  if (ms > MAX_TTL_MS) throw new DurationError(input, `longer than ${formatTtl(MAX_TTL_MS)}`);
  return ms;
}

/** A lifetime as a short label: "30s", "5m", "1h 30m", "2d". */
export function formatTtl(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return s % 60 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${s / 60}m`;
  if (s < 86400) {
    const m = Math.floor((s % 3600) / 60);
    return m ? `${Math.floor(s / 3600)}h ${m}m` : `${Math.floor(s / 3600)}h`;
  }
  const h = Math.floor((s % 86400) / 3600);
  return h ? `${Math.floor(s / 86400)}d ${h}h` : `${Math.floor(s / 86400)}d`;
}

/** Time left until a deadline, rounded up to the second so a countdown never shows 0 while still visible. */
export function formatCountdown(msLeft: number): string {
  const s = Math.max(0, Math.ceil(msLeft / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  const h = Math.floor(s / 3600);
  if (h < 48) return `${h}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}`;
  return `${Math.floor(h / 24)}d`;
}

const pad2 = (n: number) => String(n).padStart(2, "0");

/** "14:05" (or "14:05:09" with seconds) in the local time zone. */
export function formatClock(ms: number, seconds = false): string {
  const d = new Date(ms);
  const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return seconds ? `${hm}:${pad2(d.getSeconds())}` : hm;
}

/** "2026-11-28" in the local time zone: the key of a date line. */
export function dayKey(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/** "Sat 2026-11-28" for a date line. */
export function formatDay(ms: number): string {
  return `${WEEKDAYS[new Date(ms).getDay()]} ${dayKey(ms)}`;
}

/** "2026-11-28 14:05 UTC": certificate validity, shown in UTC because certificates are written in UTC. */
export function formatUtc(ms: number): string {
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

/** A SHA-256 fingerprint (64 hex, any case, colons or not) as groups of four for reading aloud. */
export function groupFingerprint(fp: string): string {
  const hex = normalizeFingerprint(fp);
  return (hex.match(/.{1,4}/g) ?? []).join(" ");
}

export function normalizeFingerprint(fp: string): string {
  return fp.replace(/[:\s]/g, "").toLowerCase();
}

/** What the screen shows for one of our messages: the engine's state, or "queued" for one still "sending"
 * to a peer that is not reachable (offline, revoked, unknown), which waits in the outbox rather than being
 * on its way. */
export type ShownDelivery = DeliveryState | "queued";

/** Cells the widest delivery mark takes: the conversation reserves them so a change never re-wraps a line. */
export const DELIVERY_MARK_WIDTH = 2;

/** Delivery state as a short mark (each one a different shape, not only a different colour) and a word. */
export function deliveryLabel(state: ShownDelivery): { mark: string; word: string } {
  switch (state) {
    case "queued":
      return { mark: "\u29d6", word: "queued" };
    case "sending":
      return { mark: "\u2026", word: "sending" };
    case "sent":
      return { mark: "\u2713", word: "sent" };
    case "delivered":
      return { mark: "\u2713\u2713", word: "delivered" };
    case "read":
      return { mark: "\u25c9", word: "read" };
    case "failed":
      return { mark: "\u2717", word: "not delivered" };
  }
}

export function pinLabel(pin: PinState): string {
  switch (pin) {
    case "verified":
      return "verified";
    case "first-use":
      return "first use (unverified)";
    case "pinned":
      return "pinned (unverified)";
    case "changed":
      return "KEY CHANGED";
  }
}

/** The always-visible clock summary, e.g. "time verified 3/3 agree \u00b112ms". */
export function formatTimeStatus(t: TimeStatus): string {
  const agree = `${t.agreeing}/${t.configured} agree`;
  const unc = t.uncertaintyMs === null ? "" : ` \u00b1${formatUncertainty(t.uncertaintyMs)}`;
  const single = t.singleSource ? " (1 source)" : "";
  switch (t.state) {
    case "verified":
      return `time verified ${agree}${unc}${single}`;
    case "stale":
      return `time STALE ${agree}${unc}`;
    case "unverified":
      return `time UNVERIFIED (${t.answered}/${t.configured} answered) - expiring messages hidden`;
  }
}

function formatUncertainty(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`;
}

/** The status bar's word on our own certificate: nothing while it is valid and not lapsing soon. */
export function formatOwnCertificate(st: OwnCertificateStatus | null | undefined): string {
  if (!st) return "";
  const day = new Date(st.notAfter).toISOString().slice(0, 10);
  switch (st.state) {
    case "revoked":
      return "CERTIFICATE REVOKED: securechat enroll";
    case "expired":
      return "CERTIFICATE EXPIRED: securechat enroll --renew";
    case "renewing":
      return st.expiringSoon ? `certificate lapses ${day}, renewing` : "certificate renewing";
    case "valid":
      return st.expiringSoon ? `certificate lapses ${day}` : "";
  }
}
