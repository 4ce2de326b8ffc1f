/**
 * What chat keeps open in the home router while it runs, so that peers on other networks can dial us: the
 * IPv4 port mapping (client/port_mapping.ts: PCP, NAT-PMP or UPnP) and the IPv6 pinhole in the router's
 * firewall (client/pinhole.ts). One part with one life cycle:
 * - started once we listen on all addresses: a mapping is asked for in the background (a network without a
 *   mapping router costs its timeout, which must not hold up the start), and a pinhole when we listen on IPv6;
 * - while no mapping is held, one is asked for again every `retryMs` (a laptop that started before its
 *   network came up, a router that was rebooting, or the one held was lost); a failure worded like the last
 *   one is not logged again;
 * - a mapping taken, moved to another public end, or lost, and a pinhole opened, change what we publish:
 *   `publish` is called, and a mapping published first is said once the phonebook has it;
 * - our network changed: the mapping (made on the router we may have left) is removed and asked for anew,
 *   and the pinhole follows our IPv6 address; an address that only came (a VPN) keeps both, or gets a
 *   mapping asked for now if none is held;
 * - we woke from sleep: the router may have forgotten both, so both are asked for anew;
 * - the router restarted (its UPnP announcements say so, client/ssdp_watch.ts): the same, after a random wait
 *   of up to 5 s (every client on the LAN hears it at once), at most once per 10 s;
 * - stop: nothing is asked for afterwards, and what is held (or still being asked for) is removed, bounded.
 * It knows nothing of sessions or the phonebook: the engine passes what it needs as functions.
 */
import {
  defaultGateway,
  type Mapping,
  MAPPING_TIMEOUT_MS,
  mappingLeaseMs,
  mappingRetryMs,
  mapPort,
  type MapPortOptions,
} from "./port_mapping.ts";
import { ANNOUNCE_DELAY_MAX_MS, ANNOUNCE_MIN_GAP_MS } from "./pcp.ts";
import { isLinkLocalV6, sameIp } from "./pcp_wire.ts";
import { PinholeKeeper, type PinholeKeeperOptions } from "./pinhole.ts";
import type { Scheduler, Timer } from "./scheduler.ts";
import { type RestartWatch, type RestartWatchOptions, watchRouterRestarts } from "./ssdp_watch.ts";

export interface HomeRouterOptions {
  /** The port we listen on, to map and to open. */
  port: number;
  /** Whether to keep an IPv6 pinhole too (we listen on "::"). */
  pinhole: boolean;
  scheduler: Scheduler;
  log(text: string): void;
  /** Our first global IPv6 address, the one the pinhole is for; read at each attempt. */
  ipv6Address(): string | null;
  /** What we publish changed: publish again. Resolves with whether the phonebook took it. */
  publish(): Promise<boolean>;
  /** While no mapping is held, one is asked for again this often. Default mappingRetryMs(). */
  retryMs?: number;
  /** Tests: how a mapping is asked for (default mapPort). */
  map?: (port: number, log: (text: string) => void, opts: MapPortOptions) => Promise<Mapping | null>;
  /** Tests: how a pinhole is opened (default the keeper's own). */
  openPinhole?: PinholeKeeperOptions["open"];
  /** Tests: how the router's restarts are heard (default watchRouterRestarts). */
  watchRestarts?: (o: RestartWatchOptions) => Promise<RestartWatch>;
  /** Longest random wait after a restart before asking again. Default ANNOUNCE_DELAY_MAX_MS. */
  restartDelayMaxMs?: number;
}

export class HomeRouter {
  readonly #o: HomeRouterOptions;
  readonly #retryMs: number;
  /** The attempt running, or its result (null: none held); what stop() removes. */
  #mapping: Promise<Mapping | null> | null = null;
  /** The mapping held and published. */
  #mapped: Mapping | null = null;
  /** Bumped when the network changes: an attempt begun before it is not taken (see #remap). */
  #gen = 0;
  /** The next attempt while none is held. */
  #retry: Timer | null = null;
  #pinhole: PinholeKeeper | null = null;
  #started = false;
  #stopped = false;
  /** The last "no port mapping" said: the same again is not news. */
  #lastNone = "";
  #watch: RestartWatch | null = null;
  /** When the last restart was acted on (scheduler time). */
  #lastRestart = -Infinity;
  #afterRestart: Timer | null = null;

  constructor(o: HomeRouterOptions) {
    this.#o = o;
    this.#retryMs = o.retryMs ?? mappingRetryMs();
  }

  /** Our public end as the router maps it, or null while none is held. */
  get external(): Mapping["external"] | null {
    return this.#mapped?.external ?? null;
  }

