/**
 * The trusted clock: "now" is the last verified Roughtime interval carried forward on the monotonic clock,
 * widened by a drift bound (DRIFT_PPM = 100 ppm of the elapsed time), and moved forward by the boot clock when
 * the machine slept (boot_clock.ts). Date.now() is never read here, so once verified, changing the system
 * clock changes nothing. Before the first verified answer the clock is
 * "unverified" and `now()` is null; after `staleAfterMs` without a fresh answer it is "stale" (the interval
 * is still valid, only wider).
 */
import type { RoughtimeVersion, ServerSpec, TimeProof, TimeStatus, TrustedTime } from "./types.ts";
import { DEFAULT_QUERY_TIMEOUT_MS, queryServer } from "./roughtime/client.ts";
import { queryChain, queryParallel, type ServerOutcome } from "./roughtime/chain.ts";
import { combineSamples, DRIFT_PPM, nextAnchorInterval, proofOrder } from "./roughtime/combine.ts";
import { buildReport, checkReport, type MalfeasanceReport } from "./roughtime/malfeasance.ts";
import { randomBytes, sha512 } from "./roughtime/crypto.ts";
import { fromBase64, toBase64 } from "./roughtime/encoding.ts";
import { RoughtimeError } from "./roughtime/errors.ts";
import { familyOf, nonceSize, parseRequest } from "./roughtime/request.ts";
import { verifyReply } from "./roughtime/verify.ts";
import { bytesEqual } from "./roughtime/wire.ts";
import { type BootClock, systemBootClock } from "./boot_clock.ts";
import { deadlinePassed } from "./deadline.ts";

export interface TrustedClockOptions {
  servers: ServerSpec[];
  /** Servers that sign time proofs (`proveTime`), tried in order. Default: `servers`. A proof is only useful
   * to whoever trusts the signing key, so a chat client asks only the servers its peers share (the
   * phonebook's), while extra servers of its own still take part in the vote on the time. */
  proofServers?: ServerSpec[];
  /** Default 10 min. */
  refreshIntervalMs?: number;
  /** Default 1 h; after that state "stale" (time still carried forward, wider uncertainty). */
  staleAfterMs?: number;
  /** Bound on one sync, retries included. Default 1500 ms. */
  queryTimeoutMs?: number;
  /** Default performance.now(); tests inject one. */
  monotonicNow?: () => number;
  /** Time since boot including suspend (see boot_clock.ts); null disables it. Default: the system's, unless
   * monotonicNow is injected (then none, so tests stay deterministic). */
  bootClock?: BootClock | null;
  /** Bound on the background chained query that proves a disagreement (never delays sync()). Default 3000 ms. */
  proofTimeoutMs?: number;
  /** Called when a background chain proves that a server lied (also announced through subscribe()). */
  onReport?: (report: MalfeasanceReport) => void;
}

/** A boot clock running this much ahead of the monotonic one means the machine slept: resync at once. */
const SUSPEND_GAP_MS = 2000;

const DEFAULT_REFRESH_MS = 10 * 60_000;
const DEFAULT_STALE_MS = 3600_000;
/** While unverified, retry after min(1.5^(n-1), refresh) seconds (the draft's backoff, capped). */
const RETRY_BASE_MS = 1000;
const RETRY_FACTOR = 1.5;
const DEFAULT_PROOF_TIMEOUT_MS = 3000;
/** At most one proof attempt per this long (monotonic): a lasting disagreement must not turn every retry of
 * an unverified clock into a chain of queries. */
const PROOF_MIN_INTERVAL_MS = 60_000;

interface Anchor {
  mono: number;
  /** Boot clock reading at the same instant, when there is one. */
  boot: number | null;
  /** Boot clock reading taken before the sync's queries, and the monotonic instant of it. A suspend between a
   * reply's arrival and `mono` is invisible to the monotonic clock; measured from here it is counted. */
  bootAtStart: number | null;
  monoAtStart: number;
  /** Set once a suspend since this anchor was noticed (one resync per suspend). */
  suspendSeen: boolean;
  earliestMs: number;
  latestMs: number;
  /** How many servers agreed on it (1 = single source). */
  agreeing: number;
}

