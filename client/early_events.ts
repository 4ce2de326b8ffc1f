/**
 * Events the engine emits while it starts (a refused publish, expiries deleted at start, our certificate's
 * state) come before any front end could subscribe: the engine is not returned until it has started. This
 * holds them, subscribed through ChatEngineOptions.onEvent, until the front end attaches, then hands them
 * over in order and forwards every later event: none is lost and none is seen twice.
 */
import type { EngineEvent } from "./engine_types.ts";

/** Bound on events held before a front end attaches (a start that never finishes must not grow memory). */
export const MAX_EARLY_EVENTS = 10_000;

export class EarlyEvents {
  #held: EngineEvent[] = [];
  #dropped = 0;
  #sink: ((e: EngineEvent) => void) | null = null;

  /** The listener to give the engine (ChatEngineOptions.onEvent). */
  readonly push = (e: EngineEvent): void => {
    if (this.#sink) {
      this.#sink(e);
      return;
    }
    if (this.#held.length >= MAX_EARLY_EVENTS) {
      this.#dropped++;
      return;
    }
    this.#held.push(e);
  };

  /** Delivers the held events to `sink`, then every later one; returns the unsubscribe function. Throws
   * when a sink is already attached (one front end). */
  attach(sink: (e: EngineEvent) => void): () => void {
    if (this.#sink) throw new Error("a front end is already attached");
    const held = this.#held;
    this.#held = [];
    if (this.#dropped > 0) {
      sink({ event: "log", level: "warn", text: `${this.#dropped} start-up events were not kept` });
      this.#dropped = 0;
    }
    for (const e of held) sink(e);
    this.#sink = sink;
    return () => {
      if (this.#sink === sink) this.#sink = null;
    };
  }
}
