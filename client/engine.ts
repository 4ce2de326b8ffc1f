/**
 * The chat engine: peer sessions, the store, the outbox, receipts and self-destruct, behind ChatEngineApi
 * (engine_types.ts). Front ends (headless.ts, tui/) only talk to this class.
 *
 * Time: everything that matters (certificate validity, send times, deadlines) comes from the trusted clock.
 * Expiring messages fail closed: hidden while time is unknown, deleted as soon as their deadline may have
 * passed (expiry.ts).
 */
import crypto from "node:crypto";
import type { ServerSpec, TimeProof, TimeStatus, TrustedTime } from "../clock/types.ts";
import { join } from "node:path";
import { TrustedClock } from "../clock/mod.ts";
import { DirectoryClient } from "./directory_client.ts";
import type { HomeState } from "./home.ts";
import {
  canonicalUsername,
  fingerprintOf,
  type ParsedCrl,
  type VerifiedPeer,
  verifyPeerCertificate,
} from "../pki/mod.ts";
import type {
  ChatEngineApi,
  ChatMessage,
  Contact,
  EngineEvent,
  PeerInfo,
  PinState,
  SendOptions,
} from "./engine_types.ts";
import {
  boundedReadDeadline,
  effectiveDeadline,
  isVisible,
  MAX_UNREAD_MS,
  parseTtl,
  parseTtlMode,
  unreadDeadline,
} from "./expiry.ts";
import { Inbox } from "./inbox.ts";
import { MAX_TEXT_BYTES } from "./protocol/constants.ts";
import { ProtocolError } from "./protocol/errors.ts";
import type { Frame, HelloRole, MsgFrame } from "./protocol/frames.ts";
import { timeProofData } from "./protocol/binding.ts";
import { SessionManager } from "./session/manager.ts";
import type { CloseInfo, LocalIdentity, PeerSession } from "./session/peer_session.ts";
import { SessionError } from "./session/errors.ts";
import { compareCrl, isCrlStale, type RevocationList, RevocationUnknownError } from "./session/revocation.ts";
import type { SessionLimits } from "./session/limits.ts";
import { ChatStore, type OutgoingMessage, type StateChange, type StoredMessage } from "./store/store.ts";

/** What the engine needs of the phonebook (DirectoryClient satisfies it). */
export interface DirectoryLike {
  publish(host: string, port: number, ttlSeconds: number): Promise<void>;
  withdraw(): Promise<void>;
  lookup(name: string): Promise<
    {
      name: string;
      online: boolean;
      address: { host: string; port: number } | null;
      fingerprint: string;
      revoked: boolean;
    } | null
  >;
  /** The CRL, its signature already verified against our CA (DirectoryClient.crl). */
  crl(): Promise<ParsedCrl>;
  list?(): Promise<{ users: { name: string; online: boolean }[] }>;
  close?(): void;
}

/** What the engine needs of the trusted clock (TrustedClock satisfies it). */
export interface ClockLike {
  start(): void;
  stop(): void;
  sync(): Promise<TimeStatus>;
  now(): TrustedTime | null;
  status(): TimeStatus;
  deadlinePassed(deadlineMs: number): boolean | null;
  subscribe(cb: (s: TimeStatus) => void): () => void;
  proveTime(data: Uint8Array): Promise<TimeProof>;
}

export interface ChatEngineOptions {
  name: string;
  certPem: string;
  keyPem: string;
  caPem: string;
  /** The SQLite file (home/chat.db). */
  dbPath: string;
  directory: DirectoryLike;
  clock: ClockLike;
  /** Roughtime public keys whose time proofs we accept (the phonebook's). */
  timeKeys: Uint8Array[];
  /** Default 127.0.0.1:0 (any free port on loopback). */
  listen?: { host: string; port: number };
  /** What we publish, when it differs from the bound address. */
  advertise?: { host: string; port: number };
  limits?: Partial<SessionLimits>;
  /** How often the outbox asks the phonebook whether waiting peers came back. Default 5 s. */
  outboxRetryMs?: number;
  /** How often expiring messages are checked. Default 250 ms. */
  sweepMs?: number;
  /** How long an "after read" message may stay unread, from its send time, before both copies die.
   * Default MAX_UNREAD_MS (client/protocol/constants.ts); tests shorten it. */
  maxUnreadMs?: number;
  /** Lifetime of our published address; refreshed at a third of it. Default 120 s. */
  publishTtlSeconds?: number;
  /** How long the CRL is reused before it is fetched again (also the period of the check that ends sessions
   * with peers revoked since). Default 30 s. */
  crlMaxAgeMs?: number;
  /** Subscribed before start, so events emitted while starting (expiries found at startup) are seen. */
  onEvent?: (e: EngineEvent) => void;
}

export type EngineErrorCode =
  | "BAD_NAME"
  | "BAD_TEXT"
  | "BAD_TTL"
  | "TIME_UNVERIFIED"
  | "TIME_PROOF_FAILED"
  | "NOT_FOUND"
  | "NO_PENDING_KEY"
  | "SELF"
  | "CLOSED"
  | "STORE_FAILED";

