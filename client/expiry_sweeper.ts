/**
 * The expiry sweeper: deletes each expiring message (text, ciphertext and key) as soon as its deadline may
 * have passed on trusted time, and announces received messages that were hidden while time was unknown once
 * they can be shown. It wakes at the next deadline (not on a poll), when a message is added, and whenever
 * the trusted clock changes state; it never sleeps longer than MAX_SLEEP_MS, so a deadline is re-judged
 * even if the clock's interval moved without telling.
 *
 * A deletion is complete only once the WAL is truncated. When another program holds chat.db open for reading
 * the checkpoint cannot finish (the deleted rows' old pages stay in the files): the sweeper says so once and
 * tries again, from WAL_RETRY_MS doubling up to MAX_SLEEP_MS, until it works, and says that too.
 *
 * Trusted time is carried forward by the monotonic clock, so a timer set for (deadline - latest now) fires no
 * earlier than the deadline on the same clock; if it fires early all the same, the sweep finds nothing and
 * sleeps again.
 */
import type { TrustedTime } from "../clock/mod.ts";
import { messageOf } from "../coded_error.ts";
import { effectiveDeadline, isVisible, msUntilNextDeadline } from "./expiry.ts";
import type { EngineEvent } from "./engine_types.ts";
import type { Scheduler, Timer } from "./scheduler.ts";
import type { ExpiringRow, StoredMessage } from "./store/store.ts";

/** Longest sleep between two judgements of the next deadline. */
export const MAX_SLEEP_MS = 30_000;

/** First wait before the WAL is checkpointed again after a checkpoint could not finish. */
export const WAL_RETRY_MS = 1000;

/** What the sweeper needs of the store (ChatStore satisfies it). */
export interface SweepStore {
  expiring(): ExpiringRow[];
  /** False when the rows are deleted but the WAL could not be truncated. */
  deleteMessages(keys: { peer: string; id: string }[]): boolean;
  /** Truncates the WAL; false when another connection kept it from finishing. */
  checkpoint(): boolean;
  /** The last checkpoint did not finish (a deletion elsewhere, e.g. a declined request, may have left it). */
  readonly walResidue: boolean;
  get(peer: string, id: string): StoredMessage | null;
}

export interface ExpirySweeperDeps {
  store: SweepStore;
  now(): TrustedTime | null;
  maxUnreadMs: number;
  scheduler: Scheduler;
  emit(e: EngineEvent): void;
  /** Called with each message deleted (the outbox forgets it). */
  onDeleted(peer: string, id: string): void;
  /** Turns a stored message into what front ends see. */
  toChatMessage(m: StoredMessage): Extract<EngineEvent, { event: "message" }>["message"];
}

export class ExpirySweeper {
  readonly #d: ExpirySweeperDeps;
  /** Received expiring messages not yet announced because time was unknown ("peer\nid"). */
  readonly #hidden = new Set<string>();
  /** Monotonic caps ("peer\nid" -> scheduler time): a received expiring message dies by then whatever the
   * trusted clock says later (lost, blocked, or moved by an attacker who preloads a library). */
  readonly #caps = new Map<string, number>();
  #capTimer: Timer | null = null;
  #timer: Timer | null = null;
  /** Retrying the checkpoint: the next try and the wait after it. */
  #walTimer: Timer | null = null;
  #walWaitMs = WAL_RETRY_MS;
  /** The held WAL was said in this episode (cleared when a checkpoint works). */
  #walWarned = false;
  #closed = false;

  constructor(deps: ExpirySweeperDeps) {
    this.#d = deps;
  }

  /** A received message that could not be shown yet: announced by a later sweep once it is visible. */
  hide(peer: string, id: string): void {
    this.#hidden.add(`${peer}\n${id}`);
  }

