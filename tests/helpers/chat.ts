/**
 * Chat test rig: a real phonebook (directory + CA + Roughtime on loopback, port 0), users enrolled through
 * the real enrollment, engines started from their home folders, and an event recorder with bounded waits.
 */
import type { PeerQuotaLimits } from "../../client/peer_quota.ts";
import type { RequestLimits } from "../../client/requests.ts";
import { faketimeEnv, removeFaketimeLeftovers } from "./faketime.ts";
import { join } from "node:path";
import dgram from "node:dgram";
import { startDirectoryServer } from "../../server/mod.ts";
import type { DirectoryServerOptions, RelayLimits, RunningDirectory } from "../../server/mod.ts";
import { enroll } from "../../client/enroll.ts";
import type { HomeState } from "../../client/home.ts";
import crypto from "node:crypto";
import tls from "node:tls";
import net from "node:net";
import { decodeKnockSecret, makeKnock, newKnockSecret } from "../../contract/mod.ts";
import { DirectoryClient } from "../../client/directory_client.ts";
import type { Publication } from "../../client/candidates.ts";
import {
  CHAT_DB_FILE,
  ChatEngine,
  type ChatEngineOptions,
  type ClockLike,
  type DirectoryLike,
  type HomeEngineOptions,
  startEngineFromHome,
} from "../../client/engine.ts";
import type { EngineEvent } from "../../client/engine_types.ts";
import { deadlinePassed, type TimeStatus, type TrustedTime } from "../../clock/mod.ts";
import { type CaMaterial, createCrl, fingerprintOf, type ParsedCrl } from "../../pki/mod.ts";
import {
  encodeFrame,
  type Frame,
  FrameDecoder,
  type HelloFrame,
  helloSignedData,
  parseFrame,
  PROTOCOL_VERSION,
  signHello,
} from "../../client/protocol/mod.ts";
import type { SessionLimits } from "../../client/session/limits.ts";
import { ChatStore, type StoredContact } from "../../client/store/store.ts";
import { SessionManager } from "../../client/session/manager.ts";
import { PeerTrust, type PinStore } from "../../client/peer_trust.ts";
import type { TestCa, TestLeaf } from "./pki.ts";

export interface Phonebook {
  dir: string;
  server: RunningDirectory;
  /** Stops the directory (and its Roughtime server) and starts it again on the same ports and data. */
  restart(opts?: { downMs?: number }): Promise<void>;
  close(): Promise<void>;
}

