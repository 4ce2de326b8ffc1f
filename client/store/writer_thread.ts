/**
 * The group commit's batches applied on a thread of their own (writer_worker.ts) with its own connection to
 * chat.db, so that inserting rows, committing and the fsync of a durable commit no longer hold the engine's
 * event loop: sessions, the terminal UI and the next batch go on meanwhile. WAL lets the engine's connection
 * read while the writer writes; a batch's enqueuers learn of it only once the writer committed it, as before.
 *
 * Up to IN_FLIGHT batches are handed over at once; the worker applies them in the order given and they
 * settle in it, so order is kept. Each outcome is written to its slot of a shared mailbox before the worker
 * rings the doorbell (a message), so the store's synchronous close can also wait for it (Atomics.wait) and
 * need not give up a committed batch.
 * The worker takes the batches of a burst that goes on (more queued behind them). A batch with none at the
 * worker that is small or the last of its burst, any batch before the worker has opened chat.db or after it
 * failed, and a kind without an `op` name (a test's) are applied on the caller's connection instead
 * (LocalRunner): with nothing to do meanwhile, the hop to the worker and back is only a cost.
 */
import type { BatchRunner, LocalRunner, Run } from "./group_commit.ts";

/** What the worker is asked: open chat.db at `path`, apply a batch, or close. */
export type WriterRequest =
  | { t: "open"; seq: number; path: string; mailbox: SharedArrayBuffer }
  | { t: "close"; seq: number }
  /** `runs`: JSON of { op, items }[] (the items are plain data; one string crosses to the worker faster than
   * a structured clone of a thousand objects). */
  | { t: "batch"; seq: number; durable: boolean; runs: string };

/** One run as the worker gets it. */
export interface ThreadRun {
  op: string;
  items: unknown[];
}

/** Batches handed to the worker at once: while the engine's thread is busy (decoding a burst, writing the
 * replies), the worker has the next batch already, instead of waiting for the engine to notice it is done. */
export const IN_FLIGHT = 4;
/** The mailbox: one slot per batch in flight (request seq uses slot seq % SLOTS), each a header (Int32: the
 * seq whose outcome it holds, its length) then the outcome as JSON. */
const SLOTS = IN_FLIGHT + 1;
const SLOT_BYTES = 512 << 10;
const HEADER_BYTES = 8;
export const MAILBOX_BYTES = SLOTS * SLOT_BYTES;
/** At most this many operations in one batch: their results (at most ~17 bytes of JSON each) fit a slot.
 * The committer's default batch is 1,024. */
export const MAX_THREAD_BATCH = 16_384;
/** A batch of at most this many operations, with none at the worker, is applied on the caller's connection:
 * for a message or two the hop to the worker and back costs more than the rows (a message typed alone
 * arrives as fast as before). So is a batch of any size with nothing queued behind it (see run). */
export const LOCAL_MAX = 8;
/** How long open and close wait for the worker. */
const WAIT_MS = 30_000;

export type Outcome = { results: unknown[] } | { error: string };

function slotHeader(mailbox: SharedArrayBuffer, seq: number): Int32Array {
  return new Int32Array(mailbox, (seq % SLOTS) * SLOT_BYTES, 2);
}

/** The worker's side of the mailbox: writes outcome `seq` to its slot, then wakes a waiting reader. */
export function postOutcome(mailbox: SharedArrayBuffer, seq: number, outcome: Outcome): void {
  let bytes = new TextEncoder().encode(JSON.stringify(outcome));
  if (bytes.length > SLOT_BYTES - HEADER_BYTES) {
    bytes = new TextEncoder().encode(JSON.stringify({ error: "outcome too large for the mailbox" }));
  }
  new Uint8Array(mailbox, (seq % SLOTS) * SLOT_BYTES + HEADER_BYTES, bytes.length).set(bytes);
  const header = slotHeader(mailbox, seq);
  Atomics.store(header, 1, bytes.length);
  Atomics.store(header, 0, seq);
  Atomics.notify(header, 0);
}

function readOutcome(mailbox: SharedArrayBuffer, seq: number): Outcome {
  const n = Atomics.load(slotHeader(mailbox, seq), 1);
  const at = (seq % SLOTS) * SLOT_BYTES + HEADER_BYTES;
  // slice: TextDecoder takes no view of shared memory.
  return JSON.parse(new TextDecoder().decode(new Uint8Array(mailbox, at, n).slice())) as Outcome;
}

function operations(runs: readonly Run[]): number {
  return runs.reduce((n, r) => n + r.items.length, 0);
}

interface PendingBatch {
  seq: number;
  resolve: (r: unknown[]) => void;
  reject: (e: Error) => void;
}

export class WriterThread implements BatchRunner {
  readonly maxInFlight = IN_FLIGHT;
  readonly #worker: Worker;
  readonly #mailbox = new SharedArrayBuffer(MAILBOX_BYTES);
  readonly #local: LocalRunner;
  #seq = 0;
  /** Batches with the worker, oldest first. */
  #pending: PendingBatch[] = [];
  #dead: string | null = null;
  #closed = false;
  /** Batches the worker applied (tests and the benchmark read it). */
  threadBatches = 0;

  /** Whether the worker has opened chat.db: until then (and for good if it never does) every batch is
   * applied on the caller's connection. */
  #ready = false;
  readonly #opened: Promise<boolean>;
  #onOpened: (ok: boolean) => void = () => {};
  /** Why the worker is not used, once that is known (it did not start, or failed later). */
  get failure(): string | null {
    return this.#dead;
  }

