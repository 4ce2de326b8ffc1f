/**
 * Message requests: the messages of a stranger (a peer we never wrote to and never accepted) are held as a
 * request, bounded: at most REQUEST_MAX_MESSAGES per stranger (more: ProtocolError QUOTA_EXCEEDED) and
 * strangers from at most REQUEST_MAX_STRANGERS at once (a new stranger: REQUESTS_FULL, and one
 * `requests-full` event until there is room again); nothing refused is stored and the sender keeps it. The
 * first message of a request emits a `request` event ("message request from X"). Accepting (`accept`, or
 * simply writing to them) turns it into a conversation.
 *
 * Slots are not a permanent denial: a request not accepted within REQUEST_EXPIRY_MS (7 days) of its first
 * message expires (`expire`, run by the engine's timer), and declining or blocking ends one at once; each
 * deletes the request's messages (securely, as expiry does). A declined or expired stranger cannot open a new
 * request for REQUEST_COOLDOWN_MS (7 days; ProtocolError REFUSED, the words a blocked peer gets too), so the
 * same sock-puppets cannot take the freed slots back at once; a blocked one is refused anyway.
 *
 * The accepted names live in chat.db (table `accepted`), the start of each request and the cooldowns in
 * `request_state`; the counts of pending requests are read from the store at start and kept in memory (a
 * message in flight is counted at admission, released if not stored). A request ended while some of its
 * messages were still committing deletes those too when they land.
 */
import {
  REQUEST_COOLDOWN_MS,
  REQUEST_EXPIRY_MS,
  REQUEST_MAX_MESSAGES,
  REQUEST_MAX_STRANGERS,
} from "./protocol/constants.ts";
import { ProtocolError, REFUSED_MESSAGE } from "./protocol/errors.ts";
import type { EngineEvent } from "./engine_types.ts";

export interface RequestLimits {
  perStranger: number;
  strangers: number;
  expiryMs: number;
  cooldownMs: number;
}

/** What message requests keep in the store (ChatStore satisfies it). */
export interface RequestStore {
  acceptedNames(): string[];
  setAccepted(name: string): void;
  requestCounts(): Map<string, number>;
  requestStates(): { name: string; sinceMs: number | null; cooldownUntilMs: number | null }[];
  setRequestState(name: string, sinceMs: number | null, cooldownUntilMs: number | null): void;
  incomingIds(peer: string): string[];
  /** False when the rows are deleted but the WAL could not be truncated yet (another program reads). */
  deleteMessages(keys: { peer: string; id: string }[]): boolean;
}

export class MessageRequests {
  readonly limits: RequestLimits;
  readonly #store: RequestStore;
  readonly #emit: (e: EngineEvent) => void;
  readonly #now: () => number;
  readonly #accepted: Set<string>;
  /** Messages per stranger, stored or in flight. */
  readonly #pending: Map<string, number>;
  /** Strangers whose request was announced (a `request` event, or pending at start). */
  readonly #announced: Set<string>;
  /** When each pending request began (its first stored message), ms on the engine's clock. */
  readonly #since = new Map<string, number>();
  /** Strangers who may not open a new request before then. */
  readonly #cooldown = new Map<string, number>();
  /** Admitted messages of strangers not settled yet, and how many of them belong to a request that ended
   * meanwhile (deleted as they land: commits settle in admission order, so those come first). */
  readonly #inflight = new Map<string, number>();
  readonly #discard = new Map<string, number>();
  /** Whether the `requests-full` event was said since the requests last had room. */
  #fullSaid = false;

  readonly #onWalHeld: () => void;

