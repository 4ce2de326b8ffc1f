/**
 * The outbox: our messages from "sending" to a receipt, and the read receipts we owe peers. A message is
 * written to the peer's active session at most once per session ("in flight" until its ack); a session that
 * closes before the ack marks it "failed", and the next session sends it again (the receiver's id check makes
 * that at most once). Read receipts are kept in the store until written, so they survive being offline and
 * restarts. Messages whose deadline passed while queued are never sent (the sweeper deletes them).
 */
import type { Frame, MsgFrame, ReadFrame } from "./protocol/frames.ts";
import type { EngineEvent } from "./engine_types.ts";
import { boundedReadDeadline, effectiveDeadline } from "./expiry.ts";
import type { OutgoingMessage, ReadReceipt, StateChange, StoredMessage } from "./store/store.ts";
import { realScheduler, type Scheduler, type Timer } from "./scheduler.ts";

/** A peer whose inbox limits refused us (QUOTA_EXCEEDED, RATE_LIMITED) is tried again after a delay that
 * starts here and doubles at each refusal with nothing delivered in between, up to the maximum; each delay is
 * drawn from its upper half at random, so that many senders held back by one peer do not come back together.
 * A receipt from the peer starts the count again. The engine's retry tick (every 5 s) is the granularity. */
export const REFUSAL_BACKOFF_BASE_MS = 5_000;
export const REFUSAL_BACKOFF_MAX_MS = 5 * 60_000;

export interface RefusalBackoff {
  baseMs: number;
  maxMs: number;
}

/** The delay before attempt `attempts` (1 for the first refusal) of a bounded exponential backoff with
 * "equal jitter": uniformly in [d/2, d], d = min(max, base * 2^(attempts-1)). `random` is in [0, 1). */
export function refusalDelayMs(attempts: number, b: RefusalBackoff, random: number): number {
  const d = Math.min(b.maxMs, b.baseMs * 2 ** Math.max(0, Math.min(attempts - 1, 30)));
  return d / 2 + (d / 2) * random;
}

/** Outbox messages written to a connection per write (then one wait for drain): a flush after a reconnection
 * with thousands queued costs a few writes, not one per message. */
export const FLUSH_BATCH = 256;
/** Messages stored and not yet written kept in memory (see Outbox.#fresh); beyond it a flush reads them back. */
export const FRESH_MAX = 16_384;
/** A message written to a connection is stored as "sent" only once it has waited this long for its ack: an
 * ack that comes sooner takes it from "sending" to "delivered" in one write instead of two (the "sent" event
 * goes out at the write either way). The stored state may lag like that because it is only informational: a
 * message is resent until "delivered" whether it says sending, sent or failed. */
export const SENT_STATE_DELAY_MS = 1000;

/** What the outbox needs of the store (ChatStore satisfies it). */
export interface OutboxStore {
  /** Resolves with the message's seq once it is on disk. */
  queueOutgoing(m: OutgoingMessage): Promise<number>;
  queueState(change: StateChange): Promise<boolean>;
  queueReadReceipt(r: ReadReceipt): Promise<boolean>;
  /** Unacknowledged messages, oldest first, leaving out ids in `skip` and those with seq <= `afterSeq`; the
   * ones `known` holds (by seq) are taken from it instead of being read. */
  outbox(
    peer?: string,
    skip?: { has(id: string): boolean },
    afterSeq?: number,
    known?: { get(seq: number): StoredMessage | undefined },
  ): StoredMessage[];
  outboxPeers(): string[];
  get(peer: string, id: string): StoredMessage | null;
  addPendingRead(peer: string, id: string, readAt: number): void;
  pendingReads(peer?: string): { peer: string; id: string; readAt: number }[];
  removePendingReads(peer: string, ids: readonly string[]): void;
}

/** The part of a peer session the outbox writes to. */
export interface OutboxSession {
  readonly id: number;
  readonly state: string;
  /** Writes the frames in one socket write; rejects when the session is gone. */
  sendBatch(frames: readonly Frame[]): Promise<void>;
}

