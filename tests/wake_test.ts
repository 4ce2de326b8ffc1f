/**
 * A laptop that wakes from sleep on the same network (client/engine.ts #onWake): no address changed, so only
 * the boot clock (suspend included) running ahead of the monotonic clock tells. Real engine, real phonebook
 * and relay on loopback, raw peers; the boot clock is the test's, moved forward by an hour of "sleep".
 * - Each open session is pinged: bob, whose end died while alice slept, stays silent and is closed with
 *   "no answer", and alice dials him again at once (not after the 60 s idle timeout, nor at her next send);
 *   carol answers and keeps her session, and alice's next message to her goes on it.
 * - The relay's control connection is made again (the relay closed its end on silence long ago).
 * - The phonebook gets our addresses again at once (our listing expired while we slept): counted on a
 *   phonebook client the test wraps.
 * - The home router's port mapping is removed and asked for anew (the router may have forgotten it while its
 *   lease ran out), and the new one is published first (the router is a function of the test's).
 * - A few seconds' gap is no wake: nothing is probed, nothing published.
 */
import assert from "node:assert/strict";
import type { BootClock } from "../clock/mod.ts";
import { DirectoryClient } from "../client/directory_client.ts";
import { WAKE_PROBE_MS } from "../client/engine.ts";
import { WAKE_GAP_MS } from "../client/network_watch.ts";
import type { HomeRouterOptions } from "../client/home_router.ts";
import {
  enrollUser,
  FakeDirectory,
  rawListen,
  type RawPeer,
  startClient,
  startPhonebook,
  startTestEngine,
  until,
} from "./helpers/chat.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";

/** A boot clock that runs with the monotonic one, plus whatever the test says the machine slept. */
function sleepyBootClock() {
  let slept = 0;
  const clock: BootClock = { now: () => performance.now() + slept, resolutionMs: 1000 };
  return { clock, sleep: (ms: number) => slept += ms };
}

async function waitFor<T>(f: () => T | null | undefined, ms = 10_000, what = "condition"): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("wake from sleep: a dead session is replaced at once, a live one kept, the relay connection made again", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const carolHome = await enrollUser(pb, "carol");
  const boot = sleepyBootClock();
  const alice = await startClient(aliceHome, { bootClock: boot.clock, networkPollMs: 200 });
  const peers: Record<string, RawPeer[]> = { bob: [], carol: [] };
  const listeners: { close(): Promise<void> }[] = [];
  const directories: DirectoryClient[] = [];
  try {
    for (const [name, home] of [["bob", bobHome], ["carol", carolHome]] as const) {
      const cred = { certPem: home.certPem, keyPem: home.keyPem };
      const l = await rawListen(cred, (p) => {
        peers[name].push(p);
        (async () => {
          await p.waitFrame((f) => f.t === "hello");
          p.send(p.hello({ from: name, to: "alice", signKeyPem: home.keyPem }));
          // Carol is awake and answers pings; bob's end of his first session died while alice slept.
          if (name === "carol" || peers[name].length > 1) {
            let seen = 0;
            p.socket.on("data", () => {
              for (; seen < p.frames.length; seen++) if (p.frames[seen].t === "ping") p.send({ t: "pong" });
            });
          }
        })().catch(() => {});
      });
      listeners.push(l);
      const d = new DirectoryClient({ url: home.server, caPem: home.caPem, ...cred });
      directories.push(d);
      await d.publish("127.0.0.1", l.port, 300);
    }
    for (const name of ["bob", "carol"]) {
      const m = await alice.engine.send(name, `hello ${name}`);
      const p = await waitFor(() => peers[name][0], 10_000, `${name}'s session`);
      await p.waitFrame((f) => f.t === "msg" && f.id === m.id, 10_000);
      p.send({ t: "ack", id: m.id });
      await alice.log.waitFor("delivered", (e) => e.id === m.id);
    }
    const [bobOld] = peers.bob;
    const [carolSession] = peers.carol;

    boot.sleep(3_600_000);
    const woke = await alice.log.waitFor(
      "log",
      (e) => e.text.startsWith("woke from sleep"),
      5000,
    );
    assert.equal(
      woke.event === "log" && woke.text,
      "woke from sleep (about 3600 s); checking 2 sessions and the relay",
    );
    await alice.log.waitFor("log", (e) => /^relay .*: we woke from sleep; retrying$/.test(e.text), 5000);

    // Both are asked; bob says nothing and is told why his session ends.
    await bobOld.waitFrame((f) => f.t === "ping", 2000);
    await carolSession.waitFrame((f) => f.t === "ping", 2000);
    const bye = await bobOld.waitFrame((f) => f.t === "bye", WAKE_PROBE_MS + 2000);
    assert.equal(bye.t === "bye" && bye.reason, "no answer");
    // Dialled again without anything to send: his new session is there for his queued messages.
    const bobNew = await waitFor(() => peers.bob[1], 10_000, "bob dialled again");
    await bobNew.waitFrame((f) => f.t === "hello", 5000);
    const m2 = await alice.engine.send("bob", "good morning");
    await bobNew.waitFrame((f) => f.t === "msg" && f.id === m2.id, 10_000);

    // Carol answered: same session, no bye, the next message on it.
    const m3 = await alice.engine.send("carol", "good morning");
    await carolSession.waitFrame((f) => f.t === "msg" && f.id === m3.id, 10_000);
    assert.equal(peers.carol.length, 1, "carol's session was kept");
    assert.ok(!carolSession.frames.some((f) => f.t === "bye"));
  } finally {
    for (const d of directories) d.close();
    await alice.stop();
    for (const l of listeners) await l.close();
    await pb.close();
    for (const h of [aliceHome, bobHome, carolHome]) await Deno.remove(h.dir, { recursive: true });
  }
});

