/**
 * The phonebook's reachability check (docs/protocol.md "Reachability", "The check"): each candidate a user
 * publishes is tried back with a TLS 1.3 handshake, and listed as reachable only when the certificate that
 * answers is the publishing user's own (from our CA, valid now, naming the user, and the very certificate the
 * publication was authenticated with, which is not revoked or superseded).
 *
 * The phonebook connects to addresses a user names, so the check is an SSRF surface; the rules that bound it
 * are pure and separate (`probeRefusal`), the I/O is `probeCandidate`, and `ReachProber` adds the limits:
 * a global concurrency cap with a bounded queue, rounds per user, connections per destination address.
 *
 * TLS 1.3 puts the server's Certificate in its first flight, so the probe has what it needs once the
 * handshake completes on its side; it never presents a client certificate and never sends application
 * data (the listener then drops the connection as a stranger's).
 *
 * A chat listener answers only a connection that knocks first (contract/knock.ts): the probe sends the knock
 * made with the secret the user published with this very publication, as any peer would.
 */
import net from "node:net";
import tls from "node:tls";
import { CertificateError, fingerprintOf, verifyPeerCertificate } from "../pki/mod.ts";
import { type Address, makeKnock } from "../contract/mod.ts";
import { RateLimiter } from "./rate_limit.ts";
import {
  REACH_CONCURRENCY,
  REACH_HOST_BURST,
  REACH_HOST_PER_SECOND,
  REACH_QUEUE_MAX,
  REACH_ROUND_BURST,
  REACH_ROUND_PER_SECOND,
  REACH_TIMEOUT_MS,
} from "./limits.ts";

/** How one candidate fared. Only "REACHABLE" lists it; the others say why not (logs, tests). */
export type ProbeOutcome =
  | "REACHABLE"
  /** TCP refused, unreachable, reset before TLS. */
  | "CONNECT_FAILED"
  | "TIMEOUT"
  /** Something answered, but no TLS 1.3 handshake completed (another service, an old TLS version). */
  | "NOT_TLS"
  /** A TLS listener answered with a certificate that is not the publishing user's current one. */
  | "WRONG_PEER"
  // Not tried at all:
  /** A DNS name: the phonebook does not resolve names on a user's say-so. */
  | "SKIPPED_NAME"
  /** Loopback, private or link-local range the request did not come from (see probeRefusal). */
  | "SKIPPED_SCOPE"
  /** One of the phonebook's own ports on one of its own addresses. */
  | "SKIPPED_OWN_PORT"
  /** Too many probes to that address lately (REACH_HOST_*). */
  | "SKIPPED_HOST_RATE"
  /** The global queue was full. */
  | "SKIPPED_BUSY"
  /** The prober is closing. */
  | "SKIPPED_CLOSED"
  /** The preamble hook threw for this candidate. */
  | "SKIPPED_PREAMBLE";

export interface ProbeResult {
  address: Address;
  outcome: ProbeOutcome;
}

/** The range of a host, as far as the probe rules care. */
export type ProbeScope = "loopback" | "private" | "link-local" | "public" | "name" | "unusable";

function v4Octets(host: string): number[] | null {
  const h = host.toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  const v4 = mapped ? mapped[1] : net.isIP(h) === 4 ? h : null;
  return v4 ? v4.split(".").map(Number) : null;
}

/** The scope of `host` by its range alone. */
export function probeScope(host: string): ProbeScope {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  const o = v4Octets(h);
  if (o) {
    const [a, b] = o;
    if (a === 0 || a >= 224) return "unusable";
    if (a === 127) return "loopback";
    if (a === 169 && b === 254) return "link-local";
    // RFC 1918, RFC 6598 shared (carrier) space.
    if (a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) return "private";
    if (a === 100 && b >= 64 && b <= 127) return "private";
    return "public";
  }
  if (net.isIP(h) === 6) {
    if (h === "::1") return "loopback";
    if (h === "::" || h.startsWith("ff")) return "unusable";
    if (/^fe[89ab]/.test(h)) return "link-local";
    if (/^f[cd]/.test(h)) return "private";
    return "public";
  }
  return "name";
}

