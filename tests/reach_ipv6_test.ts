/**
 * Two users at home, each behind a router that gives IPv4 through a symmetric NAT (a new public port per
 * destination: IPv4 hole punching cannot work) and IPv6 with no NAT behind a stateful firewall that silently
 * drops whatever the LAN did not start: the most common IPv6 home. In network namespaces
 * (tests/helpers/netlab.ts, `ipv6`), with the real `securechat serve` and `chat --headless`, default flags.
 * Neither can dial the other's listed address (the firewalls drop it), so the session starts relayed; the
 * direct upgrade then punches through both firewalls over IPv6 (each side connects at once from its own
 * published global address to the other's, timed through the relay) and the session is direct: path
 * "punched" over 2001:db8::, the same at both ends, with messages flowing both ways on it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import {
  endLabRun,
  enrollIn,
  peerInfo,
  sendDelivered,
  startServe,
  SYMMETRIC_IPV6_HOMES,
} from "./helpers/reach.ts";

Deno.test({
  name: "reach, IPv6: two homes behind symmetric NATs and IPv6 firewalls end direct, punched over IPv6",
  ignore: !labAvailable() && !toolsRequired(),
  fn: async () => {
    assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
    const lab = await buildLab(SYMMETRIC_IPV6_HOMES);
    const root = await Deno.makeTempDir({ prefix: "securechat-reach6-" });
    const procs = new Map<string, HeadlessProc>();
    let serve: Deno.ChildProcess | null = null;
    try {
      const s = await startServe(lab, join(root, "pb"), join(root, "relay-capture.bin"));
      serve = s.child;
      for (const u of ["alice", "bob"]) {
        await enrollIn(lab, u, s, join(root, u));
        procs.set(u, spawnHeadless(join(root, u), { netns: lab.host(u).ns }));
      }
      for (const [name, p] of procs) await p.waitEvent((e) => e.event === "ready", 60_000, `${name} ready`);
      const send = (from: string, to: string) =>
        sendDelivered(procs.get(from)!, to, procs.get(to)!, `from ${from} to ${to} ${crypto.randomUUID()}`);
      const pathOf = (from: string, to: string) => peerInfo(procs.get(from)!, to);
      await send("alice", "bob");
      await send("bob", "alice");
      // The upgrade has PUNCH_TIMEOUT_MS (4 s) per try; the session ends direct.
      const deadline = Date.now() + 20_000;
      let info = await pathOf("alice", "bob");
      while (info.pathKind !== "punched" && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        info = await pathOf("alice", "bob");
      }
      assert.equal(info.pathKind, "punched", `alice -> bob on ${info.path}`);
      assert.ok(String(info.path).includes(lab.host("bob").address6!), `over IPv6 to bob: ${info.path}`);
      const back = await pathOf("bob", "alice");
      assert.equal(back.pathKind, "punched", `bob -> alice on ${back.path}`);
      assert.ok(String(back.path).includes(lab.host("alice").address6!), `over IPv6 to alice: ${back.path}`);
      await send("alice", "bob");
      await send("bob", "alice");
    } finally {
      await endLabRun(procs.values(), serve, lab, root);
    }
  },
});
