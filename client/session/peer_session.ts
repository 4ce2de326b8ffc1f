/**
 * One peer connection over mutual TLS 1.3: framing with backpressure, the hello exchange that binds the
 * connection to both identities, keep-alive and timeouts. What the frames mean is the engine's business
 * (`onFrame`); this file only guarantees that a frame reaches it from an authenticated, bound peer.
 *
 * With TLS 1.3 a client's secureConnect fires before the server has judged the client's certificate, so a
 * session is "open" only after the other side's hello has been checked.
 */
import { codeOf, messageOf } from "../../coded_error.ts";
import type tls from "node:tls";
import type { KeyObject } from "node:crypto";
import type { VerifiedPeer } from "../../pki/mod.ts";
import { FrameDecoder } from "../protocol/codec.ts";
import { OUR_CAPS, PROTOCOL_VERSION } from "../protocol/constants.ts";
import { ProtocolError, type ProtocolErrorCode, REFUSED_MESSAGE } from "../protocol/errors.ts";
import {
  encodeFrame,
  encodeFrames,
  type Frame,
  type HelloFrame,
  type HelloRole,
  parseFrame,
} from "../protocol/frames.ts";
import { helloSignedData, signHello, verifyHelloSignature } from "../protocol/binding.ts";
import type { SessionLimits } from "./limits.ts";
import { SessionError } from "./errors.ts";
import { FrameRateLimiter, isRated } from "./rates.ts";
import type { SessionPath } from "../candidates.ts";

export interface LocalIdentity {
  name: string;
  certPem: string;
  keyPem: string;
  caPem: string;
  fingerprint: string;
  privateKey: KeyObject;
}

/** Judges the peer's certificate (CA, name, revocation, trusted-time validity, pin). Throws to refuse. */
export type Authenticate = (
  certDer: Uint8Array,
  expectedName: string | null,
  role: HelloRole,
) => Promise<VerifiedPeer>;

export interface CloseInfo {
  /** Our code when we refused or ended it, the peer's when it sent an error frame, else null. */
  code: string | null;
  message: string;
  /** Who ended it. */
  by: "us" | "peer" | "network";
}

export interface SessionHandlers {
  onOpen(s: PeerSession): void;
  /** Application frames (msg, ack, read, typing) of an open session, one at a time, in order: the next is
   * decoded once the promise returned settles (a handler done at once returns nothing, and costs no await). */
  onFrame(s: PeerSession, f: Frame): Promise<void> | void;
  onClose(s: PeerSession, info: CloseInfo): void;
}

export type SessionState = "handshake" | "open" | "closed";

let nextSessionId = 1;

export class PeerSession {
  readonly id = nextSessionId++;
  state: SessionState = "handshake";
  everOpened = false;
  peer: VerifiedPeer | null = null;
  closeInfo: CloseInfo | null = null;
  /** What the peer's hello listed in `caps` (empty for a peer of an older version). */
  peerCaps: ReadonlySet<string> = new Set();
  readonly remoteAddress: string;
  /** How the connection runs (direct to which address, or through which relay); null when unknown. */
  path: SessionPath | null = null;
  /** Resolves when the session is open; rejects with SessionError when it closes before. */
  readonly opened: Promise<PeerSession>;
  #resolveOpen!: (s: PeerSession) => void;
  #rejectOpen!: (e: SessionError) => void;
  readonly #decoder: FrameDecoder;
  #pumping = false;
  #paused = false;
  #helloTimer: ReturnType<typeof setTimeout> | null = null;
  #idleTimer: ReturnType<typeof setTimeout> | null = null;
  /** performance.now() of the last complete frame (or of the start). */
  #lastFrameAt = 0;
  #keepalive: ReturnType<typeof setInterval> | null = null;
  /** probe() calls waiting for the next frame: told true by it, false when the session closes. */
  readonly #frameWaiters = new Set<(heard: boolean) => void>();
  #killTimer: ReturnType<typeof setTimeout> | null = null;
  #closeNotified = false;
  /** Most undecoded bytes held at once, the largest chunk the socket handed us, and how often reading was
   * paused (tests check the bound: high-water mark plus one chunk, which the OS receive buffer bounds). */
  maxBuffered = 0;
  maxChunk = 0;
  pauses = 0;
  /** Answers to our keep-alive pings (the peer is alive and reading). */
  pongs = 0;
  /** Most bytes ever queued for writing to this peer (tests check that a peer that never reads cannot make
   * it grow). */
  maxWritable = 0;
  readonly #rates = new FrameRateLimiter();