  /** `now`: ms on the clock requests age on (the engine's latest trusted time, else the local clock).
   * `onWalHeld`: a deletion could not truncate the WAL (the engine's sweeper checkpoints again later). */
  constructor(
    store: RequestStore,
    emit: (e: EngineEvent) => void,
    limits: Partial<RequestLimits> = {},
    now: () => number = Date.now,
    onWalHeld: () => void = () => {},
  ) {
    this.#onWalHeld = onWalHeld;
    this.limits = {
      perStranger: REQUEST_MAX_MESSAGES,
      strangers: REQUEST_MAX_STRANGERS,
      expiryMs: REQUEST_EXPIRY_MS,
      cooldownMs: REQUEST_COOLDOWN_MS,
      ...limits,
    };
    for (const [k, v] of Object.entries(this.limits)) {
      if (!(v > 0)) throw new RangeError(`request limit ${k} must be positive`);
    }
    this.#store = store;
    this.#emit = emit;
    this.#now = now;
    this.#accepted = new Set(store.acceptedNames());
    this.#pending = store.requestCounts();
    this.#announced = new Set(this.#pending.keys());
    const t = now();
    for (const r of store.requestStates()) {
      if (r.sinceMs !== null && this.#pending.has(r.name)) this.#since.set(r.name, r.sinceMs);
      if (r.cooldownUntilMs !== null && r.cooldownUntilMs > t) this.#cooldown.set(r.name, r.cooldownUntilMs);
    }
    // Requests stored before their start was kept: their week starts now.
    for (const name of this.#pending.keys()) {
      if (!this.#since.has(name)) this.#begin(name, t);
    }
  }

  isAccepted(peer: string): boolean {
    return this.#accepted.has(peer);
  }

  /** Strangers with a pending request and how many messages each, by name. */
  pending(): { name: string; messages: number }[] {
    return [...this.#pending].filter(([, n]) => n > 0).map(([name, messages]) => ({ name, messages })).sort((
      a,
      b,
    ) => a.name < b.name ? -1 : 1);
  }

  /** Counts one message from `peer` before it is stored, or throws ProtocolError QUOTA_EXCEEDED (this
   * stranger's request is full), REFUSED (in its cooldown) or REQUESTS_FULL (no room for a new stranger). */
  admit(peer: string): void {
    if (this.#accepted.has(peer)) return;
    const n = this.#pending.get(peer) ?? 0;
    if (n >= this.limits.perStranger) {
      throw new ProtocolError(
        "QUOTA_EXCEEDED",
        `message request pending: ${n} messages wait until they are accepted`,
      );
    }
    if (n === 0) {
      const until = this.#cooldown.get(peer);
      if (until !== undefined && until > this.#now()) {
        // The same words a blocked peer gets: a declined stranger learns no more than that.
        throw new ProtocolError("REFUSED", REFUSED_MESSAGE);
      }
      if (this.#pending.size >= this.limits.strangers) {
        if (!this.#fullSaid) {
          this.#fullSaid = true;
          this.#emit({ event: "requests-full", strangers: this.#pending.size });
        }
        throw new ProtocolError("REQUESTS_FULL", "too many message requests pending: try again later");
      }
    }
    this.#pending.set(peer, n + 1);
    this.#inflight.set(peer, (this.#inflight.get(peer) ?? 0) + 1);
  }

  /** The admitted message `id` was stored or not (released). Returns whether it is kept: false when its
   * request ended (declined, blocked, expired) while it was committing, and it was deleted now. */
  settle(peer: string, id: string, stored: boolean): boolean {
    if (this.#accepted.has(peer)) return stored;
    const f = (this.#inflight.get(peer) ?? 1) - 1;
    if (f > 0) this.#inflight.set(peer, f);
    else this.#inflight.delete(peer);
    const d = this.#discard.get(peer);
    if (d !== undefined) {
      if (d > 1) this.#discard.set(peer, d - 1);
      else this.#discard.delete(peer);
      if (stored) this.#delete([{ peer, id }]);
      return false;
    }
    const n = this.#pending.get(peer);
    if (n === undefined) return stored; // accepted meanwhile, or not a request
    if (!stored) {
      if (n <= 1) this.#forget(peer);
      else this.#pending.set(peer, n - 1);
      return false;
    }
    if (!this.#announced.has(peer)) {
      this.#announced.add(peer);
      this.#begin(peer, this.#now());
      this.#emit({ event: "request", from: peer });
    }
    return true;
  }

  /** Accepts `peer`: its messages become a conversation and it is not limited as a stranger any more. */
  accept(peer: string): void {
    if (this.#accepted.has(peer)) return;
    this.#store.setAccepted(peer);
    this.#accepted.add(peer);
    this.#forget(peer);
    // Its messages still committing are a conversation's now: kept.
    this.#inflight.delete(peer);
    this.#discard.delete(peer);
    this.#cooldown.delete(peer);
    this.#store.setRequestState(peer, null, null);
  }

  /** Declines `peer`'s request: deletes its messages; no new request from it for the cooldown. Returns how
   * many were deleted; 0 when `peer` had no request (an accepted peer's conversation is never deleted here). */
  decline(peer: string): number {
    return this.#end(peer, true);
  }

  /** `peer` was blocked: its request (if any) ends, its messages are deleted and its slot is free. Returns
   * how many were deleted. An accepted peer's conversation is kept. */
  blocked(peer: string): number {
    return this.#end(peer, false);
  }

  /** Ends every request older than the expiry (their messages deleted, a cooldown each). Returns the names. */
  expire(): string[] {
    const t = this.#now();
    const gone: string[] = [];
    for (const [name, since] of [...this.#since]) {
      if (since + this.limits.expiryMs > t || this.#accepted.has(name)) continue;
      const n = this.#end(name, true);
      gone.push(name);
      this.#emit({
        event: "log",
        level: "info",
        text: `the message request from ${name} (${n} messages) was not accepted within ${
          Math.round(this.limits.expiryMs / 3600_000)
        } h: deleted`,
      });
    }
    return gone;
  }

  #delete(keys: { peer: string; id: string }[]): void {
    if (keys.length && !this.#store.deleteMessages(keys)) this.#onWalHeld();
  }

  #end(peer: string, cooldown: boolean): number {
    if (this.#accepted.has(peer)) return 0;
    const ids = this.#store.incomingIds(peer);
    this.#delete(ids.map((id) => ({ peer, id })));
    const inflight = this.#inflight.get(peer) ?? 0;
    if (inflight > 0) this.#discard.set(peer, inflight);
    this.#forget(peer);
    if (cooldown) {
      const until = this.#now() + this.limits.cooldownMs;
      this.#cooldown.set(peer, until);
      this.#store.setRequestState(peer, null, until);
    } else {
      this.#cooldown.delete(peer);
      this.#store.setRequestState(peer, null, null);
    }
    return ids.length;
  }

  #begin(peer: string, t: number): void {
    this.#since.set(peer, t);
    this.#store.setRequestState(peer, t, null);
  }

  /** `peer` holds no slot any more. */
  #forget(peer: string): void {
    this.#pending.delete(peer);
    this.#announced.delete(peer);
    this.#since.delete(peer);
    if (this.#pending.size < this.limits.strangers) this.#fullSaid = false;
  }
}
