/**
 * The dialer: a session to a peer on demand. It asks the phonebook where the peer is, tells peer trust what
 * the phonebook lists for them, and dials; one attempt per peer at a time, and each new kind of failure is
 * reported once (not at every retry of the outbox).
 *
 * A peer lists several candidate addresses and maybe a relay. They are tried as Happy Eyeballs does
 * (RFC 8305): those the phonebook's reachability check reached first, then the others, each in the listed
 * order (dialOrder), each started CONNECTION_ATTEMPT_DELAY_MS after the one before (or at once
 * when it failed), the relay last; the first connection made wins and the others are dropped. The session
 * (TLS, certificate, hello) then runs on the winner; if it fails there (someone else's machine answering
 * at a private address that is also in use on our LAN) the race goes on with the others.
 *
 * Connection reversal: when we believe peers can reach us (we publish a public or global IPv6 address), the
 * race also asks the peer, through the relay, to dial us back, and waits REVERSAL_WAIT_MS for that session
 * before it tries the relay; the peer dials only what the phonebook lists for us.
 *
 * Every path knocks with the secret the phonebook lists for the peer (contract/knock.ts). A peer that
 * restarted has a new one: when a dial is closed unanswered (UNANSWERED, what a refused knock looks like),
 * the peer is looked up again, and if the phonebook now lists another secret the dial is made once more.
 */
import type net from "node:net";
import { codeOf, messageOf } from "../coded_error.ts";
import type { Address, SessionPath } from "./candidates.ts";
import { addressKind, dialOrder } from "./candidates.ts";
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
  /** Every address to try, best first (default: `address`). */
  candidates?: Address[];
  /** The candidates the phonebook checked and reached as this peer: tried before the others. */
  reachable?: Address[];
  /** Unix ms of the check behind `reachable`; null (or absent) when the current candidates were not
   * checked. */
  reachCheckedAt?: number | null;
  /** The relay the peer holds a connection to (null: ours, if we have one). */
  relay?: Address | null;
  /** The secret the peer's listener wants knocked with (base64url), null when none was listed. */
  knock?: string | null;
}

/** RFC 8305's recommended "Connection Attempt Delay". */
export const CONNECTION_ATTEMPT_DELAY_MS = 250;
/** Bound on one TCP connection attempt. */
export const CONNECT_TIMEOUT_MS = 5000;
/** How long a reversal may take (the peer looks us up and dials) before the relay is tried. */
export const REVERSAL_WAIT_MS = 2000;

/** The race's own needs: a TCP connection, a relayed circuit, and a session over either. */
export interface ReachDeps {
  connect(host: string, port: number, timeoutMs: number): Promise<net.Socket>;
  /** A joined circuit through our relay, with the relay's address; throws when there is none. */
  relayCircuit(name: string): Promise<{ socket: net.Socket; relay: Address }>;
  /** Whether a relay attempt is worth making (we hold a relay connection). */
  haveRelay(): boolean;
  dialOver(name: string, socket: net.Socket, path: SessionPath): Promise<PeerSession>;
  /** Asks the peer through the relay to dial us back; absent or throwing: no reversal. */
  reverse?(name: string): Promise<void>;
  /** Whether peers can probably reach us directly (a public or global IPv6 address is published). */
  reachable?(): boolean | Promise<boolean>;
}

interface Attempt {
  path: SessionPath | null;
  /** A null socket: the session came another way (the peer dialled us back). */
  open(): Promise<{ socket: net.Socket | null; path: SessionPath }>;
  /** How long the next attempt waits for this one (default the race's delay). */
  holdMs?: number;
}

/** Starts `attempts` staggered by `delayMs` (the next one at once when one fails); resolves with the first
 * that connects (later ones are closed as they connect) or null with every error when none did. */
export function raceAttempts(
  attempts: Attempt[],
  delayMs: number,
): Promise<
  { index: number; socket: net.Socket | null; path: SessionPath } | { index: -1; errors: unknown[] }
