/**
 * The peers the user blocked (`/block NAME`, headless `block`). A blocked peer is refused at the hello, as
 * listener and as dialer (peer_trust.ts throws SessionError BLOCKED right after its certificate names it,
 * before any pin is taken or frame read), its open sessions are ended, nothing it sends is stored, and we
 * neither dial it nor queue messages to it. The names live in chat.db (table `blocked`), so a restart keeps
 * them; this class holds them in memory too, because every incoming connection asks.
 */
import { canonicalUsername } from "../pki/mod.ts";
import { messageOf } from "../coded_error.ts";
import { EngineError } from "./engine_errors.ts";

/** What the blocklist keeps on disk (ChatStore satisfies it). */
export interface BlockStore {
  blockedNames(): string[];
  setBlocked(name: string, blocked: boolean): void;
}

export class Blocklist {
  readonly #store: BlockStore;
  readonly #names: Set<string>;

  constructor(store: BlockStore) {
    this.#store = store;
    this.#names = new Set(store.blockedNames());
  }

  has(name: string): boolean {
    return this.#names.has(name);
  }

  /** Sorted. */
  names(): string[] {
    return [...this.#names].sort();
  }

  /** Blocks `name` (canonical form returned). Throws EngineError BAD_NAME, or SELF for our own name. Blocking
   * a name twice is not an error. */
  block(name: string, ownName: string): string {
    const n = Blocklist.#canonical(name);
    if (n === ownName) throw new EngineError("SELF", "cannot block yourself");
    this.#store.setBlocked(n, true);
    this.#names.add(n);
    return n;
  }

  /** Unblocks `name`. Throws EngineError BAD_NAME, or NOT_FOUND when it was not blocked. */
  unblock(name: string): string {
    const n = Blocklist.#canonical(name);
    if (!this.#names.has(n)) throw new EngineError("NOT_FOUND", `${n} is not blocked`);
    this.#store.setBlocked(n, false);
    this.#names.delete(n);
    return n;
  }

  static #canonical(name: string): string {
    try {
      // Usernames are lowercase only, so "/block Alice" can mean nobody else.
      return canonicalUsername(name.replace(/^@/, "").toLowerCase());
    } catch (e) {
      throw new EngineError("BAD_NAME", `bad contact name: ${messageOf(e)}`);
    }
  }
}
