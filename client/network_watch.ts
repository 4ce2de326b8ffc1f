/**
 * Our network, watched: the machine's interface addresses are read every NETWORK_POLL_MS, and a change (a
 * laptop that joined another network, a DHCP lease that gave another address, a VPN that came up or went
 * down) is reported once it has settled: the new set must be read twice in a row, so an address that goes
 * and comes back within a poll, or a move made of several steps (the old address gone, then the new one
 * given), is one change, not a burst.
 *
 * Loopback and link-local addresses are not watched: they are the same on every network and reach nobody
 * else. The engine follows a change (client/engine.ts): sessions over an address we no longer have are
 * closed and their peers dialled again, the relay's control connection is made again, the port mapping of
 * the old router is dropped and the new one's asked for, and the phonebook gets our new addresses.
 *
 * A wake from sleep is watched too, because it changes no address: a laptop that slept an hour on its home
 * network wakes with the same one, and every connection it held may be dead at the other end (the relay and
 * the peers closed theirs on silence, the router's mapping lease ran out, the phonebook's listing expired).
 * The monotonic clock, which every timer runs on, stops while the machine sleeps; the boot clock (suspend
 * included, clock/boot_clock.ts) does not. When the boot clock gained more than WAKE_GAP_MS on the
 * monotonic clock between two polls, the machine slept, and the engine checks what it holds.
 */
import type { Scheduler, Timer } from "./scheduler.ts";
import { type InterfaceAddress, isLinkLocal } from "./candidates.ts";
import type { BootClock } from "../clock/mod.ts";

export const NETWORK_POLL_MS = 2000;

/** The boot clock must gain this much on the monotonic clock between two polls (beyond its resolution) for
 * the gap to count as a sleep: shorter ones lose nothing (the relay's silence allows 90 s, a session's 60 s),
 * and a loaded machine's late timer is no sleep (both clocks advance). */
export const WAKE_GAP_MS = 5000;

export interface NetworkChange {
  /** Addresses we had and no longer have. */
  gone: string[];
  /** Addresses we have that we did not. */
  came: string[];
}

export interface NetworkWatchDeps {
  /** The interface addresses now (client/candidates.ts localAddresses). */
  addresses(): InterfaceAddress[];
  onChange(change: NetworkChange): void;
  /** Time since boot, suspend included; null (or absent) watches for no wake. */
  bootClock?: BootClock | null;
  /** The machine woke from a sleep of about `sleptMs` (reported before any address change seen at the same
   * poll). */
  onWake?(sleptMs: number): void;
  scheduler: Scheduler;
  /** Default NETWORK_POLL_MS. */
  pollMs?: number;
}

/** The addresses that say which network we are on. */
export function watchedAddresses(ifaces: readonly InterfaceAddress[]): Set<string> {
  const out = new Set<string>();
  for (const i of ifaces) {
    const a = i.address.toLowerCase();
    if (isLinkLocal(i) || a.startsWith("127.") || a === "::1") continue;
    out.add(a);
  }
  return out;
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

export class NetworkWatch {
  readonly #d: NetworkWatchDeps;
  #timer: Timer | null = null;
  /** What the last reported (or first) read found. */
  #current: Set<string>;
  /** A set that differs from #current, read once: reported when the next read agrees. */
  #candidate: Set<string> | null = null;
  /** The boot and monotonic clocks at the last poll (boot null: unreadable). */
  #boot: number | null;
  #mono: number;

  constructor(deps: NetworkWatchDeps) {
    this.#d = deps;
    this.#current = watchedAddresses(deps.addresses());
    this.#boot = deps.bootClock?.now() ?? null;
    this.#mono = deps.scheduler.now();
  }

  /** The addresses as last reported (or read at construction). */
  get addresses(): ReadonlySet<string> {
    return this.#current;
  }

  start(): void {
    this.#timer ??= this.#d.scheduler.every(this.#d.pollMs ?? NETWORK_POLL_MS, () => this.check());
  }

  stop(): void {
    this.#timer?.cancel();
    this.#timer = null;
  }

  /** One read (the timer's job; tests call it too). */
  check(): void {
    this.#checkWake();
    const now = watchedAddresses(this.#d.addresses());
    if (sameSet(now, this.#current)) {
      this.#candidate = null;
      return;
    }
    if (this.#candidate === null || !sameSet(now, this.#candidate)) {
      this.#candidate = now;
      return;
    }
    const before = this.#current;
    this.#current = now;
    this.#candidate = null;
    this.#d.onChange({
      gone: [...before].filter((a) => !now.has(a)),
      came: [...now].filter((a) => !before.has(a)),
    });
  }

  #checkWake(): void {
    const clock = this.#d.bootClock;
    const boot = clock?.now() ?? null;
    const mono = this.#d.scheduler.now();
    const slept = boot !== null && this.#boot !== null ? (boot - this.#boot) - (mono - this.#mono) : 0;
    this.#boot = boot;
    this.#mono = mono;
    if (clock && slept > WAKE_GAP_MS + clock.resolutionMs) this.#d.onWake?.(slept);
  }
}
