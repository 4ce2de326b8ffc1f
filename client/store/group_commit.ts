/**
 * Group commit over one SQLite connection: operations enqueued in the same turn of the event loop (or while
 * the previous batch was committing and the loop was blocked in its fsync) are applied in ONE transaction,
 * so N messages cost one fsync instead of N. Each enqueuer's promise settles only after that transaction:
 * it resolves once the batch is committed (on disk when any operation of the batch asked for durability),
 * and every operation of a failed batch rejects with StoreError STORE_FAILED after a ROLLBACK, so nothing of
 * that batch is half stored.
 *
 * Operations of one kind that follow each other in the queue are handed to their kind's `apply` together
 * (one prepared statement reused for all); kinds are applied in queue order, so order is preserved.
 */
import { setImmediate } from "node:timers";
import { StoreError } from "./errors.ts";

/** What the committer needs of the connection (DatabaseSync satisfies it). */
export interface TxDatabase {
  exec(sql: string): void;
}

/** A kind of operation: how to apply a run of them inside the committer's transaction. */
export interface BatchKind<I, R> {
  /** Diagnostic name (shown in errors). */
  readonly name: string;
  /** Whether the commit must reach the disk (synchronous=FULL) before the enqueuers learn of it. */
  readonly durable: boolean;
  /** Applies `items` in order inside the open transaction; returns one result per item, in order. Throws
   * to fail the whole batch. */
  apply(items: readonly I[]): R[];
}

export interface GroupCommitOptions {
  /** Most operations in one transaction; later ones wait for the next. Default DEFAULT_MAX_BATCH. */
  maxBatch?: number;
  /** Called after each COMMIT with the number of operations it held and whether it was durable (tests count
   * transactions with it). */
  onCommit?: (ops: number, durable: boolean) => void;
}

/** Big enough that an fsync (milliseconds) is shared by hundreds of messages, small enough that one batch
 * does not hold the event loop for long (a row costs a few microseconds). */
export const DEFAULT_MAX_BATCH = 1024;

interface Pending {
  kind: BatchKind<unknown, unknown>;
  item: unknown;
  resolve: (r: unknown) => void;
  reject: (e: StoreError) => void;
}

export class GroupCommitter {
  readonly #db: TxDatabase;
  readonly #maxBatch: number;
  readonly #onCommit: ((ops: number, durable: boolean) => void) | undefined;
  #queue: Pending[] = [];
  #scheduled = false;
  #closed = false;
  /** Transactions committed so far. */
  commits = 0;

  constructor(db: TxDatabase, opts: GroupCommitOptions = {}) {
    const max = opts.maxBatch ?? DEFAULT_MAX_BATCH;
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError("maxBatch must be a positive integer");
    this.#db = db;
    this.#maxBatch = max;
    this.#onCommit = opts.onCommit;
  }

  /** Operations waiting for a transaction. */
  get pending(): number {
    return this.#queue.length;
  }

  /** Queues one operation; resolves with its result once its transaction committed. Rejects with StoreError
   * STORE_FAILED when that transaction failed (rolled back) or the committer is closed. */
  enqueue<I, R>(kind: BatchKind<I, R>, item: I): Promise<R> {
    if (this.#closed) return Promise.reject(new StoreError("STORE_FAILED", "the store is closed"));
    return new Promise<R>((resolve, reject) => {
      this.#queue.push({
        kind: kind as BatchKind<unknown, unknown>,
        item,
        resolve: resolve as (r: unknown) => void,
        reject,
      });
      this.#schedule();
    });
  }

  /** A macrotask, not a microtask: frames decoded from one socket read (each handled in its own microtask)
   * and sends issued in one loop all join the same batch before it runs. */
  #schedule(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#commitOne();
      if (this.#queue.length) this.#schedule();
    });
  }

  /** Commits everything queued now, synchronously (before the connection is closed). */
  flushSync(): void {
    while (this.#queue.length) this.#commitOne();
  }

  /** Commits what is queued, then refuses new operations. */
  close(): void {
    if (this.#closed) return;
    this.flushSync();
    this.#closed = true;
  }

  #commitOne(): void {
    const batch = this.#queue.splice(0, this.#maxBatch);
    if (batch.length === 0) return;
    const durable = batch.some((p) => p.kind.durable);
    let results: unknown[];
    try {
      results = this.#run(batch, durable);
    } catch (e) {
      const err = new StoreError(
        "STORE_FAILED",
        `store write failed (${batch.length} operations rolled back): ${(e as Error).message}`,
      );
      for (const p of batch) p.reject(err);
      return;
    }
    this.commits++;
    try {
      this.#onCommit?.(batch.length, durable);
    } catch {
      // an observer's bug must not undo a commit
    }
    for (let i = 0; i < batch.length; i++) batch[i].resolve(results[i]);
  }

  #run(batch: Pending[], durable: boolean): unknown[] {
    const db = this.#db;
    if (durable) db.exec("PRAGMA synchronous=FULL");
    try {
      db.exec("BEGIN IMMEDIATE");
      try {
        const results: unknown[] = [];
        let i = 0;
        while (i < batch.length) {
          // A run of consecutive operations of one kind goes to its apply at once.
          const kind = batch[i].kind;
          let j = i + 1;
          while (j < batch.length && batch[j].kind === kind) j++;
          const items = batch.slice(i, j).map((p) => p.item);
          const r = kind.apply(items);
          if (r.length !== items.length) {
            throw new Error(`${kind.name} returned ${r.length} results for ${items.length} operations`);
          }
          results.push(...r);
          i = j;
        }
        db.exec("COMMIT");
        return results;
      } catch (e) {
        try {
          db.exec("ROLLBACK");
        } catch {
          // the transaction may already be gone (SQLite rolls back by itself on some errors)
        }
        throw e;
      }
    } finally {
      if (durable) {
        try {
          db.exec("PRAGMA synchronous=NORMAL");
        } catch {
          // the next durable batch sets it again
        }
      }
    }
  }
}
