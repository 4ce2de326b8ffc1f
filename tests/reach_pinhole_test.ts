/**
 * An IPv6 pinhole, in network namespaces (tests/helpers/netlab.ts, `ipv6`) with the real `securechat serve`
 * and `chat --headless`, default flags. Both homes have IPv4 behind a symmetric NAT and IPv6 behind a
 * stateful firewall that silently drops what the LAN did not start. Alice's router speaks PCP over IPv6
 * (tests/helpers/portmap_responder.ts `--protocols=pcp6`) in one test, and UPnP-IGD 2's
 * WANIPv6FirewallControl in the other (`--protocols=upnp6`: found by an SSDP search on ff02::c, asked over
 * IPv6 from alice's own address): chat asks it for a pinhole for its own IPv6 address and port, and the
 * router adds a real accept rule to its firewall. Bob's first contact then goes
 * straight to alice's IPv6 address: the session is direct (path "ipv6") from the start, with no relayed
 * start and no punching (tests/reach_ipv6_test.ts is the same lab without the pinhole: there the session
 * starts relayed). When alice quits, the pinhole is closed: the rule is gone. Bob's router answers neither:
 * bob says once that he has no pinhole, and why for each way, and nothing else changes for him.
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
  startResponder,
  startServe,
  SYMMETRIC_IPV6_HOMES,
} from "./helpers/reach.ts";

for (
  const k of [
    { via: "PCP", flags: ["--protocols=pcp6"], asked: "ASK pcp6", search: null },
    // A search to ff02::c leaves from the host's link-local address (once it has one: see below), as on a
    // real LAN, and the router answers it there.
    { via: "UPnP", flags: ["--protocols=upnp6"], asked: "ASK soap6", search: "ASK ssdp6 fe80:" },
  ]
) {
  Deno.test({
    name:
      `reach, IPv6 pinhole: a ${k.via} router opens its firewall for chat, and the first contact is direct`,
    ignore: !labAvailable() && !toolsRequired(),
    fn: async () => {
      assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
      const lab = await buildLab(SYMMETRIC_IPV6_HOMES);
      const root = await Deno.makeTempDir({ prefix: "securechat-pinhole-" });
      const capture = join(root, "relay-capture.bin");
      const procs = new Map<string, HeadlessProc>();
      let serve: Deno.ChildProcess | null = null;
      let router: Awaited<ReturnType<typeof startResponder>> | null = null;
      const firewall = () => lab.run("home", ["nft", "list", "chain", "inet", "labf", "forward"]);
      try {
        router = await startResponder(lab, "home", k.flags);
        const until = router.until;
        // Until its duplicate address detection ends, a host's link-local address is tentative and a search
        // would leave from its global one instead: wait for it, so the test meets what a LAN always is.
        for (
          let i = 0;
          (await lab.run("alice", ["ip", "-6", "addr", "show", "tentative"])).trim() !== "";
          i++
        ) {
          assert.ok(i < 100, "alice's link-local address stays tentative");
          await new Promise((r) => setTimeout(r, 100));
        }
        const s = await startServe(lab, join(root, "pb"), capture);
        serve = s.child;
        for (const u of ["alice", "bob"]) {
          await enrollIn(lab, u, s, join(root, u));
          procs.set(u, spawnHeadless(join(root, u), { netns: lab.host(u).ns }));
        }
        const alice = procs.get("alice")!;
        const bob = procs.get("bob")!;
        const ready = await alice.waitEvent((e) => e.event === "ready", 60_000, "alice ready");
        await bob.waitEvent((e) => e.event === "ready", 60_000, "bob ready");
        const port = Number(String(ready.address).split(":").pop());
        const a6 = lab.host("alice").address6!;

        // Alice asked her router over IPv6, from her own address, for it and her port; it opened its firewall.
        await alice.waitEvent(
          (e) =>
            e.event === "log" &&
            String(e.text).startsWith(`IPv6 pinhole: [${a6}]:${port} open for inbound (${k.via} at `),
          20_000,
          "alice's pinhole",
        );
        await until("the pinhole rule", (said) => said.includes(`PINHOLE ${a6} ${port}`));
        assert.ok(router.said().includes(`${k.asked} ${a6} `), `asked from ${a6}:\n${router.said()}`);
        if (k.search) assert.ok(router.said().includes(k.search), `searched:\n${router.said()}`);
        assert.match(await firewall(), new RegExp(`ip6 daddr ${a6} tcp dport ${port} accept`));
        // Bob's router answers neither way: said once, with each way's reason, and bob chats on.
        const none = await bob.waitEvent(
          (e) => e.event === "log" && String(e.text).startsWith("no IPv6 pinhole for ["),
          20_000,
          "bob has no pinhole",
        );
        assert.match(String(none.text), /\(PCP: .+; UPnP: no router with WANIPv6FirewallControl answered\)$/);

        // Bob's first contact reaches alice's IPv6 address through the pinhole: direct, never relayed.
        await sendDelivered(bob, "alice", alice, `first contact ${crypto.randomUUID()}`);
        const info = await peerInfo(bob, "alice");
        assert.equal(info.pathKind, "ipv6", `bob -> alice on ${info.path}`);
        assert.ok(String(info.path).includes(a6), `to alice's own IPv6 address: ${info.path}`);
        await sendDelivered(alice, "bob", bob, `answer ${crypto.randomUUID()}`);
        // The relay forwarded nothing: no circuit was ever opened between them.
        const relayed = await Deno.stat(capture).then((st) => st.size, () => 0);
        assert.equal(relayed, 0, "bytes went through the relay");

        // Alice quits: her pinhole is closed, the router's rule is gone.
        await alice.kill("SIGTERM");
        procs.delete("alice");
        await until("the pinhole closed", (said) => said.includes(`UNPINHOLE ${a6} ${port}`));
        assert.doesNotMatch(await firewall(), new RegExp(`ip6 daddr ${a6} `));
      } finally {
        await router?.stop();
        await endLabRun(procs.values(), serve, lab, root);
      }
    },
  });
}