export class EngineError extends Error {
  constructor(readonly code: EngineErrorCode, message: string) {
    super(message);
    this.name = "EngineError";
  }
}

const DEFAULT_OUTBOX_RETRY_MS = 5000;
const DEFAULT_SWEEP_MS = 250;
const DEFAULT_PUBLISH_TTL_S = 120;
const DEFAULT_CRL_MAX_AGE_MS = 30_000;
/** After a failed CRL fetch, handshakes wait at least this long before asking the phonebook again (a dead
 * phonebook must not be hammered by every incoming connection), and at most this long once it is back. */
const CRL_RETRY_AFTER_FAILURE_MS = 2000;
/** Bound on one CRL fetch: a handshake waits for it, and a black-holed phonebook must not outlast the peer's
 * hello timeout. */
const CRL_FETCH_TIMEOUT_MS = 5000;
/** Bound on the withdrawal at shutdown: a dead phonebook must not hold up quitting. */
const WITHDRAW_TIMEOUT_MS = 2000;
/** Outbox messages written to a connection per write (then one wait for drain): a flush after a
 * reconnection with thousands queued costs a few writes, not one per message. */
const FLUSH_BATCH = 256;

function toChatMessage(m: Omit<StoredMessage, "seq">, maxUnreadMs: number): ChatMessage {
  const c: ChatMessage = {
    id: m.id,
    peer: m.peer,
    from: m.from,
    direction: m.direction,
    text: m.text,
    sentAt: m.sentAt,
    expiresAt: m.expiresAt,
    ttlMs: m.ttlMs,
    ttlMode: m.ttlMode,
    state: m.state,
  };
  // expiresAt stays null for an unread "after read" message (front ends read it as "starts when shown");
  // the bound it dies at unread is a separate field.
  if (m.ttlMode === "read" && m.ttlMs !== null && m.expiresAt === null) {
    c.unreadExpiresAt = unreadDeadline(m.sentAt, maxUnreadMs);
  }
  return c;
}

function newMessageId(): string {
  return crypto.randomBytes(16).toString("hex");
}

export class ChatEngine implements ChatEngineApi {
  readonly name: string;
  readonly store: ChatStore;
  readonly sessions: SessionManager;
  #address: { host: string; port: number } | null = null;
  readonly #opts: ChatEngineOptions;
  readonly #maxUnreadMs: number;
  readonly #listeners = new Set<(e: EngineEvent) => void>();
  readonly #identity: LocalIdentity;
  readonly #inbox: Inbox;
  /** message id -> session id it was written to, until acknowledged. */
  readonly #inflight = new Map<string, number>();
  readonly #connecting = new Map<string, Promise<PeerSession | null>>();
  readonly #flushing = new Set<string>();
  readonly #online = new Set<string>();
  readonly #flushAgain = new Set<string>();
  /** Received expiring messages not yet announced because time was unknown. */
  readonly #hidden = new Set<string>();
  readonly #peers = new Map<string, VerifiedPeer>();
  readonly #directoryFingerprint = new Map<string, string>();
  readonly #lastDialError = new Map<string, string>();
  /** The last verified CRL (loaded from the store at start, so it survives restarts); null until one was ever
   * obtained, and then every peer is refused (fail closed). */
  #crl: RevocationList | null = null;
  /** performance.now() of the last fetch that got an answer (reuse for crlMaxAgeMs)... */
  #crlFetchedAt: number | null = null;
  /** ...and of the last one that failed (retry no sooner than CRL_RETRY_AFTER_FAILURE_MS). */
  #crlFailedAt: number | null = null;
  #crlFetch: Promise<void> | null = null;
  #crlTimer: ReturnType<typeof setTimeout> | undefined;
  /** The stale-list warning is given once per stale period (reset when a current list arrives). */
  #crlStaleWarned = false;
  /** The "no revocation list yet" error is given once, not at every refused handshake. */
  #crlUnknownWarned = false;
  #timers: ReturnType<typeof setInterval>[] = [];
  #unsubscribeClock: (() => void) | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;
  #markClosed!: () => void;
  readonly #closedPromise = new Promise<void>((r) => this.#markClosed = r);

