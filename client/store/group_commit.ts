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
  /** The same apply by name, for a runner on another thread (writer_thread.ts), which cannot be handed
   * a function: a kind without one is applied on the committer's own connection. */
  readonly op?: string;
}

/** Consecutive operations of one kind, applied together. */
export interface Run {
  kind: BatchKind<unknown, unknown>;
  items: unknown[];
}

/** Applies runs in ONE transaction on `db` and returns their results in order, or throws after a ROLLBACK;
 * `durable` commits with synchronous=FULL. `apply` does one run. The committer's own connection and the
 * writer thread (writer_worker.ts) both write through it. */
export function applyRuns<R extends { items: readonly unknown[] }>(
  db: TxDatabase,
  runs: readonly R[],
  durable: boolean,
  apply: (run: R) => unknown[],
  nameOf: (run: R) => string,
): unknown[] {
  if (durable) db.exec("PRAGMA synchronous=FULL");
  try {
    db.exec("BEGIN IMMEDIATE");
    try {
      const results: unknown[] = [];
      for (const run of runs) {
        const r = apply(run);
        if (r.length !== run.items.length) {
          throw new Error(`${nameOf(run)} returned ${r.length} results for ${run.items.length} operations`);
        }
        for (const x of r) results.push(x);
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

/** Where a batch is applied: on the committer's thread (returns the results) or elsewhere (a promise). */
export interface BatchRunner {
  /** Batches `run` may hold at once (applied in the order given). */
  readonly maxInFlight: number;
  /** `more`: operations are still queued behind this batch (a burst goes on). */
  run(runs: Run[], durable: boolean, more: boolean): unknown[] | Promise<unknown[]>;
  /** Waits, blocking, for the oldest batch `run` left running, and returns its outcome (close). */
  waitSync(): { results: unknown[] } | { error: Error };
  /** Applies a batch before returning (close). */
  runSync(runs: Run[], durable: boolean): unknown[];
}

/** The committer's default: batches applied on its own connection, on the caller's thread. */
export class LocalRunner implements BatchRunner {
  readonly #db: TxDatabase;
  readonly maxInFlight = 1;

  constructor(db: TxDatabase) {
    this.#db = db;
  }

  run(runs: Run[], durable: boolean): unknown[] {
    return this.runSync(runs, durable);
  }

  waitSync(): { results: unknown[] } {
    return { results: [] };
  }

  runSync(runs: Run[], durable: boolean): unknown[] {
    return applyRuns(this.#db, runs, durable, (run) => run.kind.apply(run.items), (run) => run.kind.name);
  }
}

export interface GroupCommitOptions {
  /** Most operations in one transaction; later ones wait for the next. Default DEFAULT_MAX_BATCH. */
  maxBatch?: number;
  /** Called after each COMMIT with the number of operations it held and whether it was durable (tests count
   * transactions with it). */
  onCommit?: (ops: number, durable: boolean) => void;
  /** Where batches are applied; default on the connection given (LocalRunner). */
  runner?: BatchRunner;
}

/** Big enough that an fsync (milliseconds) is shared by hundreds of messages, small enough that one batch
 * does not hold the event loop for long (a row costs a few microseconds). */
export const DEFAULT_MAX_BATCH = 1024;

interface InFlight {
  batch: Pending[];
  durable: boolean;
  settled: boolean;
}

interface Pending {
  kind: BatchKind<unknown, unknown>;
  item: unknown;
  resolve: (r: unknown) => void;
  reject: (e: StoreError) => void;
}

export class GroupCommitter {
  readonly #runner: BatchRunner;
  readonly #maxBatch: number;
  readonly #onCommit: ((ops: number, durable: boolean) => void) | undefined;
  #queue: Pending[] = [];
  #scheduled = false;
  #closed = false;
  /** Batches the runner applies elsewhere, not settled yet, oldest first (the runner applies them in this
   * order, and they settle in it). */
  #inflight: InFlight[] = [];
  /** Transactions committed so far. */
  commits = 0;

  constructor(db: TxDatabase, opts: GroupCommitOptions = {}) {
    const max = opts.maxBatch ?? DEFAULT_MAX_BATCH;
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError("maxBatch must be a positive integer");
    this.#runner = opts.runner ?? new LocalRunner(db);
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
   * and sends issued in one loop all join the same batch before it runs. While the runner holds as many
   * batches as it takes, the next one gathers, and goes when the oldest is settled. */
  #schedule(): void {
    if (this.#scheduled || this.#closed || this.#inflight.length >= this.#runner.maxInFlight) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      if (this.#closed) return;
      this.#commitOne(false);
      if (this.#queue.length) this.#schedule();
    });
  }

  /** Commits everything queued now, synchronously (before the connection is closed). */
  flushSync(): void {
    for (const f of this.#inflight.splice(0)) {
      if (f.settled) continue;
      const out = this.#runner.waitSync();
      this.#settle(f, "results" in out ? out.results : out.error);
    }
    while (this.#queue.length) this.#commitOne(true);
  }

  /** Commits what is queued, then refuses new operations. */
  close(): void {
    if (this.#closed) return;
    this.flushSync();
    this.#closed = true;
  }

  #commitOne(sync: boolean): void {
    const batch = this.#queue.splice(0, this.#maxBatch);
    if (batch.length === 0) return;
    const durable = batch.some((p) => p.kind.durable);
    const runs: Run[] = [];
    for (let i = 0; i < batch.length;) {
      // A run of consecutive operations of one kind goes to its apply at once.
      const kind = batch[i].kind;
      let j = i + 1;
      while (j < batch.length && batch[j].kind === kind) j++;
      runs.push({ kind, items: batch.slice(i, j).map((p) => p.item) });
      i = j;
    }
    const f: InFlight = { batch, durable, settled: false };
    let out: unknown[] | Promise<unknown[]>;
    try {
      out = sync
        ? this.#runner.runSync(runs, durable)
        : this.#runner.run(runs, durable, this.#queue.length > 0);
    } catch (e) {
      this.#settle(f, e as Error);
      return;
    }
    if (!(out instanceof Promise)) {
      this.#settle(f, out);
      return;
    }
    this.#inflight.push(f);
    out.then((r) => this.#settle(f, r), (e: Error) => this.#settle(f, e)).finally(() => {
      const at = this.#inflight.indexOf(f);
      if (at >= 0) this.#inflight.splice(at, 1);
      if (this.#queue.length && !this.#closed) this.#schedule();
    });
  }

  /** Resolves a batch's enqueuers with its results, or rejects them all (it was rolled back). */
  #settle(f: InFlight, out: unknown[] | Error): void {
    if (f.settled) return;
    f.settled = true;
    const { batch } = f;
    if (out instanceof Error) {
      const err = new StoreError(
        "STORE_FAILED",
        `store write failed (${batch.length} operations rolled back): ${out.message}`,
      );
      for (const p of batch) p.reject(err);
      return;
    }
    this.commits++;
    try {
      this.#onCommit?.(batch.length, f.durable);
    } catch {
      // an observer's bug must not undo a commit
    }
    for (let i = 0; i < batch.length; i++) batch[i].resolve(out[i]);
  }
}