  /** The pinhole held now, or null. */
  get pinhole(): PinholeKeeper["held"] {
    return this.#pinhole?.held ?? null;
  }

  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#mapping = this.#attempt();
    void this.#watchRestarts();
    if (!this.#o.pinhole) return;
    this.#pinhole = new PinholeKeeper({
      port: this.#o.port,
      address: () => this.#o.ipv6Address(),
      scheduler: this.#o.scheduler,
      log: (text) => this.#o.log(text),
      retryMs: this.#retryMs,
      timeoutMs: MAPPING_TIMEOUT_MS,
      leaseMs: mappingLeaseMs(),
      // Once one is open the phonebook gets our addresses again, so its check reaches the IPv6 one now
      // rather than at the next refresh.
      onOpen: () => {
        if (!this.#stopped) void this.#o.publish();
      },
      open: this.#o.openPinhole,
    });
    this.#pinhole.start();
  }

  /** Our addresses changed: `lost` when one we had is gone (another network), `gained` when one came. */
  networkChanged(c: { lost: boolean; gained: boolean }): void {
    if (!this.#started || this.#stopped) return;
    if (c.lost || (!this.#mapped && c.gained)) this.#remap();
    // A pinhole for an address we no longer have is closed, and one opened for the one we have now.
    this.#pinhole?.refresh(false);
  }

  /** We woke from sleep: the router may have forgotten both while its leases ran out. */
  woke(): void {
    if (!this.#started || this.#stopped) return;
    this.#remap();
    this.#pinhole?.refresh(true);
  }

  /** Nothing is asked for afterwards; the mapping held or being asked for, and the pinhole, are removed
   * (each bounded). Takes effect at once: a mapping that comes in after this call is not published. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#retry?.cancel();
    this.#retry = null;
    this.#afterRestart?.cancel();
    this.#watch?.close();
    await Promise.all([this.#mapping?.then((m) => m?.stop()), this.#pinhole?.stop()]);
  }

  /** Listens for the router's announcements of a restart: from our IPv4 gateway, or over IPv6 from a
   * link-local address (a router's multicast leaves from its link-local one) or the pinhole's router. */
  async #watchRestarts(): Promise<void> {
    const gateway = await defaultGateway().catch(() => null);
    if (this.#stopped) return;
    const watch = await (this.#o.watchRestarts ?? watchRouterRestarts)({
      isOurRouter: (a) =>
        (gateway !== null && sameIp(a, gateway)) || isLinkLocalV6(a) ||
        (this.pinhole !== null && sameIp(a, this.pinhole.router)),
      onRestart: (why) => this.#restarted(why),
      log: (text) => this.#o.log(text),
    }).catch(() => null);
    if (this.#stopped) watch?.close();
    else this.#watch = watch;
  }

  /** The router restarted: what it held for us is probably gone. Asked for anew after a random wait (every
   * client on the LAN heard the same), at most once per ANNOUNCE_MIN_GAP_MS however many announcements
   * come (a router sends several, and a forged one must not keep us asking). */
  #restarted(why: string): void {
    if (this.#stopped) return;
    const now = this.#o.scheduler.now();
    if (now - this.#lastRestart < ANNOUNCE_MIN_GAP_MS) return;
    this.#lastRestart = now;
    const wait = Math.random() * (this.#o.restartDelayMaxMs ?? ANNOUNCE_DELAY_MAX_MS);
    this.#o.log(`the router restarted (${why}): asking it again in ${(wait / 1000).toFixed(1)} s`);
    this.#afterRestart?.cancel();
    this.#afterRestart = this.#o.scheduler.after(wait, () => {
      this.#afterRestart = null;
      if (this.#stopped) return;
      this.#remap();
      this.#pinhole?.refresh(true);
    });
  }

  #log(text: string): void {
    if (text.startsWith("no port mapping")) {
      if (text === this.#lastNone) return;
      this.#lastNone = text;
    }
    this.#o.log(text);
  }

  #retryLater(): void {
    this.#retry = this.#o.scheduler.after(this.#retryMs, () => {
      this.#retry = null;
      if (!this.#stopped) this.#mapping = this.#attempt();
    });
  }

  #attempt(): Promise<Mapping | null> {
    const gen = this.#gen;
    const map = this.#o.map ?? mapPort;
    return map(this.#o.port, (text) => this.#log(text), {
      // The router's public address changed (or it gave another port): the phonebook gets the new one.
      onMoved: (moved) => {
        if (!this.#stopped && this.#mapped === moved) void this.#publishMapping(moved);
      },
      // Its lease ran out unrenewed (the router went away, or we moved): no longer published, removed as far
      // as the router still answers, and asked for again like one never made.
      onLost: (lost) => {
        if (this.#stopped || this.#mapped !== lost) return;
        this.#mapped = null;
        this.#mapping = lost.stop().then(() => null);
        void this.#o.publish();
        this.#retryLater();
      },
    }).then((m) => {
      // After stop, stop() awaits this promise and removes what it mapped; after a network change, #remap
      // does (it was made on the router we left).
      if (this.#stopped || gen !== this.#gen) return m;
      this.#mapped = m;
      if (m) {
        // A failure after this one (once it is lost) is news again.
        this.#lastNone = "";
        void this.#publishMapping(m);
      } else this.#retryLater();
      return m;
    });
  }

  /** Drops the mapping held (or being asked for) and asks again now. The old one is removed first
   * (bounded): a new router at the same gateway address as the old (192.168.1.1 is common) must not get
   * our removal after our new request. */
  #remap(): void {
    const held = this.#mapped;
    const pending = this.#mapping;
    this.#mapped = null;
    this.#retry?.cancel();
    this.#retry = null;
    const gen = ++this.#gen;
    this.#mapping = (async () => {
      const old = held ?? await pending?.catch(() => null) ?? null;
      await old?.stop();
      if (this.#stopped || gen !== this.#gen) return null;
      // The failure on a new network is news, even when worded like the last one's.
      this.#lastNone = "";
      return await this.#attempt();
    })();
  }

  /** Publishes again with the mapping first, and says so once the phonebook has it (until then a dialer
   * still gets the candidates without it). */
  async #publishMapping(m: Mapping): Promise<void> {
    const taken = await this.#o.publish();
    if (this.#stopped || !taken) return;
    const { host, port } = m.external;
    this.#o.log(`published the port mapping ${host}:${port} first`);
  }
}