Deno.test("wake from sleep: our addresses are published again at once; a short gap is no wake", async () => {
  const ca = await makeTestCa();
  const leaf = await makeTestLeaf(ca, "alice");
  const directory = new FakeDirectory({ name: "alice", fingerprint: leaf.fingerprint });
  let publishes = 0;
  const publish = directory.publish.bind(directory);
  directory.publish = (...args) => {
    publishes++;
    return publish(...args);
  };
  const boot = sleepyBootClock();
  const alice = await startTestEngine(ca, leaf, { directory, bootClock: boot.clock, networkPollMs: 100 });
  try {
    // Published at start; the refresh is 40 s away (a third of the default 120 s listing).
    await waitFor(() => publishes >= 1, 5000, "the first publication");
    const before = publishes;
    boot.sleep(WAKE_GAP_MS - 2000);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(publishes, before, "a few seconds' gap: no wake");
    assert.ok(!alice.log.events.some((e) => e.event === "log" && e.text.startsWith("woke")));
    boot.sleep(600_000);
    await alice.log.waitFor("log", (e) => e.text.startsWith("woke from sleep (about 600 s)"), 5000);
    await waitFor(() => publishes > before, 5000, "the publication after the wake");
  } finally {
    await alice.stop();
  }
});

Deno.test("wake from sleep: the port mapping is removed and asked for anew, and published first again", async () => {
  const ca = await makeTestCa();
  const leaf = await makeTestLeaf(ca, "alice");
  const directory = new FakeDirectory({ name: "alice", fingerprint: leaf.fingerprint });
  // The router is the test's: each request is answered with the next public address, each removal noted.
  const events: string[] = [];
  let asked = 0;
  const map: NonNullable<HomeRouterOptions["map"]> = (port) => {
    const host = `203.0.113.${++asked}`;
    events.push(`ask ${host}`);
    return Promise.resolve({
      external: { host, port, via: "mapping" },
      protocol: "pcp",
      stop: () => {
        events.push(`remove ${host}`);
        return Promise.resolve();
      },
    });
  };
  const boot = sleepyBootClock();
  const alice = await startTestEngine(ca, leaf, {
    directory,
    bootClock: boot.clock,
    networkPollMs: 100,
    // Every interface (the mapping is asked for only then); nothing is sent anywhere: the router is a function.
    listen: { host: "0.0.0.0", port: 0 },
    portMapping: true,
    // Nor listened to: the router's announcements of a restart are not this test's.
    homeRouter: { map, watchRestarts: () => Promise.resolve({ close() {} }) },
  });
  const listed = () => directory.entries.get("alice")?.address?.host;
  try {
    const port = alice.engine.address.port;
    await alice.log.waitFor(
      "log",
      (e) => e.text === `published the port mapping 203.0.113.1:${port} first`,
      5000,
    );
    assert.equal(listed(), "203.0.113.1");
    assert.deepEqual(events, ["ask 203.0.113.1"]);

    boot.sleep(600_000);
    await alice.log.waitFor(
      "log",
      (e) => e.text === `published the port mapping 203.0.113.2:${port} first`,
      5000,
    );
    assert.deepEqual(events, ["ask 203.0.113.1", "remove 203.0.113.1", "ask 203.0.113.2"], "removed first");
    assert.equal(listed(), "203.0.113.2");
  } finally {
    await alice.stop();
  }
  assert.deepEqual(events.slice(3), ["remove 203.0.113.2"], "quitting removes the mapping held");
});

