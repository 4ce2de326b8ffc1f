/**
 * Our side of a relay (server/relay.ts, contract/relay.ts): one control connection kept open while chat runs
 * (mutual TLS with our certificate; the relay must present a certificate from our CA for the name we
 * dialled), circuits to peers on request, and circuits peers asked for handed to the listener. What runs
 * over a circuit is our ordinary peer session (mutual TLS 1.3, the hello binding): the relay forwards its
 * records and cannot read or alter them.
 *
 * The control connection is re-made after a loss with a growing pause (1 s to 30 s), for as long as we run.
 * A connection the relay has been silent on for RELAY_SILENCE_PINGS ping intervals (it answers each ping) is
 * taken as lost at the next ping due (after 90 s by default): when our network goes away under it (a laptop
 * that moved, a router that rebooted) TCP would otherwise hold it "open" for many minutes, and no peer could
 * reach us through the relay meanwhile.
 */
import net from "node:net";
import tls from "node:tls";
import { CodedError, messageOf } from "../coded_error.ts";
import {
  CIRCUIT_READY,
  circuitLine,
  decodeRelayNotice,
  MAX_CONTROL_LINE_BYTES,
  type RelayNotice,
  type RelayRequest,
} from "../contract/mod.ts";
import type { Address } from "./candidates.ts";

/** Codes: the relay's own (OFFLINE, LIMIT_CIRCUITS, ...) or NOT_CONNECTED, TIMEOUT, CIRCUIT_FAILED. */
export class RelayError extends CodedError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

export interface RelayClientOptions {
  relay: Address;
  certPem: string;
  keyPem: string;
  caPem: string;
  /** A circuit a peer asked for, joined and ready: give it to the session listener. */
  onIncoming(socket: net.Socket, from: string): void;
  /** A peer asks us to dial it back directly (connection reversal). */
  onDialBack?(from: string): void;
  /** A peer will connect to us from its port `port` now (hole punching); answer with punchReply. */
  onPunch?(from: string, port: number): void;
  /** The control connection came up (true) or was lost (false). */
  onState?(connected: boolean): void;
  log(level: "info" | "warn", text: string): void;
  /** Bound on the control handshake, a circuit's set-up and each leg's join. Default 10 s. */
  timeoutMs?: number;
  /** Keep-alive interval of the control connection. Default DEFAULT_PING_MS. */
  pingMs?: number;
}

const MAX_BACKOFF_MS = 30_000;
export const DEFAULT_PING_MS = 30_000;
/** The control connection is dropped (and made again) after this many ping intervals without a word from the
 * relay: one lost pong is no reason, two and a half intervals of silence are. */
export const RELAY_SILENCE_PINGS = 2.5;

export class RelayClient {
  readonly relay: Address;
  readonly #o: RelayClientOptions;
  /** Ours; replaced by a renewal (setCertificate). */
  #certPem: string;
  #socket: tls.TLSSocket | null = null;
  #ready = false;
  #closed = false;
  #nextId = 1;
  #backoffMs = 1000;
  #retry: ReturnType<typeof setTimeout> | null = null;
  #ping: ReturnType<typeof setInterval> | null = null;
  /** The next attempt goes out without a pause (reconnectNow). */
  #now = false;
  /** Why the current control connection ended, when we know better than its socket. */
  #lastError = "";
  /** When the relay last sent anything on the control connection (performance.now()). */
  #heardAt = 0;
  readonly #waiting = new Map<number, { resolve(token: string): void; reject(e: Error): void }>();
  readonly #legs = new Set<net.Socket>();
  /** Punches we asked for, by peer: the peer's reply (its port) resolves them. */
  readonly #punchReplies = new Map<string, (port: number) => void>();
  #readyWaiters: (() => void)[] = [];

  constructor(opts: RelayClientOptions) {
    this.#o = opts;
    this.relay = opts.relay;
    this.#certPem = opts.certPem;
  }

  get connected(): boolean {
    return this.#ready;
  }

  /** After a renewal: the old certificate is superseded (the relay would refuse it at the next connect), so
   * the control connection is made again with the new one. */
  setCertificate(certPem: string): void {
    this.#certPem = certPem;
    this.#backoffMs = 1000;
    this.#socket?.destroy();
  }