/** What the rules need to know about the phonebook and the request. */
export interface ProbeContext {
  /** The address the publication came from (its TCP source, or the PROXY protocol's). */
  observed: string | undefined;
  /** The phonebook's own TCP ports (directory, relay, Roughtime) on this host. */
  ownPorts: readonly number[];
  /** This host's own addresses (interfaces); loopback counts as own anyway. null when they cannot be read
   * (no --allow-sys): then every address counts as possibly ours, and the own ports are refused everywhere. */
  ownHosts: readonly string[] | null;
}

function normalHost(h: string): string {
  const o = v4Octets(h);
  return o ? o.join(".") : h.toLowerCase();
}

/** Why `candidate` must not be probed, or null when it may. The rules (docs/protocol.md "The check"):
 * - only IP literals: the phonebook resolves no name a user hands it (a name can point anywhere, and change);
 * - never an unusable or link-local address;
 * - loopback only when the publication itself came from loopback (the user is on the phonebook's host, so
 *   its loopback is ours and it can reach it anyway); a private range only when the publication came from
 *   a private or loopback address (a phonebook on the user's own network): a user on the internet cannot
 *   make the phonebook reach into the network it sits in;
 * - never one of the phonebook's own ports on one of its own addresses. */
export function probeRefusal(candidate: Address, ctx: ProbeContext): ProbeOutcome | null {
  const scope = probeScope(candidate.host);
  if (scope === "name") return "SKIPPED_NAME";
  if (scope === "unusable" || scope === "link-local") return "SKIPPED_SCOPE";
  const from = ctx.observed ? probeScope(ctx.observed) : "unusable";
  if (scope === "loopback" && from !== "loopback") return "SKIPPED_SCOPE";
  if (scope === "private" && from !== "private" && from !== "loopback") return "SKIPPED_SCOPE";
  const host = normalHost(candidate.host);
  const own = scope === "loopback" || ctx.ownHosts === null ||
    ctx.ownHosts.some((h) => normalHost(h) === host);
  if (own && ctx.ownPorts.includes(candidate.port)) return "SKIPPED_OWN_PORT";
  return null;
}

/** Whom the probe expects to find. */
export interface ProbeExpectation {
  name: string;
  /** SHA-256 of the certificate the publication was authenticated with. */
  fingerprint: string;
  /** The knock secret the publication carried (its listener answers nothing else); absent: no knock. */
  knock?: Uint8Array | null;
}

export interface ProbeIo {
  caCertPem: string;
  timeoutMs?: number;
  /** Bytes sent on the TCP connection before the TLS ClientHello, or null for none; default the knock made
   * with `expect.knock` (none without one). Called before connecting; if it throws, the candidate is not
   * tried (SKIPPED_PREAMBLE). */
  preamble?: (candidate: Address, expect: ProbeExpectation) => Uint8Array | null;
  now?: () => number;
  signal?: AbortSignal;
}

/** One probe: TCP, the optional preamble, a TLS 1.3 handshake without a client certificate, then the
 * certificate check; the connection is closed at once whatever happens. Never throws. */
