/**
 * Renewal of our own certificate: its state (valid, renewing, expired, revoked), judged on trusted time, and
 * a new certificate for the same key at two thirds of its lifetime, retried with backoff while the phonebook
 * cannot be reached. The part decides when and reports; getting a certificate (a CSR for our key, the
 * phonebook's /v1/renew) and putting it to use (files, TLS contexts) are its deps' business.
 *
 * Time: only verified time starts a renewal. Before the first verified answer the state is shown on the
 * local clock (marked timeUnverified) and nothing is renewed: a wall clock a year ahead must not spend the
 * phonebook's renewal allowance (server/limits.ts RENEWALS_PER_DAY) on certificates that look expired.
 * A certificate that lapsed while we were away still renews with the same key within the phonebook's grace
 * (server/limits.ts RENEW_GRACE_MS, 60 days); past it, or once revoked, only `securechat enroll` helps.
 */
import { messageOf } from "../coded_error.ts";
import type { TrustedTime } from "../clock/types.ts";
import type { OwnCertificateStatus } from "./engine_types.ts";
import type { Scheduler, Timer } from "./scheduler.ts";

/** Renewal starts when this fraction of the lifetime has passed. */
export const RENEW_AT_FRACTION = 2 / 3;
/** The "lapses soon" warning starts when this fraction of the lifetime is left (half the renewal window:
 * renewal has failed for a while). */
export const WARN_REMAINING_FRACTION = 1 / 6;
/** How often the state is judged again (trusted time may jump when it is first verified). */
export const RENEW_CHECK_MS = 60_000;
/** Retry after a failed renewal: doubling from the first to the last. */
export const RENEW_BACKOFF_FIRST_MS = 5_000;
export const RENEW_BACKOFF_MAX_MS = 15 * 60_000;
/** After a renewal the next automatic one waits at least this long (monotonic): a phonebook whose clock is
 * behind ours issues certificates that already look due, and must not be asked again in a loop (it would
 * also spend its RENEWALS_PER_DAY allowance). */
export const RENEW_MIN_INTERVAL_MS = 3600_000;
/** The command that gives a certificate when renewal cannot (revoked, or lapsed past the grace). */
export const FIX_COMMAND =
  "securechat enroll --renew (or, if refused, ask the phonebook's admin and enroll again)";

/** Our certificate as far as this part needs it. */
export interface OwnCertificate {
  serial: string;
  notBefore: number;
  notAfter: number;
}

export interface RenewalDeps {
  current(): OwnCertificate;
  /** Trusted time, or null while unverified. */
  now(): TrustedTime | null;
  /** Whether the revocation list we hold names our serial. */
  isRevoked(serial: string): boolean;
  /** Gets a new certificate for our key and puts it to use (throws when the phonebook refuses or is away). */
  renew(): Promise<void>;
  emit(status: OwnCertificateStatus): void;
  log(level: "info" | "warn" | "error", text: string): void;
  scheduler: Scheduler;
  /** Default RENEW_CHECK_MS. */
  checkMs?: number;
}

/** When renewal of a certificate valid over [notBefore, notAfter] starts. */
export function renewAt(c: Pick<OwnCertificate, "notBefore" | "notAfter">): number {
  return c.notBefore + Math.floor((c.notAfter - c.notBefore) * RENEW_AT_FRACTION);
}

/** When the "lapses soon" warning starts. */
export function warnAt(c: Pick<OwnCertificate, "notBefore" | "notAfter">): number {
  return c.notAfter - Math.floor((c.notAfter - c.notBefore) * WARN_REMAINING_FRACTION);
}

/** The backoff after `failures` failed attempts in a row (1 = the first). */
export function backoffMs(failures: number): number {
  return Math.min(
    RENEW_BACKOFF_MAX_MS,
    RENEW_BACKOFF_FIRST_MS * 2 ** Math.max(0, Math.min(failures - 1, 20)),
  );
}

/** The state of our certificate at `latestMs` (the latest it may be: fail closed on "expired"). Pure. */
export function ownCertificateStatus(o: {
  cert: OwnCertificate;
  latestMs: number;
  timeUnverified: boolean;
  revoked: boolean;
  renewing: boolean;
  lastError: string | null;
}): OwnCertificateStatus {
  const expired = o.latestMs > o.cert.notAfter;
  const state = o.revoked ? "revoked" : expired ? "expired" : o.renewing ? "renewing" : "valid";
  return {
    state,
    notAfter: o.cert.notAfter,
    renewAt: renewAt(o.cert),
    expiringSoon: !o.revoked && !expired && o.latestMs >= warnAt(o.cert),
    timeUnverified: o.timeUnverified,
    lastError: o.lastError,
    fix: state === "revoked" || state === "expired" ? FIX_COMMAND : null,
  };
}