  /** Starts the writer on `path` without waiting for it: the store is usable at once, and batches go to the
   * worker once it has opened its connection. `worker` (tests) replaces writer_worker.ts. */
  constructor(path: string, local: LocalRunner, worker?: Worker) {
    this.#local = local;
    this.#opened = new Promise<boolean>((r) => this.#onOpened = r);
    this.#worker = worker ?? new Worker(import.meta.resolve("./writer_worker.ts"), { type: "module" });
    this.#worker.onmessage = (e: MessageEvent<{ done: number }>) => this.#ring(e.data.done);
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#die(`the store's writer thread failed: ${e.message}`);
    };
    const seq = ++this.#seq;
    this.#worker.postMessage({ t: "open", seq, path, mailbox: this.#mailbox } satisfies WriterRequest);
  }

  /** Resolves once the worker has opened chat.db (true), or is known not to (false: see failure). */
  opened(): Promise<boolean> {
    return this.#opened;
  }

  run(runs: Run[], durable: boolean, more: boolean): unknown[] | Promise<unknown[]> {
    // With nothing at the worker, a batch of a few, or one with nothing queued behind it (no burst going
    // on that the engine could get on with meanwhile), costs less here than the hop there and back.
    const here = this.#pending.length === 0 &&
      (!more || operations(runs) <= LOCAL_MAX);
    if (here || !this.#ready || this.#dead !== null || runs.some((r) => r.kind.op === undefined)) {
      if (this.#pending.length === 0) return this.#local.runSync(runs, durable);
      // Only a kind without an op gets here (the others imply nothing is at the worker): applied now it would
      // overtake the batches there.
      throw new Error("a kind without an op cannot follow batches at the writer thread");
    }
    if (this.#pending.length >= IN_FLIGHT) throw new Error("the writer thread holds its most batches");
    const seq = this.#post(runs, durable);
    this.threadBatches++;
    return new Promise<unknown[]>((resolve, reject) => this.#pending.push({ seq, resolve, reject }));
  }

  waitSync(): { results: unknown[] } | { error: Error } {
    const p = this.#pending.shift();
    if (!p) return { results: [] };
    const out = this.#dead === null ? this.#wait(p.seq) : { error: this.#dead };
    return "error" in out ? { error: new Error(out.error) } : out;
  }

  runSync(runs: Run[], durable: boolean): unknown[] {
    if (!this.#ready || this.#dead !== null || this.#closed || runs.some((r) => r.kind.op === undefined)) {
      return this.#local.runSync(runs, durable);
    }
    const out = this.#wait(this.#post(runs, durable));
    this.threadBatches++;
    if ("error" in out) throw new Error(out.error);
    return out.results;
  }

  /** Closes the worker's connection and ends it (after the committer's close: nothing is left with it). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onOpened(this.#ready);
    // A worker that has not opened yet holds nothing: it is ended without waiting for it.
    if (this.#ready && this.#dead === null) {
      const seq = ++this.#seq;
      this.#worker.postMessage({ t: "close", seq } satisfies WriterRequest);
      this.#wait(seq);
    }
    this.#worker.terminate();
  }

  #post(runs: Run[], durable: boolean): number {
    if (operations(runs) > MAX_THREAD_BATCH) {
      throw new RangeError(`at most ${MAX_THREAD_BATCH} operations in a batch`);
    }
    const seq = ++this.#seq;
    const msg: WriterRequest = {
      t: "batch",
      seq,
      durable,
      runs: JSON.stringify(runs.map((r): ThreadRun => ({ op: r.kind.op!, items: r.items }))),
    };
    this.#worker.postMessage(msg);
    return seq;
  }

  /** Blocks until the worker has posted outcome `seq`. */
  #wait(seq: number): Outcome {
    const header = slotHeader(this.#mailbox, seq);
    const deadline = performance.now() + WAIT_MS;
    for (;;) {
      const done = Atomics.load(header, 0);
      if (done === seq) return readOutcome(this.#mailbox, seq);
      const left = deadline - performance.now();
      if (left <= 0) {
        this.#die("the store's writer thread did not answer");
        return { error: this.#dead! };
      }
      Atomics.wait(header, 0, done, Math.min(left, 1000));
    }
  }

  /** The doorbell: outcome `seq` is in its slot. */
  #ring(seq: number): void {
    if (seq === 1 && !this.#ready && this.#dead === null) {
      const out = readOutcome(this.#mailbox, seq);
      if ("error" in out) this.#die(out.error);
      else {
        this.#ready = true;
        this.#onOpened(true);
      }
      return;
    }
    const p = this.#pending[0];
    if (!p || p.seq !== seq) return; // Taken already by waitSync.
    this.#pending.shift();
    const out = readOutcome(this.#mailbox, seq);
    if ("error" in out) p.reject(new Error(out.error));
    else p.resolve(out.results);
  }

  #die(why: string): void {
    if (this.#dead !== null) return;
    this.#dead = why;
    this.#onOpened(false);
    this.#worker.terminate();
    // Their batches may or may not have committed: their enqueuers are told they failed. A receipt is then
    // not sent (the peer sends again; the id check absorbs it); a message of ours that was stored after all
    // is still sent by the next flush.
    for (const p of this.#pending.splice(0)) p.reject(new Error(why));
  }
}
