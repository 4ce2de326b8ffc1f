/**
 * All peer sessions of one client: the TLS listener, dialing, the per-peer and per-address caps, and the rule
 * that keeps one connection per peer when both dialed at once (the connection dialed by the
 * lexicographically smaller name wins, on both sides, so both keep the same one).
 *
 * The TLS layer runs with rejectUnauthorized:false on both sides and TLS 1.3 only: certificate validity is
 * judged by `authenticate` on trusted time (the TLS stack would use the local clock), and possession of the
 * certificate's key is proved by the hello signature over both Finished messages (peer_session.ts).
 *
 * The port is a plain TCP listener: a connection must first knock (contract/knock.ts, with the secret we
 * publish to the phonebook) before it is handed to the TLS server, which never listens itself. Without a
 * valid knock the connection is closed before we send a byte, so a scanner never sees our certificate.
 * Every dial knocks with the secret the phonebook listed for the peer (setPeerKnock).
 */
import net from "node:net";
import tls from "node:tls";
import type { Frame } from "../protocol/frames.ts";
import { DEFAULT_LIMITS, type SessionLimits } from "./limits.ts";
import { type Authenticate, type CloseInfo, type LocalIdentity, PeerSession } from "./peer_session.ts";
import { SessionError } from "./errors.ts";
import { addressKind, plainAddress, type SessionPath } from "../candidates.ts";
import { couldBeKnock, KNOCK_BYTES, KnockGuard, makeKnock, newKnockSecret } from "../../contract/mod.ts";
import { addressGroup } from "./address_group.ts";

export const TLS_MIN_VERSION = "TLSv1.3";
/** A second session with a peer that the tie-break would refuse waits while the current one is probed,
 * unless the current one heard from the peer this recently (see #onOpen). */
export const DUPLICATE_FRESH_MS = 1000;
/** How long the current session has to answer that probe before the new one takes its place. */
export const DUPLICATE_PROBE_MS = 3000;

export interface ManagerHandlers {
  /** A session became the active one for its peer. */
  onActive(s: PeerSession): void;
  onFrame(s: PeerSession, f: Frame): Promise<void> | void;
  /** A session closed; `wasActive` when it was the peer's active one (and no other replaced it). */
  onClose(s: PeerSession, info: CloseInfo, wasActive: boolean): void;
  /** A connection refused before it became a session (certificate, pin, caps, hello). */
  onRefused?(info: { name: string | null; role: "dialer" | "listener"; code: string; message: string }): void;
}

/** A connection accepted but not yet authenticated, counted from accept (before TLS). */
interface PendingConnection {
  raw: net.Socket;
  addr: string;
  timer: ReturnType<typeof setTimeout> | null;
}

/** What the listener has done to protect itself (tests and diagnostics read it). */
export interface ListenerStats {
  /** Raw connections accepted. */
  accepted: number;
  /** Closed at accept because MAX_CONNECTIONS were held. */
  overCapacity: number;
  /** Pending connections dropped to make room (per-address or total pending cap). */
  evicted: number;
  /** Closed because the TLS handshake did not complete in time. */
  handshakeTimeouts: number;
  /** Times the accept loop was found dead and the port listened on again. */
  relistens: number;
  /** Closed unanswered: the first bytes were not a valid knock (wrong secret, old, replayed, not one). */
  knockRefused: number;
}

/** Options of the listener beyond the limits. */
export interface ManagerOptions {
  /** The secret our listener wants knocked with (default: a fresh random one, for this run). */
  knockSecret?: Uint8Array;
  /** The time knocks are made and checked on (the engine gives its trusted time; default the local clock). */
  now?: () => number;
}

/** Frames go out as they are written: a session writes small frames (a receipt, a typing notice) that
 * Nagle's algorithm would hold back until the peer's delayed ACK of the previous one (40 ms on Linux), and
 * what is written together already leaves in one write (sendBatch). A relay's circuit or a punched socket
 * is a TCP socket too; anything else (a test's stream) is left alone. */