export function probeCandidate(
  candidate: Address,
  expect: ProbeExpectation,
  io: ProbeIo,
): Promise<ProbeOutcome> {
  const timeoutMs = io.timeoutMs ?? REACH_TIMEOUT_MS;
  const now = io.now ?? Date.now;
  return new Promise<ProbeOutcome>((resolve) => {
    let done = false;
    /** Set once the certificate is in hand: the close that follows is ours, not the peer's answer. */
    let judging = false;
    let secure: tls.TLSSocket | null = null;
    let pre: Uint8Array | null;
    try {
      pre = io.preamble
        ? io.preamble(candidate, expect)
        : expect.knock
        ? makeKnock(expect.knock, now())
        : null;
    } catch {
      // The hook could not say what to send (no secret for this user yet): nothing is tried.
      return resolve("SKIPPED_PREAMBLE");
    }
    const raw = net.connect({ host: candidate.host, port: candidate.port });
    const fail = (o: ProbeOutcome) => {
      if (!judging) finish(o);
    };
    const finish = (o: ProbeOutcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      io.signal?.removeEventListener("abort", onAbort);
      secure?.destroy();
      raw.destroy();
      resolve(o);
    };
    const onAbort = () => finish("SKIPPED_CLOSED");
    const timer = setTimeout(() => finish("TIMEOUT"), timeoutMs);
    if (io.signal?.aborted) return finish("SKIPPED_CLOSED");
    io.signal?.addEventListener("abort", onAbort, { once: true });
    raw.on("error", () => fail(secure ? "NOT_TLS" : "CONNECT_FAILED"));
    raw.once("close", () => fail(secure ? "NOT_TLS" : "CONNECT_FAILED"));
    raw.once("connect", () => {
      if (pre && pre.length > 0) raw.write(pre);
      secure = tls.connect({
        socket: raw,
        // Judged below against our CA and the user, not by the TLS stack (it would check a DNS name).
        rejectUnauthorized: false,
        minVersion: "TLSv1.3",
        maxVersion: "TLSv1.3",
      });
      secure.on("error", () => fail("NOT_TLS"));
      secure.once("close", () => fail("NOT_TLS"));
      secure.once("secureConnect", () => {
        judging = true;
        const peer = secure!.getPeerCertificate(true) as { raw?: Uint8Array } | null;
        const der = peer?.raw ? new Uint8Array(peer.raw) : null;
        // Close before judging: nothing more is to be said on this connection.
        secure!.destroy();
        raw.destroy();
        if (!der) return finish("WRONG_PEER");
        judge(der, expect, io.caCertPem, now()).then(finish, () => finish("WRONG_PEER"));
      });
    });
  });
}

async function judge(der: Uint8Array, expect: ProbeExpectation, caCertPem: string, nowMs: number) {
  // The very certificate the user published with: its fingerprint binds everything else (CA, name, serial),
  // but the full check still runs, so a certificate we would never accept is never listed.
  if (fingerprintOf(der) !== expect.fingerprint) return "WRONG_PEER" as const;
  try {
    await verifyPeerCertificate({
      certDer: der,
      caCertPem,
      expectedName: expect.name,
      time: { earliestMs: nowMs, latestMs: nowMs },
    });
    return "REACHABLE" as const;
  } catch (e) {
    if (e instanceof CertificateError) return "WRONG_PEER" as const;
    throw e;
  }
}

/** A round for one publication. */
export interface ProbeRound extends ProbeExpectation {
  candidates: Address[];
  observed: string | undefined;
}

export interface ProbeReport {
  /** The candidates that answered as the user, in the published order. */
  reachable: Address[];
  results: ProbeResult[];
  checkedAt: number;
}

export interface ReachProberOptions extends Omit<ProbeIo, "signal"> {
  /** The phonebook's own ports (read at each round: some are bound after the prober is made). */
  ownPorts: () => readonly number[];
  /** Default: this host's interface addresses (null when they cannot be read: see ProbeContext). */
  ownHosts?: () => readonly string[] | null;
  concurrency?: number;
  queueMax?: number;
  /** Rounds per user (each publication whose candidate set changed, or whose check is stale). */
  rounds?: { perSecond: number; burst: number };
  /** Takes one round from the user's budget `spec` (true: allowed); default: a bucket in this process. A
   * phonebook passes its store's shared bucket, so the budget holds across nodes. */
  takeRound?: (name: string, nowMs: number, spec: { perSecond: number; burst: number }) => Promise<boolean>;
  /** Probes per destination address, over all users (a reflector needs many users naming one victim). */
  perHost?: { perSecond: number; burst: number };
  /** Each candidate's outcome as it is known, tried or not (logs, tests). */
  onProbe?: (r: ProbeResult & { name: string }) => void;
}

function interfaceHosts(): string[] | null {
  try {
    return Deno.networkInterfaces().map((i) => i.address);
  } catch {
    return null;
  }
}

/** The limits around probeCandidate. One per phonebook node. */
export class ReachProber {
  readonly #o: ReachProberOptions;
  readonly #rounds: RateLimiter;
  readonly #roundSpec: { perSecond: number; burst: number };
  readonly #hosts: RateLimiter;
  readonly #abort = new AbortController();
  readonly #concurrency: number;
  readonly #queueMax: number;
  #running = 0;
  readonly #queue: (() => void)[] = [];
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Probes started since the prober was made (tests, benchmarks). */
  started = 0;