export interface OutboxDeps {
  ownName: string;
  store: OutboxStore;
  /** The peer's active session, or null. */
  session(peer: string): OutboxSession | null;
  /** Asks for a session to `peer` (looked up and dialled); the outbox is flushed when it opens. */
  connect(peer: string): void;
  /** The clock's judgement of a deadline (null: time unknown). */
  deadlinePassed(deadlineMs: number): boolean | null;
  /** The latest the time may be, when known. */
  latestNowMs(): number | null;
  maxUnreadMs: number;
  emit(e: EngineEvent): void;
  /** Called when a read receipt gave one of our messages a deadline (the sweeper re-arms). */
  onDeadline?(): void;
  /** Default SENT_STATE_DELAY_MS. */
  sentStateDelayMs?: number;
  /** Default realScheduler. */
  scheduler?: Scheduler;
  /** Monotonic milliseconds; default the scheduler's. */
  now?(): number;
  /** In [0, 1): the backoff's jitter; default Math.random. */
  random?(): number;
  /** Default REFUSAL_BACKOFF_BASE_MS and REFUSAL_BACKOFF_MAX_MS. */
  refusalBackoff?: Partial<RefusalBackoff>;
}

/** A peer that refused more of our messages for now: which code, how many refusals in a row without a
 * receipt, and until when nothing more is written to it. */
interface HeldBack {
  code: string;
  attempts: number;
  untilMs: number;
}

export class Outbox {
  readonly #d: OutboxDeps;
  /** message id -> session id it was written to, until acknowledged. */
  readonly #inflight = new Map<string, number>();
  /** peer -> the flush running for it. */
  readonly #flushing = new Map<string, Promise<void>>();
  readonly #flushAgain = new Set<string>();
  /** Per peer: the session a flush last wrote to and the highest seq it has looked at. Messages queued later
   * have higher seqs, so a flush on the same session reads only those; a new session, or a closed one whose
   * messages went back to "failed", starts from the beginning again. */
  readonly #cursor = new Map<string, { sessionId: number; seq: number }>();
  /** Our messages stored by `queue` and not written yet, by seq (and their seqs by id): a flush writes them
   * from here instead of reading back rows it has just stored. The store still decides which messages wait
   * (a deleted one is not written); the text of a stored message never changes, so a copy cannot be stale. */
  readonly #fresh = new Map<number, StoredMessage>();
  readonly #freshSeq = new Map<string, number>();
  /** Messages written and not acknowledged whose "sent" is not stored yet: id -> peer and when written
   * (the scheduler's now), oldest first. */
  readonly #unsent = new Map<string, { peer: string; at: number }>();
  #unsentTimer: Timer | null = null;
  readonly #scheduler: Scheduler;
  readonly #deliverQueued = new Set<string>();
  /** Peers whose inbox limits refused us (see REFUSAL_BACKOFF_BASE_MS); gone once nothing waits for them. */
  readonly #held = new Map<string, HeldBack>();
  /** message id -> the refusal its `failed` event named: the same refusal (or a plain connection drop) at a
   * later retry says nothing again, and writing it again says no `sent` (it stays "failed, kept" for the user
   * until delivered); another refusal code is said. */
  readonly #told = new Map<string, string>();
  readonly #backoff: RefusalBackoff;
  #closed = false;

  constructor(deps: OutboxDeps) {
    this.#d = deps;
    this.#scheduler = deps.scheduler ?? realScheduler;
    this.#backoff = {
      baseMs: deps.refusalBackoff?.baseMs ?? REFUSAL_BACKOFF_BASE_MS,
      maxMs: deps.refusalBackoff?.maxMs ?? REFUSAL_BACKOFF_MAX_MS,
    };
    if (!(this.#backoff.baseMs > 0) || !(this.#backoff.maxMs >= this.#backoff.baseMs)) {
      throw new RangeError("refusalBackoff: baseMs must be positive and maxMs at least baseMs");
    }
  }