function noDelay(socket: unknown): void {
  const s = socket as { setNoDelay?: (on: boolean) => unknown };
  if (typeof s.setNoDelay === "function") s.setNoDelay(true);
}

export class SessionManager {
  readonly limits: SessionLimits;
  /** The TCP listener on our port (replaced by a re-listen). */
  #server: net.Server | null = null;
  /** Servers replaced by a re-listen: they hold no port, only connections they accepted earlier. */
  readonly #oldServers = new Set<net.Server>();
  /** The TLS server connections are handed to once they knocked; it never listens on a port. */
  readonly #tls: tls.Server;
  /** Our listener's secret (published with our presence) and the check of knocks made with it. */
  readonly knockSecret: Uint8Array;
  readonly #guard: KnockGuard;
  /** The secret each peer's listener wants, as the phonebook last listed it. */
  readonly #peerKnocks = new Map<string, Uint8Array>();
  readonly #now: () => number;
  #bound: { host: string; port: number } | null = null;
  readonly #sessions = new Set<PeerSession>();
  readonly #active = new Map<string, PeerSession>();
  /** Sessions whose certificate names a peer, by name, from the moment it was verified until they close. */
  readonly #named = new Map<string, Set<PeerSession>>();
  /** Insertion order is age: the first entry is the oldest pending connection. */
  readonly #pending = new Map<net.Socket, PendingConnection>();
  readonly #pendingByKey = new Map<string, PendingConnection>();
  readonly #raw = new Set<net.Socket>();
  /** Connections handed to the listener that arrived some other way than on its port (a relay's circuit). */
  readonly #arrivedVia = new WeakMap<net.Socket, SessionPath>();
  #closing = false;
  #checkTimer: ReturnType<typeof setInterval> | null = null;
  #probe: { socket: net.Socket; timer: ReturnType<typeof setTimeout> } | null = null;
  #lastAcceptMs = 0;
  #dropsSinceReport = { limits: 0, knock: 0 };
  #dropReportTimer: ReturnType<typeof setTimeout> | null = null;
  readonly stats: ListenerStats = {
    accepted: 0,
    overCapacity: 0,
    evicted: 0,
    handshakeTimeouts: 0,
    relistens: 0,
    knockRefused: 0,
  };

  #identity: LocalIdentity;
  readonly #authenticate: Authenticate;
  readonly #handlers: ManagerHandlers;

  constructor(
    identity: LocalIdentity,
    authenticate: Authenticate,
    handlers: ManagerHandlers,
    limits: Partial<SessionLimits> = {},
    opts: ManagerOptions = {},
  ) {
    this.#identity = identity;
    this.#authenticate = authenticate;
    this.#handlers = handlers;
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    this.knockSecret = opts.knockSecret ?? newKnockSecret();
    this.#guard = new KnockGuard(this.knockSecret);
    this.#now = opts.now ?? Date.now;
    this.#tls = this.#createTlsServer();
  }

  /** The secret `name`'s listener wants (from its phonebook entry), or null to forget it: dials to `name`
   * knock with it from now on. */
  setPeerKnock(name: string, secret: Uint8Array | null): void {
    if (secret) this.#peerKnocks.set(name, secret);
    else this.#peerKnocks.delete(name);
  }

  /** The secret dials to `name` knock with now, or null. */
  peerKnock(name: string): Uint8Array | null {
    return this.#peerKnocks.get(name) ?? null;
  }

  /** Presents `next` (a renewed certificate) in every session opened from now on, dialled or accepted; open
   * sessions carry on with the certificate they proved. The listener's TLS context is swapped in place
   * (setSecureContext), so the port and the connections being accepted stay. */
  setIdentity(next: LocalIdentity): void {
    this.#identity = next;
    const ctx = { cert: next.certPem, key: next.keyPem, ca: next.caPem };
    this.#tls.setSecureContext(ctx);
  }

