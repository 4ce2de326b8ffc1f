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
 * - upgrade.ts: a relayed session moved to a direct one (hole punching, IPv6);
 * - home_router.ts: the port mapping and the IPv6 pinhole kept in the home router;
 * - network_watch.ts: our addresses changing, and wakes from sleep;
 * - renewal.ts: our own certificate, renewed before it runs out;
 * - inbox.ts, requests.ts, blocklist.ts, peer_quota.ts: what peers send us, strangers' requests, limits;
 * - session/: the TLS listener and peer sessions; store/: chat.db.
 *
 * Time: everything that matters (certificate validity, send times, deadlines) comes from the trusted clock.
 * Expiring messages fail closed: hidden while time is unknown, deleted as soon as their deadline may have
 * passed (expiry.ts). Timers come from one injected Scheduler (scheduler.ts).
 */
import crypto from "node:crypto";
import { join } from "node:path";
import {
  type BootClock,
  type ServerSpec,
  systemBootClock,
  type TimeProof,
  type TimeStatus,
  TrustedClock,
  type TrustedTime,
} from "../clock/mod.ts";
import {
  canonicalUsername,
  createCsr,
  fingerprintOf,
  importPrivateKeyPem,
  keyFingerprintOf,
  normalizeSerial,
  type ParsedCrl,
  pemToDer,
  verifyCrl,
  verifyPeerCertificate,
  x509,
} from "../pki/mod.ts";
import { messageOf } from "../coded_error.ts";
import { DirectoryClient } from "./directory_client.ts";
import type { HomeState } from "./home.ts";
import type {
  ChatEngineApi,
  ChatMessage,
  Contact,
  EngineEvent,
  OwnCertificateStatus,
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
import { MAX_TEXT_BYTES, REQUEST_SWEEP_INTERVAL_MS } from "./protocol/constants.ts";
import { ProtocolError, REFUSED_MESSAGE } from "./protocol/errors.ts";
import type { Frame } from "./protocol/frames.ts";
import { timeProofData } from "./protocol/binding.ts";
import { SessionManager } from "./session/manager.ts";
import type { CloseInfo, LocalIdentity, PeerSession } from "./session/peer_session.ts";
import type { SessionLimits } from "./session/limits.ts";
import { ChatStore, type OutgoingMessage, type StoredMessage } from "./store/store.ts";
import { RevocationCache } from "./revocation/mod.ts";
import { PeerTrust } from "./peer_trust.ts";
import { type DialEntry, Dialer } from "./dialer.ts";
import { Outbox, type RefusalBackoff } from "./outbox.ts";
import { ExpirySweeper } from "./expiry_sweeper.ts";
import { Presence } from "./presence.ts";
import net from "node:net";
import { decodeKnockSecret, encodeKnockSecret, MAX_CANDIDATES } from "../contract/mod.ts";
import {
  type Address,
  describePath,
  dialableFromInternet,
  firstGlobalIpv6,
  localAddresses,
  type Publication,
  publicationFor,
} from "./candidates.ts";
import { RelayClient } from "./relay_client.ts";
import { DirectUpgrade } from "./upgrade.ts";
import { HomeRouter, type HomeRouterOptions } from "./home_router.ts";
import { type NetworkChange, NetworkWatch } from "./network_watch.ts";
import { type OwnCertificate, Renewal } from "./renewal.ts";
import { writeCertificate } from "./home.ts";
import { Inbox } from "./inbox.ts";
import { Blocklist } from "./blocklist.ts";
import { PeerQuota, type PeerQuotaLimits } from "./peer_quota.ts";
import { MessageRequests, type RequestLimits } from "./requests.ts";
import { realScheduler, type Scheduler, type Timer, withTimeout } from "./scheduler.ts";

export { EngineError, type EngineErrorCode } from "./engine_errors.ts";

/** How long each open session has to answer its ping after a wake from sleep (#onWake) before it is
 * closed and its peer dialled again: a live peer answers in a round trip. */
export const WAKE_PROBE_MS = 3000;

/** How long a peer a network change or a wake cut us off from is dialled again (at each later change, wake
 * and relay reconnection) before it is left to its own outbox and our next message. */
export const LOST_PEER_KEEP_MS = 30 * 60_000;

/** How long our own listing (the phonebook's check of what we publish) is reused in deciding whether to ask
 * a peer to dial us back; each publication looks again. */
const OWN_LISTING_MAX_AGE_MS = 30_000;
/** How long a listing whose candidates the phonebook had not checked yet is reused. */
const OWN_LISTING_UNCHECKED_MS = 2000;
/** Bound on that look-up: it comes before the dial race. */
const OWN_LISTING_TIMEOUT_MS = 1000;

/** Serial and validity of a certificate in PEM. */
function ownCertificateOf(certPem: string): OwnCertificate {
  const c = new x509.X509Certificate(pemToDer(certPem, "CERTIFICATE"));
  return {
    serial: normalizeSerial(c.serialNumber),
    notBefore: c.notBefore.getTime(),
    notAfter: c.notAfter.getTime(),
  };
}

/** The interval every certificate (peers', the phonebook's, our own) is judged on: the trusted clock's when
 * it is verified. Before the first verified answer, the local clock: refusing everyone would stop all chat
 * while a time server is blocked, and expiring messages fail closed on their own (docs/protocol.md "Time"). */
export function certTimeOf(clock: Pick<ClockLike, "now">): { earliestMs: number; latestMs: number } {
  const t = clock.now();
  if (t) return { earliestMs: t.earliestMs, latestMs: t.latestMs };
  const now = Date.now();
  return { earliestMs: now, latestMs: now };
}

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
  /** A new certificate for our key (authenticated with the current one); without it nothing renews. */
  renew?(csrPem: string): Promise<{ certPem: string }>;
  /** Presents another client certificate from now on (after a renewal). */
  setClientCertificate?(certPem: string, keyPem: string): void;
  /** Our network changed: pooled connections are not reused. */
  dropConnections?(): void;
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
  /** The store applies the batches of a burst on its writer thread (client/store/writer_thread.ts). Default
   * true; the benchmark measures without it beside. */
  storeWriterThread?: boolean;
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
  /** Ask the router for a port mapping (PCP, NAT-PMP, UPnP-IGD) when listening on every interface. Default false here (the
   * CLI turns it on unless --no-port-mapping). */
  portMapping?: boolean;
  /** Tests: how the home router part asks for a mapping, opens a pinhole and hears the router restart
   * (default the real protocols). */
  homeRouter?: Pick<HomeRouterOptions, "map" | "openPinhole" | "watchRestarts">;
  limits?: Partial<SessionLimits>;
  /** Our listener's knock secret (contract/knock.ts); default a fresh random one per run. Tests that dial
   * the listener by hand give one. Never logged. */
  knockSecret?: Uint8Array;
  /** Per-peer inbox limits (client/peer_quota.ts); default the constants of client/protocol/constants.ts. */
  inboxLimits?: Partial<PeerQuotaLimits>;
  /** Message request limits (client/requests.ts); default REQUEST_MAX_MESSAGES and REQUEST_MAX_STRANGERS. */
  requestLimits?: Partial<RequestLimits>;
  /** How often the outbox asks the phonebook whether waiting peers came back. Default 5 s. */
  outboxRetryMs?: number;
  /** How often requests are checked for expiry (REQUEST_SWEEP_INTERVAL_MS; tests shorten it). */
  requestSweepMs?: number;
  /** The backoff after a peer's inbox limits refused us (client/outbox.ts): default 5 s doubling to 5 min. */
  refusalBackoff?: Partial<RefusalBackoff>;
  /** How long an "after read" message may stay unread, from its send time, before both copies die.
   * Default MAX_UNREAD_MS (client/protocol/constants.ts); tests shorten it. */
  maxUnreadMs?: number;
  /** Lifetime of our published address; refreshed at a third of it. Default 120 s. */
  publishTtlSeconds?: number;
  /** How long the CRL is reused before it is fetched again (also the period of the check that ends sessions
   * with peers revoked since). Default 30 s. */
  crlMaxAgeMs?: number;
  /** How often our interface addresses are read to notice a changed network (client/network_watch.ts).
   * Default NETWORK_POLL_MS. */
  networkPollMs?: number;
  /** How long a peer whose session a network change or a wake ended is dialled again. Default
   * LOST_PEER_KEEP_MS (tests shorten it). */
  lostPeerKeepMs?: number;
  /** Time since boot, suspend included, by which the network watch notices a wake from sleep (see
   * #onWake). Default the system's (clock/boot_clock.ts); null watches for no wake. */
  bootClock?: BootClock | null;
  /** Timers of the engine's parts (default: the runtime's). */
  scheduler?: Scheduler;
  /** Subscribed before start, so events emitted while starting (expiries found at startup) are seen. */
  onEvent?: (e: EngineEvent) => void;
  /** Keeps a renewed certificate (home/cert.pem); called before it is put to use. */
  saveCertificate?: (certPem: string) => Promise<void>;
  /** How often our certificate's state is judged again. Default RENEW_CHECK_MS (client/renewal.ts). */
  renewalCheckMs?: number;
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

/** 32 hex digits: the send time (ms, 12 digits) then 80 random bits. Ids in time order are appended to the
 * id indexes of both sides' chat.db instead of landing on a random page each (with random ids a long history
 * made every insert touch a page not in the cache); the time is the message's own `sentAt`, which the frame
 * carries anyway, so the id tells the peer nothing more. 80 random bits keep ids of the same millisecond
 * apart. */
function newMessageId(sentAtMs: number): string {
  return Math.max(0, Math.min(sentAtMs, 0xffffffffffff)).toString(16).padStart(12, "0") + randomHex(10);
}

/** Random bytes for ids, drawn from the CSPRNG a pool at a time (one call per message was a visible share
 * of a send); each byte is handed out once. */
const idPool = new Uint8Array(4096);
let idPoolAt = idPool.length;
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

function randomHex(bytes: number): string {
  if (idPoolAt + bytes > idPool.length) {
    crypto.getRandomValues(idPool);
    idPoolAt = 0;
  }
  let out = "";
  for (let i = 0; i < bytes; i++) out += HEX[idPool[idPoolAt + i]];
  idPool.fill(0, idPoolAt, idPoolAt + bytes);
  idPoolAt += bytes;
  return out;
}

export class ChatEngine implements ChatEngineApi {
  readonly name: string;
  readonly #opts: ChatEngineOptions;
  readonly #scheduler: Scheduler;
  readonly #maxUnreadMs: number;
  readonly #listeners = new Set<(e: EngineEvent) => void>();
  #identity: LocalIdentity;
  #ownCert: OwnCertificate;
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
  /** The port mapping and IPv6 pinhole in the home router; null when we ask for none. */
  #router: HomeRouter | null = null;
  #network: NetworkWatch | null = null;
  /** Peers whose sessions a network change (or a wake) ended, with when (scheduler time): dialled again at
   * each network change, wake and relay reconnection until they are back, or until lostPeerKeepMs passed. */
  readonly #lostByNetwork = new Map<string, number>();
  /** Our own listing, as last looked up (#ownListing). */
  #own: { at: number; entry: Promise<DialEntry | null> } | null = null;
  readonly #renewal: Renewal;
  readonly #inbox: Inbox;
  readonly #blocklist: Blocklist;
  readonly #quota: PeerQuota;
  readonly #requests: MessageRequests;
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
    this.#ownCert = ownCertificateOf(opts.certPem);
    const emit = (e: EngineEvent) => this.#emit(e);
    const log = (level: "info" | "warn" | "error", text: string) => emit({ event: "log", level, text });
    const store = this.#store = new ChatStore(opts.dbPath, { writerThread: opts.storeWriterThread ?? true });
    void store.writerThreadOpened().then((ok) => {
      const why = store.writerThreadFailure;
      if (!ok && why !== null && !this.#closed) {
        log(
          "warn",
          `${why}; chat.db is written on the main thread instead (a long burst may slow the screen)`,
        );
      }
    });
    const clock = opts.clock;
    const blocklist = this.#blocklist = new Blocklist(store);
    const quota = this.#quota = new PeerQuota(store, opts.inboxLimits);
    // Requests age on the latest trusted time (the local clock before any): a clock set back cannot keep a
    // stranger's slot.
    const requests = this.#requests = new MessageRequests(
      store,
      emit,
      opts.requestLimits,
      () => this.#latestNow(),
      // Not there yet for the blocked peers freed just below; its first sweep sees the store's walResidue.
      () => this.#sweeper?.checkpointLater(),
    );
    // A peer blocked by an older version kept its request (and its slot): freed now.
    for (const name of blocklist.names()) requests.blocked(name);
    this.#revocation = new RevocationCache({
      fetch: () => opts.directory.crl(),
      load: () => this.#loadStoredCrl(),
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
      isBlocked: (name) => blocklist.has(name),
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
      {
        knockSecret: opts.knockSecret,
        // Knock slots on trusted time when there is some: two users' wall clocks may be far apart.
        now: () => {
          const t = clock.now();
          return t ? (t.earliestMs + t.latestMs) / 2 : Date.now();
        },
      },
    );
    const noteKnock = (name: string, knock: string | null | undefined) =>
      this.#sessions.setPeerKnock(name, decodeKnockSecret(knock ?? null));
    this.#dialer = new Dialer({
      // Relay-only: dialling a listed address would show the peer ours, so none is tried.
      lookup: async (name) => {
        const e = await opts.directory.lookup(name);
        return e && opts.relayOnly ? { ...e, candidates: [] } : e;
      },
      active: (name) => this.#sessions.active(name),
      dial: (name, host, port) => this.#sessions.dial(name, host, port),
      noteListed: (name, fp, certPem) => this.#trust.noteListed(name, fp, certPem),
      noteKnock,
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
      // Dial-back is worth asking for when we publish an address peers on the internet can dial, and the
      // phonebook's check of our listing did not find them all closed.
      reachable: async () => {
        const published = this.publication().candidates;
        if (!dialableFromInternet(published, null)) return false;
        return dialableFromInternet(published, await this.#ownListing());
      },
    });
    this.#upgrade = new DirectUpgrade({
      // The punched connection knocks like any dial: with the secret the phonebook lists now.
      lookup: async (name) => {
        const e = await opts.directory.lookup(name);
        if (e) noteKnock(name, e.knock);
        return e;
      },
      punch: (name, port) => {
        if (!this.#relay) return Promise.reject(new EngineError("NO_RELAY", "no relay"));
        return this.#relay.punch(name, port);
      },
      punchReply: (to, port) => this.#relay?.punchReply(to, port),
      dialOver: (name, socket, path) => this.#sessions.dialOver(name, socket, path, { replace: true }),
      accept: (socket, path) => this.#sessions.acceptSocket(socket, path),
      ownIpv6: () => firstGlobalIpv6(this.publication().candidates),
      log,
    });
    this.#outbox = new Outbox({
      ownName: opts.name,
      store,
      session: (peer) => this.#sessions.active(peer),
      // Messages queued before a block wait (they go out if the peer is unblocked); we never dial a blocked peer.
      connect: (peer) => void (blocklist.has(peer) ? null : this.#dialer.connect(peer)),
      deadlinePassed: (d) => clock.deadlinePassed(d),
      latestNowMs: () => clock.now()?.latestMs ?? null,
      maxUnreadMs: maxUnread,
      emit,
      onDeadline: () => this.#sweeper.sweep(),
      scheduler: this.#scheduler,
      refusalBackoff: opts.refusalBackoff,
    });
    this.#sweeper = new ExpirySweeper({
      store,
      now: () => clock.now(),
      maxUnreadMs: maxUnread,
      scheduler: this.#scheduler,
      emit,
      onDeleted: (peer, id) => {
        this.#outbox.forget(id);
        quota.invalidate(peer);
      },
      toChatMessage: (m) => toChatMessage(m, maxUnread),
    });
    this.#inbox = new Inbox({
      name: opts.name,
      timeKeys: opts.timeKeys,
      maxUnreadMs: maxUnread,
      clock,
      store,
      received: (peer, id) => store.hasReceived(peer, id),
      emit,
      isBlocked: (peer) => blocklist.has(peer),
      quota,
      requests,
      announce: (m) => {
        emit({ event: "message", message: toChatMessage(m, maxUnread) });
        // A new deadline may come before the one the sweeper sleeps until.
        if (m.ttlMs !== null) this.#sweeper.sweep();
      },
      hide: (peer, id) => {
        this.#sweeper.hide(peer, id);
        this.#sweeper.sweep();
      },
      cap: (peer, id, afterMs) => this.#sweeper.cap(peer, id, afterMs),
    });
    this.#presence = new Presence({
      publish: async (host, port, ttl, reach) => {
        await opts.directory.publish(host, port, ttl, reach);
        // The phonebook checks what we published now: our listing is looked up anew.
        this.#own = null;
      },
      withdraw: () => opts.directory.withdraw(),
      address: () => this.advertisedAddress,
      publication: () => this.publication(),
      log,
      scheduler: this.#scheduler,
      ttlSeconds: opts.publishTtlSeconds,
    });
    this.#renewal = new Renewal({
      current: () => this.#ownCert,
      now: () => clock.now(),
      isRevoked: (serial) => this.#revocation.isRevoked(serial),
      renew: () => this.#renewCertificate(),
      emit: (status) => emit({ event: "certificate", status }),
      log,
      scheduler: this.#scheduler,
      checkMs: opts.renewalCheckMs,
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
    // The CRL is fetched after the first time sync (bounded by its timeout): the phonebook's certificate is
    // judged on trusted time, which a wall clock a year off would otherwise fail. Enrollment gives no CRL,
    // and until one was obtained (now or persisted by an earlier run) every peer session is refused.
    await o.clock.sync().catch(() => {});
    await this.#revocation.loaded;
    await this.#revocation.refresh();
    this.#sweeper.sweep();
    const listen = o.listen ?? { host: "127.0.0.1", port: 0 };
    this.#address = await this.#sessions.listen(listen.host, listen.port);
    // Before publishing: a certificate that lapsed while we were away is renewed first (within the
    // phonebook's grace), or publishing would be refused.
    await this.#renewal.check();
    this.#renewal.start();
    await this.#startRelay();
    await this.#presence.start();
    // In the background: a network without a mapping router costs its timeout, which must not hold up the
    // start. Once mapped, we publish again with the mapping first.
    if (o.portMapping && !o.relayOnly && !o.advertise && ["::", "0.0.0.0"].includes(this.#address.host)) {
      this.#router = new HomeRouter({
        port: this.#address.port,
        // A listener on "::" takes IPv6 too: the router's firewall is asked to let it be reached there.
        pinhole: this.#address.host === "::",
        scheduler: this.#scheduler,
        log: (text) => this.#emit({ event: "log", level: "info", text }),
        ipv6Address: () => firstGlobalIpv6(this.publication().candidates),
        publish: async () => {
          await this.#presence.publish();
          return this.#presence.status().reachable;
        },
        map: o.homeRouter?.map,
        openPinhole: o.homeRouter?.openPinhole,
        watchRestarts: o.homeRouter?.watchRestarts,
      });
      this.#router.start();
    }
    this.#network = new NetworkWatch({
      addresses: localAddresses,
      onChange: (c) => this.#onNetworkChange(c),
      bootClock: o.bootClock !== undefined ? o.bootClock : systemBootClock(),
      onWake: (ms) => this.#onWake(ms),
      scheduler: this.#scheduler,
      pollMs: o.networkPollMs,
    });
    this.#network.start();
    this.#every(o.outboxRetryMs ?? DEFAULT_OUTBOX_RETRY_MS, () => this.#outbox.retryAll());
    this.#every(this.#revocation.maxAgeMs, () => this.#dropRevoked());
    this.#every(o.requestSweepMs ?? REQUEST_SWEEP_INTERVAL_MS, () => this.#expireRequests());
    this.#expireRequests();
    this.#outbox.retryAll();
    void this.#convertLegacyPins();
  }

  /** Our network changed. Sessions over an address we lost are closed (nothing they send arrives) and their
   * peers dialled again: the peer's side of such a session is as dead, and our new connection replaces it
   * there. The relay's control connection is made again, the phonebook's pooled connections are dropped,
   * the mapping held (made on the router we may have left) is removed and asked for anew (the IPv6 pinhole
   * too when our IPv6 address changed), and the phonebook gets our addresses now rather than at the next
   * refresh. A network that only added an address (a VPN came up) keeps its sessions and its mapping, or
   * gets one asked for now if none is held. */
  #onNetworkChange(c: NetworkChange): void {
    if (this.#closed) return;
    const said = [
      ...(c.gone.length ? [`${c.gone.join(", ")} gone`] : []),
      ...(c.came.length ? [`${c.came.join(", ")} new`] : []),
    ];
    this.#emit({ event: "log", level: "info", text: `network changed: ${said.join("; ")}` });
    const gone = new Set(c.gone);
    if (gone.size) {
      for (const peer of this.#sessions.closeSessionsOver(gone)) this.#markLost(peer);
      this.#opts.directory.dropConnections?.();
    }
    if (this.#relay && (gone.size || !this.#relay.connected)) this.#relay.reconnectNow();
    this.#router?.networkChanged({ lost: gone.size > 0, gained: c.came.length > 0 });
    void this.#presence.publish();
    this.#redialLost();
    this.#outbox.retryAll();
  }

  /** Our own listing (what the phonebook's check reached of our candidates), looked up at most every
   * OWN_LISTING_MAX_AGE_MS (OWN_LISTING_UNCHECKED_MS while unchecked) and again after each publication,
   * bounded by OWN_LISTING_TIMEOUT_MS; null when it cannot be had. */
  async #ownListing(): Promise<DialEntry | null> {
    const now = this.#scheduler.now();
    const held = this.#own;
    if (held) {
      const e = await held.entry;
      // Not checked yet (the check runs after each publication): asked again soon.
      const maxAge = e?.reachCheckedAt == null ? OWN_LISTING_UNCHECKED_MS : OWN_LISTING_MAX_AGE_MS;
      if (this.#own === held && now - held.at < maxAge) return e;
    }
    const entry = withTimeout(
      this.#scheduler,
      OWN_LISTING_TIMEOUT_MS,
      this.#opts.directory.lookup(this.#opts.name),
      () => new Error("timeout"),
    ).catch(() => null);
    this.#own = { at: now, entry };
    return entry;
  }

  #markLost(peer: string): void {
    this.#lostByNetwork.set(peer, this.#scheduler.now());
  }

  /** Dials the peers a network change or a wake cut us off from. Each is taken off the list once its
   * session is back (#onActive); a failure is reported once. One lost longer than lostPeerKeepMs is dropped
   * instead: its own outbox finds our new addresses by then, and our next message to it dials anyway. */
  #redialLost(): void {
    const keep = this.#opts.lostPeerKeepMs ?? LOST_PEER_KEEP_MS;
    const now = this.#scheduler.now();
    for (const [peer, since] of this.#lostByNetwork) {
      if (now - since > keep) this.#lostByNetwork.delete(peer);
      else void this.#dialer.connect(peer);
    }
  }

  /** The machine woke from sleep: nothing of our address changed, but while we slept the peers and the
   * relay may have closed their ends of our connections on silence, the router's mapping lease may have run
   * out, the phonebook's listing of us expired, and the CRL and our certificate's state aged (every timer
   * runs on the monotonic clock, which stood still). So: each open session is pinged and one that does not
   * answer within WAKE_PROBE_MS is closed and its peer dialled again; the relay's control connection and
   * the phonebook's pooled connections are made again; the mapping and the IPv6 pinhole are asked for anew;
   * the phonebook gets our addresses, the CRL is fetched, the certificate judged, and the outbox retried
   * now. */
  #onWake(sleptMs: number): void {
    if (this.#closed) return;
    const n = this.#sessions.activePeers().length;
    this.#emit({
      event: "log",
      level: "info",
      text: `woke from sleep (about ${Math.round(sleptMs / 1000)} s); checking ${n} session${
        n === 1 ? "" : "s"
      } and the relay`,
    });
    this.#opts.directory.dropConnections?.();
    this.#relay?.reconnectNow("we woke from sleep");
    this.#router?.woke();
    void this.#presence.publish();
    void this.#revocation.refresh().catch(() => {});
    void this.#renewal.check().catch(() => {});
    this.#outbox.retryAll();
    void this.#sessions.probeAll(WAKE_PROBE_MS).then((silent) => {
      if (this.#closed) return;
      for (const peer of silent) this.#markLost(peer);
      // The ones lost before the sleep too.
      this.#redialLost();
    });
  }

  /** Old certificate pins become key pins where the phonebook still lists the pinned certificate (one
   * look-up per such contact, once per start; failures leave the pin for the next chance). */
  async #convertLegacyPins(): Promise<void> {
    const names = this.#trust.legacyPins(this.#store.contacts().map((c) => c.name));
    for (const name of names) {
      if (this.#closed) return;
      try {
        const entry = await this.#opts.directory.lookup(name);
        if (entry?.certPem !== undefined) this.#trust.convertFromListing(name, entry.certPem);
      } catch {
        // the phonebook is away: the pin converts when the peer shows the pinned certificate again
      }
    }
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
      // Renewed at start perhaps: the current one, not the one we were started with.
      certPem: this.#identity.certPem,
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
      // So may the peers a network change cut us off from (relay-only, or direct dials that failed).
      onState: (up) => {
        if (!up || this.#closed) return;
        this.#outbox.retryAll();
        this.#redialLost();
      },
      log,
    });
    this.#relay = r;
    await r.start();
    if (!r.connected) log("warn", `relay ${relay.host}:${relay.port} not reachable yet; retrying`);
  }

  /** What we publish now: our candidates (or none, relay-only) and the relay we hold a connection to. */
  publication(): Publication {
    const adv = this.#opts.advertise;
    const pub = publicationFor({
      bound: this.address,
      advertise: adv === undefined ? [] : Array.isArray(adv) ? adv : [adv],
      relay: this.#relay?.relay ?? null,
      relayOnly: this.#opts.relayOnly === true,
      ifaces: localAddresses(),
      max: MAX_CANDIDATES,
      mapped: this.#router?.external ?? null,
    });
    // Relay-only too: a relayed circuit knocks inside the circuit.
    return { ...pub, knock: encodeKnockSecret(this.#sessions.knockSecret) };
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
    return certTimeOf(this.#opts.clock);
  }

  /** The latest time it may be: trusted when we have it, else the local clock (as for certificates). */
  #latestNow(): number {
    return this.#opts.clock.now()?.latestMs ?? Date.now();
  }

  // ---- our certificate ----

  /** Our certificate's state (valid until, renewing, expired, revoked). */
  certificateStatus(): OwnCertificateStatus {
    return this.#renewal.status();
  }

  /** Renews our certificate now, whatever its age (front ends' command, tests); rejects with the failure. */
  renewCertificate(): Promise<void> {
    return this.#renewal.renewNow();
  }

  /** A new certificate for the same key from the phonebook, checked (our CA, our name, our key, valid on
   * trusted time), kept (home/cert.pem) and put to use: new sessions, the listener's TLS context and the
   * phonebook client present it; open sessions carry on. Throws when any step before use fails. */
  async #renewCertificate(): Promise<void> {
    const o = this.#opts;
    if (!o.directory.renew) throw new EngineError("RENEW_UNSUPPORTED", "this phonebook client cannot renew");
    const keys = await importPrivateKeyPem(o.keyPem);
    const issued = await o.directory.renew(await createCsr(o.name, keys));
    let der: Uint8Array;
    try {
      der = pemToDer(issued.certPem, "CERTIFICATE");
    } catch {
      throw new EngineError("BAD_CERTIFICATE", "the phonebook sent something that is not a certificate");
    }
    const checked = await verifyPeerCertificate({
      certDer: der,
      caCertPem: o.caPem,
      expectedName: o.name,
      time: this.#certTime(),
    }).catch((e) => {
      throw new EngineError("BAD_CERTIFICATE", `the renewed certificate does not check out: ${messageOf(e)}`);
    });
    if (checked.keyFingerprint !== keyFingerprintOf(this.#identity.certPem)) {
      throw new EngineError("BAD_CERTIFICATE", "the renewed certificate is not for our key");
    }
    const certPem = issued.certPem;
    // The phonebook has already superseded the old certificate: a failure to keep the new one must not stop
    // us using it (the next start would renew again within the grace).
    try {
      await o.saveCertificate?.(certPem);
    } catch (e) {
      this.#emit({
        event: "log",
        level: "error",
        text: `cannot keep the renewed certificate: ${messageOf(e)}`,
      });
    }
    this.#identity = { ...this.#identity, certPem, fingerprint: fingerprintOf(der) };
    this.#ownCert = ownCertificateOf(certPem);
    this.#sessions.setIdentity(this.#identity);
    o.directory.setClientCertificate?.(certPem, o.keyPem);
    this.#relay?.setCertificate(certPem);
  }

  // ---- revocation ----

  /** The revocation list kept by an earlier run, its signature verified again against our CA: a list
   * changed on disk (a revocation removed) is refused, loudly, and peers wait for a fresh one (fail closed).
   * A list stored by an older version without its DER is not used either. */
  async #loadStoredCrl() {
    const held = this.#store.revocationList();
    if (!held) return null;
    if (!held.der) {
      this.#emit({
        event: "log",
        level: "warn",
        text: "the stored revocation list has no signature kept (older version): fetching a new one",
      });
      return null;
    }
    try {
      const v = await verifyCrl(held.der, this.#opts.caPem);
      return {
        serials: v.revokedSerials,
        crlNumber: v.crlNumber ?? null,
        thisUpdateMs: v.thisUpdateMs,
        nextUpdateMs: v.nextUpdateMs,
        der: held.der,
      };
    } catch (e) {
      this.#emit({
        event: "error",
        code: "STORED_CRL_REFUSED",
        message: `the revocation list stored in chat.db does not verify (${
          messageOf(e)
        }): not used; peers are refused until a fresh one is fetched`,
      });
      return null;
    }
  }

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
    this.#lostByNetwork.delete(name);
    // A relayed session we dialled: try to make it direct (never in relay-only mode: it would show our IP).
    if (s.role === "dialer" && s.path?.kind === "relayed" && !this.#opts.relayOnly && !this.#closed) {
      void this.#upgrade.upgrade(name);
    }
    if (!this.#online.has(name)) {
      this.#online.add(name);
      this.#emit({ event: "peer-online", name });
    }
    if (s.role === "listener") this.#outbox.onPeerDialled(name);
    void this.#outbox.flush(name);
  }

  #onClose(s: PeerSession, info: CloseInfo, wasActive: boolean): void {
    const name = s.peer?.name ?? s.expectedName;
    if (!name) return;
    // The peer's inbox limits: our messages wait and are sent again at the next retry.
    const limited = info.by === "peer" &&
      ["QUOTA_EXCEEDED", "RATE_LIMITED", "REQUESTS_FULL", "REFUSED"].includes(info.code ?? "");
    this.#outbox.onSessionClosed(
      name,
      s.id,
      limited
        ? `${name} refused more for now (${info.code}: ${info.message}); kept, retried later`
        : undefined,
      limited ? info.code ?? undefined : undefined,
    );
    if (this.#closed) return;
    if (wasActive && !this.#sessions.active(name) && this.#online.delete(name)) {
      this.#emit({ event: "peer-offline", name });
    }
    if (this.#sessions.active(name)) void this.#outbox.flush(name);
  }

  /** Not async: only a message may make the session wait (its inbox is full); receipts are handled at once. */
  #onFrame(s: PeerSession, f: Frame): Promise<void> | void {
    const peer = s.peer!.name;
    switch (f.t) {
      case "msg":
        // Checks, group commit and the receipt after it: client/inbox.ts.
        return this.#inbox.take(s, f);
      case "ack":
        return this.#outbox.onAck(peer, f.id);
      case "acks":
        for (const id of f.ids) this.#outbox.onAck(peer, id);
        return;
      case "refuse":
        return this.#outbox.onRefused(peer, f.id, f.code);
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
    if (this.#blocklist.has(peer)) {
      throw new EngineError("BLOCKED", `${peer} is blocked: unblock them first (nothing queued)`);
    }
    if (typeof text !== "string" || text.length === 0) throw new EngineError("BAD_TEXT", "empty message");
    // A UTF-16 unit is at most 3 UTF-8 bytes: a short text needs no encoding to know it fits.
    if (text.length * 3 > MAX_TEXT_BYTES && new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      throw new EngineError("BAD_TEXT", `message longer than ${MAX_TEXT_BYTES} bytes`);
    }
    const defaultTtlMs = this.#store.ensureContactTtl(peer);
    // Writing to someone is talking to them: a message request of theirs becomes a conversation.
    this.#requests.accept(peer);
    let ttlMs: number | null;
    try {
      ttlMs = opts.ttlMs === undefined ? defaultTtlMs : opts.ttlMs === null ? null : parseTtl(opts.ttlMs);
      if (opts.ttlMode !== undefined) parseTtlMode(opts.ttlMode);
    } catch (e) {
      throw new EngineError("BAD_TTL", messageOf(e));
    }
    const ttlMode = ttlMs === null ? null : (opts.ttlMode ?? "send");
    const time = this.#opts.clock.now();
    if (ttlMs !== null && !time) {
      throw new EngineError("TIME_UNVERIFIED", "an expiring message needs verified time; try again shortly");
    }
    // The upper end of the trusted interval: the deadline (sentAt + ttl) is then reached exactly ttl after
    // sending as measured by our clock, and a receiver can only cut it shorter (expiry.ts).
    const sentAt = Math.ceil(time ? time.latestMs : Date.now());
    const id = newMessageId(sentAt);
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

  /** Blocks `name` (blocklist.ts): its sessions end now, later ones are refused at the hello (BLOCKED),
   * nothing it sends is stored, sends to it are refused. Persists in chat.db. Returns the canonical name.
   * Throws EngineError BAD_NAME or SELF. */
  block(name: string): string {
    const peer = this.#blocklist.block(name, this.name);
    const s = this.#sessions.active(peer);
    // The peer hears only the generic refusal (it cannot tell a block from a declined request); we log why.
    if (s) s.fail("REFUSED", REFUSED_MESSAGE, "BLOCKED", `${peer} is blocked`);
    // A stranger's request ends with the block: its messages are deleted and its slot is free for others.
    const dropped = this.#requests.blocked(peer);
    if (dropped > 0) this.#quota.invalidate(peer);
    this.#emit({
      event: "log",
      level: "info",
      text: `${peer} is blocked${dropped > 0 ? ` (its message request of ${dropped} deleted)` : ""}`,
    });
    return peer;
  }

  /** Unblocks `name`; messages queued before the block go out again. Throws EngineError BAD_NAME or
   * NOT_FOUND (not blocked). */
  unblock(name: string): string {
    const peer = this.#blocklist.unblock(name);
    this.#emit({ event: "log", level: "info", text: `${peer} is no longer blocked` });
    this.#outbox.retryAll();
    return peer;
  }

  /** Accepts `name`'s message request (a stranger's messages become a conversation). Returns the name. */
  acceptRequest(name: string): string {
    const peer = this.#canonical(name);
    this.#store.ensureContact(peer);
    this.#requests.accept(peer);
    return peer;
  }

  /** Declines `name`'s message request: its messages are deleted. Throws EngineError NOT_FOUND when there
   * was no request (an accepted conversation is never deleted this way). */
  declineRequest(name: string): string {
    const peer = this.#canonical(name);
    if (this.#requests.isAccepted(peer) || !this.#requests.pending().some((r) => r.name === peer)) {
      throw new EngineError("NOT_FOUND", `no message request from ${peer}`);
    }
    this.#requests.decline(peer);
    this.#quota.invalidate(peer);
    return peer;
  }

  /** Requests not accepted in time end (client/requests.ts); their messages are gone, so is their quota. */
  #expireRequests(): void {
    for (const peer of this.#requests.expire()) this.#quota.invalidate(peer);
  }

  /** Strangers with a pending message request, and how many messages each. */
  messageRequests(): { name: string; messages: number }[] {
    return this.#requests.pending();
  }

  #canonical(name: string): string {
    try {
      return canonicalUsername(name.replace(/^@/, "").toLowerCase());
    } catch (e) {
      throw new EngineError("BAD_NAME", `bad contact name: ${messageOf(e)}`);
    }
  }

  /** The names blocked, sorted. */
  blocked(): string[] {
    return this.#blocklist.names();
  }

  async contacts(): Promise<Contact[]> {
    const names = new Set(this.#store.contacts().map((c) => c.name));
    for (const b of this.#blocklist.names()) names.add(b);
    const requests = new Set(this.#requests.pending().map((r) => r.name));
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
      ...(this.#blocklist.has(name) ? { blocked: true } : {}),
      ...(requests.has(name) ? { request: true } : {}),
      // A blocked peer is never shown online: we refuse every connection with it.
      online: !listedRevoked.has(name) && !this.#blocklist.has(name) &&
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
    this.#quota.invalidate(m.peer);
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
      fingerprint: v.keyFingerprint,
      certificateFingerprint: v.fingerprint,
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

  /** Our key's fingerprint (SHA-256 of the SPKI): what a contact compares, the same across renewals. */
  ownFingerprint(): string {
    return keyFingerprintOf(this.#identity.certPem);
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
   * authenticated, rejects with the SessionError that refused it. It knocks with `knock` when given (the
   * secret the peer's listener wants), else with the one the phonebook last listed for the peer. */
  async connectTo(name: string, host: string, port: number, knock?: Uint8Array): Promise<void> {
    if (this.#closed) throw new EngineError("CLOSED", "engine is closed");
    const peer = canonicalUsername(name);
    if (knock) this.#sessions.setPeerKnock(peer, knock);
    await this.#sessions.dial(peer, host, port);
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
    this.#renewal.close();
    this.#unsubscribeClock?.();
    this.#opts.clock.stop();
    this.#network?.stop();
    // Stopped at once (nothing it maps from now on is published), removed from the router after withdrawing.
    const unmapped = this.#router?.stop();
    if (this.#address) await this.#presence.withdraw();
    await unmapped;
    this.#relay?.close();
    await this.#sessions.close();
    await Promise.all([this.#dialer.settle(), this.#outbox.settle()]);
    if (!this.#store.close()) {
      this.#emit({
        event: "log",
        level: "warn",
        text: "another program has chat.db open: old pages of deleted messages stay in chat.db-wal until " +
          "securechat next opens it",
      });
    }
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
    | "knockSecret"
    | "inboxLimits"
    | "requestLimits"
    | "outboxRetryMs"
    | "refusalBackoff"
    | "maxUnreadMs"
    | "publishTtlSeconds"
    | "onEvent"
    | "renewalCheckMs"
    | "bootClock"
    | "networkPollMs"
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
  const clock = new TrustedClock({
    servers: [...home.roughtime, ...(opts.extraTimeServers ?? [])],
    proofServers: home.roughtime,
    queryTimeoutMs: opts.timeQueryTimeoutMs,
    refreshIntervalMs: opts.timeRefreshIntervalMs,
  });
  const directory = new DirectoryClient({
    url: home.server,
    caPem: home.caPem,
    certPem: home.certPem,
    keyPem: home.keyPem,
    // The phonebook's certificate on the same time as peers' (certTimeOf): a wall clock a year off must not
    // stop us publishing or looking anyone up.
    certTime: () => certTimeOf(clock),
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
      knockSecret: opts.knockSecret,
      inboxLimits: opts.inboxLimits,
      requestLimits: opts.requestLimits,
      outboxRetryMs: opts.outboxRetryMs,
      refusalBackoff: opts.refusalBackoff,
      maxUnreadMs: opts.maxUnreadMs,
      publishTtlSeconds: opts.publishTtlSeconds,
      onEvent: opts.onEvent,
      renewalCheckMs: opts.renewalCheckMs,
      bootClock: opts.bootClock,
      networkPollMs: opts.networkPollMs,
      // enroll's file: `enroll` and the next start see the renewed certificate.
      saveCertificate: (certPem) => writeCertificate(home.dir, certPem),
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