export class TrustedClock {
  private readonly servers: ServerSpec[];
  private readonly proofServers: ServerSpec[];
  private readonly refreshMs: number;
  private readonly staleMs: number;
  private readonly timeoutMs: number;
  private readonly mono: () => number;
  private readonly boot: BootClock | null;
  private anchor: Anchor | null = null;
  private answered = 0;
  private agreeing = 0;
  private lastVerifiedMs: number | null = null;
  private outcomes: ServerOutcome[] = [];
  private listeners = new Set<(s: TimeStatus) => void>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private staleTimer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  private failures = 0;
  private inFlight: Promise<TimeStatus> | null = null;
  private lastState: TimeStatus["state"] = "unverified";
  private readonly proofTimeoutMs: number;
  private readonly onReport: ((report: MalfeasanceReport) => void) | null;
  private report: MalfeasanceReport | null = null;
  private disagreeing = 0;
  private proofInFlight: Promise<void> | null = null;
  private proofAbort: AbortController | null = null;
  private lastProofMono: number | null = null;
  private stopped = false;

  constructor(opts: TrustedClockOptions) {
    this.servers = [...opts.servers];
    this.proofServers = [...(opts.proofServers ?? opts.servers)];
    this.refreshMs = opts.refreshIntervalMs ?? DEFAULT_REFRESH_MS;
    this.staleMs = opts.staleAfterMs ?? DEFAULT_STALE_MS;
    this.timeoutMs = opts.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
    this.mono = opts.monotonicNow ?? (() => performance.now());
    this.boot = opts.bootClock !== undefined ? opts.bootClock : opts.monotonicNow ? null : systemBootClock();
    this.proofTimeoutMs = opts.proofTimeoutMs ?? DEFAULT_PROOF_TIMEOUT_MS;
    this.onReport = opts.onReport ?? null;
  }

