/**
 * The revocation cache: the last verified CRL the engine judges peers on, where it comes from (the phonebook,
 * or the store at start), how fresh it must be, and the "fails closed" state before any list was obtained.
 * The ordering and freshness rules are pure (rules.ts); this part does the fetching, persisting and telling.
 */
import type { ParsedCrl } from "../../pki/mod.ts";
import { messageOf } from "../../coded_error.ts";
import type { Scheduler } from "../scheduler.ts";
import { withTimeout } from "../scheduler.ts";
import { compareCrl, isCrlStale, type RevocationList, RevocationUnknownError } from "./rules.ts";

/** After a failed fetch, handshakes wait at least this long before asking the phonebook again (a dead
 * phonebook must not be hammered by every incoming connection), and at most this long once it is back. */
export const CRL_RETRY_AFTER_FAILURE_MS = 2000;
/** Bound on one fetch: a handshake waits for it, and a black-holed phonebook must not outlast the peer's
 * hello timeout. */
export const CRL_FETCH_TIMEOUT_MS = 5000;
/** How long a list is reused before it is fetched again. */
export const DEFAULT_CRL_MAX_AGE_MS = 30_000;

export interface RevocationCacheDeps {
  /** The CRL, its signature already verified against our CA (DirectoryClient.crl). */
  fetch(): Promise<ParsedCrl>;
  /** The list persisted by an earlier run, or null; may be asynchronous (the engine verifies the stored
   * signed list again first). Every use of the cache waits for it. */
  load(): RevocationList | null | Promise<RevocationList | null>;
  /** Persists a newer list; may throw (the list is then used in memory only). */
  save(list: RevocationList): void;
  /** The latest the time may be (trusted when known). */
  latestNowMs(): number;
  log(level: "warn" | "error", text: string): void;
  scheduler: Scheduler;
  /** Default DEFAULT_CRL_MAX_AGE_MS. */
  maxAgeMs?: number;
}

export class RevocationCache {
  readonly #d: RevocationCacheDeps;
  readonly #maxAgeMs: number;
  /** null until a list was ever obtained (now or by an earlier run): every peer is then refused. */
  #list: RevocationList | null;
  /** Scheduler time of the last fetch that got an answer (reuse for maxAgeMs)... */
  #fetchedAt: number | null = null;
  /** ...and of the last one that failed (retry no sooner than CRL_RETRY_AFTER_FAILURE_MS). */
  #failedAt: number | null = null;
  #inFlight: Promise<void> | null = null;
  /** The stale-list warning is given once per stale period (reset when a current list arrives). */
  #staleWarned = false;
  /** "No revocation list yet" is said once, not at every refused handshake. */
  #unknownWarned = false;
  #closed = false;
  readonly #loaded: Promise<void>;