export async function startPhonebook(
  opts: Pick<DirectoryServerOptions, "onRelayForward"> & { relayLimits?: Partial<RelayLimits> } = {},
): Promise<Phonebook> {
  const dir = await Deno.makeTempDir({ prefix: "securechat-pb-" });
  const start = (port: number, rtPort: number, relayPort = 0) =>
    startDirectoryServer({
      dataDir: join(dir, "data"),
      port,
      roughtime: { hostname: "127.0.0.1", port: rtPort },
      relay: { port: relayPort, limits: opts.relayLimits },
      onRelayForward: opts.onRelayForward,
      onError: () => {},
    });
  const pb: Phonebook = {
    dir,
    server: await start(0, 0),
    restart: async (opts = {}) => {
      const port = pb.server.port;
      const rtPort = pb.server.roughtime!.port;
      const relayPort = pb.server.relay?.port ?? 0;
      await pb.server.close();
      await new Promise((r) => setTimeout(r, opts.downMs ?? 0));
      pb.server = await start(port, rtPort, relayPort);
    },
    close: async () => {
      await pb.server.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  return pb;
}

/** Enrolls `name` in a fresh temporary home folder (removed by the caller with Deno.remove(home.dir)). */
export async function enrollUser(pb: Phonebook, name: string): Promise<HomeState> {
  const home = await Deno.makeTempDir({ prefix: `securechat-${name}-` });
  return await enroll({ server: pb.server.url, caFingerprint: pb.server.caFingerprint, name, home });
}

/** Fast timers for tests; everything else as in production. */
/** Message requests (client/requests.ts) hold at most 5 messages of a peer the receiver never wrote to:
 * tests about other things (throughput, restarts, expiry) have one side write many messages first, so the
 * helpers lift that limit; tests/message_requests_test.ts (and any test passing its own) meets the real one. */
export const TEST_REQUEST_LIMITS = { perStranger: 1_000_000 };

/** Refusal backoff (client/outbox.ts) at test speed: the retry tick, doubling to a second. */
export const TEST_REFUSAL_BACKOFF = { baseMs: 100, maxMs: 1000 };

export const TEST_ENGINE_OPTIONS: HomeEngineOptions = {
  outboxRetryMs: 200,
  refusalBackoff: TEST_REFUSAL_BACKOFF,
  timeQueryTimeoutMs: 1000,
  requestLimits: TEST_REQUEST_LIMITS,
};

export class EventLog {
  readonly events: EngineEvent[] = [];
  #waiters: { pred: (e: EngineEvent) => boolean; resolve: (e: EngineEvent) => void }[] = [];

  /** Feed it every event (pass `log.push` as the engine's onEvent). */
  readonly push = (e: EngineEvent): void => {
    this.events.push(e);
    for (const w of [...this.#waiters]) {
      if (w.pred(e)) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  };

  of<K extends EngineEvent["event"]>(kind: K): Extract<EngineEvent, { event: K }>[] {
    return this.events.filter((e) => e.event === kind) as Extract<EngineEvent, { event: K }>[];
  }

  /** Resolves with the first event (already seen or future) matching; rejects after `timeoutMs`. */
  waitFor<K extends EngineEvent["event"]>(
    kind: K,
    pred: (e: Extract<EngineEvent, { event: K }>) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<Extract<EngineEvent, { event: K }>> {
    const match = (e: EngineEvent) => e.event === kind && pred(e as Extract<EngineEvent, { event: K }>);
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen as Extract<EngineEvent, { event: K }>);
    return new Promise((resolve, reject) => {
      const w = {
        pred: match,
        resolve: (e: EngineEvent) => {
          clearTimeout(timer);
          resolve(e as Extract<EngineEvent, { event: K }>);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(
          new Error(`timed out waiting for ${kind}; saw: ${JSON.stringify(this.events.map((e) => e.event))}`),
        );
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }
}

export interface RunningClient {
  home: HomeState;
  engine: ChatEngine;
  /** Its listener's knock secret (registered for rawDial). */
  knockSecret: Uint8Array;
  log: EventLog;
  /** Runs `fn` on a second connection to the client's chat.db (what is on disk, not the engine's state). */
  store<T>(fn: (s: ChatStore) => T): T;
  stop(): Promise<void>;
}

/** Opens `dbPath` beside the engine that owns it (SQLite WAL allows it), runs `fn`, closes. */
export function withStore<T>(dbPath: string, fn: (s: ChatStore) => T): T {
  const s = new ChatStore(dbPath);
  try {
    return fn(s);
  } finally {
    s.close();
  }
}

export async function startClient(home: HomeState, opts: HomeEngineOptions = {}): Promise<RunningClient> {
  const log = new EventLog();
  const knockSecret = opts.knockSecret ?? newKnockSecret();
  const engine = await startEngineFromHome(home, {
    ...TEST_ENGINE_OPTIONS,
    ...opts,
    knockSecret,
    onEvent: log.push,
  });
  registerKnock(engine.address.port, knockSecret);
  return {
    home,
    engine,
    knockSecret,
    log,
    store: (fn) => withStore(join(home.dir, CHAT_DB_FILE), fn),
    stop: () => engine.close(),
  };
}

/** Polls `fn` until it returns true (bounded). */
export async function until(fn: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition") {
  const end = performance.now() + timeoutMs;
  while (!(await fn())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** True when `needle` occurs in any of the files (missing files count as not containing it). */
export async function filesContain(paths: string[], needle: Uint8Array): Promise<boolean> {
  for (const p of paths) {
    let data: Uint8Array;
    try {
      data = await Deno.readFile(p);
    } catch {
      continue;
    }
    outer: for (let i = 0; i + needle.length <= data.length; i++) {
      for (let j = 0; j < needle.length; j++) if (data[i + j] !== needle[j]) continue outer;
      return true;
    }
  }
  return false;
}

// ---- Engines on a test CA, with an in-memory phonebook and a local-time clock, for attack tests ----

export interface FakeEntry {
  name: string;
  online: boolean;
  address: { host: string; port: number } | null;
  fingerprint: string;
  revoked: boolean;
  /** The listener's knock secret as published (base64url). */
  knock?: string | null;
}

/** Knock secrets of the listeners tests started in this process, by port: rawDial knocks with them. */
const knockByPort = new Map<number, Uint8Array>();

/** The knock secret the phonebook lists for `name`, looked up as the enrolled user of `as` (what any peer
 * who dials `name` does); null when none is listed. */
export async function listedKnock(as: HomeState, name: string): Promise<Uint8Array | null> {
  const d = new DirectoryClient({ url: as.server, caPem: as.caPem, certPem: as.certPem, keyPem: as.keyPem });
  try {
    return decodeKnockSecret((await d.lookup(name))?.knock ?? null);
  } finally {
    d.close();
  }
}

/** Lets rawDial knock on `port` with `secret` (a listener started by hand). */
export function registerKnock(port: number, secret: Uint8Array): void {
  knockByPort.set(port, secret);
}

/** An in-memory phonebook: entries set by the test, a revocation list the test controls. Like the real CA, it
 * issues a new list (CRL Number + 1, thisUpdate now) whenever `revoked` changed since the last one, or the last
 * one is past its nextUpdate. */
export class FakeDirectory implements DirectoryLike {
  revoked = new Set<string>();
  /** While true, lookups and the CRL fail as with an unreachable phonebook (publish still fills the shared
   * entries, so that a test can put the other side's address in place). */
  down = false;
  /** While true, only the CRL fails (a phonebook that answers lookups but whose CRL is blocked or broken). */
  crlBlocked = false;
  /** Lifetime of each list it issues (nextUpdate = thisUpdate + this); null for no nextUpdate. */
  crlLifetimeMs: number | null = 60_000;
  /** When set, served instead of the current list (a replayed or cached older CRL). */
  replay: ParsedCrl | null = null;
  /** The CA that signs the lists served (set by startTestEngine): the engine keeps the signed DER and
   * verifies it again at its next start. */
  ca: CaMaterial | null = null;
  #issued: ParsedCrl | null = null;
  #issuedKey = "";
  /** Pass another directory's `entries` to share one phonebook between engines. */
  constructor(
    private readonly self?: { name: string; fingerprint: string },
    readonly entries = new Map<string, FakeEntry>(),
  ) {}
  publish(host: string, port: number, _ttlSeconds?: number, reach?: Publication): Promise<void> {
    if (this.self) {
      this.entries.set(this.self.name, {
        name: this.self.name,
        online: true,
        address: { host, port },
        fingerprint: this.self.fingerprint,
        revoked: false,
        knock: reach?.knock ?? null,
      });
    }
    return Promise.resolve();
  }
  /** Lists `name` as online at 127.0.0.1:`port` with that certificate fingerprint (a listener the test
   * started by hand: a raw peer, a victim process). */
  listAt(name: string, fingerprint: string, port: number, knock: string | null = null): void {
    this.entries.set(name, {
      name,
      online: true,
      address: { host: "127.0.0.1", port },
      fingerprint,
      revoked: false,
      knock,
    });
  }
  withdraw(): Promise<void> {
    if (this.self) this.entries.delete(this.self.name);
    return Promise.resolve();
  }
  /** Answered once, instead of the current entry, to the next look-up of its name (an answer read just
   * before the user published again, e.g. between a restarted listener binding and its publication). */
  readonly staleOnce = new Map<string, FakeEntry>();
  /** Look-ups answered, by name. */
  readonly lookups = new Map<string, number>();
  lookup(name: string): Promise<FakeEntry | null> {
    if (this.down) return Promise.reject(new Error("cannot reach the directory (test: down)"));
    this.lookups.set(name, (this.lookups.get(name) ?? 0) + 1);
    const stale = this.staleOnce.get(name);
    if (stale) {
      this.staleOnce.delete(name);
      return Promise.resolve(stale);
    }
    return Promise.resolve(this.entries.get(name) ?? null);
  }
  revokedSerials(): Promise<Set<string>> {
    return this.crl().then((c) => c.revokedSerials);
  }
  /** The list as the phonebook would serve it now (the signature check is the directory client's job). */
  current(): ParsedCrl {
    const key = [...this.revoked].sort().join(",");
    const expired = this.#issued?.nextUpdateMs != null && Date.now() > this.#issued.nextUpdateMs;
    if (!this.#issued || key !== this.#issuedKey || expired) {
      // At least a second after the previous one: a signed CRL carries whole seconds, and their order must
      // survive that (the engine verifies the stored DER again at start and uses its times).
      const thisUpdateMs = Math.max(Date.now(), (this.#issued?.thisUpdateMs ?? 0) + 1000);
      this.#issued = {
        revokedSerials: new Set(this.revoked),
        thisUpdateMs,
        nextUpdateMs: this.crlLifetimeMs === null ? null : thisUpdateMs + this.crlLifetimeMs,
        crlNumber: (this.#issued?.crlNumber ?? 0n) + 1n,
      };
      this.#issuedKey = key;
    }
    return this.#issued;
  }
  crl(): Promise<ParsedCrl> {
    if (this.down || this.crlBlocked) {
      return Promise.reject(new Error("cannot reach the directory (test: down)"));
    }
    const c = this.replay ?? this.current();
    return this.#signed(c).then((der) => ({ ...c, revokedSerials: new Set(c.revokedSerials), ...der }));
  }
  /** A real signed CRL with exactly the contents of `c`. */
  async #signed(c: ParsedCrl): Promise<{ der?: Uint8Array }> {
    if (!this.ca) return {};
    const crl = await createCrl(
      this.ca,
      [...c.revokedSerials].map((serial) => ({ serial, revokedAtMs: c.thisUpdateMs })),
      c.thisUpdateMs,
      { crlNumber: c.crlNumber, thisUpdateMs: c.thisUpdateMs, nextUpdateMs: c.nextUpdateMs },
    );
    return { der: new Uint8Array(crl.rawData) };
  }
}

/** A clock that trusts the local wall clock (±10 ms): for tests about sessions, not about time. */
export function localClock(): ClockLike {
  const now = (): TrustedTime => {
    const t = Date.now();
    return { earliestMs: t - 10, latestMs: t + 10, nowMs: t };
  };
  const status = (): TimeStatus => ({
    state: "verified",
    time: now(),
    uncertaintyMs: 10,
    configured: 0,
    answered: 0,
    agreeing: 0,
    singleSource: true,
    lastVerifiedMs: Date.now(),
  });
  return {
    start() {},
    stop() {},
    sync: () => Promise.resolve(status()),
    now,
    status,
    deadlinePassed: (d) => deadlinePassed(d, now()),
    subscribe: () => () => {},
    proveTime: () => Promise.reject(new Error("no time server in this test")),
  };
}

export interface TestEngine {
  engine: ChatEngine;
  /** The knock secret its listener wants (registered for rawDial). */
  knockSecret: Uint8Array;
  log: EventLog;
  directory: FakeDirectory;
  dir: string;
  /** Runs `fn` on a second connection to the engine's chat.db. */
  store<T>(fn: (s: ChatStore) => T): T;
  stop(): Promise<void>;
}

/** An engine for `leaf` (a user certificate from `ca`) on a fake phonebook and the local clock. */
export async function startTestEngine(
  ca: TestCa,
  leaf: TestLeaf,
  opts: {
    directory?: FakeDirectory;
    limits?: Partial<SessionLimits>;
    inboxLimits?: Partial<PeerQuotaLimits>;
    /** Default TEST_REQUEST_LIMITS. */
    requestLimits?: Partial<RequestLimits>;
    crlMaxAgeMs?: number;
    /** Reuse this folder (a restart of the same client); `stop` then leaves it for the caller to remove. */
    dir?: string;
    /** Default localClock(). */
    clock?: ClockLike;
    /** Default TEST_REFUSAL_BACKOFF. */
    refusalBackoff?: { baseMs?: number; maxMs?: number };
    /** Default the system's (a wake test moves its own). */
    bootClock?: ChatEngineOptions["bootClock"];
    networkPollMs?: number;
    lostPeerKeepMs?: number;
    /** Default 127.0.0.1:0. */
    listen?: ChatEngineOptions["listen"];
    portMapping?: boolean;
    homeRouter?: ChatEngineOptions["homeRouter"];
    storeWriterThread?: boolean;
  } = {},
): Promise<TestEngine> {
  const dir = opts.dir ?? await Deno.makeTempDir({ prefix: `securechat-${leaf.name}-` });
  const directory = opts.directory ?? new FakeDirectory({ name: leaf.name, fingerprint: leaf.fingerprint });
  directory.ca ??= ca.material;
  const log = new EventLog();
  const knockSecret = newKnockSecret();
  const engine = await ChatEngine.start({
    knockSecret,
    name: leaf.name,
    certPem: leaf.certPem,
    keyPem: leaf.keyPem,
    caPem: ca.certPem,
    dbPath: join(dir, "chat.db"),
    directory,
    clock: opts.clock ?? localClock(),
    timeKeys: [],
    limits: opts.limits,
    inboxLimits: opts.inboxLimits,
    requestLimits: opts.requestLimits ?? TEST_REQUEST_LIMITS,
    crlMaxAgeMs: opts.crlMaxAgeMs,
    outboxRetryMs: 100,
    refusalBackoff: opts.refusalBackoff ?? TEST_REFUSAL_BACKOFF,
    bootClock: opts.bootClock,
    networkPollMs: opts.networkPollMs,
    lostPeerKeepMs: opts.lostPeerKeepMs,
    listen: opts.listen,
    portMapping: opts.portMapping,
    homeRouter: opts.homeRouter,
    storeWriterThread: opts.storeWriterThread,
    onEvent: log.push,
  });
  registerKnock(engine.address.port, knockSecret);
  return {
    engine,
    knockSecret,
    log,
    directory,
    dir,
    store: (fn) => withStore(join(dir, "chat.db"), fn),
    stop: async () => {
      await engine.close();
      if (!opts.dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

// ---- The session part alone: a listener with peer trust, no store, no phonebook ----

/** Contacts' pins in memory (the PinStore of peer trust). */
export class MemoryPins implements PinStore {
  readonly rows = new Map<string, StoredContact>();
  contact(name: string): StoredContact | null {
    return this.rows.get(name) ?? null;
  }
  #ensure(name: string): StoredContact {
    let c = this.rows.get(name);
    if (!c) {
      c = {
        name,
        pinnedFingerprint: null,
        pinKind: null,
        pendingFingerprint: null,
        certificateDer: null,
        verified: false,
        defaultTtlMs: null,
      };
      this.rows.set(name, c);
    }
    return c;
  }
  pin(name: string, fp: string): void {
    const c = this.#ensure(name);
    if (c.pinnedFingerprint !== fp) c.verified = false;
    c.pinnedFingerprint = fp;
    c.pinKind = "key";
    c.pendingFingerprint = null;
  }
  /** A pin as an older version stored it: the certificate's fingerprint. */
  legacyPin(name: string, certificateFingerprint: string, verified = false): void {
    const c = this.#ensure(name);
    c.pinnedFingerprint = certificateFingerprint;
    c.pinKind = "certificate";
    c.verified = verified;
  }
  convertPin(name: string, certFp: string, keyFp: string): void {
    const c = this.rows.get(name);
    if (c && c.pinKind === "certificate" && c.pinnedFingerprint === certFp) {
      c.pinnedFingerprint = keyFp;
      c.pinKind = "key";
    }
  }
  saveCertificate(name: string, der: Uint8Array): void {
    this.#ensure(name).certificateDer = der;
  }
  setPending(name: string, fp: string | null): void {
    this.#ensure(name).pendingFingerprint = fp;
  }
  setVerified(name: string, v: boolean): void {
    this.#ensure(name).verified = v;
  }
}

export interface TestListener {
  /** The part under test (listener caps, handshakes, sessions, frame rates). */
  sessions: SessionManager;
  /** Frames that reach the layer above (typing notices as `typing` events). */
  log: EventLog;
  address: { host: string; port: number };
  stop(): Promise<void>;
}

/** `leaf`'s peer listener on loopback: real TLS, real peer trust (test CA, local time, nothing revoked). */
export async function startTestListener(
  ca: Pick<TestCa, "certPem">,
  leaf: Pick<TestLeaf, "name" | "certPem" | "keyPem" | "fingerprint">,
  opts: { limits?: Partial<SessionLimits>; host?: string } = {},
): Promise<TestListener> {
  const log = new EventLog();
  const trust = new PeerTrust({
    ownName: leaf.name,
    caPem: ca.certPem,
    certTime: () => ({ earliestMs: Date.now() - 1000, latestMs: Date.now() + 1000 }),
    revokedSerials: () => Promise.resolve(new Set<string>()),
    pins: new MemoryPins(),
    emit: log.push,
  });
  const sessions = new SessionManager(
    {
      name: leaf.name,
      certPem: leaf.certPem,
      keyPem: leaf.keyPem,
      caPem: ca.certPem,
      fingerprint: leaf.fingerprint,
      privateKey: crypto.createPrivateKey(leaf.keyPem),
    },
    (der, name, role) => trust.authenticate(der, name, role),
    {
      onActive: () => {},
      onFrame: (s, f) => {
        if (f.t === "typing") log.push({ event: "typing", from: s.peer!.name });
        return Promise.resolve();
      },
      onClose: () => {},
    },
    opts.limits,
  );
  const address = await sessions.listen(opts.host ?? "127.0.0.1", 0);
  registerKnock(address.port, sessions.knockSecret);
  return { sessions, log, address, stop: () => sessions.close() };
}

// ---- A hand-driven peer: raw TLS + frames, to misbehave on purpose ----

export interface RawPeer {
  socket: tls.TLSSocket;
  frames: Frame[];
  /** Set when the other side's bytes could not be decoded. */
  decodeError: string | null;
  closed: Promise<void>;
  isClosed(): boolean;
  send(f: Frame): void;
  raw(bytes: Uint8Array): void;
  /** A correctly signed hello from `from` to `to` for this connection (as dialer or listener). */
  hello(opts: { from: string; to: string; signKeyPem?: string; role?: "dialer" | "listener" }): HelloFrame;
  waitFrame(pred: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
}

function wrapRaw(socket: tls.TLSSocket, role: "dialer" | "listener", certPem: string | null): RawPeer {
  const frames: Frame[] = [];
  const decoder = new FrameDecoder();
  let decodeError: string | null = null;
  let closedFlag = false;
  const waiters: (() => void)[] = [];
  socket.on("data", (chunk: Uint8Array) => {
    try {
      for (const b of decoder.push(chunk)) frames.push(parseFrame(b));
    } catch (e) {
      decodeError = (e as Error).message;
    }
    for (const w of [...waiters]) w();
  });
  socket.on("error", () => {});
  const closed = new Promise<void>((r) =>
    socket.on("close", () => {
      closedFlag = true;
      for (const w of [...waiters]) w();
      r();
    })
  );
  const peer: RawPeer = {
    socket,
    frames,
    get decodeError() {
      return decodeError;
    },
    closed,
    isClosed: () => closedFlag,
    send: (f) => socket.write(encodeFrame(f)),
    raw: (b) => socket.write(b),
    hello: ({ from, to, signKeyPem, role: r }) => {
      const theirs = socket.getPeerCertificate(true) as { raw?: Uint8Array };
      const mine = socket.getFinished()!;
      const peerFin = socket.getPeerFinished()!;
      const fin = role === "dialer"
        ? { serverFinished: new Uint8Array(peerFin), clientFinished: new Uint8Array(mine) }
        : { serverFinished: new Uint8Array(mine), clientFinished: new Uint8Array(peerFin) };
      const binding = {
        role: r ?? role,
        from,
        to,
        fromFp: certPem ? fingerprintOf(certPem) : "0".repeat(64),
        toFp: fingerprintOf(new Uint8Array(theirs.raw!)),
        ...fin,
      };
      const key = crypto.createPrivateKey(signKeyPem!);
      return {
        t: "hello",
        v: PROTOCOL_VERSION,
        role: binding.role,
        from,
        to,
        fromFp: binding.fromFp,
        toFp: binding.toFp,
        sig: signHello(key, helloSignedData(binding)),
      };
    },
    waitFrame: (pred, timeoutMs = 5000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const f = frames.find(pred);
          if (f) {
            done();
            resolve(f);
          } else if (closedFlag) {
            done();
            reject(new Error(`closed without the frame; got ${JSON.stringify(frames.map((x) => x.t))}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error("timed out waiting for a frame"));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.splice(waiters.indexOf(check), 1);
        };
        waiters.push(check);
        check();
      }),
  };
  return peer;
}

/** Dials `port` with a client certificate (or none) over TLS; resolves after the TLS handshake. It knocks
 * first with the secret registered for `port` (registerKnock), or with the secret `opts.knock` (null: no
 * knock), or sends `opts.knockBytes` as they are (a wrong or replayed knock). */
export function rawDial(
  port: number,
  cred: { certPem: string; keyPem: string } | null,
  tlsOpts: tls.ConnectionOptions = {},
  opts: { knock?: Uint8Array | null; knockBytes?: Uint8Array } = {},
): Promise<RawPeer> {
  // A certificate configured with a key that is not its own: Deno's node:tls over a given socket then throws
  // an uncaught TypeError and never settles, while over its own connection it fails locally, before any
  // byte is sent (what the test of that case checks). Nothing is knocked then: nothing leaves this machine.
  if (
    cred && !new crypto.X509Certificate(cred.certPem).checkPrivateKey(crypto.createPrivateKey(cred.keyPem))
  ) {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port,
        cert: cred.certPem,
        key: cred.keyPem,
        rejectUnauthorized: false,
        minVersion: "TLSv1.3",
        checkServerIdentity: () => undefined,
        ...tlsOpts,
      });
      socket.once("secureConnect", () => resolve(wrapRaw(socket, "dialer", cred.certPem)));
      socket.once("error", (e) => {
        socket.destroy();
        reject(e);
      });
    });
  }
  return new Promise((resolve, reject) => {
    const raw = net.connect({ host: "127.0.0.1", port });
    // Whatever fails first (TCP, the listener closing unanswered, TLS) ends the attempt; a TLS error may be
    // raised on the TCP socket it runs over.
    raw.on("error", (e) => {
      raw.destroy();
      reject(e);
    });
    raw.once("close", () => reject(new Error("connection closed before the TLS handshake completed")));
    const knock = opts.knock === undefined ? knockByPort.get(port) : opts.knock;
    if (opts.knockBytes) raw.write(opts.knockBytes);
    else if (knock) raw.write(makeKnock(knock));
    const socket = tls.connect({
      socket: raw,
      ...(cred ? { cert: cred.certPem, key: cred.keyPem } : {}),
      rejectUnauthorized: false,
      minVersion: "TLSv1.3",
      checkServerIdentity: () => undefined,
      ...tlsOpts,
    });
    socket.once("secureConnect", () => resolve(wrapRaw(socket, "dialer", cred?.certPem ?? null)));
    socket.once("error", (e) => {
      socket.destroy();
      reject(e);
    });
  });
}

/** A TLS listener that hands each accepted connection to `onPeer` as a RawPeer. */
export async function rawListen(
  cred: { certPem: string; keyPem: string },
  onPeer: (p: RawPeer) => void,
  tlsOpts: tls.TlsOptions = {},
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer({
    cert: cred.certPem,
    key: cred.keyPem,
    requestCert: true,
    rejectUnauthorized: false,
    ...tlsOpts,
  }, (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    onPeer(wrapRaw(s, "listener", cred.certPem));
  });
  server.on("tlsClientError", () => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as { port: number }).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

// ---- `securechat chat --headless` as a child process ----

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

export type HeadlessEvent = Record<string, unknown> & { event: string };

export interface HeadlessProc {
  events: HeadlessEvent[];
  stderr(): string;
  cmd(c: Record<string, unknown>): Promise<void>;
  /** Writes one line as it is (for malformed commands). */
  rawLine(line: string): Promise<void>;
  waitEvent(pred: (e: HeadlessEvent) => boolean, timeoutMs?: number, what?: string): Promise<HeadlessEvent>;
  /** Ends stdin and waits for the exit code. */
  quit(): Promise<number>;
  kill(signal?: Deno.Signal): Promise<number>;
  pid: number;
}

/** Starts `securechat chat --headless --home DIR` (optionally under libfaketime: `faketime` is the wrapper's -f value). */
export function spawnHeadless(
  homeDir: string,
  opts: {
    faketime?: string;
    fakeMonotonic?: boolean;
    args?: string[];
    /** Run under `ulimit -n` of this many file descriptors (through bash). */
    maxOpenFiles?: number;
    /** Run inside this network namespace (`ip netns exec`, which execs the program: the pid is ours). */
    netns?: string;
    /** More environment for the program (test hooks). */
    env?: Record<string, string>;
  } = {},
): HeadlessProc {
  const denoArgs = [
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-sys",
    MAIN,
    "chat",
    "--headless",
    "--home",
    homeDir,
    ...(opts.args ?? []),
  ];
  // Outside a namespace of the test's own, no port mapping: the machine's real router is not ours to ask.
  const env: Record<string, string> = {
    NO_COLOR: "1",
    RUST_BACKTRACE: "0",
    ...(opts.netns === undefined ? { SECURECHAT_NO_PORT_MAPPING: "1" } : {}),
    ...opts.env,
  };
  if (opts.faketime !== undefined) {
    Object.assign(env, faketimeEnv(opts.faketime, { fakeMonotonic: opts.fakeMonotonic }));
  }
  let cmd = Deno.execPath();
  let args = denoArgs;
  if (opts.maxOpenFiles !== undefined) {
    args = ["-c", `ulimit -n ${opts.maxOpenFiles} && exec "$0" "$@"`, cmd, ...args];
    cmd = "bash";
  }
  if (opts.netns !== undefined) {
    args = ["netns", "exec", opts.netns, cmd, ...args];
    cmd = "ip";
  }
  const child = new Deno.Command(cmd, { args, env, stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const events: HeadlessEvent[] = [];
  let err = "";
  const waiters = new Set<() => void>();
  const readOut = (async () => {
    let buf = "";
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          events.push(JSON.parse(line));
        } catch {
          events.push({ event: "unparsed", line });
        }
      }
      for (const w of [...waiters]) w();
    }
  })();
  const readErr = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) err += dec.decode(chunk, { stream: true });
  })();
  const writer = child.stdin.getWriter();
  let stdinClosed = false;
  const status = child.status.then(async (s) => {
    if (opts.faketime !== undefined) removeFaketimeLeftovers(child.pid);
    await Promise.all([readOut, readErr]);
    for (const w of [...waiters]) w();
    return s.code;
  });
  let exited = false;
  status.then(() => exited = true);
  const proc: HeadlessProc = {
    events,
    pid: child.pid,
    stderr: () => err,
    cmd: async (c) => {
      await writer.write(new TextEncoder().encode(JSON.stringify(c) + "\n"));
    },
    rawLine: async (line) => {
      await writer.write(new TextEncoder().encode(line + "\n"));
    },
    waitEvent: (pred, timeoutMs = 15_000, what = "event") =>
      new Promise((resolve, reject) => {
        const check = () => {
          const e = events.find(pred);
          if (e) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(e);
          } else if (exited) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`process exited before ${what}; stderr: ${err.slice(-2000)}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}; events: ${JSON.stringify(events).slice(-3000)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    quit: async () => {
      if (!stdinClosed) {
        stdinClosed = true;
        await writer.close().catch(() => {});
      }
      return await status;
    },
    kill: async (signal: Deno.Signal = "SIGKILL") => {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
      // For a catchable signal stdin stays open until the process is gone (its end would be a second way to
      // quit, racing the signal).
      if (signal !== "SIGKILL") await status;
      if (!stdinClosed) {
        stdinClosed = true;
        await writer.close().catch(() => {});
      }
      return await status;
    },
  };
  return proc;
}

/** The chat store's files in a home folder: every place a message's bytes could linger. */
export function dbFiles(home: HomeState): string[] {
  const db = join(home.dir, "chat.db");
  return [db, `${db}-wal`, `${db}-shm`, `${db}-journal`];
}

/** A UDP port nobody answers on (a Roughtime server that is down). */
export async function deadUdpPort(): Promise<number> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A phonebook with alice and bob enrolled, removed with their home folders afterwards. */
export async function withPair(fn: (pb: Phonebook, alice: HomeState, bob: HomeState) => Promise<void>) {
  const pb = await startPhonebook();
  const alice = await enrollUser(pb, "alice");
  const bob = await enrollUser(pb, "bob");
  try {
    await fn(pb, alice, bob);
  } finally {
    await pb.close();
    await Deno.remove(alice.dir, { recursive: true });
    await Deno.remove(bob.dir, { recursive: true });
  }
}
