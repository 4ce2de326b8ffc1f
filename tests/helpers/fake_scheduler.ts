/**
 * A scheduler whose time moves only when the test says so: `tick(ms)` runs, in order, every timer that falls
 * due, letting promises settle between them (the engine's parts chain async work off their timers).
 */
import type { Scheduler, Timer } from "../../client/scheduler.ts";

interface Entry {
  at: number;
  seq: number;
  fn: () => void;
  everyMs: number | null;
  cancelled: boolean;
}

export class FakeScheduler implements Scheduler {
  #now = 0;
  #seq = 0;
  #entries: Entry[] = [];

  now(): number {
    return this.#now;
  }

  after(ms: number, fn: () => void): Timer {
    return this.#add(ms, fn, null);
  }

  every(ms: number, fn: () => void): Timer {
    return this.#add(ms, fn, ms);
  }

  /** Timers not yet run nor cancelled. */
  get pending(): number {
    return this.#entries.filter((e) => !e.cancelled).length;
  }

  /** When the next timer is due, or null with none. */
  nextAt(): number | null {
    const live = this.#entries.filter((e) => !e.cancelled);
    return live.length ? Math.min(...live.map((e) => e.at)) : null;
  }

  /** Moves time forward by `ms`, running every timer that falls due on the way, in time order. */
  async tick(ms: number): Promise<void> {
    const end = this.#now + ms;
    for (;;) {
      await settle();
      const due = this.#entries.filter((e) => !e.cancelled && e.at <= end)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.#now = Math.max(this.#now, due.at);
      if (due.everyMs === null) due.cancelled = true;
      else due.at += Math.max(1, due.everyMs);
      due.fn();
    }
    this.#now = end;
    this.#entries = this.#entries.filter((e) => !e.cancelled);
    await settle();
  }

  #add(ms: number, fn: () => void, everyMs: number | null): Timer {
    const e: Entry = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, everyMs, cancelled: false };
    this.#entries.push(e);
    return { cancel: () => e.cancelled = true };
  }
}

/** Lets queued promise callbacks run (a few macrotask turns, so chained awaits settle too). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
}
