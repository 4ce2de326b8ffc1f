/**
 * A laptop that changes networks while chat runs, in network namespaces: it starts behind its home router
 * (which maps ports over NAT-PMP: the lab's responder, real nftables rules), a friend on the public side
 * dials it through that mapping; then the laptop joins the café's LAN (its interface and address go, a new
 * one comes behind another router). Chat notices the change by itself and follows it: the café router's
 * mapping is asked for and published, the relay connection is made again, and the friend's session is
 * replaced by the laptop's new one. The friend's side of the old session is dead without a word; the
 * tie-break ("friend" dialled it, and "friend" < "laptop") would keep it, so the friend probes it, finds it
 * silent and takes the new one. Messages both ways get through well inside the 60 s idle timeout that was
 * the only way out before. A relay-only laptop asks no router: its relayed session (over a leg from the old
 * address) is closed, its relay connection made again at once, and the friend is dialled through the relay.
 * A laptop that is off every network for a while in between (two changes: gone, then new) recovers the same
 * way once it is on the café's LAN, although the dials and the relay attempts made while offline failed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import { enrollIn, peerInfo, responderArgs, sendDelivered, startServe } from "./helpers/reach.ts";

/** Well below the friend's idle timeout (IDLE_TIMEOUT_MS, 60 s): a message that needed it would miss this. */
const AFTER_MOVE_MS = 25_000;

interface Case {
  name: string;
  relayOnly?: boolean;
  /** The laptop is off every network this long between the two (Wi-Fi off, or asleep on the way). */
  offlineMs?: number;
}

const CASES: Case[] = [
  { name: "a laptop that joins another network is mapped, published and reached there, both ways" },
  {
    name: "a relay-only laptop that joins another network is reached through the relay again, both ways",
    relayOnly: true,
  },
  {
    name: "a laptop off every network for 6 s, then on another one, is mapped and reached there, both ways",
    offlineMs: 6000,
  },
];

for (const c of CASES) {
  Deno.test({
    name: `roaming: ${c.name}`,
    ignore: !labAvailable() && !toolsRequired(),
    fn: () => roam(c),
  });
}

