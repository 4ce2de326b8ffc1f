/**
 * The home router part (client/home_router.ts) on a fake clock, with the mapping and pinhole protocols
 * replaced by ones the test answers: a mapping taken is published first, none is asked for again while
 * none is held (the same failure said once), a lost one is unpublished and removed, a moved one published
 * again; a network change or a wake removes the old mapping before the new request, an attempt begun before
 * the change is not taken but removed; a wake reopens the pinhole; after stop nothing is asked for and what
 * came in late is removed unpublished. tests/reach_mapping_test.ts and tests/reach_pinhole_test.ts run the
 * same through real routers in the network lab.
 */
import assert from "node:assert/strict";
import { HomeRouter, type HomeRouterOptions } from "../client/home_router.ts";
import type { Mapping, MapPortOptions } from "../client/port_mapping.ts";
import type { Pinhole } from "../client/pinhole.ts";
import type { RestartWatchOptions } from "../client/ssdp_watch.ts";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";

const RETRY_MS = 60_000;

/** The public host held (a function: an assertion that it was null must not narrow later reads). */
function externalOf(r: HomeRouter): string | null {
  return r.external?.host ?? null;
}

interface Ask {
  opts: MapPortOptions;
  log: (text: string) => void;
  answer(m: Mapping | null): void;
}

/** A router the test answers by hand, and everything the part did, in order, in `events`. */
function rig(over: Partial<HomeRouterOptions> = {}) {
  const scheduler = new FakeScheduler();
  const events: string[] = [];
  const asks: Ask[] = [];
  let taken = true;
  let ipv6: string | null = "2001:db8::10";
  /** What the part listens for the router's restarts with, once it does. */
  let watching: RestartWatchOptions | null = null;
  let watchClosed = false;
  const router = new HomeRouter({
    port: 40_000,
    pinhole: false,
    scheduler,
    retryMs: RETRY_MS,
    log: (text) => events.push(`log ${text}`),
    ipv6Address: () => ipv6,
    publish: () => {
      events.push("publish");
      return Promise.resolve(taken);
    },
    map: (port, log, opts) => {
      events.push(`ask ${port}`);
      return new Promise((resolve) => asks.push({ opts, log, answer: resolve }));
    },
    openPinhole: (address, port) => {
      events.push(`open [${address}]:${port}`);
      const p: Pinhole = {
        address,
        port,
        router: "2001:db8::1",
        via: "PCP",
        lifetime: 600,
        stop: () => {
          events.push(`close [${address}]:${port}`);
          return Promise.resolve();
        },
      };
      return Promise.resolve(p);
    },
    watchRestarts: (o) => {
      watching = o;
      return Promise.resolve({ close: () => watchClosed = true });
    },
    restartDelayMaxMs: 1000,
    ...over,
  });
  /** A mapping at `host`:`port` whose removal is recorded; one that takes `slowMs` also says when it is
   * done ("removed"). */
  const mapping = (host: string, port = 40_000, slowMs = 0): Mapping => ({
    external: { host, port, via: "mapping" },
    protocol: "pcp",
    stop: () => {
      events.push(`remove ${host}`);
      if (!slowMs) return Promise.resolve();
      return new Promise((resolve) =>
        scheduler.after(slowMs, () => {
          events.push(`removed ${host}`);
          resolve();
        })
      );
    },
  });
  return {
    router,
    scheduler,
    events,
    asks,
    mapping,
    /** Events since the last call. */
    take(): string[] {
      return events.splice(0);
    },
    setTaken: (v: boolean) => taken = v,
    watching: () => watching,
    watchClosed: () => watchClosed,
    setIpv6: (v: string | null) => ipv6 = v,
  };
}

Deno.test("home router: a mapping taken is published first; none held is asked again, the same failure said once", async () => {
  const r = rig();
  r.router.start();
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["ask 40000"]);
  r.asks[0].log("no port mapping (no router answered)");
  r.asks[0].answer(null);
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["log no port mapping (no router answered)"]);
  assert.equal(r.router.external, null);

  await r.scheduler.tick(RETRY_MS - 1);
  assert.deepEqual(r.take(), [], "not before retryMs");
  await r.scheduler.tick(1);
  assert.deepEqual(r.take(), ["ask 40000"]);
  r.asks[1].log("no port mapping (no router answered)");
  r.asks[1].answer(null);
  await r.scheduler.tick(RETRY_MS);
  assert.deepEqual(r.take(), ["ask 40000"], "the same failure is not said again");

  r.asks[2].answer(r.mapping("203.0.113.7"));
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["publish", "log published the port mapping 203.0.113.7:40000 first"]);
  assert.deepEqual(r.router.external, { host: "203.0.113.7", port: 40_000, via: "mapping" });
  await r.scheduler.tick(10 * RETRY_MS);
  assert.deepEqual(r.take(), [], "nothing asked while one is held");
  await r.router.stop();
  assert.deepEqual(r.take(), ["remove 203.0.113.7"]);
});

