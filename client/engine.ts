/**
 * The chat engine: a thin front over its parts, behind ChatEngineApi (engine_types.ts). Front ends
 * (headless.ts, tui/) only talk to this class. Each part lives in its own file and knows nothing of the
 * others; this class wires them together:
 * - revocation/cache.ts: the CRL peers are judged on (fails closed before one was ever obtained);
 * - peer_trust.ts: whether a certificate is the person we mean (CA, name, revocation, pin);
 * - dialer.ts: a session to a peer on demand (phonebook look-up, dial);
 * - outbox.ts: our messages from "sending" to a receipt, and the read receipts we owe;
 * - expiry_sweeper.ts: deletes expiring messages at their deadline, shows hidden ones when time allows;
 * - presence.ts: our address in the phonebook;
 * - candidates.ts: what we publish (every address we can be dialled at) and how a session runs (its path);
 * - relay_client.ts: our control connection to the relay, and relayed circuits both ways;
 * - session/: the TLS listener and peer sessions; store/: chat.db.
 *
 * Time: everything that matters (certificate validity, send times, deadlines) comes from the trusted clock.
 * Expiring messages fail closed: hidden while time is unknown, deleted as soon as their deadline may have
 * passed (expiry.ts). Timers come from one injected Scheduler (scheduler.ts).
 */
import crypto from "node:crypto";
import { join } from "node:path";
import {
  type ServerSpec,
  type TimeProof,
  type TimeStatus,
  TrustedClock,
  type TrustedTime,
} from "../clock/mod.ts";
import { canonicalUsername, fingerprintOf, type ParsedCrl } from "../pki/mod.ts";
import { messageOf } from "../coded_error.ts";
import { DirectoryClient } from "./directory_client.ts";
import type { HomeState } from "./home.ts";
import type {
  ChatEngineApi,
  ChatMessage,
  Contact,
  EngineEvent,
  PeerInfo,
  PhonebookStatus,
  RecipientStatus,
  SendOptions,
} from "./engine_types.ts";
import { EngineError } from "./engine_errors.ts";
import {
  boundedReadDeadline,
  isVisible,
  MAX_UNREAD_MS,
  parseTtl,
  parseTtlMode,
  unreadDeadline,
} from "./expiry.ts";
import { MAX_TEXT_BYTES } from "./protocol/constants.ts";
import { ProtocolError } from "./protocol/errors.ts";
import type { Frame } from "./protocol/frames.ts";
import { timeProofData } from "./protocol/binding.ts";
import { SessionManager } from "./session/manager.ts";
import type { CloseInfo, LocalIdentity, PeerSession } from "./session/peer_session.ts";
import type { SessionLimits } from "./session/limits.ts";
import { ChatStore, type OutgoingMessage, type StoredMessage } from "./store/store.ts";
import { RevocationCache } from "./revocation/mod.ts";
import { PeerTrust } from "./peer_trust.ts";
import { type DialEntry, Dialer } from "./dialer.ts";
import { Outbox } from "./outbox.ts";
import { ExpirySweeper } from "./expiry_sweeper.ts";
import { Presence } from "./presence.ts";
import net from "node:net";
import { MAX_CANDIDATES } from "../contract/mod.ts";
import {
  type Address,
  addressKind,
  describePath,
  localAddresses,
  type Publication,
  publicationFor,
} from "./candidates.ts";
import { RelayClient } from "./relay_client.ts";
import { DirectUpgrade } from "./upgrade.ts";
import { type Mapping, mapPort } from "./port_mapping.ts";
import { Inbox } from "./inbox.ts";
import { realScheduler, type Scheduler, type Timer } from "./scheduler.ts";

export { EngineError, type EngineErrorCode } from "./engine_errors.ts";