async function roam({ relayOnly = false, offlineMs = 0 }: Case): Promise<void> {
  assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
  const lab = await buildLab({
    routers: [
      { name: "home", nat: "cone", silentDrop: true },
      { name: "cafe", nat: "cone", silentDrop: true },
    ],
    hosts: [{ name: "pb" }, { name: "laptop", router: "home" }, { name: "friend" }],
  });
  const root = await Deno.makeTempDir({ prefix: "securechat-roam-" });
  const procs: HeadlessProc[] = [];
  const children: Deno.ChildProcess[] = [];
  const said: Record<string, string> = { home: "", cafe: "" };
  const reading: Promise<void>[] = [];
  try {
    for (const r of ["home", "cafe"]) {
      const child = lab.command(r, Deno.execPath(), responderArgs(lab, r, ["--protocols=pmp"]), {
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1" },
      }).spawn();
      children.push(child);
      reading.push((async () => {
        for await (const c of child.stdout) said[r] += new TextDecoder().decode(c);
      })());
    }
    const until = async (what: string, f: () => boolean, ms = 20_000) => {
      const end = Date.now() + ms;
      while (!f()) {
        if (Date.now() > end) {
          throw new Error(`timed out waiting for ${what}; routers said: ${JSON.stringify(said)}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await until(
      "the routers' mapping services",
      () => said.home.includes("ready") && said.cafe.includes("ready"),
    );
    const s = await startServe(lab, join(root, "pb"), join(root, "capture.bin"));
    children.push(s.child);
    for (const u of ["laptop", "friend"]) await enrollIn(lab, u, s, join(root, u));
    const laptop = spawnHeadless(join(root, "laptop"), {
      netns: lab.nsOf("laptop"),
      args: relayOnly ? ["--relay-only"] : [],
    });
    const friend = spawnHeadless(join(root, "friend"), { netns: lab.nsOf("friend") });
    procs.push(laptop, friend);
    const ready = await laptop.waitEvent((e) => e.event === "ready", 60_000, "laptop ready");
    await friend.waitEvent((e) => e.event === "ready", 60_000, "friend ready");
    const port = Number(String(ready.address).split(":").pop());
    const logged = (prefix: string, what: string, ms = 20_000) =>
      laptop.waitEvent((e) => e.event === "log" && String(e.text).startsWith(prefix), ms, what);
    const published = async (router: string) => {
      const wan = lab.routerWan.get(router)!;
      const log = await logged(`port mapping: ${wan}:`, `the ${router} mapping`);
      const ext = Number(/^port mapping: [\d.]+:(\d+) -> /.exec(String(log.text))![1]);
      await logged(`published the port mapping ${wan}:${ext} first`, `the ${router} publication`);
      return ext;
    };
    // Relay-only asks no router (a mapping would show our address).
    const homeExt = relayOnly ? 0 : await published("home");
    if (!relayOnly) assert.equal(homeExt, port);

    // The friend dials the laptop through its home router's mapping.
    await sendDelivered(friend, "laptop", laptop, "at home", 30_000);
    const before = await peerInfo(friend, "laptop");
    if (relayOnly) assert.equal(before.pathKind, "relayed", before.path);
    else {
      assert.equal(before.pathKind, "mapped", before.path);
      assert.equal(before.pathAddress, `${lab.routerWan.get("home")}:${homeExt}`);
    }

    // The laptop goes to the café.
    const homeAt = lab.host("laptop").address;
    const relayAgain = `relay ${lab.host("pb").address}:10041: our network changed; retrying`;
    if (offlineMs) {
      await lab.unplug("laptop");
      await logged(`network changed: ${homeAt} gone`, "the loss noticed", 15_000);
      await logged(relayAgain, "the relay given up");
      // Nothing works meanwhile: the home mapping is dropped and asking again finds no router (the next
      // attempt would be in 5 minutes: the new network must not wait for it).
      await logged("no port mapping (", "the failed attempt offline");
      await new Promise((r) => setTimeout(r, offlineMs));
    }
    const cafeAt = await lab.move("laptop", "cafe");
    const moved = Date.now();
    await logged(
      offlineMs ? `network changed: ${cafeAt} new` : `network changed: ${homeAt} gone; ${cafeAt} new`,
      "the change noticed",
      15_000,
    );
    // The café router is asked (from the new address) and its mapping published first.
    const cafeExt = relayOnly ? 0 : await published("cafe");
    if (!relayOnly) {
      assert.match(
        said.cafe,
        new RegExp(`MAP pmp ${cafeExt} -> ${cafeAt.replaceAll(".", "\\.")}:${port}\\n`),
      );
    }
    await logged(relayAgain, "the relay again");

    // The friend's old session is dead; its messages get through on the laptop's new one, and back.
    await sendDelivered(friend, "laptop", laptop, "at the cafe?", AFTER_MOVE_MS);
    await sendDelivered(laptop, "friend", friend, "yes, at the cafe", AFTER_MOVE_MS);
    // Sent again on the new session when the old one swallowed it: shown once all the same.
    for (const [p, text] of [[laptop, "at the cafe?"], [friend, "yes, at the cafe"]] as const) {
      assert.equal(p.events.filter((e) => e.event === "message" && e.text === text).length, 1);
    }
    const took = Date.now() - moved;
    assert.ok(took < AFTER_MOVE_MS, `${took} ms after the move`);

    if (relayOnly) {
      const after = await peerInfo(friend, "laptop");
      assert.equal(after.pathKind, "relayed", after.path);
      assert.doesNotMatch(said.home + said.cafe, /^ASK /m, "relay-only asked a router");
    }
    assert.equal(await laptop.kill("SIGTERM"), 0);
    // The café mapping is removed at exit (the home one could not be: that router is out of reach).
    if (!relayOnly) {
      await until("the café unmapping", () => new RegExp(`UNMAP pmp ${cafeExt}\\n`).test(said.cafe));
    }
  } finally {
    await Promise.all(procs.map((p) => p.kill("SIGTERM").catch(() => -1)));
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    }
    await Promise.all(reading.map((r) => r.catch(() => {})));
    for (const child of children) await child.stderr.cancel().catch(() => {});
    await lab.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}
