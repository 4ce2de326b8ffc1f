/**
 * The dialer: a session to a peer on demand. It asks the phonebook where the peer is, tells peer trust what
 * the phonebook lists for them, and dials; one attempt per peer at a time, and each new kind of failure is
 * reported once (not at every retry of the outbox).
 */
import { codeOf, messageOf } from "../coded_error.ts";
import type { EngineEvent } from "./engine_types.ts";
import type { PeerSession } from "./session/peer_session.ts";
import type { SessionError } from "./session/errors.ts";

/** A user as the phonebook lists them, as far as dialling needs. */
export interface DialEntry {
  online: boolean;
  address: { host: string; port: number } | null;
  fingerprint: string;
  revoked: boolean;
  /** The listed certificate (lets peer trust convert an old certificate pin to a key pin). */
  certPem?: string;
}

export interface DialerDeps {
  lookup(name: string): Promise<DialEntry | null>;
  /** The peer's active session, or null. */
  active(name: string): PeerSession | null;
  dial(name: string, host: string, port: number): Promise<PeerSession>;
  /** Before dialling: the fingerprint (and certificate) the phonebook lists (checked on first contact). */
  noteListed(name: string, fingerprint: string, certPem?: string): void;
  emit(e: EngineEvent): void;
}

export class Dialer {
  readonly #d: DialerDeps;
  readonly #connecting = new Map<string, Promise<PeerSession | null>>();
  readonly #lastError = new Map<string, string>();

  constructor(deps: DialerDeps) {
    this.#d = deps;
  }

  /** The active session to `name`, or a new one dialled at the address the phonebook lists; null when the
   * peer is offline, unknown, revoked or cannot be reached (reported as an `error` event PEER_<code>). */
  connect(name: string): Promise<PeerSession | null> {
    const active = this.#d.active(name);
    if (active) return Promise.resolve(active);
    let p = this.#connecting.get(name);
    if (p) return p;
    p = this.#attempt(name).finally(() => this.#connecting.delete(name));
    this.#connecting.set(name, p);
    return p;
  }

  /** Forgets the last failure to `name`, so the next one is reported again (after a key was accepted). */
  clearError(name: string): void {
    this.#lastError.delete(name);
  }

  /** Resolves when every attempt in progress has ended. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#connecting.values()]);
  }

  async #attempt(name: string): Promise<PeerSession | null> {
    let entry: DialEntry | null;
    try {
      entry = await this.#d.lookup(name);
    } catch {
      return null;
    }
    if (!entry || entry.revoked || !entry.online || !entry.address) return null;
    this.#d.noteListed(name, entry.fingerprint, entry.certPem);
    try {
      return await this.#d.dial(name, entry.address.host, entry.address.port);
    } catch (e) {
      const code = (e as SessionError).detail ?? codeOf(e) ?? "CONNECT_FAILED";
      if (this.#lastError.get(name) !== code) {
        this.#lastError.set(name, code);
        this.#d.emit({ event: "error", code: `PEER_${code}`, message: `${name}: ${messageOf(e)}` });
      }
      return null;
    }
  }
}