> {
  return new Promise((resolve) => {
    let started = 0;
    let failed = 0;
    let won = false;
    let timer: ReturnType<typeof setTimeout> | null = null;
    const errors: unknown[] = [];
    const next = () => {
      if (timer) clearTimeout(timer);
      timer = null;
      if (won || started >= attempts.length) return;
      const i = started++;
      attempts[i].open().then(({ socket, path }) => {
        if (won) return void socket?.destroy();
        won = true;
        if (timer) clearTimeout(timer);
        resolve({ index: i, socket, path });
      }, (e) => {
        errors[i] = e;
        if (++failed === attempts.length && !won) resolve({ index: -1, errors });
        else next();
      });
      if (started < attempts.length) timer = setTimeout(next, attempts[i].holdMs ?? delayMs);
    };
    if (attempts.length === 0) resolve({ index: -1, errors });
    else next();
  });
}

export interface DialerDeps {
  lookup(name: string): Promise<DialEntry | null>;
  /** The peer's active session, or null. */
  active(name: string): PeerSession | null;
  dial(name: string, host: string, port: number): Promise<PeerSession>;
  /** Before dialling: the fingerprint (and certificate) the phonebook lists (checked on first contact). */
  noteListed(name: string, fingerprint: string, certPem?: string): void;
  /** Before dialling: the knock secret the phonebook lists (every dial to `name` knocks with it). */
  noteKnock?(name: string, knock: string | null): void;
  emit(e: EngineEvent): void;
}

export class Dialer {
  readonly #d: DialerDeps;
  readonly #connecting = new Map<string, Promise<PeerSession | null>>();
  readonly #lastError = new Map<string, string>();
  readonly #reach: ReachDeps | null;

  /** Without `reach`, the listed address alone is dialled (tests of the other parts, older set-ups). */
  constructor(deps: DialerDeps, reach: ReachDeps | null = null) {
    this.#d = deps;
    this.#reach = reach;
  }

  /** The active session to `name`, or a new one dialled at the address the phonebook lists; null when the
   * peer is offline, unknown, revoked or cannot be reached (reported as an `error` event PEER_<code>). */
  connect(name: string): Promise<PeerSession | null> {
    return this.#once(name, false);
  }

  /** The peer asked (through the relay) to be dialled back: its listed addresses only, no relay, no
   * reversal, and a failure is not reported (the peer still reaches us through the relay). */
  dialBack(name: string): Promise<PeerSession | null> {
    return this.#once(name, true);
  }