  /** First sync in the background, then periodic refresh. Timers are unref'd: they never keep a process up. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.stopped = false;
    this.schedule(0);
  }

  /** Ends the refresh and abandons a background proof (its socket is closed; `idle()` waits for that). */
  stop(): void {
    this.running = false;
    this.stopped = true;
    this.proofAbort?.abort();
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.staleTimer !== null) clearTimeout(this.staleTimer);
    this.timer = null;
    this.staleTimer = null;
  }

  /** Resolves when no sync and no background proof is in flight (tests and shutdown wait on it). */
  async idle(): Promise<void> {
    while (this.inFlight || this.proofInFlight) {
      if (this.inFlight) await this.inFlight.catch(() => {});
      if (this.proofInFlight) await this.proofInFlight.catch(() => {});
    }
  }

  /** (Re)arms the one refresh timer; an earlier pending one is replaced, so there is never more than one. */
  private schedule(delayMs: number): void {
    if (!this.running) return;
    if (this.timer !== null) clearTimeout(this.timer);
    const timer = setTimeout(async () => {
      this.timer = null;
      await this.sync().catch(() => {});
      const verified = this.status().state === "verified";
      this.failures = verified ? 0 : this.failures + 1;
      const backoff = Math.min(
        RETRY_BASE_MS * RETRY_FACTOR ** Math.max(0, this.failures - 1),
        this.refreshMs,
      );
      // When the next refresh comes after the answer goes stale, wake up in time to announce "stale".
      const untilStale = this.anchor ? this.anchor.mono + this.staleMs - this.mono() : Infinity;
      const next = verified ? this.refreshMs : backoff;
      if (untilStale > 0 && untilStale < next) this.scheduleStaleCheck(untilStale);
      this.schedule(next);
    }, delayMs);
    this.timer = timer;
    Deno.unrefTimer(timer);
  }

  private scheduleStaleCheck(delayMs: number): void {
    // A sync that ends after stop() must not leave a timer behind.
    if (!this.running) return;
    if (this.staleTimer !== null) clearTimeout(this.staleTimer);
    const t = setTimeout(() => {
      this.staleTimer = null;
      this.checkState();
    }, delayMs + 1);
    this.staleTimer = t;
    Deno.unrefTimer(t);
  }

  /** One refresh across all servers at once; never longer than queryTimeoutMs (plus timer slack). */
  sync(): Promise<TimeStatus> {
    if (!this.inFlight) {
      this.inFlight = this.doSync().finally(() => {
        this.inFlight = null;
      });
    }
    return this.inFlight;
  }

  private async doSync(): Promise<TimeStatus> {
    const monoAtStart = this.mono();
    const bootAtStart = this.boot?.now() ?? null;
    const outcomes = this.servers.length
      ? await queryParallel(this.servers, { timeoutMs: this.timeoutMs, monotonicNow: this.mono })
      : [];
    this.outcomes = outcomes;
    const answering = outcomes.filter((o): o is Extract<ServerOutcome, { ok: true }> => o.ok);
    const samples = answering.map((o) => ({
      midpointMs: o.result.reply.midpointMs,
      radiusMs: o.result.reply.radiusMs,
      rttMs: o.result.rttMs,
      receivedAtMono: o.result.receivedAtMono,
    }));
    const at = this.mono();
    const c = combineSamples(samples, at);
    this.answered = samples.length;
    this.agreeing = c ? c.agreeing.length : 0;
    this.disagreeing = c ? samples.length - c.agreeing.length : 0;
    if (c && c.majority) {
      const carried = this.anchor ? this.now() : null;
      const next = nextAnchorInterval(
        carried && this.anchor ? { ...carried, support: this.anchor.agreeing } : null,
        { earliestMs: c.earliestMs, latestMs: c.latestMs, support: c.agreeing.length },
        this.servers.length,
      );
      this.anchor = {
        mono: at,
        boot: this.boot?.now() ?? null,
        bootAtStart,
        monoAtStart,
        suspendSeen: false,
        earliestMs: next.interval.earliestMs,
        latestMs: next.interval.latestMs,
        agreeing: next.interval.support,
      };
      this.lastVerifiedMs = (c.earliestMs + c.latestMs) / 2;
    }
    if (c && this.disagreeing > 0) this.startProof(answering, c.agreeing);
    const s = this.status();
    this.emit(s);
    return s;
  }

  /** Starts the background chained query that turns a disagreement into a proof, unless one is running, the
   * clock was stopped, or one was tried less than PROOF_MIN_INTERVAL_MS ago. sync() never waits for it. */
  private startProof(answering: Extract<ServerOutcome, { ok: true }>[], agreeing: number[]): void {
    if (this.stopped || this.proofInFlight || answering.length < 2) return;
    const order = proofOrder(answering.length, agreeing).map((i) => answering[i].server);
    if (order.length === 0) return;
    // The real monotonic clock bounds the chain: the proof's budget is about real waiting, even when a test
    // injects a frozen clock.
    const now = performance.now();
    if (this.lastProofMono !== null && now - this.lastProofMono < PROOF_MIN_INTERVAL_MS) return;
    this.lastProofMono = now;
    const abort = new AbortController();
    this.proofAbort = abort;
    this.proofInFlight = this.prove(order, abort.signal).catch(() => {}).finally(() => {
      this.proofInFlight = null;
      if (this.proofAbort === abort) this.proofAbort = null;
    });
  }

  private async prove(order: ServerSpec[], signal: AbortSignal): Promise<void> {
    const chain = await queryChain(order, { timeoutMs: this.proofTimeoutMs, signal });
    if (signal.aborted) return;
    const report = buildReport(chain);
    try {
      if (checkReport(report).kind !== "malfeasance") return;
    } catch {
      // A chain that does not check proves nothing (only verified replies are in it, so this is unexpected).
      return;
    }
    this.report = report;
    try {
      this.onReport?.(report);
    } catch {
      // A callback's bug must not break the clock.
    }
    this.emit(this.status());
  }

  /** The latest malfeasance report (draft JSON) a background chain proved, or null. It is public data:
   * anyone can check it with checkReport() or `securechat time verify-report`. */
  lastReport(): MalfeasanceReport | null {
    return this.report ? structuredClone(this.report) : null;
  }

  /** Per-server results of the last sync (names, errors, which ones answered). */
  lastOutcomes(): ServerOutcome[] {
    return [...this.outcomes];
  }

  /** Time elapsed since the anchor, as a [min, max] pair: the monotonic clock gives a lower bound, the boot
   * clock (suspend included) can only raise both ends. */
  private elapsed(a: Anchor): { min: number; max: number } {
    const mono = Math.max(0, this.mono() - a.mono);
    const b = a.boot !== null && this.boot ? this.boot.now() : null;
    if (b === null || a.boot === null || !this.boot) return { min: mono, max: mono };
    const boot = b - a.boot;
    // Measured from before the sync's queries, less the monotonic time the sync took: this also counts a
    // suspend that fell inside the sync (after a reply arrived, before the anchor was set).
    const fromStart = a.bootAtStart !== null ? b - a.bootAtStart - (a.mono - a.monoAtStart) : boot;
    if (Math.max(boot, fromStart) - mono > SUSPEND_GAP_MS && !a.suspendSeen) {
      a.suspendSeen = true;
      // The machine slept: the interval is still right (it follows the boot clock) but wide; refresh now.
      if (this.running && !this.inFlight) this.schedule(0);
    }
    const res = this.boot.resolutionMs;
    return { min: Math.max(mono, boot - res), max: Math.max(mono, boot + res, fromStart + res) };
  }

  now(): TrustedTime | null {
    const a = this.anchor;
    if (!a) return null;
    const e = this.elapsed(a);
    const earliestMs = a.earliestMs + e.min - (e.min * DRIFT_PPM) / 1e6;
    const latestMs = a.latestMs + e.max + (e.max * DRIFT_PPM) / 1e6;
    return { earliestMs, latestMs, nowMs: (earliestMs + latestMs) / 2 };
  }

  status(): TimeStatus {
    const t = this.now();
    const state = !t || !this.anchor
      ? "unverified"
      : this.elapsed(this.anchor).min >= this.staleMs
      ? "stale"
      : "verified";
    return {
      state,
      time: t,
      uncertaintyMs: t ? (t.latestMs - t.earliestMs) / 2 : null,
      configured: this.servers.length,
      answered: this.answered,
      agreeing: this.agreeing,
      singleSource: this.anchor !== null && this.anchor.agreeing === 1,
      lastVerifiedMs: this.lastVerifiedMs,
      disagreeing: this.disagreeing,
      reportAvailable: this.report !== null,
    };
  }

  /** True when the deadline may have passed (latest possible time >= deadline): callers that delete on true
   * delete early rather than late. Null while unverified. A NaN deadline (a corrupted record) counts as
   * passed: every comparison with NaN is false, which would otherwise keep such a message forever. */
  deadlinePassed(deadlineMs: number): boolean | null {
    return deadlinePassed(deadlineMs, this.now());
  }

  subscribe(cb: (s: TimeStatus) => void): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** Re-evaluates the state and notifies when it changed on its own (verified -> stale). */
  checkState(): void {
    const before = this.lastState;
    const s = this.status();
    if (s.state !== before) this.emit(s);
  }

  private emit(s: TimeStatus): void {
    this.lastState = s.state;
    for (const cb of [...this.listeners]) {
      try {
        cb(s);
      } catch {
        // A listener's bug must not break the clock.
      }
    }
  }

  /** Asks the proof servers (default: all configured servers) in turn (until one answers) to sign a time for a nonce derived from `data`:
   * nonce = SHA-512(data || rand)[:32] (Google: the full 64 bytes). Bounded by queryTimeoutMs. */
  async proveTime(data: Uint8Array): Promise<TimeProof> {
    if (this.proofServers.length === 0) {
      throw new RoughtimeError("NO_SERVERS", "no Roughtime server configured");
    }
    const deadline = this.mono() + this.timeoutMs;
    let last: unknown = null;
    for (let i = 0; i < this.proofServers.length; i++) {
      const server = this.proofServers[i];
      const remaining = deadline - this.mono();
      if (remaining <= 0) break;
      const version: RoughtimeVersion = server.version ?? "rfc";
      const size = nonceSize(familyOf(version));
      const rand = randomBytes(size === 32 ? 32 : 64);
      const nonce = sha512(data, rand).subarray(0, size);
      try {
        const r = await queryServer(server, {
          nonce,
          timeoutMs: remaining / (this.proofServers.length - i),
          monotonicNow: this.mono,
        });
        return {
          version: r.reply.version,
          publicKey: toBase64(server.publicKey),
          rand: toBase64(rand),
          request: toBase64(r.request),
          response: toBase64(r.response),
        };
      } catch (e) {
        last = e;
      }
    }
    if (last instanceof RoughtimeError) throw last;
    throw new RoughtimeError("TIMEOUT", "no Roughtime server answered in time");
  }
}