  readonly #identity: LocalIdentity;
  readonly #limits: SessionLimits;
  readonly #authenticate: Authenticate;
  readonly #handlers: SessionHandlers;

  constructor(
    readonly socket: tls.TLSSocket,
    readonly role: HelloRole,
    identity: LocalIdentity,
    limits: SessionLimits,
    authenticate: Authenticate,
    handlers: SessionHandlers,
    readonly expectedName: string | null,
  ) {
    this.#identity = identity;
    this.#limits = limits;
    this.#authenticate = authenticate;
    this.#handlers = handlers;
    this.remoteAddress = socket.remoteAddress ?? "?";
    this.#decoder = new FrameDecoder(limits.maxFrameBytes);
    this.opened = new Promise((res, rej) => {
      this.#resolveOpen = res;
      this.#rejectOpen = rej;
    });
    this.opened.catch(() => {}); // callers that do not wait must not see an unhandled rejection
    socket.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    socket.on("end", () => this.#onEnd());
    socket.on("error", (e: Error & { code?: string }) => {
      if (!this.closeInfo) this.closeInfo = { code: "TLS", message: e.code ?? e.message, by: "network" };
    });
    socket.on("close", () => this.#onSocketClose());
    this.#helloTimer = setTimeout(
      () => this.fail("HELLO_TIMEOUT", "no hello in time"),
      limits.helloTimeoutMs,
    );
    this.#resetIdle();
  }

  get tlsVersion(): string | null {
    return this.socket.getProtocol?.() ?? null;
  }

  get cipher(): string | null {
    try {
      return this.socket.getCipher()?.name ?? null;
    } catch {
      return null;
    }
  }

  /** Called once the TLS handshake finished on our side: judge the certificate, then say hello (dialer). */
  async begin(): Promise<void> {
    const cert = this.socket.getPeerCertificate(true) as { raw?: Uint8Array } | null;
    if (!cert || !cert.raw || cert.raw.length === 0) {
      this.fail("CERTIFICATE", "peer presented no certificate", "NO_CERTIFICATE");
      return;
    }
    try {
      this.peer = await this.#authenticate(new Uint8Array(cert.raw), this.expectedName, this.role);
    } catch (e) {
      const code = codeOf(e) ?? "CERTIFICATE";
      // A blocked peer is told only the generic refusal (protocol.md, "Errors"); we log why.
      if (code === "BLOCKED") this.fail("REFUSED", REFUSED_MESSAGE, code, messageOf(e));
      else {
        this.fail(
          ["KEY_CHANGED", "TOO_MANY_CONNECTIONS"].includes(code) ? code as ProtocolErrorCode : "CERTIFICATE",
          messageOf(e),
          code,
        );
      }
      return;
    }
    if (this.state === "closed") return;
    if (this.role === "dialer") this.#sendHello();
    // Frames that arrived while we were judging the certificate wait undecoded; handle them now.
    this.#pump();
  }

  #finished(): { serverFinished: Uint8Array; clientFinished: Uint8Array } | null {
    const mine = this.socket.getFinished();
    const theirs = this.socket.getPeerFinished();
    if (!mine || !theirs) return null;
    return this.role === "listener"
      ? { serverFinished: new Uint8Array(mine), clientFinished: new Uint8Array(theirs) }
      : { serverFinished: new Uint8Array(theirs), clientFinished: new Uint8Array(mine) };
  }