Deno.test("wake from sleep: a peer that stays away is dialled again at each wake, until it was lost too long", async () => {
  const ca = await makeTestCa();
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const directory = new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint });
  // bob's machine answers once (the session before the sleep), then is gone: later dials get no session.
  let bobUp = true;
  const sessions: RawPeer[] = [];
  const bob = await rawListen({ certPem: bobLeaf.certPem, keyPem: bobLeaf.keyPem }, (p) => {
    if (!bobUp) return void p.socket.destroy();
    sessions.push(p);
    (async () => {
      await p.waitFrame((f) => f.t === "hello");
      p.send(p.hello({ from: "bob", to: "alice", signKeyPem: bobLeaf.keyPem }));
    })().catch(() => {});
  });
  directory.listAt("bob", bobLeaf.fingerprint, bob.port);
  const KEEP_MS = 6000;
  const boot = sleepyBootClock();
  const alice = await startTestEngine(ca, aliceLeaf, {
    directory,
    bootClock: boot.clock,
    networkPollMs: 100,
    lostPeerKeepMs: KEEP_MS,
  });
  const lookups = () => directory.lookups.get("bob") ?? 0;
  /** Sleeps, and resolves once the wake's probes are judged (the log of the next wake comes first). */
  const sleepAndWake = async (n: number) => {
    boot.sleep(600_000);
    await alice.log.waitFor("log", (e) => e.text.startsWith("woke from sleep"), 5000);
    await until(() => alice.log.of("log").filter((e) => e.text.startsWith("woke")).length === n, 5000);
  };
  try {
    const m = await alice.engine.send("bob", "before the sleep");
    const p = await waitFor(() => sessions[0], 10_000, "bob's session");
    await p.waitFrame((f) => f.t === "msg" && f.id === m.id, 10_000);
    p.send({ t: "ack", id: m.id });
    await alice.log.waitFor("delivered", (e) => e.id === m.id);
    bobUp = false;
    const base = lookups();
    // Wake 1: bob's session is silent, closed, and bob dialled again, in vain (said once).
    await sleepAndWake(1);
    const lostBy = performance.now();
    await alice.log.waitFor("error", (e) => e.message.startsWith("bob:"), WAKE_PROBE_MS + 5000);
    const failedAt = performance.now();
    assert.ok(lookups() > base, "bob looked up for the dial after the first wake");
    // Wake 2, within KEEP_MS of the loss: dialled again.
    const second = lookups();
    await sleepAndWake(2);
    await until(() => lookups() > second, 3000, "bob dialled again after the second wake");
    assert.ok(performance.now() - lostBy < KEEP_MS, "the second wake came within the keep time");
    // Wake 3, after KEEP_MS: bob is left to his own outbox and our next message.
    await new Promise((r) => setTimeout(r, Math.max(0, KEEP_MS + 500 - (performance.now() - failedAt))));
    const third = lookups();
    await sleepAndWake(3);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(lookups(), third, "not dialled again once lost for longer than the keep time");
  } finally {
    await alice.stop();
    await bob.close();
  }
});