  /** Starts the listener (TCP, knock, then TLS); resolves with the bound address. */
  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const server = this.#createServer();
    this.#server = server;
    this.#bound = await this.#bind(server, host, port);
    this.#checkTimer = setInterval(() => this.#checkListener(), this.limits.listenerCheckIntervalMs);
    return this.#bound;
  }

  #createServer(): net.Server {
    const server = net.createServer((raw) => this.#onConnection(raw));
    // Accept errors must not end the process; a dead accept loop is found by #checkListener.
    server.on("error", () => {});
    return server;
  }

  #createTlsServer(): tls.Server {
    const server = tls.createServer({
      cert: this.#identity.certPem,
      key: this.#identity.keyPem,
      ca: this.#identity.caPem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: TLS_MIN_VERSION,
    }, (socket) => this.#accept(socket));
    server.on("tlsClientError", (_e, socket) => {
      // A failed TLS handshake (old version, no shared cipher...) never became a session: drop the socket.
      socket.destroy();
    });
    server.on("error", () => {});
    return server;
  }

  #bind(server: net.Server, host: string, port: number): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        const a = server.address() as { address: string; port: number };
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** Every raw connection, from accept, before TLS: the total cap, the pending caps and the handshake
   * deadline are enforced here, so a stranger with no certificate cannot hold more than its share. */
  #onConnection(raw: net.Socket): void {
    this.stats.accepted++;
    this.#lastAcceptMs = Date.now();
    this.#endProbe();
    raw.on("error", () => {});
    noDelay(raw);
    if (this.#closing) {
      raw.destroy();
      return;
    }
    this.#raw.add(raw);
    raw.once("close", () => {
      this.#raw.delete(raw);
      this.#releasePending(raw);
    });
    if (this.#raw.size > this.limits.maxConnections) {
      this.stats.overCapacity++;
      this.#dropped("limits");
      raw.destroy();
      return;
    }
    // Counted by IPv4 address or IPv6 /64 (address_group.ts); the exact address still keys #pendingByKey.
    const addr = addressGroup(raw.remoteAddress ?? "?");
    let fromAddr = 0;
    let oldestFromAddr: PendingConnection | null = null;
    for (const p of this.#pending.values()) {
      if (p.addr !== addr) continue;
      fromAddr++;
      oldestFromAddr ??= p;
    }
    if (oldestFromAddr && fromAddr >= this.limits.maxPendingPerAddress) this.#evict(oldestFromAddr);
    else if (this.#pending.size >= this.limits.maxPending) this.#evict(this.#pending.values().next().value!);
    const p: PendingConnection = { raw, addr, timer: null };
    p.timer = setTimeout(() => {
      p.timer = null;
      this.stats.handshakeTimeouts++;
      this.#dropped("limits");
      raw.destroy();
    }, this.limits.handshakeTimeoutMs);
    this.#pending.set(raw, p);
    this.#pendingByKey.set(this.#socketKey(raw.remoteAddress, raw.remotePort), p);
    this.#readKnock(raw);
  }

  #socketKey(address: string | undefined, port: number | undefined): string {
    return `${address ?? "?"}|${port}`;
  }

  /** Reads the knock (within the handshake deadline, which runs from accept); only a valid one hands the
   * connection, with whatever followed the knock, to the TLS server. Anything else is closed unanswered. */
  #readKnock(raw: net.Socket): void {
    let got = new Uint8Array(0);
    const onData = (chunk: Uint8Array) => {
      const next = new Uint8Array(got.length + chunk.length);
      next.set(got);
      next.set(chunk, got.length);
      got = next;
      if (!couldBeKnock(got)) return refuse();
      if (got.length < KNOCK_BYTES) return;
      raw.off("data", onData);
      raw.pause();
      if (!this.#guard.check(got.subarray(0, KNOCK_BYTES), this.#now()).ok) return refuse();
      if (this.#closing || raw.destroyed) return void raw.destroy();
      if (got.length > KNOCK_BYTES) raw.unshift(got.subarray(KNOCK_BYTES));
      this.#tls.emit("connection", raw);
    };
    const refuse = () => {
      raw.off("data", onData);
      this.stats.knockRefused++;
      this.#dropped("knock");
      raw.destroy();
    };
    raw.on("data", onData);
    // A relayed circuit's leg arrives paused (relay_client.ts): explicitly paused streams stay so.
    raw.resume();
  }

  #evict(p: PendingConnection): void {
    this.stats.evicted++;
    this.#dropped("limits");
    this.#releasePending(p.raw);
    p.raw.destroy();
  }

  #releasePending(raw: net.Socket): void {
    const p = this.#pending.get(raw);
    if (!p) return;
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    this.#pending.delete(raw);
    const key = this.#socketKey(raw.remoteAddress, raw.remotePort);
    if (this.#pendingByKey.get(key) === p) this.#pendingByKey.delete(key);
  }

  /** One summary per interval for connections dropped before TLS (by the limits, or for want of a valid
   * knock): a flood or a scan must not become a flood of logs. */
  #dropped(why: "limits" | "knock"): void {
    this.#dropsSinceReport[why]++;
    if (this.#dropReportTimer || !this.#handlers.onRefused) return;
    this.#dropReportTimer = setTimeout(() => {
      this.#dropReportTimer = null;
      const { limits, knock } = this.#dropsSinceReport;
      this.#dropsSinceReport = { limits: 0, knock: 0 };
      if (limits > 0) {
        this.#handlers.onRefused?.({
          name: null,
          role: "listener",
          code: "TOO_MANY_CONNECTIONS",
          message: `${limits} connection(s) dropped before authentication (listener limits)`,
        });
      }
      if (knock > 0) {
        this.#handlers.onRefused?.({
          name: null,
          role: "listener",
          code: "KNOCK_REFUSED",
          message: `${knock} connection(s) closed unanswered (no valid knock: a scan, or an old secret)`,
        });
      }
    }, this.limits.dropReportIntervalMs);
  }

  /** Node's accept loop in Deno stops for good on EMFILE and emits nothing while the server still says it
   * listens. When nothing was accepted for a while, connect to ourselves: if nothing is accepted in time,
   * listen again on the same port (connections already accepted are not affected; those still queued in
   * the old backlog are reset, and their clients retry). */
  #checkListener(): void {
    const server = this.#server;
    const bound = this.#bound;
    if (this.#closing || !bound) return;
    if (!server) {
      void this.#relisten(null, bound);
      return;
    }
    if (Date.now() - this.#lastAcceptMs < this.limits.listenerCheckIntervalMs) return;
    if (this.#probe) return;
    const seen = this.stats.accepted;
    const host = bound.host === "0.0.0.0" ? "127.0.0.1" : bound.host === "::" ? "::1" : bound.host;
    const socket = net.connect({ host, port: bound.port });
    let ownLimit = false;
    // A probe that cannot connect is as telling as one not accepted: a dead loop leaves the backlog full, and
    // the kernel then drops new SYNs. Only our own descriptors being exhausted (EMFILE here) says nothing.
    socket.on("error", (e: Error & { code?: string }) => {
      if (e.code === "EMFILE" || e.code === "ENFILE") ownLimit = true;
    });
    const timer = setTimeout(() => {
      this.#endProbe();
      if (!ownLimit && this.stats.accepted === seen && this.#server === server && !this.#closing) {
        void this.#relisten(server, bound);
      }
    }, this.limits.listenerCheckTimeoutMs);
    this.#probe = { socket, timer };
  }

  /** Any accept proves the loop alive: the probe is ended at once rather than holding a pending slot. */
  #endProbe(): void {
    const p = this.#probe;
    if (!p) return;
    this.#probe = null;
    clearTimeout(p.timer);
    p.socket.destroy();
  }

  async #relisten(old: net.Server | null, bound: { host: string; port: number }): Promise<void> {
    if (old) {
      this.stats.relistens++;
      this.#oldServers.add(old);
      old.close(() => this.#oldServers.delete(old));
    }
    this.#server = null;
    const server = this.#createServer();
    try {
      await this.#bind(server, bound.host, bound.port);
    } catch {
      // The port could not be taken back yet (descriptors still exhausted): the next check tries again.
      return;
    }
    if (this.#closing) {
      server.close();
      return;
    }
    this.#server = server;
    this.#lastAcceptMs = Date.now();
  }

  #accept(socket: tls.TLSSocket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const p = this.#pendingByKey.get(this.#socketKey(socket.remoteAddress, socket.remotePort));
    // TLS is done: the hello deadline of the session takes over from the handshake deadline. The connection
    // stays pending (it still counts against its address) until the session opens or closes.
    if (p?.timer) {
      clearTimeout(p.timer);
      p.timer = null;
    }
    const s = this.#makeSession(socket, "listener", null);
    const parent = (socket as unknown as { _parent?: net.Socket })._parent;
    const from = plainAddress(s.remoteAddress);
    s.path = (parent && this.#arrivedVia.get(parent)) ??
      { kind: addressKind(from), address: { host: from, port: socket.remotePort ?? 0 } };
    if (p) {
      const release = () => this.#releasePending(p.raw);
      s.opened.then(release, release);
    }
    s.begin();
  }

  /** A connection that reached us another way than our port (a relayed circuit, already joined; a punched
   * one): it is accepted exactly like one on the listener (the same caps, knock, TLS, certificate checks
   * and hello). */
  acceptSocket(raw: net.Socket, path: SessionPath): void {
    if (this.#closing) {
      raw.destroy();
      return;
    }
    this.#arrivedVia.set(raw, path);
    this.#onConnection(raw);
  }

  /** Dials `host:port` expecting `name`; resolves with the peer's active session once a hello was checked. */
  dial(name: string, host: string, port: number): Promise<PeerSession> {
    return this.#dial(name, { host, port }, { kind: addressKind(host), address: { host, port } });
  }

  /** Runs a session expecting `name` over a connection already made (a TCP connection of the dialer's race,
   * or a relayed circuit). */
  dialOver(
    name: string,
    socket: net.Socket,
    path: SessionPath,
    opts: { replace?: boolean } = {},
  ): Promise<PeerSession> {
    return this.#dial(name, { socket }, path, opts.replace === true);
  }

  async #dial(
    name: string,
    to: { host: string; port: number } | { socket: net.Socket },
    path: SessionPath,
    replace = false,
  ): Promise<PeerSession> {
    // `replace`: a direct upgrade; the new session takes over from the open one (the same dialer's newer
    // connection wins, #onOpen), so an open session is no reason to stop.
    const existing = replace ? null : this.active(name);
    if (existing) {
      if ("socket" in to) to.socket.destroy();
      return existing;
    }
    if (this.#closing) {
      if ("socket" in to) to.socket.destroy();
      throw new SessionError("CLOSED", "shutting down");
    }
    // The knock goes first on the TCP stream (or inside the circuit), before the ClientHello.
    const raw = "socket" in to ? to.socket : net.connect({ host: to.host, port: to.port });
    noDelay(raw);
    let connected = "socket" in to;
    if (!connected) raw.once("connect", () => connected = true);
    const secret = this.#peerKnocks.get(name);
    if (secret) raw.write(makeKnock(secret, this.#now()));
    let secured = false;
    const socket = tls.connect({
      socket: raw,
      cert: this.#identity.certPem,
      key: this.#identity.keyPem,
      ca: this.#identity.caPem,
      rejectUnauthorized: false,
      minVersion: TLS_MIN_VERSION,
      // The peer's name is checked against its certificate by `authenticate`, not by host name.
      checkServerIdentity: () => undefined,
    });
    const s = this.#makeSession(socket, "dialer", name);
    s.path = path;
    socket.once("secureConnect", () => {
      secured = true;
      s.begin();
    });
    try {
      await s.opened;
    } catch (e) {
      // Lost a simultaneous-dial race: the peer's own connection may be the one kept.
      const winner = this.active(name);
      if (winner) return winner;
      // Connected, then closed (or reset) before any TLS answer: what a listener does to a knock it refuses
      // (a secret from an earlier run of the peer, or none). The dialer then looks the peer up again.
      const ci = s.closeInfo;
      if (
        e instanceof SessionError && !s.peer && connected && !secured && ci &&
        (ci.by === "peer" || /ECONNRESET|EPIPE/.test(ci.message))
      ) {
        throw new SessionError(
          "UNANSWERED",
          `${name} ${
            path.kind === "relayed" ? "(through the relay)" : `at ${path.address.host}:${path.address.port}`
          } closed the connection unanswered${secret ? "" : " (the phonebook listed no knock secret)"}`,
        );
      }
      if (e instanceof SessionError && s.closeInfo?.by === "network" && !s.peer) {
        throw new SessionError(
          "CONNECT_FAILED",
          `cannot reach ${name} ${
            path.kind === "relayed" ? "through the relay" : "at"
          } ${path.address.host}:${path.address.port}`,
          s.closeInfo.message,
        );
      }
      throw e;
    }
    return this.active(name) ?? s;
  }

  #makeSession(socket: tls.TLSSocket, role: "dialer" | "listener", expectedName: string | null): PeerSession {
    // The session does not exist yet when `auth` is made; it is set right after, before any call.
    const self: { session: PeerSession | null } = { session: null };
    const auth: Authenticate = async (der, expected, r) => {
      const peer = await this.#authenticate(der, expected, r);
      // Counted and claimed in one step, right after the certificate named the peer: sessions still on their
      // way to `peer` being set (or to the hello) hold their place, so concurrent ones cannot all get in.
      const named = this.#named.get(peer.name) ?? new Set<PeerSession>();
      for (const x of named) if (x.state === "closed") named.delete(x);
      if (named.size >= this.limits.maxSessionsPerPeer) {
        throw new SessionError("TOO_MANY_CONNECTIONS", `${peer.name} already has ${named.size} connections`);
      }
      const s = self.session!;
      if (s.state !== "closed") {
        named.add(s);
        this.#named.set(peer.name, named);
      }
      return peer;
    };
    const s = new PeerSession(socket, role, this.#identity, this.limits, auth, {
      onOpen: (x) => this.#onOpen(x),
      onFrame: (x, f) => this.#handlers.onFrame(x, f),
      onClose: (x, info) => this.#onClose(x, info),
    }, expectedName);
    self.session = s;
    this.#sessions.add(s);
    return s;
  }

  #dialerName(s: PeerSession): string {
    return s.role === "dialer" ? this.#identity.name : s.peer!.name;
  }

  #onOpen(s: PeerSession): void {
    const name = s.peer!.name;
    const cur = this.#active.get(name);
    if (!cur || cur.state !== "open") {
      this.#active.set(name, s);
      this.#handlers.onActive(s);
      return;
    }
    const dn = this.#dialerName(s);
    const dc = this.#dialerName(cur);
    // Different dialers: the smaller dialer name wins. Same dialer: the newer connection replaces a stale one.
    const keepNew = dn === dc ? true : dn < dc;
    if (keepNew) {
      this.#active.set(name, s);
      cur.close("duplicate");
      this.#handlers.onActive(s);
      return;
    }
    // The rule keeps the current session, if it is alive: a peer whose network changed has lost its end of
    // it without a word and dials us anew, and ours would hold the dead one until its idle timeout. In a
    // race of two fresh sessions the current one has just spoken (its hello), so nothing waits.
    void cur.probe(DUPLICATE_FRESH_MS, DUPLICATE_PROBE_MS).then((alive) => {
      if (s.state !== "open") return;
      if (!alive) cur.close("no answer");
      else if (cur.state === "open" && this.#active.get(name) === cur) return s.close("duplicate");
      // Judged again against whatever is current now.
      this.#onOpen(s);
    });
  }

  #onClose(s: PeerSession, info: CloseInfo): void {
    this.#sessions.delete(s);
    for (const [name, set] of this.#named) {
      if (set.delete(s) && set.size === 0) this.#named.delete(name);
    }
    const name = s.peer?.name ?? s.expectedName;
    let wasActive = false;
    if (s.peer && this.#active.get(s.peer.name) === s) {
      this.#active.delete(s.peer.name);
      wasActive = true;
    }
    if (!s.everOpened && info.code) {
      this.#handlers.onRefused?.({ name, role: s.role, code: info.code, message: info.message });
    }
    this.#handlers.onClose(s, info, wasActive);
  }

  active(name: string): PeerSession | null {
    const s = this.#active.get(name);
    return s && s.state === "open" ? s : null;
  }

  activePeers(): string[] {
    return [...this.#active.keys()].filter((n) => this.active(n));
  }

  /** Closes every session whose connection leaves from one of `gone` (addresses this machine no longer has:
   * its packets cannot leave, nor answers reach it, and TCP would hold it for minutes); returns the names of
   * the peers whose open session it was, to dial again. A relayed session's connection is its leg to the
   * relay. */
  closeSessionsOver(gone: ReadonlySet<string>): string[] {
    const peers: string[] = [];
    for (const s of [...this.#sessions]) {
      const raw = (s.socket as unknown as { _parent?: net.Socket })._parent ?? s.socket;
      const local = plainAddress(raw.localAddress ?? "").toLowerCase();
      if (!gone.has(local)) continue;
      if (s.peer && this.active(s.peer.name) === s) peers.push(s.peer.name);
      s.close("network changed");
    }
    return peers;
  }

  /** Pings every open session, each given `ms` to answer with any frame (the machine woke from sleep, and
   * the other end may have closed its side long ago without our hearing of it). One that stays silent is
   * closed with "no answer"; resolves with the names of those peers (and of peers whose session ended
   * meanwhile), to dial again, leaving out any peer that has another session open by then. */
  async probeAll(ms: number): Promise<string[]> {
    const open = [...this.#active.values()].filter((s) => s.state === "open");
    const heard = await Promise.all(open.map((s) => s.probe(0, ms)));
    const silent: string[] = [];
    open.forEach((s, i) => {
      if (heard[i]) return;
      s.close("no answer");
      if (!this.active(s.peer!.name)) silent.push(s.peer!.name);
    });
    return silent;
  }

  /** Every session, open or in handshake (tests count them). */
  sessionCount(): number {
    return this.#sessions.size;
  }

  async close(): Promise<void> {
    this.#closing = true;
    const closing = [...this.#sessions].map((s) =>
      new Promise<void>((res) => {
        if (s.socket.destroyed) return res();
        s.socket.once("close", () => res());
        s.close("shutdown");
      })
    );
    const server = this.#server;
    this.#server = null;
    if (this.#checkTimer) clearInterval(this.#checkTimer);
    this.#endProbe();
    if (this.#dropReportTimer) clearTimeout(this.#dropReportTimer);
    this.#checkTimer = this.#dropReportTimer = null;
    await Promise.all(closing);
    for (const raw of this.#raw) raw.destroy();
    for (const p of this.#pending.values()) if (p.timer) clearTimeout(p.timer);
    const servers = [...this.#oldServers, ...(server ? [server] : [])];
    await Promise.all(servers.map((x) => new Promise<void>((res) => x.close(() => res()))));
  }
}