  constructor(deps: RevocationCacheDeps) {
    this.#d = deps;
    this.#maxAgeMs = deps.maxAgeMs ?? DEFAULT_CRL_MAX_AGE_MS;
    const held = deps.load();
    if (held instanceof Promise) {
      this.#list = null;
      this.#loaded = held.then((l) => {
        // A list fetched meanwhile is at least as new as the stored one.
        if (!this.#list) this.#list = l;
      }, () => {});
    } else {
      this.#list = held;
      this.#loaded = Promise.resolve();
    }
  }

  /** Resolves once the stored list was read (and verified, when load is asynchronous). */
  get loaded(): Promise<void> {
    return this.#loaded;
  }

  /** The list we hold, or null when none was ever obtained. */
  get list(): RevocationList | null {
    return this.#list;
  }

  get maxAgeMs(): number {
    return this.#maxAgeMs;
  }

  /** True when `serial` is on the list we hold. */
  isRevoked(serial: string): boolean {
    return this.#list?.serials.has(serial) ?? false;
  }

  /** True when we hold no list, or one past its nextUpdate. */
  isStale(): boolean {
    return this.#list ? isCrlStale(this.#list, this.#d.latestNowMs()) : true;
  }

  /** Fetches now (deduplicated with a fetch in progress) and keeps the answer when it is not older than the
   * list we hold; never throws. A failure keeps the list we hold. */
  refresh(): Promise<void> {
    if (!this.#inFlight) {
      this.#inFlight = this.#fetch().finally(() => {
        this.#inFlight = null;
      });
    }
    return this.#inFlight;
  }

  /** The serials to judge a peer on: refreshed first when older than maxAgeMs (failures retried after a
   * short pause). Throws RevocationUnknownError when no list was ever obtained. */
  async revokedSerials(): Promise<ReadonlySet<string>> {
    await this.#loaded;
    const now = this.#d.scheduler.now();
    const current = this.#fetchedAt !== null && now - this.#fetchedAt < this.#maxAgeMs;
    const pausing = this.#failedAt !== null && now - this.#failedAt < CRL_RETRY_AFTER_FAILURE_MS &&
      (this.#fetchedAt === null || this.#failedAt > this.#fetchedAt);
    if (!current && !pausing) await this.refresh();
    if (!this.#list) throw new RevocationUnknownError();
    return this.#list.serials;
  }

  /** Stops using the phonebook: a fetch in progress is ignored when it ends. */
  close(): void {
    this.#closed = true;
  }

  async #fetch(): Promise<void> {
    await this.#loaded;
    let parsed: ParsedCrl;
    try {
      parsed = await withTimeout(
        this.#d.scheduler,
        CRL_FETCH_TIMEOUT_MS,
        this.#d.fetch(),
        () => new Error("revocation list fetch timed out"),
      );
    } catch (e) {
      this.#failedAt = this.#d.scheduler.now();
      if (!this.#list && !this.#unknownWarned) {
        this.#unknownWarned = true;
        this.#d.log(
          "error",
          `no revocation list yet (${messageOf(e)}): peer sessions are refused until one is obtained`,
        );
      }
      this.#warnIfStale();
      return;
    }
    if (this.#closed) return;
    const fresh: RevocationList = {
      serials: parsed.revokedSerials,
      crlNumber: parsed.crlNumber ?? null,
      thisUpdateMs: parsed.thisUpdateMs,
      nextUpdateMs: parsed.nextUpdateMs,
      ...(parsed.der ? { der: parsed.der } : {}),
    };
    this.#fetchedAt = this.#d.scheduler.now();
    const held = this.#list;
    const order = held ? compareCrl(held, fresh) : "newer";
    if (order === "older") {
      this.#d.log(
        "warn",
        `the phonebook served an older revocation list (${describeCrl(fresh)}) than the one we hold (${
          describeCrl(held!)
        }): kept ours (a replayed or cached list could hide revocations)`,
      );
    } else if (order === "newer") {
      try {
        this.#d.save(fresh);
      } catch (e) {
        // Still used in memory: it is verified and newer; only a restart would fall back to the older one.
        this.#d.log("warn", `cannot store the revocation list: ${messageOf(e)}`);
      }
      this.#list = fresh;
    }
    this.#warnIfStale();
  }

  /** Says once that the list we judge peers on is past its nextUpdate (kept for availability). */
  #warnIfStale(): void {
    const list = this.#list;
    if (!list) return;
    if (!isCrlStale(list, this.#d.latestNowMs())) {
      this.#staleWarned = false;
      return;
    }
    if (this.#staleWarned) return;
    this.#staleWarned = true;
    this.#d.log(
      "warn",
      `the revocation list (${describeCrl(list)}) is past its nextUpdate ${
        new Date(list.nextUpdateMs!).toISOString()
      } and no newer one could be obtained: still using it, recent revocations may be missing`,
    );
  }
}

function describeCrl(c: RevocationList): string {
  return `${c.crlNumber === null ? "no CRL Number" : `CRL Number ${c.crlNumber}`}, thisUpdate ${
    new Date(c.thisUpdateMs).toISOString()
  }`;
}