/** What the engine needs of the phonebook (DirectoryClient satisfies it). */
export interface DirectoryLike {
  publish(host: string, port: number, ttlSeconds: number, reach?: Publication): Promise<void>;
  /** The phonebook's relay, or null when it runs none (DirectoryClient asks /v1/info). */
  relayAddress?(): Promise<Address | null>;
  withdraw(): Promise<void>;
  lookup(name: string): Promise<(DialEntry & { name: string }) | null>;
  /** The CRL, its signature already verified against our CA (DirectoryClient.crl). */
  crl(): Promise<ParsedCrl>;
  list?(): Promise<{ users: { name: string; online: boolean; revoked?: boolean }[] }>;
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
  /** What we publish, when it differs from the bound address (a list: every one of them, best first). A
   * listener on all interfaces without it publishes each interface address with the bound port. */
  advertise?: Address | Address[];
  /** The relay to hold a control connection to: default the phonebook's (if it runs one); null for none. */
  relay?: Address | null;
  /** Publish no address of ours and dial peers only through the relay (which then must be there). */
  relayOnly?: boolean;
  /** Ask the router for a port mapping (NAT-PMP) when listening on every interface. Default false here (the
   * CLI turns it on unless --no-port-mapping). */
  portMapping?: boolean;
  limits?: Partial<SessionLimits>;
  /** How often the outbox asks the phonebook whether waiting peers came back. Default 5 s. */
  outboxRetryMs?: number;
  /** How long an "after read" message may stay unread, from its send time, before both copies die.
   * Default MAX_UNREAD_MS (client/protocol/constants.ts); tests shorten it. */
  maxUnreadMs?: number;
  /** Lifetime of our published address; refreshed at a third of it. Default 120 s. */
  publishTtlSeconds?: number;
  /** How long the CRL is reused before it is fetched again (also the period of the check that ends sessions
   * with peers revoked since). Default 30 s. */
  crlMaxAgeMs?: number;
  /** Timers of the engine's parts (default: the runtime's). */
  scheduler?: Scheduler;
  /** Subscribed before start, so events emitted while starting (expiries found at startup) are seen. */
  onEvent?: (e: EngineEvent) => void;
}

/** A snapshot of the session with one peer, for diagnostics and tests. */
export interface ConnectionInfo {
  /** Changes when the connection is replaced. */
  sessionId: number;
  role: "dialer" | "listener";
  tlsVersion: string | null;
  cipher: string | null;
  /** Read backpressure: how often reading paused, the most bytes held undecoded, the largest chunk read. */
  readPauses: number;
  maxBufferedBytes: number;
  maxChunkBytes: number;
  /** Answers received to our keep-alive pings. */
  pongs: number;
}

/** Counters for diagnostics and tests (the parts' state stays private). */
export interface EngineStats {
  /** Peer sessions open or opening. */
  sessions: number;
  /** Received expiring messages waiting for verified time to be shown. */
  hidden: number;
  /** Transactions the store's group committer has made (each one fsync at most). */
  commits: number;
}

