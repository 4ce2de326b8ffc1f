/**
 * Presence: where peers can reach us, as the phonebook lists it. Published at start, refreshed at a third of
 * its lifetime (so one lost refresh does not make us look offline), withdrawn at shutdown within a bound (a
 * dead phonebook must not hold up quitting).
 */
import { messageOf } from "../coded_error.ts";
import type { Scheduler, Timer } from "./scheduler.ts";
import { withTimeout } from "./scheduler.ts";
import type { Publication } from "./candidates.ts";

export const DEFAULT_PUBLISH_TTL_S = 120;
/** Bound on the withdrawal at shutdown. */
export const WITHDRAW_TIMEOUT_MS = 2000;

export interface PresenceDeps {
  /** `reach`: every candidate, the relay, relay-only (when `publication` is given). */
  publish(host: string, port: number, ttlSeconds: number, reach?: Publication): Promise<void>;
  withdraw(): Promise<void>;
  /** The address to publish, read at each publication. */
  address(): { host: string; port: number };
  /** Everything to publish, read at each publication (interfaces come and go); its first candidate is
   * what an older phonebook lists. */
  publication?(): Publication;
  log(level: "warn", text: string): void;
  scheduler: Scheduler;
  /** Lifetime of a publication. Default DEFAULT_PUBLISH_TTL_S. */
  ttlSeconds?: number;
}

export class Presence {
  readonly #d: PresenceDeps;
  readonly #ttlSeconds: number;
  #timer: Timer | null = null;
  #published = false;
  /** Whether the phonebook took the last publication (front ends say so at start). */
  #status: { reachable: boolean; reason: string | null } = { reachable: true, reason: null };

  constructor(deps: PresenceDeps) {
    this.#d = deps;
    this.#ttlSeconds = deps.ttlSeconds ?? DEFAULT_PUBLISH_TTL_S;
  }

  /** Publishes now and keeps the publication fresh until withdraw(). Resolves after the first attempt
   * (a failure is logged, not thrown: chat works without being listed, and the refresh tries again). */
  async start(): Promise<void> {
    this.#timer ??= this.#d.scheduler.every((this.#ttlSeconds * 1000) / 3, () => void this.publish());
    await this.publish();
  }

  /** One publication; never throws. */
  async publish(): Promise<void> {
    const pub = this.#d.publication?.();
    const a = pub?.candidates[0] ?? this.#d.address();
    try {
      await this.#d.publish(a.host, a.port, this.#ttlSeconds, pub);
      this.#published = true;
      this.#status = { reachable: true, reason: null };
    } catch (e) {
      this.#status = { reachable: false, reason: messageOf(e) };
      this.#d.log("warn", `cannot publish our address: ${messageOf(e)}`);
    }
  }

  /** The outcome of the last publication: reachable, or the reason it failed. */
  status(): { reachable: boolean; reason: string | null } {
    return { ...this.#status };
  }

  /** Stops refreshing and withdraws the address, waiting at most WITHDRAW_TIMEOUT_MS; never throws. */
  async withdraw(): Promise<void> {
    const wasStarted = this.#timer !== null;
    this.#timer?.cancel();
    this.#timer = null;
    if (!wasStarted && !this.#published) return;
    await withTimeout(this.#d.scheduler, WITHDRAW_TIMEOUT_MS, this.#d.withdraw(), () => new Error("timeout"))
      .catch(() => {});
  }
}
