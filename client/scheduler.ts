/**
 * The one way the chat engine's parts wait: a scheduler they are given, so that tests drive every timer of
 * the code under test on a fake clock (tests/helpers/fake_scheduler.ts) instead of sleeping for real.
 */

/** A scheduled callback; cancelling twice, or after it ran, is harmless. */
export interface Timer {
  cancel(): void;
}

export interface Scheduler {
  /** Monotonic milliseconds (never goes back; unrelated to the wall clock). */
  now(): number;
  /** Runs `fn` once after `ms` milliseconds. */
  after(ms: number, fn: () => void): Timer;
  /** Runs `fn` every `ms` milliseconds until cancelled. */
  every(ms: number, fn: () => void): Timer;
}

/** Timers of the runtime and `performance.now()`. */
export const realScheduler: Scheduler = {
  now: () => performance.now(),
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(t) };
  },
  every(ms, fn) {
    const t = setInterval(fn, ms);
    return { cancel: () => clearInterval(t) };
  },
};

/** Resolves with `work`, or rejects with `onTimeout()` after `ms` on the scheduler; the timer is always
 * cancelled. The work itself is not aborted (callers pass work that ends on its own). */
export function withTimeout<T>(
  scheduler: Scheduler,
  ms: number,
  work: Promise<T>,
  onTimeout: () => Error,
): Promise<T> {
  let timer: Timer | undefined;
  return Promise.race([
    work,
    new Promise<never>((_, reject) => {
      timer = scheduler.after(ms, () => reject(onTimeout()));
    }),
  ]).finally(() => timer?.cancel());
}