  /** Caps the life of a stored message at `afterMs` from now on the monotonic clock (taken at receipt: its
   * lifetime plus the proof's uncertainty). Only ever shortens it: the trusted deadline still applies. */
  cap(peer: string, id: string, afterMs: number): void {
    if (this.#closed || !Number.isFinite(afterMs)) return;
    this.#caps.set(`${peer}\n${id}`, this.#d.scheduler.now() + Math.max(0, afterMs));
    this.#armCaps();
  }

  /** Deletes the messages whose monotonic cap has passed (with or without trusted time). */
  #sweepCaps(): void {
    const now = this.#d.scheduler.now();
    const due: { peer: string; id: string }[] = [];
    for (const [key, at] of this.#caps) {
      if (at > now) continue;
      const [peer, id] = key.split("\n");
      due.push({ peer, id });
    }
    if (due.length) {
      try {
        const present = due.filter((k) => this.#d.store.get(k.peer, k.id) !== null);
        if (present.length && !this.#d.store.deleteMessages(present)) this.#walHeld();
        for (const k of due) this.#caps.delete(`${k.peer}\n${k.id}`);
        for (const k of present) {
          this.#hidden.delete(`${k.peer}\n${k.id}`);
          this.#d.onDeleted(k.peer, k.id);
          this.#d.emit({ event: "expired", id: k.id, peer: k.peer });
        }
      } catch (e) {
        this.#d.emit({ event: "error", code: "STORE_FAILED", message: messageOf(e) });
      }
    }
    this.#armCaps();
  }

  #armCaps(): void {
    this.#capTimer?.cancel();
    this.#capTimer = null;
    if (this.#closed || this.#caps.size === 0) return;
    const next = Math.min(...this.#caps.values()) - this.#d.scheduler.now();
    this.#capTimer = this.#d.scheduler.after(Math.max(0, Math.ceil(next)) + 1, () => this.#sweepCaps());
  }

  /** The number of messages waiting to be shown. */
  get hiddenCount(): number {
    return this.#hidden.size;
  }

  /** Deletes what is due, announces what became visible, and sleeps until the next deadline. Call it when a
   * message with a lifetime was stored or time changed. Never throws. */
  sweep(): void {
    if (this.#closed) return;
    this.#timer?.cancel();
    this.#timer = null;
    if (this.#d.store.walResidue) this.#walHeld();
    const time = this.#d.now();
    if (!time) return; // nothing can be judged; the clock's next state change calls sweep() again
    let rows: ExpiringRow[];
    try {
      rows = this.#d.store.expiring();
    } catch (e) {
      this.#d.emit({ event: "error", code: "STORE_FAILED", message: messageOf(e) });
      this.#arm(MAX_SLEEP_MS);
      return;
    }
    const deadlines = new Map<ExpiringRow, number>();
    for (const r of rows) {
      const d = effectiveDeadline(r, this.#d.maxUnreadMs);
      if (d !== null) deadlines.set(r, d);
    }
    const dead = [...deadlines].filter(([, d]) => msUntilNextDeadline([d], time) === 0).map(([r]) => r);
    if (dead.length) {
      try {
        if (!this.#d.store.deleteMessages(dead)) this.#walHeld();
      } catch (e) {
        this.#d.emit({ event: "error", code: "STORE_FAILED", message: messageOf(e) });
        this.#arm(MAX_SLEEP_MS);
        return;
      }
      for (const r of dead) {
        deadlines.delete(r);
        this.#hidden.delete(`${r.peer}\n${r.id}`);
        this.#caps.delete(`${r.peer}\n${r.id}`);
        this.#d.onDeleted(r.peer, r.id);
        this.#d.emit({ event: "expired", id: r.id, peer: r.peer });
      }
    }
    for (const key of [...this.#hidden]) {
      const [peer, id] = key.split("\n");
      const m = this.#d.store.get(peer, id);
      if (!m) {
        this.#hidden.delete(key);
        continue;
      }
      if (isVisible(m, time, this.#d.maxUnreadMs)) {
        this.#hidden.delete(key);
        this.#d.emit({ event: "message", message: this.#d.toChatMessage(m) });
      }
    }
    const next = msUntilNextDeadline(deadlines.values(), time);
    if (next !== null) this.#arm(next);
  }

  /** Stops the timer; later calls do nothing. */
  close(): void {
    this.#closed = true;
    this.#timer?.cancel();
    this.#timer = null;
    this.#capTimer?.cancel();
    this.#capTimer = null;
    this.#walTimer?.cancel();
    this.#walTimer = null;
  }

  /** A deletion made elsewhere (a declined request) could not truncate the WAL: checkpoint again later. */
  checkpointLater(): void {
    this.#walHeld();
  }

  /** The WAL still holds deleted rows: say so (once per episode) and checkpoint again later. */
  #walHeld(): void {
    if (this.#closed || this.#walTimer) return;
    if (!this.#walWarned) {
      this.#walWarned = true;
      this.#d.emit({
        event: "log",
        level: "warn",
        text: "messages are deleted, but another program has chat.db open and their old pages stay in " +
          "chat.db-wal until it lets go; trying again",
      });
    }
    this.#walTimer = this.#d.scheduler.after(this.#walWaitMs, () => {
      this.#walTimer = null;
      let done = false;
      try {
        done = this.#d.store.checkpoint();
      } catch {
        // counts as not done: tried again
      }
      if (done) {
        this.#walWaitMs = WAL_RETRY_MS;
        this.#walWarned = false;
        this.#d.emit({
          event: "log",
          level: "info",
          text: "the deleted messages are gone from chat.db-wal too",
        });
        return;
      }
      this.#walWaitMs = Math.min(MAX_SLEEP_MS, this.#walWaitMs * 2);
      this.#walHeld();
    });
  }

  #arm(ms: number): void {
    // +1: a timer due exactly at the deadline would judge `latest >= deadline` at the edge.
    this.#timer = this.#d.scheduler.after(Math.min(MAX_SLEEP_MS, Math.ceil(ms) + 1), () => this.sweep());
  }
}
