/**
 * All peer sessions of one client: the TLS listener, dialing, the per-peer and per-address caps, and the rule
 * that keeps one connection per peer when both dialed at once (the connection dialed by the
 * lexicographically smaller name wins, on both sides, so both keep the same one).
 *
 * The TLS layer runs with rejectUnauthorized:false on both sides and TLS 1.3 only: certificate validity is
 * judged by `authenticate` on trusted time (the TLS stack would use the local clock), and possession of the
 * certificate's key is proved by the hello signature over both Finished messages (peer_session.ts).
 */
import type net from "node:net";
import tls from "node:tls";
import type { Frame } from "../protocol/frames.ts";
import { DEFAULT_LIMITS, type SessionLimits } from "./limits.ts";
import { type Authenticate, type CloseInfo, type LocalIdentity, PeerSession } from "./peer_session.ts";
import { SessionError } from "./errors.ts";

export const TLS_MIN_VERSION = "TLSv1.3";

export interface ManagerHandlers {
  /** A session became the active one for its peer. */
  onActive(s: PeerSession): void;
  onFrame(s: PeerSession, f: Frame): Promise<void>;
  /** A session closed; `wasActive` when it was the peer's active one (and no other replaced it). */
  onClose(s: PeerSession, info: CloseInfo, wasActive: boolean): void;
  /** A connection refused before it became a session (certificate, pin, caps, hello). */
  onRefused?(info: { name: string | null; role: "dialer" | "listener"; code: string; message: string }): void;
}

export class SessionManager {
  readonly limits: SessionLimits;
  #server: tls.Server | null = null;
  readonly #sessions = new Set<PeerSession>();
  readonly #active = new Map<string, PeerSession>();
  readonly #pendingByAddress = new Map<string, number>();
  readonly #raw = new Set<net.Socket>();
  #closing = false;

  constructor(
    private readonly identity: LocalIdentity,
    private readonly authenticate: Authenticate,
    private readonly handlers: ManagerHandlers,
    limits: Partial<SessionLimits> = {},
  ) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /** Starts the TLS listener; resolves with the bound address. */
  listen(host: string, port: number): Promise<{ host: string; port: number }> {
    const server = tls.createServer({
      cert: this.identity.certPem,
      key: this.identity.keyPem,
      ca: this.identity.caPem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: TLS_MIN_VERSION,
    }, (socket) => this.#accept(socket));
    server.on("tlsClientError", (_e, socket) => {
      // A failed TLS handshake (old version, no shared cipher...) never became a session: drop the socket.
      socket.destroy();
    });
    // Every raw connection, so that shutdown can end the ones stuck before or inside the TLS handshake.
    server.on("connection", (raw: net.Socket) => {
      this.#raw.add(raw);
      raw.once("close", () => this.#raw.delete(raw));
    });
    this.#server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        const a = server.address() as { address: string; port: number };
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  #accept(socket: tls.TLSSocket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const addr = socket.remoteAddress ?? "?";
    const pending = this.#pendingByAddress.get(addr) ?? 0;
    if (pending >= this.limits.maxPendingPerAddress) {
      socket.destroy();
      this.handlers.onRefused?.({
        name: null,
        role: "listener",
        code: "TOO_MANY_CONNECTIONS",
        message: `more than ${this.limits.maxPendingPerAddress} handshakes from ${addr}`,
      });
      return;
    }
    this.#pendingByAddress.set(addr, pending + 1);
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      const n = (this.#pendingByAddress.get(addr) ?? 1) - 1;
      if (n <= 0) this.#pendingByAddress.delete(addr);
      else this.#pendingByAddress.set(addr, n);
    };
    const s = this.#makeSession(socket, "listener", null);
    s.opened.then(release, release);
    s.begin();
  }

  /** Dials `host:port` expecting `name`; resolves with the peer's active session once a hello was checked. */
  async dial(name: string, host: string, port: number): Promise<PeerSession> {
    const existing = this.active(name);
    if (existing) return existing;
    if (this.#closing) throw new SessionError("CLOSED", "shutting down");
    const socket = tls.connect({
      host,
      port,
      cert: this.identity.certPem,
      key: this.identity.keyPem,
      ca: this.identity.caPem,
      rejectUnauthorized: false,
      minVersion: TLS_MIN_VERSION,
      // The peer's name is checked against its certificate by `authenticate`, not by host name.
      checkServerIdentity: () => undefined,
    });
    const s = this.#makeSession(socket, "dialer", name);
    socket.once("secureConnect", () => s.begin());
    try {
      await s.opened;
    } catch (e) {
      // Lost a simultaneous-dial race: the peer's own connection may be the one kept.
      const winner = this.active(name);
      if (winner) return winner;
      if (e instanceof SessionError && s.closeInfo?.by === "network" && !s.peer) {
        throw new SessionError(
          "CONNECT_FAILED",
          `cannot reach ${name} at ${host}:${port}`,
          s.closeInfo.message,
        );
      }
      throw e;
    }
    return this.active(name) ?? s;
  }

  #makeSession(socket: tls.TLSSocket, role: "dialer" | "listener", expectedName: string | null): PeerSession {
    const auth: Authenticate = async (der, expected, r) => {
      const peer = await this.authenticate(der, expected, r);
      const live = [...this.#sessions].filter((x) => x.state !== "closed" && x.peer?.name === peer.name);
      if (live.length >= this.limits.maxSessionsPerPeer) {
        throw new SessionError("TOO_MANY_CONNECTIONS", `${peer.name} already has ${live.length} connections`);
      }
      return peer;
    };
    const s = new PeerSession(socket, role, this.identity, this.limits, auth, {
      onOpen: (x) => this.#onOpen(x),
      onFrame: (x, f) => this.handlers.onFrame(x, f),
      onClose: (x, info) => this.#onClose(x, info),
    }, expectedName);
    this.#sessions.add(s);
    return s;
  }

  #dialerName(s: PeerSession): string {
    return s.role === "dialer" ? this.identity.name : s.peer!.name;
  }

  #onOpen(s: PeerSession): void {
    const name = s.peer!.name;
    const cur = this.#active.get(name);
    if (!cur || cur.state !== "open") {
      this.#active.set(name, s);
      this.handlers.onActive(s);
      return;
    }
    const dn = this.#dialerName(s);
    const dc = this.#dialerName(cur);
    // Different dialers: the smaller dialer name wins. Same dialer: the newer connection replaces a stale one.
    const keepNew = dn === dc ? true : dn < dc;
    if (keepNew) {
      this.#active.set(name, s);
      cur.close("duplicate");
      this.handlers.onActive(s);
    } else {
      s.close("duplicate");
    }
  }

  #onClose(s: PeerSession, info: CloseInfo): void {
    this.#sessions.delete(s);
    const name = s.peer?.name ?? s.expectedName;
    let wasActive = false;
    if (s.peer && this.#active.get(s.peer.name) === s) {
      this.#active.delete(s.peer.name);
      wasActive = true;
    }
    if (!s.everOpened && info.code) {
      this.handlers.onRefused?.({ name, role: s.role, code: info.code, message: info.message });
    }
    this.handlers.onClose(s, info, wasActive);
  }

  active(name: string): PeerSession | null {
    const s = this.#active.get(name);
    return s && s.state === "open" ? s : null;
  }

  activePeers(): string[] {
    return [...this.#active.keys()].filter((n) => this.active(n));
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
    await Promise.all(closing);
    for (const raw of this.#raw) raw.destroy();
    if (server) await new Promise<void>((res) => server.close(() => res()));
  }
}