Deno.test("home router: a mapping the phonebook did not take is not said to be published first", async () => {
  const r = rig();
  r.setTaken(false);
  r.router.start();
  await r.scheduler.tick(0);
  r.asks[0].answer(r.mapping("203.0.113.7"));
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["ask 40000", "publish"]);
  assert.ok(r.router.external, "held all the same: the next refresh publishes it");
  await r.router.stop();
});

Deno.test("home router: a lost mapping is unpublished, removed and asked for again; a move is published", async () => {
  const r = rig();
  r.router.start();
  await r.scheduler.tick(0);
  const first = r.mapping("203.0.113.7");
  r.asks[0].answer(first);
  await r.scheduler.tick(0);
  r.take();

  first.external = { host: "198.51.100.9", port: 40_001, via: "mapping" };
  r.asks[0].opts.onMoved!(first);
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["publish", "log published the port mapping 198.51.100.9:40001 first"]);
  r.asks[0].opts.onMoved!(r.mapping("192.0.2.1"));
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), [], "a move of a mapping we do not hold is nothing to publish");

  r.asks[0].opts.onLost!(first);
  assert.equal(r.router.external, null, "no longer published from the moment it is lost");
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["remove 203.0.113.7", "publish"]);
  await r.scheduler.tick(RETRY_MS);
  assert.deepEqual(r.take(), ["ask 40000"]);
  r.asks[1].answer(r.mapping("203.0.113.8"));
  await r.scheduler.tick(0);
  assert.equal(externalOf(r.router), "203.0.113.8");
  r.take();
  await r.router.stop();
  assert.deepEqual(r.take(), ["remove 203.0.113.8"]);
});

Deno.test("home router: a network change removes the old mapping before the new request; an added address keeps it", async () => {
  const r = rig();
  r.router.start();
  await r.scheduler.tick(0);
  // The router takes its time to remove it: the new request waits for that.
  r.asks[0].answer(r.mapping("203.0.113.7", 40_000, 500));
  await r.scheduler.tick(0);
  r.take();

  r.router.networkChanged({ lost: false, gained: true });
  await r.scheduler.tick(RETRY_MS);
  assert.deepEqual(r.take(), [], "a VPN that came up keeps the mapping");
  assert.equal(externalOf(r.router), "203.0.113.7");

  r.router.networkChanged({ lost: true, gained: true });
  assert.equal(r.router.external, null, "the old router's mapping is not published after a move");
  await r.scheduler.tick(499);
  assert.deepEqual(r.take(), ["remove 203.0.113.7"], "nothing asked while the old one is being removed");
  await r.scheduler.tick(1);
  assert.deepEqual(r.take(), ["removed 203.0.113.7", "ask 40000"], "removed first, then asked");
  r.asks[1].log("no port mapping (no router answered)");
  r.asks[1].answer(null);
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["log no port mapping (no router answered)"]);

  // With none held, an address that came is worth asking at once (without waiting for the retry), and the
  // failure on the new network is said again even when worded the same.
  r.router.networkChanged({ lost: false, gained: true });
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["ask 40000"]);
  r.asks[2].log("no port mapping (no router answered)");
  r.asks[2].answer(null);
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["log no port mapping (no router answered)"]);
  await r.router.stop();
  await r.scheduler.tick(10 * RETRY_MS);
  assert.deepEqual(r.take(), [], "nothing asked after stop");
});

Deno.test("home router: an attempt begun before a network change is not taken, and what it mapped is removed", async () => {
  const r = rig();
  r.router.start();
  await r.scheduler.tick(0);
  r.router.networkChanged({ lost: true, gained: true });
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["ask 40000"], "the change waits for the attempt running");
  r.asks[0].answer(r.mapping("192.0.2.50"));
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["remove 192.0.2.50", "ask 40000"], "the old network's answer is removed");
  assert.equal(r.router.external, null);
  r.asks[1].answer(r.mapping("203.0.113.7"));
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), ["publish", "log published the port mapping 203.0.113.7:40000 first"]);
  await r.router.stop();
});

