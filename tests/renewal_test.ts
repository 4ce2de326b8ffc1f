/**
 * The renewal part on a fake scheduler and a fake trusted clock: renewal starts at two thirds of the
 * lifetime on trusted time (never on unverified time), retries with doubling backoff while the phonebook is
 * away, reports valid/renewing/expired/revoked with a warning in the last sixth and the fixing command, and a
 * revoked certificate is never renewed.
 */
import assert from "node:assert/strict";
import {
  backoffMs,
  FIX_COMMAND,
  type OwnCertificate,
  RENEW_BACKOFF_FIRST_MS,
  RENEW_BACKOFF_MAX_MS,
  Renewal,
  renewAt,
  warnAt,
} from "../client/renewal.ts";
import type { OwnCertificateStatus } from "../client/engine_types.ts";
import type { TrustedTime } from "../clock/types.ts";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";

const DAY = 86400_000;
const T0 = Date.UTC(2030, 0, 1);

function rig(opts: { verified?: boolean; revoked?: boolean; fail?: number } = {}) {
  const scheduler = new FakeScheduler();
  let cert: OwnCertificate = { serial: "1", notBefore: T0, notAfter: T0 + 30 * DAY };
  let trusted: number | null = opts.verified === false ? null : T0;
  let failuresLeft = opts.fail ?? 0;
  const attempts: number[] = [];
  const statuses: OwnCertificateStatus[] = [];
  const logs: string[] = [];
  const revoked = new Set<string>(opts.revoked ? ["1"] : []);
  const renewal = new Renewal({
    current: () => cert,
    now: (): TrustedTime | null =>
      trusted === null ? null : { earliestMs: trusted - 50, latestMs: trusted + 50, nowMs: trusted },
    isRevoked: (s) => revoked.has(s),
    renew: () => {
      attempts.push(scheduler.now());
      if (failuresLeft > 0) {
        failuresLeft--;
        return Promise.reject(new Error("cannot reach the directory"));
      }
      cert = { serial: String(Number(cert.serial) + 1), notBefore: trusted!, notAfter: trusted! + 30 * DAY };
      return Promise.resolve();
    },
    emit: (s) => statuses.push(s),
    log: (_l, t) => logs.push(t),
    scheduler,
    checkMs: 60_000,
  });
  return {
    scheduler,
    renewal,
    attempts,
    statuses,
    logs,
    revoked,
    cert: () => cert,
    setTrusted: (ms: number | null) => (trusted = ms),
  };
}

Deno.test("renewal: the schedule's points (2/3 of the lifetime, warning in the last sixth, backoff)", () => {
  const c = { notBefore: T0, notAfter: T0 + 30 * DAY };
  assert.equal(renewAt(c), T0 + 20 * DAY);
  assert.equal(warnAt(c), T0 + 25 * DAY);
  assert.deepEqual([1, 2, 3].map(backoffMs), [
    RENEW_BACKOFF_FIRST_MS,
    2 * RENEW_BACKOFF_FIRST_MS,
    4 * RENEW_BACKOFF_FIRST_MS,
  ]);
  assert.equal(backoffMs(100), RENEW_BACKOFF_MAX_MS);
});

Deno.test("renewal: not before two thirds of the lifetime on trusted time; then once, and valid again", async () => {
  const r = rig();
  r.renewal.start();
  await r.scheduler.tick(0);
  r.setTrusted(T0 + 20 * DAY - 1000);
  await r.scheduler.tick(60_000);
  assert.equal(r.attempts.length, 0, "too early");
  assert.equal(r.renewal.status().state, "valid");
  r.setTrusted(T0 + 20 * DAY + 1000);
  await r.scheduler.tick(60_000);
  assert.equal(r.attempts.length, 1);
  const st = r.renewal.status();
  assert.equal(st.state, "valid");
  assert.equal(st.notAfter, T0 + 50 * DAY + 1000, "the new certificate's validity");
  assert.ok(r.statuses.some((s) => s.state === "renewing"), "renewing was reported");
  await r.scheduler.tick(10 * 60_000);
  assert.equal(r.attempts.length, 1, "a fresh certificate is not renewed again");
  r.renewal.close();
});

Deno.test("renewal: unverified time never starts a renewal; the state is marked as judged on the local clock", async () => {
  const r = rig({ verified: false });
  r.renewal.start();
  await r.scheduler.tick(10 * 60_000);
  assert.equal(r.attempts.length, 0);
  assert.equal(r.renewal.status().timeUnverified, true);
  r.setTrusted(T0 + 21 * DAY);
  await r.scheduler.tick(60_000);
  assert.equal(r.attempts.length, 1, "renewed once time is verified");
  r.renewal.close();
});

Deno.test("renewal: the phonebook away: retried with doubling backoff, renewing shown, then renewed", async () => {
  const r = rig({ fail: 3 });
  r.setTrusted(T0 + 26 * DAY);
  r.renewal.start();
  await r.scheduler.tick(0);
  assert.equal(r.attempts.length, 1);
  const st = r.renewal.status();
  assert.equal(st.state, "renewing");
  assert.equal(st.expiringSoon, true, "the last sixth: warned");
  assert.match(st.lastError ?? "", /cannot reach/);
  await r.scheduler.tick(RENEW_BACKOFF_FIRST_MS - 1);
  assert.equal(r.attempts.length, 1, "waits out the backoff");
  await r.scheduler.tick(1);
  assert.equal(r.attempts.length, 2);
  await r.scheduler.tick(2 * RENEW_BACKOFF_FIRST_MS);
  assert.equal(r.attempts.length, 3);
  await r.scheduler.tick(4 * RENEW_BACKOFF_FIRST_MS);
  assert.equal(r.attempts.length, 4);
  assert.deepEqual(
    r.attempts.slice(1).map((a, i) => a - r.attempts[i]),
    [RENEW_BACKOFF_FIRST_MS, 2 * RENEW_BACKOFF_FIRST_MS, 4 * RENEW_BACKOFF_FIRST_MS],
  );
  const done = r.renewal.status();
  assert.equal(done.state, "valid");
  assert.equal(done.lastError, null);
  assert.equal(done.expiringSoon, false);
  assert.ok(r.logs.some((l) => /renewed \(same key\)/.test(l)));
  r.renewal.close();
});

Deno.test("renewal: a lapsed certificate is expired (with the fix) and renews at once within reach", async () => {
  const r = rig({ fail: 1 });
  r.setTrusted(T0 + 65 * DAY);
  r.renewal.start();
  await r.scheduler.tick(0);
  const st = r.renewal.status();
  assert.equal(st.state, "expired");
  assert.equal(st.fix, FIX_COMMAND);
  await r.scheduler.tick(RENEW_BACKOFF_FIRST_MS);
  assert.equal(r.attempts.length, 2);
  assert.equal(r.renewal.status().state, "valid");
  assert.equal(r.renewal.status().fix, null);
  r.renewal.close();
});

Deno.test("renewal: a revoked certificate is said to be revoked and never renewed", async () => {
  const r = rig({ revoked: true });
  r.setTrusted(T0 + 25 * DAY);
  r.renewal.start();
  await r.scheduler.tick(10 * 60_000);
  assert.equal(r.attempts.length, 0);
  const st = r.renewal.status();
  assert.equal(st.state, "revoked");
  assert.equal(st.fix, FIX_COMMAND);
  assert.equal(st.expiringSoon, false);
  r.renewal.close();
});