const DEFAULT_OUTBOX_RETRY_MS = 5000;

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
  readonly #opts: ChatEngineOptions;
  readonly #scheduler: Scheduler;
  readonly #maxUnreadMs: number;
  readonly #listeners = new Set<(e: EngineEvent) => void>();
  readonly #identity: LocalIdentity;
  readonly #store: ChatStore;
  readonly #sessions: SessionManager;
  readonly #revocation: RevocationCache;
  readonly #trust: PeerTrust;
  readonly #dialer: Dialer;
  readonly #outbox: Outbox;
  readonly #sweeper: ExpirySweeper;
  readonly #presence: Presence;
  #relay: RelayClient | null = null;
  readonly #upgrade: DirectUpgrade;
  #mapping: Promise<Mapping | null> | null = null;
  #mapped: Mapping | null = null;
  readonly #inbox: Inbox;
  /** Peers announced online (a replacing connection is not news). */
  readonly #online = new Set<string>();
  #address: { host: string; port: number } | null = null;
  #timers: Timer[] = [];
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
    this.#scheduler = opts.scheduler ?? realScheduler;
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
    const emit = (e: EngineEvent) => this.#emit(e);
    const log = (level: "info" | "warn" | "error", text: string) => emit({ event: "log", level, text });
    const store = this.#store = new ChatStore(opts.dbPath);
    const clock = opts.clock;
    this.#revocation = new RevocationCache({
      fetch: () => opts.directory.crl(),
      load: () => store.revocationList(),
      save: (l) => store.saveRevocationList(l),
      latestNowMs: () => this.#latestNow(),
      log,
      scheduler: this.#scheduler,
      maxAgeMs: opts.crlMaxAgeMs,
    });
    this.#trust = new PeerTrust({
      ownName: opts.name,
      caPem: opts.caPem,
      certTime: () => this.#certTime(),
      revokedSerials: () => this.#revocation.revokedSerials(),
      pins: store,
      emit,
    });
    this.#sessions = new SessionManager(
      this.#identity,
      (der, expected, role) => this.#trust.authenticate(der, expected, role),
      {
        onActive: (s) => this.#onActive(s),
        onFrame: (s, f) => this.#onFrame(s, f),
        onClose: (s, info, wasActive) => this.#onClose(s, info, wasActive),
        onRefused: (r) =>
          log(
            "warn",
            // The reason too, not only its code ("refused: TLS" said nothing); the code stays last.
            `${r.role === "dialer" ? "dial to" : "connection from"} ${r.name ?? "unknown peer"}${
              r.message ? `: ${r.message};` : ""
            } refused: ${r.code}`,
          ),
      },
      opts.limits,
    );
    this.#dialer = new Dialer({
      // Relay-only: dialling a listed address would show the peer ours, so none is tried.
      lookup: async (name) => {
        const e = await opts.directory.lookup(name);
        return e && opts.relayOnly ? { ...e, candidates: [] } : e;
      },
      active: (name) => this.#sessions.active(name),
      dial: (name, host, port) => this.#sessions.dial(name, host, port),
      noteListed: (name, fp) => this.#trust.noteListed(name, fp),
      emit,
    }, {
      connect: connectTcp,
      relayCircuit: async (name) => {
        const r = this.#relay;
        if (!r) throw new EngineError("CLOSED", "no relay");
        return { socket: await r.dial(name), relay: r.relay };
      },
      haveRelay: () => this.#relay?.connected === true,
      dialOver: (name, socket, path) => this.#sessions.dialOver(name, socket, path),
      reverse: async (name) => {
        if (!this.#relay) throw new EngineError("NO_RELAY", "no relay");
        await this.#relay.reverse(name);
      },
      // Dial-back is worth asking for when we publish an address peers on the internet can dial.
      reachable: () =>
        this.publication().candidates.some((c) => ["public", "ipv6"].includes(addressKind(c.host))),
    });
    this.#upgrade = new DirectUpgrade({
      lookup: (name) => opts.directory.lookup(name),
      punch: (name, port) => {
        if (!this.#relay) return Promise.reject(new EngineError("NO_RELAY", "no relay"));
        return this.#relay.punch(name, port);
      },
      punchReply: (to, port) => this.#relay?.punchReply(to, port),
      dialOver: (name, socket, path) => this.#sessions.dialOver(name, socket, path, { replace: true }),
      accept: (socket, path) => this.#sessions.acceptSocket(socket, path),
      log,
    });
    this.#outbox = new Outbox({
      ownName: opts.name,
      store,
      session: (peer) => this.#sessions.active(peer),
      connect: (peer) => void this.#dialer.connect(peer),
      deadlinePassed: (d) => clock.deadlinePassed(d),
      latestNowMs: () => clock.now()?.latestMs ?? null,
      maxUnreadMs: maxUnread,
      emit,
      onDeadline: () => this.#sweeper.sweep(),
    });
    this.#sweeper = new ExpirySweeper({
      store,
      now: () => clock.now(),
      maxUnreadMs: maxUnread,
      scheduler: this.#scheduler,
      emit,
      onDeleted: (_peer, id) => this.#outbox.forget(id),
      toChatMessage: (m) => toChatMessage(m, maxUnread),
    });
    this.#inbox = new Inbox({
      name: opts.name,
      timeKeys: opts.timeKeys,
      maxUnreadMs: maxUnread,
      clock,
      store,
      emit,
      announce: (m) => {
        emit({ event: "message", message: toChatMessage(m, maxUnread) });
        // A new deadline may come before the one the sweeper sleeps until.
        if (m.ttlMs !== null) this.#sweeper.sweep();
      },
      hide: (peer, id) => {
        this.#sweeper.hide(peer, id);
        this.#sweeper.sweep();
      },
    });
    this.#presence = new Presence({
      publish: (host, port, ttl, reach) => opts.directory.publish(host, port, ttl, reach),
      withdraw: () => opts.directory.withdraw(),
      address: () => this.advertisedAddress,
      publication: () => this.publication(),
      log,
      scheduler: this.#scheduler,
      ttlSeconds: opts.publishTtlSeconds,
    });
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
      this.#sweeper.sweep();
    });
    o.clock.start();
    // The CRL is fetched with the first time sync: enrollment gives none, and until one was obtained
    // (now or persisted by an earlier run) every peer session is refused.
    await Promise.all([o.clock.sync().catch(() => {}), this.#revocation.refresh()]);
    this.#sweeper.sweep();
    const listen = o.listen ?? { host: "127.0.0.1", port: 0 };
    this.#address = await this.#sessions.listen(listen.host, listen.port);
    await this.#startRelay();
    await this.#presence.start();
    // In the background: a network without a mapping router costs its timeout, which must not hold up the
    // start. Once mapped, we publish again with the mapping first.
    if (o.portMapping && !o.relayOnly && !o.advertise && ["::", "0.0.0.0"].includes(this.#address.host)) {
      this.#mapping = mapPort(this.#address.port, (text) => this.#emit({ event: "log", level: "info", text }))
        .then((m) => {
          this.#mapped = m;
          if (m && !this.#closed) void this.#presence.publish();
          return m;
        });
    }
    this.#every(o.outboxRetryMs ?? DEFAULT_OUTBOX_RETRY_MS, () => this.#outbox.retryAll());
    this.#every(this.#revocation.maxAgeMs, () => this.#dropRevoked());
    this.#outbox.retryAll();
  }

  /** The control connection to the relay (the phonebook's unless told otherwise). A relay that cannot be
   * reached is retried in the background: direct paths work without it. */
  async #startRelay(): Promise<void> {
    const o = this.#opts;
    let relay: Address | null = null;
    if (o.relay !== undefined) relay = o.relay;
    else {
      relay = await (o.directory.relayAddress?.() ?? Promise.resolve(null)).catch(() => null);
    }
    if (!relay) {
      if (o.relayOnly) {
        throw new EngineError("NO_RELAY", "relay-only needs a relay, and the phonebook runs none");
      }
      return;
    }
    const log = (level: "info" | "warn", text: string) => this.#emit({ event: "log", level, text });
    const r = new RelayClient({
      relay,
      certPem: o.certPem,
      keyPem: o.keyPem,
      caPem: o.caPem,
      onIncoming: (socket) => this.#sessions.acceptSocket(socket, { kind: "relayed", address: relay }),
      onDialBack: (from) => {
        if (!this.#closed) void this.#dialer.dialBack(from);
      },
      onPunch: (from, port) => {
        if (!this.#closed && !o.relayOnly) void this.#upgrade.onPunch(from, port);
      },
      // Back on the relay: peers waiting in the outbox may now be reachable through it.
      onState: (up) => up && !this.#closed && this.#outbox.retryAll(),
      log,
    });
    this.#relay = r;
    await r.start();
    if (!r.connected) log("warn", `relay ${relay.host}:${relay.port} not reachable yet; retrying`);
  }

  /** What we publish now: our candidates (or none, relay-only) and the relay we hold a connection to. */
  publication(): Publication {
    const adv = this.#opts.advertise;
    return publicationFor({
      bound: this.address,
      advertise: adv === undefined ? [] : Array.isArray(adv) ? adv : [adv],
      relay: this.#relay?.relay ?? null,
      relayOnly: this.#opts.relayOnly === true,
      ifaces: localAddresses(),
      max: MAX_CANDIDATES,
      mapped: this.#mapped?.external ?? null,
    });
  }

  #every(ms: number, fn: () => unknown): void {
    this.#timers.push(this.#scheduler.every(ms, () => {
      try {
        const r = fn();
        if (r instanceof Promise) r.catch(() => {});
      } catch {
        // a timer's failure is reported by the function itself
      }
    }));
  }

  /** The address we listen on (as bound). */
  get address(): { host: string; port: number } {
    return this.#address ?? { host: "", port: 0 };
  }

  /** The address published to the phonebook. */
  get advertisedAddress(): { host: string; port: number } {
    return this.publication().candidates[0] ?? this.#relay?.relay ?? this.address;
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

  // ---- time ----

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

  // ---- revocation ----

  /** Fetches the CRL now and keeps it when it is not older than the one we hold; never throws. For tests and
   * front ends that want a revocation to take effect at once. */
  refreshRevocations(): Promise<void> {
    return this.#revocation.refresh();
  }

  /** Refreshes the CRL and ends open sessions whose peer certificate has since been revoked. */
  async #dropRevoked(): Promise<void> {
    await this.#revocation.refresh();
    if (!this.#revocation.list) return;
    for (const name of this.#sessions.activePeers()) {
      const s = this.#sessions.active(name);
      if (s?.peer && this.#revocation.isRevoked(s.peer.serial)) {
        this.#emit({
          event: "log",
          level: "warn",
          text: `${name}'s certificate was revoked: session closed`,
        });
        s.fail("CERTIFICATE", "your certificate has been revoked", "REVOKED");
      }
    }
  }

  // ---- sessions ----

  #onActive(s: PeerSession): void {
    const name = s.peer!.name;
    this.#dialer.clearError(name);
    // A relayed session we dialled: try to make it direct (never in relay-only mode: it would show our IP).
    if (s.role === "dialer" && s.path?.kind === "relayed" && !this.#opts.relayOnly && !this.#closed) {
      void this.#upgrade.upgrade(name);
    }
    if (!this.#online.has(name)) {
      this.#online.add(name);
      this.#emit({ event: "peer-online", name });
    }
    void this.#outbox.flush(name);
  }

  #onClose(s: PeerSession, _info: CloseInfo, wasActive: boolean): void {
    const name = s.peer?.name ?? s.expectedName;
    if (!name) return;
    this.#outbox.onSessionClosed(name, s.id);
    if (this.#closed) return;
    if (wasActive && !this.#sessions.active(name) && this.#online.delete(name)) {
      this.#emit({ event: "peer-offline", name });
    }
    if (this.#sessions.active(name)) void this.#outbox.flush(name);
  }

  async #onFrame(s: PeerSession, f: Frame): Promise<void> {
    const peer = s.peer!.name;
    switch (f.t) {
      case "msg":
        // Checks, group commit and the receipt after it: client/inbox.ts.
        return await this.#inbox.receive(s, f);
      case "ack":
        return this.#outbox.onAck(peer, f.id);
      case "read":
        return this.#outbox.onReadReceipt(peer, f);
      case "typing":
        this.#emit({ event: "typing", from: peer });
        return;
      default:
        throw new ProtocolError("UNEXPECTED_FRAME", `"${f.t}" is not expected here`);
    }
  }

  // ---- the API ----

  async send(to: string, text: string, opts: SendOptions = {}): Promise<ChatMessage> {
    if (this.#closed) throw new EngineError("CLOSED", "engine is closed");
    let peer: string;
    try {
      peer = canonicalUsername(to);
    } catch (e) {
      throw new EngineError("BAD_NAME", `bad contact name: ${messageOf(e)}`);
    }
    if (peer === this.name) throw new EngineError("SELF", "cannot send to yourself");
    if (typeof text !== "string" || text.length === 0) throw new EngineError("BAD_TEXT", "empty message");
    if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      throw new EngineError("BAD_TEXT", `message longer than ${MAX_TEXT_BYTES} bytes`);
    }
    const contact = this.#store.ensureContact(peer);
    let ttlMs: number | null;
    try {
      ttlMs = opts.ttlMs === undefined
        ? contact.defaultTtlMs
        : opts.ttlMs === null
        ? null
        : parseTtl(opts.ttlMs);
      if (opts.ttlMode !== undefined) parseTtlMode(opts.ttlMode);
    } catch (e) {
      throw new EngineError("BAD_TTL", messageOf(e));
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
        throw new EngineError("TIME_PROOF_FAILED", `no time server signed the send time: ${messageOf(e)}`);
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
      await this.#outbox.queue(m);
    } catch (e) {
      throw new EngineError("STORE_FAILED", messageOf(e));
    }
    if (ttlMs !== null) this.#sweeper.sweep();
    return toChatMessage({ ...m, direction: "out", readAt: null }, this.#maxUnreadMs);
  }

  /** Whether the phonebook took our last address publication (a front end says so at start). */
  phonebookStatus(): PhonebookStatus {
    return this.#presence.status();
  }

  /** Whether `name` can be written to: already a contact, listed by the phonebook, unknown to it (refuse:
   * nothing is queued and no contact is added), revoked, or the phonebook could not be asked. */
  async recipientStatus(name: string): Promise<RecipientStatus> {
    let peer: string;
    try {
      peer = canonicalUsername(name);
    } catch (e) {
      throw new EngineError("BAD_NAME", `bad contact name: ${messageOf(e)}`);
    }
    if (this.#store.contact(peer)) {
      // A contact: the revocation list we hold says whether it was revoked (no phonebook round trip per send).
      const seen = this.#trust.verified(peer);
      return seen && this.#revocation.isRevoked(seen.serial) ? "revoked" : "known";
    }
    try {
      const entry = await this.#opts.directory.lookup(peer);
      if (!entry) return "unknown";
      return entry.revoked ? "revoked" : "listed";
    } catch {
      return "unreachable";
    }
  }

  async contacts(): Promise<Contact[]> {
    const names = new Set(this.#store.contacts().map((c) => c.name));
    const listedOnline = new Map<string, boolean>();
    // A user the phonebook lists as revoked is never shown online.
    const listedRevoked = new Set<string>();
    if (this.#opts.directory.list) {
      try {
        for (const u of (await this.#opts.directory.list()).users) {
          if (u.name === this.name) continue;
          names.add(u.name);
          listedOnline.set(u.name, u.online && u.revoked !== true);
          if (u.revoked === true) listedRevoked.add(u.name);
        }
      } catch {
        // the phonebook is unreachable: show what we know
      }
    }
    return [...names].sort().map((name) => ({
      name,
      ...(listedRevoked.has(name) ? { revoked: true } : {}),
      online: !listedRevoked.has(name) &&
        (this.#sessions.active(name) !== null || listedOnline.get(name) === true),
      unread: this.#store.unreadCount(name),
      pin: this.#trust.pinState(name),
      defaultTtlMs: this.#store.contact(name)?.defaultTtlMs ?? null,
      ...(this.#sessions.active(name)?.path
        ? { path: describePath(this.#sessions.active(name)!.path!) }
        : {}),
    }));
  }

  history(peer: string): ChatMessage[] {
    const time = this.#opts.clock.now();
    return this.#store.history(peer).filter((m) => isVisible(m, time, this.#maxUnreadMs)).map((m) =>
      toChatMessage(m, this.#maxUnreadMs)
    );
  }

  /** Records the first display of a received message (starting an "after read" lifetime) and sends the read
   * receipt. Throws EngineError NOT_FOUND (or TIME_UNVERIFIED for an expiring message without time). */
  markRead(id: string): void {
    const time = this.#opts.clock.now();
    const m = this.#store.findById(id).find((x) => x.direction === "in");
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
    this.#store.markRead(m.peer, m.id, readAt, deadline);
    if (deadline !== null) this.#sweeper.sweep();
    // Kept until written to the sender's connection (across restarts), so the receipt is not lost offline.
    this.#outbox.queueReadReceipt(m.peer, m.id, readAt);
  }

  setDefaultTtl(peer: string, ttlMs: number | null): void {
    let v: number | null;
    try {
      v = ttlMs === null ? null : parseTtl(ttlMs);
    } catch (e) {
      throw new EngineError("BAD_TTL", messageOf(e));
    }
    this.#store.setDefaultTtl(peer, v);
  }

  acceptKey(peer: string): void {
    this.#trust.acceptKey(peer);
    this.#dialer.clearError(peer);
    void this.#dialer.connect(peer);
  }

  markVerified(peer: string): void {
    this.#trust.markVerified(peer);
  }

  peerInfo(peer: string): PeerInfo | null {
    const v = this.#trust.verified(peer);
    if (!v) return null;
    const s = this.#sessions.active(peer);
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
      pinnedFingerprint: this.#trust.pinnedFingerprint(peer),
      revoked: this.#revocation.isRevoked(v.serial),
      revocationStale: this.#revocation.isStale(),
      pin: this.#trust.pinState(peer),
      tlsVersion: s?.tlsVersion ?? null,
      cipher: s?.cipher ?? null,
      connected: s !== null,
      ...(s?.path
        ? {
          path: describePath(s.path),
          pathKind: s.path.kind,
          pathAddress: `${s.path.address.host}:${s.path.address.port}`,
        }
        : {}),
    };
  }

  ownFingerprint(): string {
    return this.#identity.fingerprint;
  }

  typing(peer: string): void {
    void this.#sessions.active(peer)?.send({ t: "typing" }).catch(() => {});
  }

  timeStatus(): TimeStatus {
    return this.#opts.clock.status();
  }

  /** The session with `peer` now, or null. */
  connection(peer: string): ConnectionInfo | null {
    const s = this.#sessions.active(peer);
    if (!s) return null;
    return {
      sessionId: s.id,
      role: s.role,
      tlsVersion: s.tlsVersion,
      cipher: s.cipher,
      readPauses: s.pauses,
      maxBufferedBytes: s.maxBuffered,
      maxChunkBytes: s.maxChunk,
      pongs: s.pongs,
    };
  }

  /** Dials `name` at a known address, without asking the phonebook where it is; resolves once the session is
   * authenticated, rejects with the SessionError that refused it. */
  async connectTo(name: string, host: string, port: number): Promise<void> {
    if (this.#closed) throw new EngineError("CLOSED", "engine is closed");
    await this.#sessions.dial(canonicalUsername(name), host, port);
  }

  /** Counters for diagnostics and tests. */
  stats(): EngineStats {
    return {
      sessions: this.#sessions.sessionCount(),
      hidden: this.#sweeper.hiddenCount,
      commits: this.#store.committer.commits,
    };
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
    for (const t of this.#timers) t.cancel();
    this.#timers = [];
    this.#sweeper.close();
    this.#outbox.close();
    this.#revocation.close();
    this.#unsubscribeClock?.();
    this.#opts.clock.stop();
    if (this.#address) await this.#presence.withdraw();
    await (await this.#mapping)?.stop();
    this.#relay?.close();
    await this.#sessions.close();
    await Promise.all([this.#dialer.settle(), this.#outbox.settle()]);
    this.#store.close();
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
    | "relay"
    | "relayOnly"
    | "portMapping"
    | "limits"
    | "outboxRetryMs"
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
      relay: opts.relay,
      relayOnly: opts.relayOnly,
      portMapping: opts.portMapping,
      limits: opts.limits,
      outboxRetryMs: opts.outboxRetryMs,
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

/** A TCP connection for the dialer's race, bounded by `timeoutMs`. */
function connectTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      reject(new EngineError("CONNECT_FAILED", `no answer from ${host}:${port} in time`));
    }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(t);
      s.removeAllListeners("error");
      resolve(s);
    });
    s.once("error", (e) => {
      clearTimeout(t);
      s.destroy();
      reject(e);
    });
  });
}
