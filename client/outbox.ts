/**
 * The outbox: our messages from "sending" to a receipt, and the read receipts we owe peers. A message is
 * written to the peer's active session at most once per session ("in flight" until its ack); a session that
 * closes before the ack marks it "failed", and the next session sends it again (the receiver's id check makes
 * that at most once). Read receipts are kept in the store until written, so they survive being offline and
 * restarts. Messages whose deadline passed while queued are never sent (the sweeper deletes them).
 */
import type { Frame, MsgFrame, ReadFrame } from "./protocol/frames.ts";
import type { DeliveryState, EngineEvent } from "./engine_types.ts";
import { boundedReadDeadline, effectiveDeadline } from "./expiry.ts";
import type { StoredMessage } from "./store/store.ts";

/** What the outbox needs of the store (ChatStore satisfies it). */
export interface OutboxStore {
  addOutgoing(m: Omit<StoredMessage, "seq" | "direction" | "readAt">): void;
  outbox(peer?: string): StoredMessage[];
  get(peer: string, id: string): StoredMessage | null;
  setState(peer: string, id: string, state: DeliveryState): void;
  markRead(peer: string, id: string, readAt: number, expiresAt: number | null): void;
  addPendingRead(peer: string, id: string, readAt: number): void;
  pendingReads(peer?: string): { peer: string; id: string; readAt: number }[];
  removePendingRead(peer: string, id: string): void;
}

/** The part of a peer session the outbox writes to. */
export interface OutboxSession {
  readonly id: number;
  readonly state: string;
  send(f: Frame): Promise<void>;
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
}

export class Outbox {
  readonly #d: OutboxDeps;
  /** message id -> session id it was written to, until acknowledged. */
  readonly #inflight = new Map<string, number>();
  /** peer -> the flush running for it. */
  readonly #flushing = new Map<string, Promise<void>>();
  readonly #flushAgain = new Set<string>();
  #closed = false;

  constructor(deps: OutboxDeps) {
    this.#d = deps;
  }

  /** Stores a new message of ours ("sending") and starts delivering it. Throws what the store throws. */
  queue(m: Omit<StoredMessage, "seq" | "direction" | "readAt">): void {
    this.#d.store.addOutgoing(m);
    this.#deliver(m.peer);
  }

  /** Owes `peer` a read receipt for message `id` (kept until written). */
  queueReadReceipt(peer: string, id: string, readAt: number): void {
    this.#d.store.addPendingRead(peer, id, readAt);
    if (this.#d.session(peer)) void this.flush(peer);
  }

  /** Flushes every peer with something waiting, dialling those without a session. */
  retryAll(): void {
    if (this.#closed) return;
    const peers = new Set(this.#d.store.outbox().map((m) => m.peer));
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

  /** The peer acknowledged message `id` (it is stored on their side). */
  onAck(peer: string, id: string): void {
    this.#inflight.delete(id);
    const m = this.#d.store.get(peer, id);
    if (m && m.direction === "out" && m.state !== "delivered" && m.state !== "read") {
      this.#d.store.setState(peer, id, "delivered");
      this.#d.emit({ event: "delivered", id, to: peer });
    }
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
    this.#d.store.markRead(peer, f.id, readAt, deadline);
    this.#d.store.setState(peer, f.id, "read");
    this.#inflight.delete(f.id);
    this.#d.emit({ event: "read", id: f.id, by: peer });
  }

  /** A session to `peer` closed: what it carried without an ack is "failed" (sent again on the next one). */
  onSessionClosed(peer: string, sessionId: number): void {
    for (const [id, sid] of [...this.#inflight]) {
      if (sid !== sessionId) continue;
      this.#inflight.delete(id);
      const m = this.#d.store.get(peer, id);
      if (m && m.state === "sent") {
        this.#d.store.setState(peer, id, "failed");
        this.#d.emit({ event: "failed", id, to: peer, reason: "not delivered" });
      }
    }
  }

  /** A message was deleted (expired): nothing more to wait for. */
  forget(id: string): void {
    this.#inflight.delete(id);
  }

  close(): void {
    this.#closed = true;
  }

  #deliver(peer: string): void {
    if (this.#d.session(peer)) void this.flush(peer);
    else this.#d.connect(peer);
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
    for (const r of store.pendingReads(peer)) {
      try {
        await s.send({ t: "read", id: r.id, readAt: r.readAt });
      } catch {
        return;
      }
      store.removePendingRead(peer, r.id);
    }
    for (const m of store.outbox(peer)) {
      if (this.#inflight.has(m.id) || s.state !== "open") continue;
      const deadline = effectiveDeadline(m, this.#d.maxUnreadMs);
      if (deadline !== null && this.#d.deadlinePassed(deadline) === true) continue;
      this.#inflight.set(m.id, s.id);
      try {
        await s.send(this.#frameOf(m));
      } catch {
        this.#inflight.delete(m.id);
        return;
      }
      const cur = store.get(peer, m.id);
      if (cur && (cur.state === "sending" || cur.state === "failed")) {
        store.setState(peer, m.id, "sent");
        this.#d.emit({ event: "sent", id: m.id, to: peer });
      }
    }
  }
}