  #sendHello(): void {
    const fin = this.#finished();
    const peer = this.peer!;
    if (!fin) {
      this.fail("BAD_HELLO", "TLS Finished messages unavailable");
      return;
    }
    const binding = {
      role: this.role,
      from: this.#identity.name,
      to: peer.name,
      fromFp: this.#identity.fingerprint,
      toFp: peer.fingerprint,
      ...fin,
    };
    const hello: HelloFrame = {
      t: "hello",
      v: PROTOCOL_VERSION,
      role: this.role,
      from: binding.from,
      to: binding.to,
      fromFp: binding.fromFp,
      toFp: binding.toFp,
      sig: signHello(this.#identity.privateKey, helloSignedData(binding)),
      caps: [...OUR_CAPS],
    };
    this.#write(hello);
  }

  #checkHello(h: HelloFrame): void {
    const peer = this.peer!;
    if (h.v !== PROTOCOL_VERSION) throw new ProtocolError("VERSION", `protocol version ${h.v} not supported`);
    if (h.role === this.role) throw new ProtocolError("BAD_HELLO", "both ends claim the same role");
    if (h.from !== peer.name) {
      throw new ProtocolError(
        "SENDER_MISMATCH",
        `hello from "${h.from}" over a certificate for "${peer.name}"`,
      );
    }
    if (h.to !== this.#identity.name) throw new ProtocolError("BAD_HELLO", `hello meant for "${h.to}"`);
    if (h.fromFp !== peer.fingerprint || h.toFp !== this.#identity.fingerprint) {
      throw new ProtocolError(
        "BAD_HELLO",
        "hello fingerprints do not match the certificates of this connection",
      );
    }
    const fin = this.#finished();
    if (!fin) throw new ProtocolError("BAD_HELLO", "TLS Finished messages unavailable");
    const data = helloSignedData({
      role: h.role,
      from: h.from,
      to: h.to,
      fromFp: h.fromFp,
      toFp: h.toFp,
      ...fin,
    });
    const der = this.socket.getPeerCertificate(true) as { raw?: Uint8Array };
    if (!der.raw || !verifyHelloSignature(new Uint8Array(der.raw), data, h.sig)) {
      throw new ProtocolError("BAD_HELLO_SIGNATURE", "hello is not signed by the certificate's key");
    }
  }

  /** Sends one frame; waits when the socket's buffer is above the high-water mark. */
  async send(f: Frame): Promise<void> {
    if (this.state !== "open") throw new SessionError("CLOSED", "session is not open");
    this.#grantReceipts(f.t === "msg" ? 1 : 0);
    if (!this.#write(f)) await this.#drain();
  }

  /** Each message we write entitles the peer to its receipts (an ack, later a read), outside the rates. */
  #grantReceipts(messages: number): void {
    if (messages === 0) return;
    this.#rates.grant("ack", messages);
    this.#rates.grant("read", messages);
  }

  /** Sends frames in one socket write (one TLS record run instead of one per frame: a batch of receipts or
   * an outbox flush); waits once when the socket's buffer is above the high-water mark. */
  async sendBatch(frames: readonly Frame[]): Promise<void> {
    if (this.state !== "open") throw new SessionError("CLOSED", "session is not open");
    if (frames.length === 0) return;
    this.#grantReceipts(frames.reduce((n, f) => n + (f.t === "msg" ? 1 : 0), 0));
    if (!this.#writeBytes(encodeFrames(frames))) await this.#drain();
  }

  #write(f: Frame): boolean {
    return this.#writeBytes(encodeFrame(f));
  }