  #now(): number {
    return this.#d.now?.() ?? this.#scheduler.now();
  }

  /** `peer` dialled us: it wants to talk (it read our messages and owes receipts, or unblocked us), so the
   * delay ends now; a refusal on this session holds it back again, one step further. */
  onPeerDialled(peer: string): void {
    const h = this.#held.get(peer);
    if (h) h.untilMs = 0;
  }

  /** When `peer`'s limits let us write to it again (monotonic ms), or null when they do not hold us back. */
  heldUntil(peer: string): number | null {
    const h = this.#held.get(peer);
    return h && h.untilMs > this.#now() ? h.untilMs : null;
  }

  /** Stores a new message of ours ("sending"; sends issued together share one commit) and starts delivering
   * it. Rejects with what the store throws (nothing is then stored). */
  async queue(m: OutgoingMessage): Promise<void> {
    const seq = await this.#d.store.queueOutgoing(m);
    // A flush may have written it already: the store's writer thread commits ahead of this continuation, and
    // a flush meanwhile reads what is committed. Kept here it would stay, never written again.
    if (this.#fresh.size < FRESH_MAX && !this.#inflight.has(m.id)) {
      this.#fresh.set(seq, { ...m, direction: "out", readAt: null, seq });
      this.#freshSeq.set(m.id, seq);
    }
    this.#deliverSoon(m.peer);
  }

  /** #deliver once the other sends of the same commit have had their turn: the commit settles them one
   * microtask each, so a flush started at the first would find the rest stored but not yet in #fresh, and
   * read them back. */
  #deliverSoon(peer: string): void {
    if (this.#deliverQueued.has(peer)) return;
    this.#deliverQueued.add(peer);
    queueMicrotask(() => {
      this.#deliverQueued.delete(peer);
      if (!this.#closed) this.#deliver(peer);
    });
  }

  /** Owes `peer` a read receipt for message `id` (kept until written). */
  queueReadReceipt(peer: string, id: string, readAt: number): void {
    this.#d.store.addPendingRead(peer, id, readAt);
    if (this.#d.session(peer)) void this.flush(peer);
  }

  /** Flushes every peer with something waiting, dialling those without a session. */
  retryAll(): void {
    if (this.#closed) return;
    const waiting = new Set(this.#d.store.outboxPeers());
    // Everything for a held-back peer was delivered (or expired): its next refusal is news again.
    for (const peer of [...this.#held.keys()]) if (!waiting.has(peer)) this.#held.delete(peer);
    const peers = new Set(waiting);
    for (const r of this.#d.store.pendingReads()) peers.add(r.peer);
    for (const peer of peers) this.#deliver(peer);
  }

  /** Writes the peer's outbox to its session. One flush per peer at a time; a request that arrives during a
   * flush makes it go round once more (so a burst of sends costs one outbox query per round, not per send).
   * Resolves when the flush, including that extra round, has ended. */
  flush(peer: string): Promise<void> {
    const running = this.#flushing.get(peer);
    if (running) {
      this.#flushAgain.add(peer);
      return running;
    }
    const p = (async () => {
      try {
        do {
          this.#flushAgain.delete(peer);
          await this.#flushOnce(peer);
        } while (this.#flushAgain.has(peer) && !this.#closed);
      } finally {
        this.#flushing.delete(peer);
      }
    })();
    this.#flushing.set(peer, p);
    return p;
  }

  /** Resolves when no flush is running. */
  async settle(): Promise<void> {
    while (this.#flushing.size) await Promise.allSettled([...this.#flushing.values()]);
  }

  /** The peer acknowledged message `id` (it is stored on their side). It stays "in flight" until
   * "delivered" is committed, so no flush in between writes it again. */
  onAck(peer: string, id: string): void {
    this.#unsent.delete(id);
    // Progress: a later refusal waits the shortest delay again.
    const h = this.#held.get(peer);
    if (h) h.attempts = 0;
    this.#queueState(
      { peer, id, state: "delivered" },
      () => this.#d.emit({ event: "delivered", id, to: peer }),
      () => {
        this.#inflight.delete(id);
        this.#told.delete(id);
      },
    );
  }

  /** The peer did not take message `id` (its time is not verified): it stays ours, "failed" until a later
   * flush sends it again (the next retry), and dies here on time if it never gets through. */
  onRefused(peer: string, id: string, code: string): void {
    if (this.#inflight.get(id) === undefined) return;
    this.#inflight.delete(id);
    this.#unsent.delete(id);
    // The next flush on this session reads from the start again, so it is written once more.
    this.#cursor.delete(peer);
    const told = this.#told.get(id) === code;
    this.#told.set(id, code);
    this.#queueState(
      { peer, id, state: "failed" },
      () =>
        told ? undefined : this.#d.emit({
          event: "failed",
          id,
          to: peer,
          reason: code === "TIME_UNVERIFIED" ? `${peer} cannot verify the time yet (kept, sent again)` : code,
        }),
    );
  }

  /** The peer displayed message `id`: starts an "after read" lifetime on our copy. */
  onReadReceipt(peer: string, f: ReadFrame): void {
    const m = this.#d.store.get(peer, f.id);
    if (!m || m.direction !== "out" || m.readAt !== null) return;
    // The reader's claim cannot push our deadline later than our own trusted now allows.
    const readAt = Math.min(f.readAt, this.#d.latestNowMs() ?? f.readAt);
    const deadline = m.ttlMode === "read" && m.ttlMs !== null
      ? boundedReadDeadline({
        readAtMs: readAt,
        sentAtMs: m.sentAt,
        ttlMs: m.ttlMs,
        maxUnreadMs: this.#d.maxUnreadMs,
      })
      : null;
    this.#d.store.queueReadReceipt({ peer, id: f.id, readAt, expiresAt: deadline }).then((changed) => {
      this.#inflight.delete(f.id);
      if (changed) this.#d.emit({ event: "read", id: f.id, by: peer });
      if (changed && deadline !== null) this.#d.onDeadline?.();
    }, (e: Error) => {
      this.#inflight.delete(f.id);
      this.#d.emit({ event: "error", code: "STORE_FAILED", message: e.message });
    });
  }

  /** A session to `peer` closed: what it carried without an ack is "failed" (sent again on the next one).
   * `reason`: why the peer ended it, when it said (e.g. its inbox quota), for the `failed` events.
   * `refusal`: the code of the peer's limit that ended it (QUOTA_EXCEEDED, RATE_LIMITED): the peer is held
   * back (backoff), and a message already reported failed for that code is not reported again. */
  onSessionClosed(peer: string, sessionId: number, reason = "not delivered", refusal?: string): void {
    this.#cursor.delete(peer);
    if (refusal !== undefined) this.#holdBack(peer, refusal);
    for (const [id, sid] of [...this.#inflight]) {
      if (sid !== sessionId) continue;
      this.#inflight.delete(id);
      this.#unsent.delete(id);
      // Said already: the same refusal again, or a plain drop of a message the peer's limit holds back (the
      // user still sees it "failed, kept"; a drop of a duplicate session under load is no news).
      const prev = this.#told.get(id);
      const told = prev !== undefined && (refusal === undefined || refusal === prev);
      if (refusal !== undefined) this.#told.set(id, refusal);
      // Queued behind the "sent" of its write, so it applies after it (state changes only move forward).
      this.#queueState(
        { peer, id, state: "failed" },
        () => told ? undefined : this.#d.emit({ event: "failed", id, to: peer, reason }),
      );
    }
  }

  #holdBack(peer: string, code: string): void {
    const prev = this.#held.get(peer);
    const attempts = (prev?.attempts ?? 0) + 1;
    const delay = refusalDelayMs(attempts, this.#backoff, this.#d.random?.() ?? Math.random());
    this.#held.set(peer, { code, attempts, untilMs: this.#now() + delay });
    // Once per change of the peer's state, not at every retry.
    if (prev?.code !== code) {
      this.#d.emit({
        event: "log",
        level: "warn",
        text: `${peer} refuses more of our messages for now (${code}): they wait, and are sent again later ` +
          `(backing off up to ${Math.round(this.#backoff.maxMs / 1000)} s between tries)`,
      });
    }
  }

  /** A message was deleted (expired): nothing more to wait for. */
  forget(id: string): void {
    this.#inflight.delete(id);
    this.#unsent.delete(id);
    this.#told.delete(id);
    this.#unfresh(id);
  }

  #unfresh(id: string): void {
    const seq = this.#freshSeq.get(id);
    if (seq === undefined) return;
    this.#freshSeq.delete(id);
    this.#fresh.delete(seq);
  }

  close(): void {
    this.#closed = true;
    this.#unsentTimer?.cancel();
    this.#unsentTimer = null;
  }

  /** Notes that `id` was written; its "sent" is stored if its ack has not come within the delay. */
  #noteWritten(peer: string, id: string): void {
    this.#unsent.set(id, { peer, at: this.#scheduler.now() });
    if (!this.#unsentTimer && !this.#closed) this.#armUnsent(this.#d.sentStateDelayMs ?? SENT_STATE_DELAY_MS);
  }

  #armUnsent(ms: number): void {
    this.#unsentTimer = this.#scheduler.after(Math.max(0, ms), () => {
      this.#unsentTimer = null;
      const delay = this.#d.sentStateDelayMs ?? SENT_STATE_DELAY_MS;
      const now = this.#scheduler.now();
      for (const [id, w] of this.#unsent) {
        if (now - w.at < delay) {
          // The rest were written later still.
          if (!this.#closed) this.#armUnsent(delay - (now - w.at));
          return;
        }
        this.#unsent.delete(id);
        this.#queueState({ peer: w.peer, id, state: "sent" }, () => {});
      }
    });
  }

  #deliver(peer: string): void {
    if (this.#d.session(peer)) void this.flush(peer);
    // A peer that refused us is not dialled again before its delay is over (read receipts wait with it).
    else if (this.heldUntil(peer) === null) this.#d.connect(peer);
  }

  #frameOf(m: StoredMessage): MsgFrame {
    const f: MsgFrame = {
      t: "msg",
      id: m.id,
      from: this.#d.ownName,
      to: m.peer,
      text: m.text,
      sentAt: m.sentAt,
    };
    if (m.ttlMs !== null) {
      f.ttlMs = m.ttlMs;
      f.ttlMode = m.ttlMode ?? "send";
      f.proof = m.proof ?? undefined;
    }
    return f;
  }

  async #flushOnce(peer: string): Promise<void> {
    if (this.#closed) return;
    const s = this.#d.session(peer);
    if (!s) return;
    const store = this.#d.store;
    const reads = store.pendingReads(peer);
    if (reads.length) {
      try {
        await s.sendBatch(reads.map((r) => ({ t: "read", id: r.id, readAt: r.readAt })));
      } catch {
        return;
      }
      store.removePendingReads(peer, reads.map((r) => r.id));
    }
    // Held back by the peer's limits (a session it opened meanwhile): no messages before the delay is over;
    // the retry tick flushes again then (the cursor is untouched, so nothing is skipped).
    if (this.heldUntil(peer) !== null) return;
    const c = this.#cursor.get(peer);
    const waiting = store.outbox(peer, this.#inflight, c?.sessionId === s.id ? c.seq : 0, this.#fresh);
    if (waiting.length) {
      const seq = waiting[waiting.length - 1].seq;
      this.#cursor.set(peer, { sessionId: s.id, seq: Math.max(seq, c?.sessionId === s.id ? c.seq : 0) });
    }
    const due = waiting.filter((m) => {
      const deadline = effectiveDeadline(m, this.#d.maxUnreadMs);
      return deadline === null || this.#d.deadlinePassed(deadline) !== true;
    });
    for (let i = 0; i < due.length; i += FLUSH_BATCH) {
      if (s.state !== "open") return;
      // A message may have been written by a flush of a newer session meanwhile (its ack may be back).
      const batch = due.slice(i, i + FLUSH_BATCH).filter((m) => !this.#inflight.has(m.id));
      for (const m of batch) {
        this.#inflight.set(m.id, s.id);
        this.#unfresh(m.id);
      }
      const written = s.sendBatch(batch.map((m) => this.#frameOf(m)));
      for (const m of batch) {
        this.#noteWritten(peer, m.id);
        // A message reported failed for a refusal stays so for the user until it is delivered.
        if (!this.#told.has(m.id)) this.#d.emit({ event: "sent", id: m.id, to: peer });
      }
      try {
        await written;
      } catch {
        for (const m of batch) {
          this.#inflight.delete(m.id);
          this.#unsent.delete(m.id);
        }
        return;
      }
    }
  }

  /** A delivery state change through the group committer; `then` runs when it changed the message, `always`
   * once it is settled. */
  #queueState(change: StateChange, then: () => void, always?: () => void): void {
    this.#d.store.queueState(change).then((changed) => {
      always?.();
      if (changed) then();
    }, (e: Error) => {
      always?.();
      this.#d.emit({ event: "error", code: "STORE_FAILED", message: e.message });
    });
  }
}
