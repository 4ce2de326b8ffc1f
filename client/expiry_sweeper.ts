/**
 * The expiry sweeper: deletes each expiring message (text, ciphertext and key) as soon as its deadline may
 * have passed on trusted time, and announces received messages that were hidden while time was unknown once
 * they can be shown. It wakes at the next deadline (not on a poll), when a message is added, and whenever
 * the trusted clock changes state; it never sleeps longer than MAX_SLEEP_MS, so a deadline is re-judged
 * even if the clock's interval moved without telling.
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

/** What the sweeper needs of the store (ChatStore satisfies it). */
export interface SweepStore {
  expiring(): ExpiringRow[];
  deleteMessages(keys: { peer: string; id: string }[]): void;
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
        if (present.length) this.#d.store.deleteMessages(present);
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
        this.#d.store.deleteMessages(dead);
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
  }

  #arm(ms: number): void {
    // +1: a timer due exactly at the deadline would judge `latest >= deadline` at the edge.
    this.#timer = this.#d.scheduler.after(Math.min(MAX_SLEEP_MS, Math.ceil(ms) + 1), () => this.sweep());
  }
}
