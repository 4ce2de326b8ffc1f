/**
 * Message requests: the messages of a stranger (a peer we never wrote to and never accepted) are held as a
 * request, bounded: at most REQUEST_MAX_MESSAGES per stranger and strangers from at most REQUEST_MAX_STRANGERS
 * at once; past either the inbox refuses the message with ProtocolError QUOTA_EXCEEDED (nothing stored, the
 * sender keeps it). The first message of a request emits a `request` event ("message request from X").
 * Accepting (`accept`, or simply writing to them) turns it into a conversation; declining deletes its
 * messages (securely, as expiry does) and the peer may ask again.
 *
 * The accepted names live in chat.db (table `accepted`); the counts of pending requests are read from the
 * store at start and kept in memory (a request in flight is counted at admission, released if not stored).
 */
import { REQUEST_MAX_MESSAGES, REQUEST_MAX_STRANGERS } from "./protocol/constants.ts";
import { ProtocolError } from "./protocol/errors.ts";
import type { EngineEvent } from "./engine_types.ts";

export interface RequestLimits {
  perStranger: number;
  strangers: number;
}

/** What message requests keep in the store (ChatStore satisfies it). */
export interface RequestStore {
  acceptedNames(): string[];
  setAccepted(name: string): void;
  requestCounts(): Map<string, number>;
  incomingIds(peer: string): string[];
  deleteMessages(keys: { peer: string; id: string }[]): void;
}

export class MessageRequests {
  readonly limits: RequestLimits;
  readonly #store: RequestStore;
  readonly #emit: (e: EngineEvent) => void;
  readonly #accepted: Set<string>;
  /** Messages per stranger, stored or in flight. */
  readonly #pending: Map<string, number>;
  /** Strangers whose request was announced (a `request` event, or pending at start). */
  readonly #announced: Set<string>;

  constructor(store: RequestStore, emit: (e: EngineEvent) => void, limits: Partial<RequestLimits> = {}) {
    this.limits = { perStranger: REQUEST_MAX_MESSAGES, strangers: REQUEST_MAX_STRANGERS, ...limits };
    this.#store = store;
    this.#emit = emit;
    this.#accepted = new Set(store.acceptedNames());
    this.#pending = store.requestCounts();
    this.#announced = new Set(this.#pending.keys());
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

  /** Counts one message from `peer` before it is stored, or throws ProtocolError QUOTA_EXCEEDED. */
  admit(peer: string): void {
    if (this.#accepted.has(peer)) return;
    const n = this.#pending.get(peer) ?? 0;
    if (n >= this.limits.perStranger) {
      throw new ProtocolError(
        "QUOTA_EXCEEDED",
        `message request pending: ${n} messages wait until they are accepted`,
      );
    }
    if (n === 0 && this.#pending.size >= this.limits.strangers) {
      throw new ProtocolError("QUOTA_EXCEEDED", "too many message requests pending: try again later");
    }
    this.#pending.set(peer, n + 1);
  }

  /** The admitted message was stored (the first one of a request announces it) or not (released). */
  settle(peer: string, stored: boolean): void {
    const n = this.#pending.get(peer);
    if (n === undefined) return; // accepted meanwhile, or not a request
    if (!stored) {
      if (n <= 1) this.#pending.delete(peer);
      else this.#pending.set(peer, n - 1);
      return;
    }
    if (!this.#announced.has(peer)) {
      this.#announced.add(peer);
      this.#emit({ event: "request", from: peer });
    }
  }

  /** Accepts `peer`: its messages become a conversation and it is not limited as a stranger any more. */
  accept(peer: string): void {
    if (this.#accepted.has(peer)) return;
    this.#store.setAccepted(peer);
    this.#accepted.add(peer);
    this.#pending.delete(peer);
    this.#announced.delete(peer);
  }

  /** Declines `peer`'s request: deletes its messages. Returns how many were deleted; 0 when `peer` had no
   * request (an accepted peer's conversation is never deleted here). */
  decline(peer: string): number {
    if (this.#accepted.has(peer)) return 0;
    const ids = this.#store.incomingIds(peer);
    this.#store.deleteMessages(ids.map((id) => ({ peer, id })));
    this.#pending.delete(peer);
    this.#announced.delete(peer);
    return ids.length;
  }
}