  private constructor(opts: ChatEngineOptions) {
    const maxUnread = opts.maxUnreadMs ?? MAX_UNREAD_MS;
    if (!Number.isSafeInteger(maxUnread) || maxUnread <= 0) {
      throw new EngineError("BAD_TTL", "maxUnreadMs must be a positive integer number of ms");
    }
    this.#maxUnreadMs = maxUnread;
    this.#opts = opts;
    this.name = opts.name;
    if (opts.onEvent) this.#listeners.add(opts.onEvent);
    this.#identity = {
      name: opts.name,
      certPem: opts.certPem,
      keyPem: opts.keyPem,
      caPem: opts.caPem,
      fingerprint: fingerprintOf(opts.certPem),
      privateKey: crypto.createPrivateKey(opts.keyPem),
    };
    this.store = new ChatStore(opts.dbPath);
    this.#inbox = new Inbox({
      name: opts.name,
      timeKeys: opts.timeKeys,
      maxUnreadMs: maxUnread,
      clock: opts.clock,
      store: this.store,
      emit: (e) => this.#emit(e),
      announce: (m) => this.#emit({ event: "message", message: toChatMessage(m, this.#maxUnreadMs) }),
      hide: (peer, id) => this.#hidden.add(`${peer}\n${id}`),
    });
    this.sessions = new SessionManager(
      this.#identity,
      (der, expected, role) => this.#authenticate(der, expected, role),
      {
        onActive: (s) => this.#onActive(s),
        onFrame: (s, f) => this.#onFrame(s, f),
        onClose: (s, info, wasActive) => this.#onClose(s, info, wasActive),
        onRefused: (r) =>
          this.#emit({
            event: "log",
            level: "warn",
            text: `${r.role === "dialer" ? "dial to" : "connection from"} ${
              r.name ?? "unknown peer"
            } refused: ${r.code}`,
          }),
      },
      opts.limits,
    );
  }

  /** Opens the store, starts the clock (waiting for one sync, bounded by its timeout), listens, publishes our
   * address and starts the outbox and expiry timers. */
  static async start(opts: ChatEngineOptions): Promise<ChatEngine> {
    const e = new ChatEngine(opts);
    try {
      await e.#start();
    } catch (err) {
      await e.close().catch(() => {});
      throw err;
    }
    return e;
  }

  async #start(): Promise<void> {
    const o = this.#opts;
    this.#unsubscribeClock = o.clock.subscribe((status) => {
      this.#emit({ event: "time", status });
      this.#sweep();
    });
    o.clock.start();
    this.#crl = this.store.revocationList();
    // The CRL is fetched with the first time sync: enrollment gives none, and until one was obtained
    // (now or persisted by an earlier run) every peer session is refused.
    await Promise.all([o.clock.sync().catch(() => {}), this.refreshRevocations()]);
    this.#sweep();
    const listen = o.listen ?? { host: "127.0.0.1", port: 0 };
    this.#address = await this.sessions.listen(listen.host, listen.port);
    await this.#publish();
    const ttl = o.publishTtlSeconds ?? DEFAULT_PUBLISH_TTL_S;
    this.#every((ttl * 1000) / 3, () => this.#publish());
    this.#every(o.sweepMs ?? DEFAULT_SWEEP_MS, () => this.#sweep());
    this.#every(o.outboxRetryMs ?? DEFAULT_OUTBOX_RETRY_MS, () => this.#retryOutbox());
    this.#every(o.crlMaxAgeMs ?? DEFAULT_CRL_MAX_AGE_MS, () => this.#dropRevoked());
    this.#retryOutbox();
  }

  #every(ms: number, fn: () => unknown): void {
    const t = setInterval(() => {
      try {
        const r = fn();
        if (r instanceof Promise) r.catch(() => {});
      } catch {
        // a timer's failure is reported by the function itself
      }
    }, ms);
    this.#timers.push(t);
  }

  /** The address we listen on (as bound). */
  get address(): { host: string; port: number } {
    return this.#address ?? { host: "", port: 0 };
  }

  /** The address published to the phonebook. */
  get advertisedAddress(): { host: string; port: number } {
    return this.#opts.advertise ?? this.address;
  }

  async #publish(): Promise<void> {
    const a = this.advertisedAddress;
    try {
      await this.#opts.directory.publish(
        a.host,
        a.port,
        this.#opts.publishTtlSeconds ?? DEFAULT_PUBLISH_TTL_S,
      );
    } catch (e) {
      this.#emit({
        event: "log",
        level: "warn",
        text: `cannot publish our address: ${(e as Error).message}`,
      });
    }
  }

  subscribe(listener: (e: EngineEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(e: EngineEvent): void {
    for (const l of [...this.#listeners]) {
      try {
        l(e);
      } catch {
        // a front end's bug must not break the engine
      }
    }
  }

  // ---- certificates and pins ----

  #certTime(): { earliestMs: number; latestMs: number } {
    const t = this.#opts.clock.now();
    if (t) return { earliestMs: t.earliestMs, latestMs: t.latestMs };
    // Without any verified time we judge validity on the local clock rather than refuse everyone (a blocked
    // time server would otherwise stop all chat). Expiring messages still fail closed.
    const now = Date.now();
    return { earliestMs: now, latestMs: now };
  }

  /** The latest time it may be: trusted when we have it, else the local clock (as for certificates). */
  #latestNow(): number {
    return this.#opts.clock.now()?.latestMs ?? Date.now();
  }

  /** Fetches the CRL now (deduplicated with a fetch in progress) and keeps it when it is not older than the
   * one we hold; never throws. A failure keeps the list we hold. Exposed for tests and front ends that want
   * a revocation to take effect at once. */
  refreshRevocations(): Promise<void> {
    if (!this.#crlFetch) {
      this.#crlFetch = this.#fetchCrl().finally(() => {
        this.#crlFetch = null;
      });
    }
    return this.#crlFetch;
  }

  async #fetchCrl(): Promise<void> {
    let parsed: ParsedCrl;
    try {
      parsed = await Promise.race([
        this.#opts.directory.crl(),
        new Promise<never>((_, reject) => {
          this.#crlTimer = setTimeout(
            () => reject(new Error("revocation list fetch timed out")),
            CRL_FETCH_TIMEOUT_MS,
          );
        }),
      ]);
    } catch (e) {
      this.#crlFailedAt = performance.now();
      if (!this.#crl && !this.#crlUnknownWarned) {
        this.#crlUnknownWarned = true;
        this.#emit({
          event: "log",
          level: "error",
          text: `no revocation list yet (${
            (e as Error).message
          }): peer sessions are refused until one is obtained`,
        });
      }
      this.#warnIfStale();
      return;
    } finally {
      clearTimeout(this.#crlTimer);
    }
    if (this.#closed) return;
    const fresh: RevocationList = {
      serials: parsed.revokedSerials,
      crlNumber: parsed.crlNumber ?? null,
      thisUpdateMs: parsed.thisUpdateMs,
      nextUpdateMs: parsed.nextUpdateMs,
    };
    this.#crlFetchedAt = performance.now();
    const order = this.#crl ? compareCrl(this.#crl, fresh) : "newer";
    if (order === "older") {
      this.#emit({
        event: "log",
        level: "warn",
        text: `the phonebook served an older revocation list (${describeCrl(fresh)}) than the one we hold (${
          describeCrl(this.#crl!)
        }): kept ours (a replayed or cached list could hide revocations)`,
      });
    } else if (order === "newer") {
      try {
        this.store.saveRevocationList(fresh);
      } catch (e) {
        // Still use it in memory: it is verified and newer; only the restart would fall back to the older one.
        this.#emit({
          event: "log",
          level: "warn",
          text: `cannot store the revocation list: ${(e as Error).message}`,
        });
      }
      this.#crl = fresh;
    }
    this.#warnIfStale();
  }

  /** Says once that the list we judge peers on is past its nextUpdate (kept for availability). */
  #warnIfStale(): void {
    if (!this.#crl) return;
    if (!isCrlStale(this.#crl, this.#latestNow())) {
      this.#crlStaleWarned = false;
      return;
    }
    if (this.#crlStaleWarned) return;
    this.#crlStaleWarned = true;
    this.#emit({
      event: "log",
      level: "warn",
      text: `the revocation list (${describeCrl(this.#crl)}) is past its nextUpdate ${
        new Date(this.#crl.nextUpdateMs!).toISOString()
      } and no newer one could be obtained: still using it, recent revocations may be missing`,
    });
  }

  /** The CRL to judge a peer on: refreshed when older than crlMaxAgeMs (failures retried after a short pause),
   * else the one we hold. Throws RevocationUnknownError when no CRL was ever obtained. */
  async #revokedSerials(): Promise<ReadonlySet<string>> {
    const maxAge = this.#opts.crlMaxAgeMs ?? DEFAULT_CRL_MAX_AGE_MS;
    const now = performance.now();
    const current = this.#crlFetchedAt !== null && now - this.#crlFetchedAt < maxAge;
    const pausing = this.#crlFailedAt !== null && now - this.#crlFailedAt < CRL_RETRY_AFTER_FAILURE_MS &&
      (this.#crlFetchedAt === null || this.#crlFailedAt > this.#crlFetchedAt);
    if (!current && !pausing) await this.refreshRevocations();
    if (!this.#crl) throw new RevocationUnknownError();
    return this.#crl.serials;
  }

  /** Refreshes the CRL and ends open sessions whose peer certificate has since been revoked. */
  async #dropRevoked(): Promise<void> {
    await this.refreshRevocations();
    const revoked = this.#crl?.serials;
    if (!revoked) return;
    for (const name of this.sessions.activePeers()) {
      const s = this.sessions.active(name);
      if (s?.peer && revoked.has(s.peer.serial)) {
        this.#emit({
          event: "log",
          level: "warn",
          text: `${name}'s certificate was revoked: session closed`,
        });
        s.fail("CERTIFICATE", "your certificate has been revoked", "REVOKED");
      }
    }
  }

  async #authenticate(der: Uint8Array, expectedName: string | null, role: HelloRole): Promise<VerifiedPeer> {
    const peer = await verifyPeerCertificate({
      certDer: der,
      caCertPem: this.#opts.caPem,
      expectedName: expectedName ?? undefined,
      time: this.#certTime(),
      revokedSerials: await this.#revokedSerials(),
    });
    if (peer.name === this.name) throw new SessionError("CERTIFICATE", "peer presents our own name");
    const c = this.store.contact(peer.name);
    if (c?.pinnedFingerprint && c.pinnedFingerprint !== peer.fingerprint) {
      if (c.pendingFingerprint !== peer.fingerprint) {
        this.store.setPending(peer.name, peer.fingerprint);
        this.#emit({
          event: "key-changed",
          name: peer.name,
          oldFingerprint: c.pinnedFingerprint,
          newFingerprint: peer.fingerprint,
        });
      }
      throw new SessionError("KEY_CHANGED", `${peer.name}'s certificate changed: accept the new key first`);
    }
    if (!c?.pinnedFingerprint) {
      const listed = this.#directoryFingerprint.get(peer.name);
      if (role === "dialer" && listed && listed !== peer.fingerprint) {
        throw new SessionError(
          "CERTIFICATE",
          `${peer.name} presents a certificate the phonebook does not list`,
        );
      }
      this.store.pin(peer.name, peer.fingerprint);
    }
    this.#peers.set(peer.name, peer);
    return peer;
  }

  // ---- sessions ----

  #onActive(s: PeerSession): void {
    const name = s.peer!.name;
    this.#lastDialError.delete(name);
    // A connection that replaces another (simultaneous dials) is not news.
    if (!this.#online.has(name)) {
      this.#online.add(name);
      this.#emit({ event: "peer-online", name });
    }
    void this.#flush(name);
  }

  #onClose(s: PeerSession, _info: CloseInfo, wasActive: boolean): void {
    const name = s.peer?.name ?? s.expectedName;
    for (const [id, sid] of [...this.#inflight]) {
      if (sid !== s.id || !name) continue;
      this.#inflight.delete(id);
      // Queued behind the "sent" of its write, so it applies after it.
      this.#queueState(
        { peer: name, id, state: "failed" },
        () => this.#emit({ event: "failed", id, to: name, reason: "not delivered" }),
      );
    }
    if (!name || this.#closed) return;
    if (wasActive && !this.sessions.active(name) && this.#online.delete(name)) {
      this.#emit({ event: "peer-offline", name });
    }
    if (this.sessions.active(name)) void this.#flush(name);
  }

  /** A session to `name`: the active one, or a new one dialed at the address the phonebook lists. */
  #connect(name: string): Promise<PeerSession | null> {
    const active = this.sessions.active(name);
    if (active) return Promise.resolve(active);
    let p = this.#connecting.get(name);
    if (p) return p;
    p = (async () => {
      let entry;
      try {
        entry = await this.#opts.directory.lookup(name);
      } catch {
        return null;
      }
      if (!entry || entry.revoked || !entry.online || !entry.address) return null;
      this.#directoryFingerprint.set(name, entry.fingerprint);
      try {
        return await this.sessions.dial(name, entry.address.host, entry.address.port);
      } catch (e) {
        const code = (e as SessionError).detail ?? (e as SessionError).code ?? "CONNECT_FAILED";
        if (this.#lastDialError.get(name) !== code) {
          this.#lastDialError.set(name, code);
          this.#emit({ event: "error", code: `PEER_${code}`, message: `${name}: ${(e as Error).message}` });
        }
        return null;
      }
    })().finally(() => this.#connecting.delete(name));
    this.#connecting.set(name, p);
    return p;
  }

  #retryOutbox(): void {
    if (this.#closed) return;
    const peers = new Set(this.store.outboxPeers());
    for (const r of this.store.pendingReads()) peers.add(r.peer);
    for (const peer of peers) {
      if (this.sessions.active(peer)) void this.#flush(peer);
      else void this.#connect(peer);
    }
  }

  #frameOf(m: StoredMessage): MsgFrame {
    const f: MsgFrame = { t: "msg", id: m.id, from: this.name, to: m.peer, text: m.text, sentAt: m.sentAt };
    if (m.ttlMs !== null) {
      f.ttlMs = m.ttlMs;
      f.ttlMode = m.ttlMode ?? "send";
      f.proof = m.proof ?? undefined;
    }
    return f;
  }

  /** Writes the peer's outbox to its session. One flush per peer at a time; a request that arrives during a
   * flush makes it go round once more (so a burst of sends costs one outbox query per round, not per send). */
  async #flush(peer: string): Promise<void> {
    if (this.#flushing.has(peer)) {
      this.#flushAgain.add(peer);
      return;
    }
    this.#flushing.add(peer);
    try {
      do {
        this.#flushAgain.delete(peer);
        await this.#flushOnce(peer);
      } while (this.#flushAgain.has(peer) && !this.#closed);
    } finally {
      this.#flushing.delete(peer);
    }
  }

  async #flushOnce(peer: string): Promise<void> {
    const s = this.sessions.active(peer);
    if (!s) return;
    const reads = this.store.pendingReads(peer);
    if (reads.length) {
      try {
        await s.sendBatch(reads.map((r) => ({ t: "read", id: r.id, readAt: r.readAt })));
      } catch {
        return;
      }
      this.store.removePendingReads(peer, reads.map((r) => r.id));
    }
    const due = this.store.outbox(peer, this.#inflight).filter((m) => {
      const deadline = effectiveDeadline(m, this.#maxUnreadMs);
      return deadline === null || this.#opts.clock.deadlinePassed(deadline) !== true;
    });
    for (let i = 0; i < due.length; i += FLUSH_BATCH) {
      if (s.state !== "open") return;
      // A message may have been written by a flush of a newer session meanwhile (its ack may be back).
      const batch = due.slice(i, i + FLUSH_BATCH).filter((m) => !this.#inflight.has(m.id));
      for (const m of batch) this.#inflight.set(m.id, s.id);
      const written = s.sendBatch(batch.map((m) => this.#frameOf(m)));
      for (const m of batch) {
        this.#queueState(
          { peer, id: m.id, state: "sent" },
          () => this.#emit({ event: "sent", id: m.id, to: peer }),
        );
      }
      try {
        await written;
      } catch {
        for (const m of batch) this.#inflight.delete(m.id);
        return;
      }
    }
  }

  /** A delivery state change through the group committer; `then` runs when it changed the message,
   * `always` once it is settled. */
  #queueState(change: StateChange, then: () => void, always?: () => void): void {
    this.store.queueState(change).then((changed) => {
      always?.();
      if (changed) then();
    }, (e: Error) => {
      always?.();
      this.#emit({ event: "error", code: "STORE_FAILED", message: e.message });
    });
  }

  async #onFrame(s: PeerSession, f: Frame): Promise<void> {
    const peer = s.peer!.name;
    switch (f.t) {
      case "msg":
        return await this.#onMessage(s, f);
      case "ack": {
        // Still "in flight" until "delivered" is committed, so no flush in between writes it again.
        this.#queueState(
          { peer, id: f.id, state: "delivered" },
          () => this.#emit({ event: "delivered", id: f.id, to: peer }),
          () => this.#inflight.delete(f.id),
        );
        return;
      }
      case "read": {
        const m = this.store.get(peer, f.id);
        if (!m || m.direction !== "out" || m.readAt !== null) return;
        // The reader's claim cannot push our deadline later than our own trusted now allows.
        const latest = this.#opts.clock.now()?.latestMs ?? f.readAt;
        const readAt = Math.min(f.readAt, latest);
        const deadline = m.ttlMode === "read" && m.ttlMs !== null
          ? boundedReadDeadline({
            readAtMs: readAt,
            sentAtMs: m.sentAt,
            ttlMs: m.ttlMs,
            maxUnreadMs: this.#maxUnreadMs,
          })
          : null;
        this.store.queueReadReceipt({ peer, id: f.id, readAt, expiresAt: deadline }).then((changed) => {
          this.#inflight.delete(f.id);
          if (changed) this.#emit({ event: "read", id: f.id, by: peer });
        }, (e: Error) => {
          this.#inflight.delete(f.id);
          this.#emit({ event: "error", code: "STORE_FAILED", message: e.message });
        });
        return;
      }
      case "typing":
        this.#emit({ event: "typing", from: peer });
        return;
      default:
        throw new ProtocolError("UNEXPECTED_FRAME", `"${f.t}" is not expected here`);
    }
  }

  /** Checks, group commit and the receipt after it: client/inbox.ts. */
  #onMessage(s: PeerSession, f: MsgFrame): Promise<void> {
    return this.#inbox.receive(s, f);
  }

  // ---- expiry ----

  #sweep(): void {
    if (this.#closed) return;
    const time = this.#opts.clock.now();
    if (!time) return;
    const dead = this.store.expiring().filter((r) => {
      const deadline = effectiveDeadline(r, this.#maxUnreadMs);
      return deadline !== null && time.latestMs >= deadline;
    });
    if (dead.length) {
      try {
        this.store.deleteMessages(dead);
      } catch (e) {
        this.#emit({ event: "error", code: "STORE_FAILED", message: (e as Error).message });
        return;
      }
      for (const d of dead) {
        this.#inflight.delete(d.id);
        this.#hidden.delete(`${d.peer}\n${d.id}`);
        this.#emit({ event: "expired", id: d.id, peer: d.peer });
      }
    }
    for (const key of [...this.#hidden]) {
      const [peer, id] = key.split("\n");
      const m = this.store.get(peer, id);
      this.#hidden.delete(key);
      if (m && isVisible(m, time, this.#maxUnreadMs)) {
        this.#emit({ event: "message", message: toChatMessage(m, this.#maxUnreadMs) });
      }
    }
  }

  // ---- the API ----

  async send(to: string, text: string, opts: SendOptions = {}): Promise<ChatMessage> {
    if (this.#closed) throw new EngineError("CLOSED", "engine is closed");
    let peer: string;
    try {
      peer = canonicalUsername(to);
    } catch (e) {
      throw new EngineError("BAD_NAME", `bad contact name: ${(e as Error).message}`);
    }
    if (peer === this.name) throw new EngineError("SELF", "cannot send to yourself");
    if (typeof text !== "string" || text.length === 0) throw new EngineError("BAD_TEXT", "empty message");
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      throw new EngineError("BAD_TEXT", `message longer than ${MAX_TEXT_BYTES} bytes`);
    }
    const contact = this.store.ensureContact(peer);
    let ttlMs: number | null;
    try {
      ttlMs = opts.ttlMs === undefined
        ? contact.defaultTtlMs
        : opts.ttlMs === null
        ? null
        : parseTtl(opts.ttlMs);
      if (opts.ttlMode !== undefined) parseTtlMode(opts.ttlMode);
    } catch (e) {
      throw new EngineError("BAD_TTL", (e as Error).message);
    }
    const ttlMode = ttlMs === null ? null : (opts.ttlMode ?? "send");
    const time = this.#opts.clock.now();
    if (ttlMs !== null && !time) {
      throw new EngineError("TIME_UNVERIFIED", "an expiring message needs verified time; try again shortly");
    }
    const id = newMessageId();
    // The upper end of the trusted interval: the deadline (sentAt + ttl) is then reached exactly ttl after
    // sending as measured by our clock, and a receiver can only cut it shorter (expiry.ts).
    const sentAt = Math.ceil(time ? time.latestMs : Date.now());
    let proof: TimeProof | null = null;
    if (ttlMs !== null) {
      try {
        proof = await this.#opts.clock.proveTime(
          timeProofData({ id, from: this.name, to: peer, text, sentAt, ttlMs, ttlMode: ttlMode ?? "send" }),
        );
      } catch (e) {
        throw new EngineError(
          "TIME_PROOF_FAILED",
          `no time server signed the send time: ${(e as Error).message}`,
        );
      }
    }
    const expiresAt = ttlMs !== null && ttlMode === "send" ? sentAt + ttlMs : null;
    const m: OutgoingMessage = {
      id,
      peer,
      from: this.name,
      text,
      sentAt,
      expiresAt,
      ttlMs,
      ttlMode,
      state: "sending",
      proof,
    };
    try {
      // Group commit: sends issued together share one transaction (one fsync).
      await this.store.queueOutgoing(m);
    } catch (e) {
      throw new EngineError("STORE_FAILED", (e as Error).message);
    }
    if (this.sessions.active(peer)) void this.#flush(peer);
    else void this.#connect(peer);
    return toChatMessage({ ...m, direction: "out", readAt: null }, this.#maxUnreadMs);
  }

  #pinState(name: string): PinState {
    const c = this.store.contact(name);
    if (!c || !c.pinnedFingerprint) return "first-use";
    if (c.pendingFingerprint) return "changed";
    return c.verified ? "verified" : "pinned";
  }

  async contacts(): Promise<Contact[]> {
    const names = new Set(this.store.contacts().map((c) => c.name));
    const listedOnline = new Map<string, boolean>();
    if (this.#opts.directory.list) {
      try {
        for (const u of (await this.#opts.directory.list()).users) {
          if (u.name === this.name) continue;
          names.add(u.name);
          listedOnline.set(u.name, u.online);
        }
      } catch {
        // the phonebook is unreachable: show what we know
      }
    }
    return [...names].sort().map((name) => ({
      name,
      online: this.sessions.active(name) !== null || listedOnline.get(name) === true,
      unread: this.store.unreadCount(name),
      pin: this.#pinState(name),
      defaultTtlMs: this.store.contact(name)?.defaultTtlMs ?? null,
    }));
  }

  history(peer: string): ChatMessage[] {
    const time = this.#opts.clock.now();
    return this.store.history(peer).filter((m) => isVisible(m, time, this.#maxUnreadMs)).map((m) =>
      toChatMessage(m, this.#maxUnreadMs)
    );
  }

  /** Records the first display of a received message (starting an "after read" lifetime) and sends the read
   * receipt. Throws EngineError NOT_FOUND (or TIME_UNVERIFIED for an expiring message without time). */
  markRead(id: string): void {
    const time = this.#opts.clock.now();
    const m = this.store.findById(id).find((x) => x.direction === "in");
    if (!m || !isVisible(m, time, this.#maxUnreadMs)) throw new EngineError("NOT_FOUND", "no such message");
    if (m.readAt !== null) return;
    if (m.ttlMs !== null && !time) throw new EngineError("TIME_UNVERIFIED", "time is not verified");
    const readAt = Math.ceil(time ? time.latestMs : Date.now());
    const deadline = m.ttlMode === "read" && m.ttlMs !== null
      ? boundedReadDeadline({
        readAtMs: readAt,
        sentAtMs: m.sentAt,
        ttlMs: m.ttlMs,
        maxUnreadMs: this.#maxUnreadMs,
      })
      : null;
    this.store.markRead(m.peer, m.id, readAt, deadline);
    // Kept until written to the sender's connection (across restarts), so the receipt is not lost offline.
    this.store.addPendingRead(m.peer, m.id, readAt);
    if (this.sessions.active(m.peer)) void this.#flush(m.peer);
  }

  setDefaultTtl(peer: string, ttlMs: number | null): void {
    let v: number | null;
    try {
      v = ttlMs === null ? null : parseTtl(ttlMs);
    } catch (e) {
      throw new EngineError("BAD_TTL", (e as Error).message);
    }
    this.store.setDefaultTtl(peer, v);
  }

  acceptKey(peer: string): void {
    const c = this.store.contact(peer);
    if (!c?.pendingFingerprint) throw new EngineError("NO_PENDING_KEY", `no changed key waiting for ${peer}`);
    this.store.pin(peer, c.pendingFingerprint);
    this.#lastDialError.delete(peer);
    void this.#connect(peer);
  }

  markVerified(peer: string): void {
    const c = this.store.contact(peer);
    if (!c?.pinnedFingerprint) throw new EngineError("NOT_FOUND", `no key pinned for ${peer}`);
    this.store.setVerified(peer, true);
  }

  peerInfo(peer: string): PeerInfo | null {
    const v = this.#peers.get(peer);
    const c = this.store.contact(peer);
    if (!v) return null;
    const s = this.sessions.active(peer);
    const t = this.#opts.clock.now();
    return {
      name: v.name,
      subject: v.subject,
      issuer: v.issuer,
      serial: v.serial,
      notBefore: v.notBefore,
      notAfter: v.notAfter,
      validNow: t ? v.notBefore <= t.earliestMs && t.latestMs <= v.notAfter : null,
      fingerprint: v.fingerprint,
      pinnedFingerprint: c?.pinnedFingerprint ?? null,
      revoked: this.#crl?.serials.has(v.serial) ?? false,
      revocationStale: this.#crl ? isCrlStale(this.#crl, this.#latestNow()) : true,
      pin: this.#pinState(peer),
      tlsVersion: s?.tlsVersion ?? null,
      cipher: s?.cipher ?? null,
      connected: s !== null,
    };
  }

  ownFingerprint(): string {
    return this.#identity.fingerprint;
  }

  typing(peer: string): void {
    void this.sessions.active(peer)?.send({ t: "typing" }).catch(() => {});
  }

  timeStatus(): TimeStatus {
    return this.#opts.clock.status();
  }

  /** Resolves once close() has finished (a signal handler may close the engine under a front end). */
  get closed(): Promise<void> {
    return this.#closedPromise;
  }

  /** Stops timers, withdraws our address (bounded), closes every session, the clock and the store. */
  close(): Promise<void> {
    if (!this.#closing) this.#closing = this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    clearTimeout(this.#crlTimer);
    this.#unsubscribeClock?.();
    this.#opts.clock.stop();
    if (this.#address) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#opts.directory.withdraw().catch(() => {}),
        new Promise<void>((r) => timer = setTimeout(r, WITHDRAW_TIMEOUT_MS)),
      ]);
      clearTimeout(timer);
    }
    await this.sessions.close();
    await Promise.allSettled([...this.#connecting.values()]);
    this.store.close();
    this.#opts.directory.close?.();
    this.#markClosed();
  }
}

/** Options for starting an engine from an enrolled home folder. */
export interface HomeEngineOptions extends
  Pick<
    ChatEngineOptions,
    | "listen"
    | "advertise"
    | "limits"
    | "outboxRetryMs"
    | "sweepMs"
    | "maxUnreadMs"
    | "publishTtlSeconds"
    | "onEvent"
  > {
  /** Bound on one Roughtime sync. Default 1500 ms. */
  timeQueryTimeoutMs?: number;
  /** Default 10 min. */
  timeRefreshIntervalMs?: number;
  /** More Roughtime servers to cross-check the phonebook's against (they vote on the time; time proofs for
   * messages still come from the phonebook's server, the one every peer trusts). */
  extraTimeServers?: ServerSpec[];
}

/** The engine of an enrolled user: its phonebook client, its trusted clock on the phonebook's Roughtime
 * server(s), and `chat.db` in the home folder. */
export async function startEngineFromHome(
  home: HomeState,
  opts: HomeEngineOptions = {},
): Promise<ChatEngine> {
  const directory = new DirectoryClient({
    url: home.server,
    caPem: home.caPem,
    certPem: home.certPem,
    keyPem: home.keyPem,
  });
  const clock = new TrustedClock({
    servers: [...home.roughtime, ...(opts.extraTimeServers ?? [])],
    proofServers: home.roughtime,
    queryTimeoutMs: opts.timeQueryTimeoutMs,
    refreshIntervalMs: opts.timeRefreshIntervalMs,
  });
  try {
    return await ChatEngine.start({
      name: home.name,
      certPem: home.certPem,
      keyPem: home.keyPem,
      caPem: home.caPem,
      dbPath: join(home.dir, CHAT_DB_FILE),
      directory,
      clock,
      timeKeys: home.roughtime.map((r) => r.publicKey),
      listen: opts.listen,
      advertise: opts.advertise,
      limits: opts.limits,
      outboxRetryMs: opts.outboxRetryMs,
      sweepMs: opts.sweepMs,
      maxUnreadMs: opts.maxUnreadMs,
      publishTtlSeconds: opts.publishTtlSeconds,
      onEvent: opts.onEvent,
    });
  } catch (e) {
    directory.close();
    throw e;
  }
}

export const CHAT_DB_FILE = "chat.db";

function describeCrl(c: RevocationList): string {
  return `${c.crlNumber === null ? "no CRL Number" : `CRL Number ${c.crlNumber}`}, thisUpdate ${
    new Date(c.thisUpdateMs).toISOString()
  }`;
}