Deno.test("home router: the pinhole follows our IPv6 address and is reopened after a wake, the mapping asked anew", async () => {
  const r = rig({ pinhole: true });
  r.router.start();
  await r.scheduler.tick(0);
  r.asks[0].answer(r.mapping("203.0.113.7"));
  await r.scheduler.tick(0);
  const started = r.take();
  assert.ok(started.includes("open [2001:db8::10]:40000"), started.join("; "));
  assert.ok(started.includes("publish"), "an open pinhole is published");
  assert.equal(r.router.pinhole?.address, "2001:db8::10");

  r.router.networkChanged({ lost: false, gained: true });
  await r.scheduler.tick(0);
  assert.deepEqual(r.take(), [], "same address: the pinhole stays");
  r.setIpv6("2001:db8::20");
  r.router.networkChanged({ lost: true, gained: true });
  await r.scheduler.tick(0);
  let moved = r.take();
  assert.ok(
    moved.indexOf("close [2001:db8::10]:40000") < moved.indexOf("open [2001:db8::20]:40000"),
    moved.join("; "),
  );
  assert.ok(moved.includes("remove 203.0.113.7"));
  r.asks[1].answer(r.mapping("203.0.113.7"));
  await r.scheduler.tick(0);
  r.take();

  r.router.woke();
  await r.scheduler.tick(0);
  moved = r.take();
  for (
    const e of ["close [2001:db8::20]:40000", "open [2001:db8::20]:40000", "remove 203.0.113.7", "ask 40000"]
  ) {
    assert.ok(moved.includes(e), `${e} in ${moved.join("; ")}`);
  }
  r.asks[2].answer(r.mapping("203.0.113.7"));
  await r.scheduler.tick(0);
  r.take();
  await r.router.stop();
  assert.deepEqual(r.take().sort(), ["close [2001:db8::20]:40000", "remove 203.0.113.7"]);
});

Deno.test("home router: a mapping that comes in after stop is removed and not published; no pinhole when not asked", async () => {
  const r = rig();
  r.router.start();
  await r.scheduler.tick(0);
  const stopped = r.router.stop();
  r.asks[0].answer(r.mapping("203.0.113.7"));
  await stopped;
  assert.deepEqual(r.take(), ["ask 40000", "remove 203.0.113.7"]);
  assert.equal(r.router.external, null);
  r.router.networkChanged({ lost: true, gained: true });
  r.router.woke();
  r.router.start();
  await r.scheduler.tick(10 * RETRY_MS);
  assert.deepEqual(r.take(), [], "a stopped part asks for nothing");
  assert.equal(r.router.pinhole, null);
});

Deno.test("home router: a restart the router announces has both asked for anew after a short random wait, once per 10 s", async () => {
  const r = rig({ pinhole: true });
  r.router.start();
  await r.scheduler.tick(0);
  r.asks[0].answer(r.mapping("203.0.113.7"));
  await r.scheduler.tick(0);
  r.take();
  const w = r.watching();
  assert.ok(w, "listening for the router's announcements");
  assert.equal(w.isOurRouter("fe80::1"), true, "a link-local source over IPv6");
  assert.equal(w.isOurRouter("2001:db8::1"), true, "the pinhole's router");
  assert.equal(w.isOurRouter("2001:db8:99::1"), false, "another global address");

  // The wait is random, below restartDelayMaxMs (1 s here); said rounded to a tenth.
  w.onRestart("UPnP NOTIFY from fe80::1, boot 2");
  const said = r.take();
  assert.equal(said.length, 1);
  assert.match(
    said[0],
    /^log the router restarted \(UPnP NOTIFY from fe80::1, boot 2\): asking it again in [01]\.\d s$/,
  );
  await r.scheduler.tick(1000);
  const again = r.take();
  for (
    const e of ["remove 203.0.113.7", "ask 40000", "close [2001:db8::10]:40000", "open [2001:db8::10]:40000"]
  ) {
    assert.ok(again.includes(e), `${e} in ${again.join("; ")}`);
  }
  r.asks[1].answer(r.mapping("203.0.113.7"));
  await r.scheduler.tick(0);
  r.take();

  // The router sends several; a forged one, over and over, must not keep us asking.
  await r.scheduler.tick(5000);
  w.onRestart("UPnP NOTIFY from fe80::1, boot 3");
  await r.scheduler.tick(2000);
  assert.deepEqual(r.take(), [], "within 10 s of the last");
  await r.scheduler.tick(3000);
  w.onRestart("UPnP NOTIFY from fe80::1, boot 4");
  await r.scheduler.tick(1000);
  assert.ok(r.take().includes("ask 40000"), "10 s later it counts again");
  r.asks[2].answer(null);
  await r.scheduler.tick(0);

  await r.router.stop();
  assert.ok(r.watchClosed(), "the watch is closed at stop");
  r.take();
  w.onRestart("UPnP NOTIFY from fe80::1, boot 5");
  await r.scheduler.tick(60_000);
  assert.deepEqual(r.take(), [], "nothing after stop");
});