  #writeBytes(bytes: Uint8Array): boolean {
    if (this.socket.destroyed) return true;
    const ok = this.socket.write(bytes);
    this.maxWritable = Math.max(this.maxWritable, this.socket.writableLength);
    return ok || this.socket.writableLength < this.#limits.writeHighWaterBytes;
  }

  #drain(): Promise<void> {
    return new Promise((res) => {
      const done = () => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        res();
      };
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
  }

  #onData(chunk: Uint8Array): void {
    if (this.state === "closed") return;
    try {
      this.#decoder.append(chunk);
    } catch (e) {
      const pe = e as ProtocolError;
      this.fail(pe.code, pe.message);
      return;
    }
    this.maxBuffered = Math.max(this.maxBuffered, this.#decoder.buffered);
    this.maxChunk = Math.max(this.maxChunk, chunk.length);
    // Backpressure: stop reading while undecoded bytes pile up; TCP then slows the sender down.
    if (this.#decoder.buffered >= this.#limits.readHighWaterBytes && !this.#paused) {
      this.#paused = true;
      this.pauses++;
      this.socket.pause();
    }
    this.#pump();
  }

  /** Decodes and handles frames one at a time, only as fast as the handler (the store) goes. */
  async #pump(): Promise<void> {
    // Until the certificate is judged, bytes wait undecoded (begin() restarts the pump).
    if (this.#pumping || !this.peer) return;
    this.#pumping = true;
    try {
      while (this.state !== "closed") {
        let f: Frame;
        try {
          const body = this.#decoder.next();
          if (!body) break;
          f = parseFrame(body);
        } catch (e) {
          const pe = e instanceof ProtocolError ? e : new ProtocolError("BAD_JSON", String(e));
          this.fail(pe.code, pe.message);
          return;
        }
        this.#resetIdle();
        const later = this.#handle(f);
        if (later) await later;
      }
      if (this.#paused && this.#decoder.buffered < this.#limits.readHighWaterBytes / 2) {
        this.#paused = false;
        this.socket.resume();
      }
    } finally {
      this.#pumping = false;
    }
  }

  #handle(f: Frame): Promise<void> | void {
    if (f.t === "error") {
      this.#end({ code: f.code, message: f.message, by: "peer" });
      return;
    }
    if (f.t === "bye") {
      this.#end({ code: null, message: f.reason || "peer said bye", by: "peer" });
      return;
    }
    if (this.state === "handshake") {
      if (f.t !== "hello") {
        this.fail("UNEXPECTED_FRAME", `"${f.t}" before hello`);
        return;
      }
      try {
        this.#checkHello(f);
      } catch (e) {
        const pe = e as ProtocolError;
        this.fail(pe.code, pe.message);
        return;
      }
      this.peerCaps = new Set(f.caps ?? []);
      if (this.role === "listener") this.#sendHello();
      this.#open();
      return;
    }
    // A refusal answers one of our messages like an ack, and draws on the same bucket; so does each receipt
    // of an `acks` frame.
    const rated = f.t === "refuse" || f.t === "acks" ? "ack" : f.t;
    if (isRated(rated) && !this.#rates.take(rated, performance.now(), f.t === "acks" ? f.ids.length : 1)) {
      this.fail("RATE_LIMITED", `too many "${f.t}" frames`);
      return;
    }
    switch (f.t) {
      case "hello":
        this.fail("UNEXPECTED_FRAME", "second hello");
        return;
      case "ping":
        // A peer that does not read what we send needs no pong: queueing one per ping is how a flood of them
        // used to grow our memory without bound.
        if (this.socket.writableLength < this.#limits.writeHighWaterBytes) this.#write({ t: "pong" });
        return;
      case "pong":
        this.pongs++;
        return;
      default: {
        let later: Promise<void> | void;
        try {
          later = this.#handlers.onFrame(this, f);
        } catch (e) {
          this.#handlerFailed(e);
          return;
        }
        if (later) return later.catch((e) => this.#handlerFailed(e));
      }
    }
  }

  #handlerFailed(e: unknown): void {
    this.fail(
      e instanceof ProtocolError ? e.code : codeOf(e) === "STORE_FAILED" ? "STORE_FAILED" : "BAD_FIELD",
      messageOf(e),
    );
  }

  #open(): void {
    if (this.#helloTimer) clearTimeout(this.#helloTimer);
    this.#helloTimer = null;
    this.state = "open";
    this.everOpened = true;
    this.#keepalive = setInterval(() => this.#write({ t: "ping" }), this.#limits.keepaliveIntervalMs);
    this.#resolveOpen(this);
    this.#handlers.onOpen(this);
  }

  /** Notes a complete frame. The idle timer is not re-armed per frame (a clearTimeout + setTimeout per
   * message was a measurable share of the chat's CPU): it fires at the first deadline and, when a frame came
   * meanwhile, waits again for what is left of the period since the last one. */
  #resetIdle(): void {
    this.#lastFrameAt = performance.now();
    if (this.#frameWaiters.size) this.#tellWaiters(true);
    if (this.#idleTimer === null && this.state !== "closed") this.#armIdle(this.#limits.idleTimeoutMs);
  }

  #armIdle(ms: number): void {
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = null;
      if (this.state === "closed") return;
      const left = this.#lastFrameAt + this.#limits.idleTimeoutMs - performance.now();
      if (left > 0) this.#armIdle(left);
      else this.fail("IDLE_TIMEOUT", "no complete frame in time");
    }, ms);
  }

  #onEnd(): void {
    try {
      this.#decoder.end();
    } catch {
      // A frame cut short by the end of the stream is dropped whole: nothing of it was handed on.
    }
    this.#end({ code: null, message: "peer closed the connection", by: "peer" });
  }

  /** Ends the session with an error frame carrying `code` and `message` (and SessionError detail, and a
   * message of our own when the peer is told less than we log, for local callers). */
  fail(code: ProtocolErrorCode | string, message: string, detail?: string, localMessage?: string): void {
    if (this.state === "closed") return;
    if (!this.socket.destroyed) {
      try {
        this.socket.write(encodeFrame({ t: "error", code, message: message.slice(0, 500) }));
      } catch {
        // the socket may already be unwritable
      }
    }
    this.#end({ code: detail ?? code, message: localMessage ?? message, by: "us" });
  }

  /** Whether the peer is still there: true at once when a frame came in the last `freshMs`; otherwise a
   * ping goes out and it is true when any frame comes within `ms`, false when none does or the session
   * closes. (A peer whose network changed has lost its end of this connection without a word.) */
  probe(freshMs: number, ms: number): Promise<boolean> {
    if (this.state !== "open") return Promise.resolve(false);
    if (performance.now() - this.#lastFrameAt < freshMs) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (heard: boolean) => {
        clearTimeout(timer);
        this.#frameWaiters.delete(done);
        resolve(heard);
      };
      const timer = setTimeout(() => done(false), ms);
      this.#frameWaiters.add(done);
      this.#write({ t: "ping" });
    });
  }

  #tellWaiters(heard: boolean): void {
    for (const w of [...this.#frameWaiters]) w(heard);
  }

  /** Polite close (bye) — used for duplicate sessions and shutdown. */
  close(reason = "bye"): void {
    if (this.state === "closed") return;
    if (this.state === "open" && !this.socket.destroyed) {
      try {
        this.socket.write(encodeFrame({ t: "bye", reason }));
      } catch {
        // ignore
      }
    }
    this.#end({ code: null, message: reason, by: "us" });
  }

  #end(info: CloseInfo): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.closeInfo = info;
    this.#clearTimers();
    this.#tellWaiters(false);
    this.#rejectOpen(
      new SessionError(
        info.code === "KEY_CHANGED" ? "KEY_CHANGED" : "HANDSHAKE",
        `session closed: ${info.code ? `${info.code} ` : ""}${info.message}`,
        info.code ?? undefined,
      ),
    );
    this.socket.end();
    // A peer that never closes its side must not keep the socket (and the process) alive.
    this.#killTimer = setTimeout(() => this.socket.destroy(), 1000);
    if (this.socket.destroyed) this.#onSocketClose();
  }

  #clearTimers(): void {
    if (this.#helloTimer) clearTimeout(this.#helloTimer);
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    if (this.#keepalive) clearInterval(this.#keepalive);
    this.#helloTimer = this.#idleTimer = this.#keepalive = null;
  }

  #onSocketClose(): void {
    if (this.#killTimer) clearTimeout(this.#killTimer);
    this.#killTimer = null;
    if (this.state !== "closed") {
      this.#end(this.closeInfo ?? { code: null, message: "connection lost", by: "network" });
    }
    this.#clearTimers();
    if (this.#closeNotified) return;
    this.#closeNotified = true;
    this.#handlers.onClose(this, this.closeInfo!);
  }
}
