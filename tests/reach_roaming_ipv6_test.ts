/**
 * A laptop on IPv6 that changes networks while chat runs, in an IPv6 lab (tests/helpers/netlab.ts `ipv6`:
 * global addresses from 2001:db8::/32, no NAT, each home router a stateful firewall). A friend on the public
 * side writes to it; the laptop's IPv6 address is behind its home router's firewall, so the friend asks it
 * (through the relay) to dial back, and the session runs from the laptop's global IPv6 address. Then the laptop
 * joins the café's LAN: both its addresses go, new ones (another /64) come. Chat notices the IPv6 address gone
 * as it does an IPv4 one, closes the session that ran over it, and the friend's messages get through on a new
 * session from the café's IPv6 address, both ways, well inside the friend's 60 s idle timeout.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import { endLabRun, enrollIn, peerInfo, sendDelivered, startServe } from "./helpers/reach.ts";

/** Well below the friend's idle timeout (IDLE_TIMEOUT_MS, 60 s): a message that needed it would miss this. */
const AFTER_MOVE_MS = 25_000;

Deno.test({
  name:
    "roaming, IPv6: a laptop whose session ran from its IPv6 address joins another network and is reached there",
  ignore: !labAvailable() && !toolsRequired(),
  fn: async () => {
    assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
    const lab = await buildLab({
      ipv6: true,
      routers: [
        { name: "home", nat: "cone", silentDrop: true },
        { name: "cafe", nat: "cone", silentDrop: true },
      ],
      hosts: [{ name: "pb" }, { name: "laptop", router: "home" }, { name: "friend" }],
    });
    const root = await Deno.makeTempDir({ prefix: "securechat-roam6-" });
    const procs: HeadlessProc[] = [];
    let serve: Deno.ChildProcess | null = null;
    try {
      const s = await startServe(lab, join(root, "pb"), join(root, "capture.bin"));
      serve = s.child;
      for (const u of ["laptop", "friend"]) await enrollIn(lab, u, s, join(root, u));
      // No router here maps ports: the laptop is reached over the session it dials itself.
      const laptop = spawnHeadless(join(root, "laptop"), {
        netns: lab.nsOf("laptop"),
        args: ["--no-port-mapping"],
      });
      const friend = spawnHeadless(join(root, "friend"), { netns: lab.nsOf("friend") });
      procs.push(laptop, friend);
      await laptop.waitEvent((e) => e.event === "ready", 60_000, "laptop ready");
      await friend.waitEvent((e) => e.event === "ready", 60_000, "friend ready");
      const friendsView = () => peerInfo(friend, "laptop");
      await sendDelivered(friend, "laptop", laptop, "at home", 30_000);
      const home6 = lab.host("laptop").address6!;
      const before = await friendsView();
      assert.ok(
        String(before.path).includes(home6),
        `the session runs from the laptop's IPv6: ${before.path}`,
      );

      const homeAt = lab.host("laptop").address;
      const cafeAt = await lab.move("laptop", "cafe");
      const cafe6 = lab.host("laptop").address6!;
      assert.notEqual(cafe6, home6);
      const moved = Date.now();
      const change = await laptop.waitEvent(
        (e) => e.event === "log" && String(e.text).startsWith("network changed: "),
        15_000,
        "the change noticed",
      );
      const text = String(change.text);
      for (const a of [homeAt, home6]) assert.ok(text.includes(a) && /gone/.test(text), `${a} gone: ${text}`);
      for (const a of [cafeAt, cafe6]) assert.ok(text.includes(a), `${a} new: ${text}`);

      await sendDelivered(friend, "laptop", laptop, "at the cafe?", AFTER_MOVE_MS);
      await sendDelivered(laptop, "friend", friend, "yes, at the cafe", AFTER_MOVE_MS);
      const took = Date.now() - moved;
      assert.ok(took < AFTER_MOVE_MS, `${took} ms after the move`);
      for (const [p, t] of [[laptop, "at the cafe?"], [friend, "yes, at the cafe"]] as const) {
        assert.equal(p.events.filter((e) => e.event === "message" && e.text === t).length, 1, `"${t}" once`);
      }
      const after = await friendsView();
      assert.ok(
        String(after.path).includes(cafe6),
        `the new session runs from the café's IPv6: ${after.path}`,
      );
    } finally {
      await endLabRun(procs, serve, lab, root);
    }
  },
});