  /** Makes the control connection again now, without a pause: our network changed (the connection we hold
   * runs over an address we may no longer have), or the machine woke from sleep (the relay has likely
   * closed its end on silence). `why` is what the log says. */
  reconnectNow(why = "our network changed"): void {
    if (this.#closed) return;
    this.#backoffMs = 1000;
    if (this.#socket) {
      this.#lastError = why;
      // Its close handler makes the next attempt, at once.
      this.#now = true;
      this.#socket.destroy();
      return;
    }
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = null;
    this.#connect();
  }

  /** Opens the control connection; resolves when the relay said ready or the first attempt failed. */
  start(): Promise<void> {
    const first = new Promise<void>((r) => this.#readyWaiters.push(r));
    this.#connect();
    return first;
  }

  #settleWaiters(): void {
    for (const w of this.#readyWaiters.splice(0)) w();
  }

  #connect(): void {
    if (this.#closed) return;
    const o = this.#o;
    const socket = tls.connect({
      host: o.relay.host,
      port: o.relay.port,
      cert: this.#certPem,
      key: o.keyPem,
      ca: [o.caPem],
      minVersion: "TLSv1.3",
      // The relay's certificate is checked against our CA and the host we dialled (the phonebook's names).
      rejectUnauthorized: true,
    });
    this.#socket = socket;
    this.#retry = null;
    const timer = setTimeout(
      () => socket.destroy(new Error("relay handshake timed out")),
      o.timeoutMs ?? 10_000,
    );
    let pending = "";
    this.#lastError = "";
    socket.on("error", (e: Error) => this.#lastError ||= messageOf(e));
    socket.on("data", (chunk: Uint8Array) => {
      this.#heardAt = performance.now();
      pending += new TextDecoder().decode(chunk);
      if (pending.length > MAX_CONTROL_LINE_BYTES && !pending.includes("\n")) return void socket.destroy();
      let i;
      while ((i = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        let n: RelayNotice;
        try {
          n = decodeRelayNotice(JSON.parse(line));
        } catch {
          socket.destroy(new Error("the relay sent a malformed notice"));
          return;
        }
        if (n.t === "ready") {
          clearTimeout(timer);
          this.#ready = true;
          this.#backoffMs = 1000;
          this.#o.onState?.(true);
          this.#settleWaiters();
          const pingMs = o.pingMs ?? DEFAULT_PING_MS;
          this.#ping = setInterval(() => {
            if (performance.now() - this.#heardAt > pingMs * RELAY_SILENCE_PINGS) {
              this.#lastError = `no answer for ${Math.round((performance.now() - this.#heardAt) / 1000)} s`;
              socket.destroy();
            } else this.#send({ t: "ping" });
          }, pingMs);
        } else this.#onNotice(n);
      }
    });
    socket.on("close", () => {
      clearTimeout(timer);
      if (this.#ping) clearInterval(this.#ping);
      this.#ping = null;
      const was = this.#ready;
      this.#ready = false;
      if (this.#socket === socket) this.#socket = null;
      for (const w of this.#waiting.values()) {
        w.reject(new RelayError("NOT_CONNECTED", "relay connection lost"));
      }
      this.#waiting.clear();
      this.#settleWaiters();
      if (this.#closed) return;
      if (was) this.#o.onState?.(false);
      o.log(
        "warn",
        `relay ${o.relay.host}:${o.relay.port}: ${this.#lastError || "connection closed"}; retrying`,
      );
      this.#retry = setTimeout(() => this.#connect(), this.#now ? 0 : this.#backoffMs);
      this.#now = false;
      this.#backoffMs = Math.min(MAX_BACKOFF_MS, this.#backoffMs * 2);
    });
  }

  #send(r: RelayRequest): void {
    if (this.#socket && this.#ready) this.#socket.write(JSON.stringify(r) + "\n");
  }

  #onNotice(n: RelayNotice): void {
    switch (n.t) {
      case "circuit":
        this.#waiting.get(n.id)?.resolve(n.token);
        this.#waiting.delete(n.id);
        return;
      case "reversing":
        this.#waiting.get(n.id)?.resolve("");
        this.#waiting.delete(n.id);
        return;
      case "dial-back":
        this.#o.onDialBack?.(n.from);
        return;
      case "punching":
        this.#waiting.get(n.id)?.resolve("");
        this.#waiting.delete(n.id);
        return;
      case "punch":
        this.#o.onPunch?.(n.from, n.port);
        return;
      case "punch-reply":
        // Only a reply we are waiting for counts.
        this.#punchReplies.get(n.from)?.(n.port);
        this.#punchReplies.delete(n.from);
        return;
      case "error":
        if (n.id !== undefined) {
          this.#waiting.get(n.id)?.reject(new RelayError(n.code, n.message));
          this.#waiting.delete(n.id);
        } else this.#o.log("warn", `relay: ${n.message} (${n.code})`);
        return;
      case "incoming":
        this.#join(n.token, "L").then(
          (s) => this.#o.onIncoming(s, n.from),
          (e) => this.#o.log("warn", `relayed circuit from ${n.from} failed: ${messageOf(e)}`),
        );
        return;
      case "closed":
        this.#o.log("warn", `relay ended a circuit: ${n.message} (${n.code})`);
        return;
    }
  }

  /** A circuit to `name`, joined: the socket carries only what the peer sends, from its first byte. */
  async dial(name: string): Promise<net.Socket> {
    const token = await this.#ask((id) => ({ t: "dial", id, to: name }));
    return await this.#join(token, "D");
  }

  /** Asks `name` (through the relay) to dial us back; resolves once the relay passed it on. */
  async reverse(name: string): Promise<void> {
    await this.#ask((id) => ({ t: "reverse", id, to: name }));
  }

  /** Tells `name` we connect from `port` now; resolves with the port it connects from (its reply). */
  async punch(name: string, port: number): Promise<number> {
    const reply = new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => {
        this.#punchReplies.delete(name);
        reject(new RelayError("TIMEOUT", `${name} did not answer the punch`));
      }, this.#o.timeoutMs ?? 10_000);
      this.#punchReplies.set(name, (p) => (clearTimeout(t), resolve(p)));
    });
    reply.catch(() => {});
    await this.#ask((id) => ({ t: "punch", id, to: name, port }));
    return await reply;
  }

  punchReply(to: string, port: number): void {
    this.#send({ t: "punch-reply", to, port });
  }

  #ask(request: (id: number) => RelayRequest): Promise<string> {
    if (!this.#ready) {
      return Promise.reject(new RelayError("NOT_CONNECTED", `not connected to the relay ${this.#where()}`));
    }
    const id = this.#nextId++;
    return new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new RelayError("TIMEOUT", "the relay did not answer in time"));
      }, this.#o.timeoutMs ?? 10_000);
      this.#waiting.set(id, {
        resolve: (x) => (clearTimeout(t), resolve(x)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      this.#send(request(id));
    });
  }

  #where(): string {
    return `${this.relay.host}:${this.relay.port}`;
  }

  /** Opens a leg, sends its line, waits for the relay's ready byte; anything after it is the peer's. */
  #join(token: string, role: "D" | "L"): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: this.relay.host, port: this.relay.port });
      this.#legs.add(s);
      s.once("close", () => this.#legs.delete(s));
      const fail = (e: Error) => {
        clearTimeout(t);
        s.destroy();
        reject(e instanceof RelayError ? e : new RelayError("CIRCUIT_FAILED", messageOf(e)));
      };
      const t = setTimeout(
        () => fail(new RelayError("TIMEOUT", "the peer did not join the relayed circuit in time")),
        this.#o.timeoutMs ?? 10_000,
      );
      s.once("error", fail);
      s.once("close", () => fail(new RelayError("CIRCUIT_FAILED", "the relay closed the circuit")));
      s.once("connect", () => s.write(circuitLine(token, role)));
      s.once("data", (chunk: Uint8Array) => {
        if (chunk[0] !== CIRCUIT_READY) {
          return fail(new RelayError("CIRCUIT_FAILED", "unexpected relay reply"));
        }
        clearTimeout(t);
        s.off("error", fail);
        s.removeAllListeners("close");
        s.once("close", () => this.#legs.delete(s));
        s.pause();
        if (chunk.length > 1) s.unshift(chunk.subarray(1));
        resolve(s);
      });
    });
  }

  close(): void {
    this.#closed = true;
    if (this.#retry) clearTimeout(this.#retry);
    if (this.#ping) clearInterval(this.#ping);
    this.#socket?.destroy();
    for (const l of this.#legs) l.destroy();
    this.#settleWaiters();
  }
}