export class Renewal {
  readonly #d: RenewalDeps;
  #timer: Timer | null = null;
  #retry: Timer | null = null;
  #inFlight: Promise<void> | null = null;
  #failures = 0;
  #nextTryAt = 0;
  /** Scheduler time of the last successful renewal, or null. */
  #renewedAt: number | null = null;
  #lastError: string | null = null;
  #last: string | null = null;
  #status: OwnCertificateStatus;
  #closed = false;

  constructor(deps: RenewalDeps) {
    this.#d = deps;
    this.#status = this.#judge(false);
  }

  /** Judges now and then every checkMs. */
  start(): void {
    this.#timer = this.#d.scheduler.every(this.#d.checkMs ?? RENEW_CHECK_MS, () => void this.check());
    void this.check();
  }

  status(): OwnCertificateStatus {
    return this.#status;
  }

  /** Judges the state now and renews when due (not during a backoff); resolves when any attempt ended.
   * Never throws. */
  check(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#inFlight) return this.#inFlight;
    const st = this.#update(false);
    const t = this.#d.now();
    const sinceRenewal = this.#renewedAt === null ? Infinity : this.#d.scheduler.now() - this.#renewedAt;
    const due = t !== null && st.state !== "revoked" && t.latestMs >= st.renewAt &&
      this.#d.scheduler.now() >= this.#nextTryAt && sinceRenewal >= RENEW_MIN_INTERVAL_MS;
    if (!due) return Promise.resolve();
    this.#inFlight = this.#attempt().finally(() => {
      this.#inFlight = null;
    });
    return this.#inFlight;
  }

  /** Renews now, whatever the state (for a front end's command and tests); rejects with the failure. */
  async renewNow(): Promise<void> {
    if (this.#inFlight) await this.#inFlight;
    this.#nextTryAt = 0;
    this.#update(true);
    await this.#d.renew();
  }

  close(): void {
    this.#closed = true;
    this.#timer?.cancel();
    this.#retry?.cancel();
  }

  async #attempt(): Promise<void> {
    const before = this.#d.current();
    this.#update(true);
    try {
      await this.#d.renew();
      this.#failures = 0;
      this.#nextTryAt = 0;
      this.#lastError = null;
      this.#renewedAt = this.#d.scheduler.now();
      const now = this.#d.current();
      this.#d.log(
        "info",
        `certificate renewed (same key): valid until ${new Date(now.notAfter).toISOString()}, was ${
          new Date(before.notAfter).toISOString()
        }`,
      );
      const t = this.#d.now();
      if (t && t.latestMs >= renewAt(now)) {
        this.#d.log(
          "warn",
          `the renewed certificate is already due by our trusted time (the phonebook's clock may be behind ours); next try in ${
            RENEW_MIN_INTERVAL_MS / 60_000
          } min`,
        );
      }
    } catch (e) {
      this.#failures++;
      const wait = backoffMs(this.#failures);
      this.#nextTryAt = this.#d.scheduler.now() + wait;
      this.#lastError = messageOf(e);
      this.#d.log(
        "warn",
        `certificate renewal failed (${this.#lastError}); trying again in ${Math.round(wait / 1000)} s`,
      );
      // Retried at the end of the backoff, not at the next periodic check (which may be much later).
      this.#retry?.cancel();
      if (!this.#closed) this.#retry = this.#d.scheduler.after(wait, () => void this.check());
    }
    if (!this.#closed) this.#update(false);
  }

  #judge(renewing: boolean): OwnCertificateStatus {
    const cert = this.#d.current();
    const t = this.#d.now();
    return ownCertificateStatus({
      cert,
      latestMs: t ? t.latestMs : Date.now(),
      timeUnverified: t === null,
      revoked: this.#d.isRevoked(cert.serial),
      // "renewing" from the renewal point until a new certificate is in use (backoff included).
      renewing: renewing || (t !== null && t.latestMs >= renewAt(cert)),
      lastError: this.#lastError,
    });
  }

  /** Recomputes the state; emits it when it changed. */
  #update(renewing: boolean): OwnCertificateStatus {
    const st = this.#judge(renewing);
    this.#status = st;
    const key = JSON.stringify(st);
    if (key !== this.#last) {
      this.#last = key;
      this.#d.emit(st);
    }
    return st;
  }
}