/** Checks a TimeProof for `data` against the keys we trust; returns the signed time (ms). Throws
 * RoughtimeError: UNTRUSTED_KEY, NONCE_MISMATCH, BAD_ARGUMENT for malformed fields, or any reply check. */
export function verifyTimeProof(
  proof: TimeProof,
  data: Uint8Array,
  trustedKeys: Uint8Array[],
): { midpointMs: number; radiusMs: number } {
  let publicKey: Uint8Array, rand: Uint8Array, request: Uint8Array, response: Uint8Array;
  try {
    publicKey = fromBase64(proof.publicKey);
    rand = fromBase64(proof.rand);
    request = fromBase64(proof.request);
    response = fromBase64(proof.response);
  } catch {
    throw new RoughtimeError("BAD_ARGUMENT", "time proof fields are not base64");
  }
  if (!trustedKeys.some((k) => bytesEqual(k, publicKey))) {
    throw new RoughtimeError("UNTRUSTED_KEY", "time proof is signed by a server we do not trust");
  }
  const req = parseRequest(request);
  const expected = sha512(data, rand).subarray(0, nonceSize(req.family));
  if (!bytesEqual(expected, req.nonce)) {
    throw new RoughtimeError("NONCE_MISMATCH", "time proof nonce is not derived from this data");
  }
  const reply = verifyReply(request, response, publicKey);
  if (reply.version !== proof.version) {
    throw new RoughtimeError(
      "BAD_VALUE",
      `time proof says ${proof.version} but the reply is ${reply.version}`,
    );
  }
  return { midpointMs: reply.midpointMs, radiusMs: reply.radiusMs };
}