  constructor(opts: ReachProberOptions) {
    this.#o = opts;
    const r = opts.rounds ?? { perSecond: REACH_ROUND_PER_SECOND, burst: REACH_ROUND_BURST };
    const h = opts.perHost ?? { perSecond: REACH_HOST_PER_SECOND, burst: REACH_HOST_BURST };
    this.#roundSpec = r;
    this.#rounds = new RateLimiter(r.perSecond, r.burst);
    this.#hosts = new RateLimiter(h.perSecond, h.burst);
    this.#concurrency = opts.concurrency ?? REACH_CONCURRENCY;
    this.#queueMax = opts.queueMax ?? REACH_QUEUE_MAX;
  }

  /** Probes the round's candidates (at most `maxCandidates`, the rest are not tried); null when the user's
   * round budget is spent (nothing tried: the next publication asks again). */
  check(round: ProbeRound, maxCandidates: number): Promise<ProbeReport | null> {
    if (this.#abort.signal.aborted) return Promise.resolve(null);
    // Registered before its first await, so close() waits for a round still asking for its budget.
    const work = this.#round(round, maxCandidates);
    this.#inFlight.add(work);
    work.finally(() => this.#inFlight.delete(work)).catch(() => {});
    return work;
  }

  async #round(round: ProbeRound, maxCandidates: number): Promise<ProbeReport | null> {
    const now = (this.#o.now ?? Date.now)();
    const allowed = this.#o.takeRound
      ? await this.#o.takeRound(round.name, now, this.#roundSpec)
      : this.#rounds.take(round.name, 1, now) === 0;
    if (!allowed || this.#abort.signal.aborted) return null;
    const ctx: ProbeContext = {
      observed: round.observed,
      ownPorts: this.#o.ownPorts(),
      ownHosts: (this.#o.ownHosts ?? interfaceHosts)(),
    };
    const results = await Promise.all(
      round.candidates.slice(0, maxCandidates).map(async (address): Promise<ProbeResult> => {
        const outcome = await this.#one(address, round, ctx, now);
        this.#o.onProbe?.({ name: round.name, address, outcome });
        return { address, outcome };
      }),
    );
    return {
      reachable: results.filter((r) => r.outcome === "REACHABLE").map((r) => r.address),
      results,
      checkedAt: (this.#o.now ?? Date.now)(),
    };
  }

  #one(address: Address, round: ProbeRound, ctx: ProbeContext, now: number): Promise<ProbeOutcome> {
    const refused = probeRefusal(address, ctx);
    if (refused) return Promise.resolve(refused);
    if (this.#hosts.take(normalHost(address.host), 1, now) > 0) return Promise.resolve("SKIPPED_HOST_RATE");
    return this.#slot(() => {
      this.started++;
      return probeCandidate(address, round, { ...this.#o, signal: this.#abort.signal });
    });
  }

  /** Runs `fn` under the concurrency cap; a full queue answers SKIPPED_BUSY at once. */
  #slot(fn: () => Promise<ProbeOutcome>): Promise<ProbeOutcome> {
    if (this.#abort.signal.aborted) return Promise.resolve("SKIPPED_CLOSED");
    const run = async () => {
      this.#running++;
      try {
        return await fn();
      } finally {
        this.#running--;
        this.#queue.shift()?.();
      }
    };
    if (this.#running < this.#concurrency) return run();
    if (this.#queue.length >= this.#queueMax) return Promise.resolve("SKIPPED_BUSY");
    return new Promise<void>((r) => this.#queue.push(r)).then(() =>
      this.#abort.signal.aborted ? "SKIPPED_CLOSED" as const : run()
    );
  }

  /** Probes running now (tests check the cap). */
  get running(): number {
    return this.#running;
  }

  /** Ends every probe (they report SKIPPED_CLOSED) and waits for the rounds to finish. */
  async close(): Promise<void> {
    this.#abort.abort();
    for (const wake of this.#queue.splice(0)) wake();
    await Promise.allSettled([...this.#inFlight]);
  }
}