  #once(name: string, directOnly: boolean): Promise<PeerSession | null> {
    const active = this.#d.active(name);
    if (active) return Promise.resolve(active);
    let p = this.#connecting.get(name);
    if (p) return p;
    p = this.#attempt(name, directOnly).finally(() => this.#connecting.delete(name));
    this.#connecting.set(name, p);
    return p;
  }

  /** Forgets the last failure to `name`, so the next one is reported again (after a key was accepted). */
  clearError(name: string): void {
    this.#lastError.delete(name);
  }

  /** The peer's active session once there is one, or null after `ms`. */
  async #waitActive(name: string, ms: number): Promise<PeerSession | null> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      const s = this.#d.active(name);
      if (s) return s;
      await new Promise((r) => setTimeout(r, 25));
    }
    return this.#d.active(name);
  }

  /** Resolves when every attempt in progress has ended. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#connecting.values()]);
  }

  async #attempt(name: string, directOnly = false): Promise<PeerSession | null> {
    let entry: DialEntry | null;
    try {
      entry = await this.#d.lookup(name);
    } catch {
      return null;
    }
    if (!entry || entry.revoked || !entry.online) return null;
    const reach = this.#reach;
    if (!reach && !entry.address) return null;
    this.#d.noteListed(name, entry.fingerprint, entry.certPem);
    this.#d.noteKnock?.(name, entry.knock ?? null);
    const once = (e: DialEntry) => {
      if (!reach) return this.#d.dial(name, e.address!.host, e.address!.port);
      return this.#race(name, e, reach, directOnly);
    };
    try {
      try {
        return await once(entry);
      } catch (e) {
        // Closed unanswered: the peer may have restarted with a new knock secret since we looked it up.
        // Look again, once.
        if (codeOf(e) !== "UNANSWERED") throw e;
        const fresh = await this.#d.lookup(name).catch(() => null);
        if (
          !fresh || fresh.revoked || !fresh.online || (fresh.knock ?? null) === (entry.knock ?? null) ||
          (!reach && !fresh.address)
        ) throw e;
        this.#d.noteListed(name, fresh.fingerprint, fresh.certPem);
        this.#d.noteKnock?.(name, fresh.knock ?? null);
        return await once(fresh);
      }
    } catch (e) {
      if (directOnly) return null;
      const code = (e as SessionError).detail ?? codeOf(e) ?? "CONNECT_FAILED";
      if (this.#lastError.get(name) !== code) {
        this.#lastError.set(name, code);
        this.#d.emit({ event: "error", code: `PEER_${code}`, message: `${name}: ${messageOf(e)}` });
      }
      return null;
    }
  }

  async #race(name: string, entry: DialEntry, reach: ReachDeps, directOnly: boolean): Promise<PeerSession> {
    const candidates = dialOrder(
      entry.candidates ?? (entry.address ? [entry.address] : []),
      entry.reachable ?? [],
    );
    let attempts: Attempt[] = candidates.map((a) => {
      const path: SessionPath = {
        kind: a.via === "mapping" ? "mapped" : addressKind(a.host),
        address: { host: a.host, port: a.port },
      };
      return {
        path,
        open: async () => ({ socket: await reach.connect(a.host, a.port, CONNECT_TIMEOUT_MS), path }),
      };
    });
    if (!directOnly && reach.haveRelay() && reach.reverse && (await reach.reachable?.())) {
      const reverse = reach.reverse;
      attempts.push({
        path: null,
        holdMs: REVERSAL_WAIT_MS,
        open: async () => {
          await reverse(name);
          const s = await this.#waitActive(name, REVERSAL_WAIT_MS);
          if (!s) throw new Error(`${name} did not dial back in time`);
          return {
            socket: null,
            path: s.path ?? { kind: "public", address: { host: s.remoteAddress, port: 0 } },
          };
        },
      });
    }
    if (!directOnly && reach.haveRelay()) {
      attempts.push({
        path: null,
        open: async () => {
          const { socket, relay } = await reach.relayCircuit(name);
          return { socket, path: { kind: "relayed", address: relay } };
        },
      });
    }
    let lastError: unknown = new Error(`${name} lists no address we could try`);
    // A path that connected and was closed before any TLS answer (our knock refused) says more than the
    // others' failures: it is reported, and makes the caller look the peer up again.
    let unanswered: unknown = null;
    while (attempts.length > 0) {
      const r = await raceAttempts(attempts, CONNECTION_ATTEMPT_DELAY_MS);
      if (!("socket" in r)) {
        // The most telling failure: the relay's (it says why, e.g. a limit), else the first address's.
        const errs = r.errors;
        lastError = errs[errs.length - 1] ?? errs.find((e) => e !== undefined) ?? lastError;
        break;
      }
      if (r.socket === null) {
        const back = this.#d.active(name);
        if (back) return back;
        attempts = attempts.filter((_, i) => i !== r.index);
        continue;
      }
      try {
        return await reach.dialOver(name, r.socket, r.path);
      } catch (e) {
        lastError = e;
        if (codeOf(e) === "UNANSWERED") unanswered ??= e;
        // The right peer refused us, or showed a key other than the one we know: no other path changes that.
        if (this.#d.active(name) || ["KEY_CHANGED", "REVOKED"].includes(codeOf(e) ?? "")) throw e;
        attempts = attempts.filter((_, i) => i !== r.index);
      }
    }
    const winner = this.#d.active(name);
    if (winner) return winner;
    throw unanswered ?? lastError;
  }
}
