/**
 * An IPv6 pinhole, in network namespaces (tests/helpers/netlab.ts, `ipv6`) with the real `securechat serve`
 * and `chat --headless`, default flags. Both homes have IPv4 behind a symmetric NAT and IPv6 behind a
 * stateful firewall that silently drops what the LAN did not start. Alice's router opens pinholes:
 * - over PCP (tests/helpers/portmap_responder.ts `--protocols=pcp6`);
 * - over UPnP-IGD 2's WANIPv6FirewallControl (`--protocols=upnp6`: found by an SSDP search on ff02::c, asked
 *   over IPv6 from alice's own address);
 * - with Debian's miniupnpd, the daemon of many real home routers, which answers both: PCP and UPnP are
 *   asked at once, the first pinhole is kept and the other closed again, so one rule is left.
 * Chat asks it for a pinhole for its own IPv6 address and port, and the router adds a real accept rule to
 * its firewall. Bob's first contact then goes straight to alice's IPv6 address: the session is direct (path
 * "ipv6") from the start, with no relayed start and no punching (tests/reach_ipv6_test.ts is the same lab
 * without the pinhole: there the session starts relayed). When alice quits, the pinhole is closed: the rule
 * is gone. Bob's router answers neither way: bob says once that he has no pinhole, and why for each way, and
 * nothing else changes for him. Two of the routers restart after the first contact and say so: the lab's
 * PCP router to ff02::1 from its link-local address, miniupnpd (NAT-PMP on) to 224.0.0.1 only, from its IPv4
 * LAN address; either way alice asks for her pinhole again at once, and bob's network reaches her again.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, type Lab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired, withTools } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import { ipBytes } from "../client/pcp_wire.ts";
import {
  endLabRun,
  enrollIn,
  peerInfo,
  sendDelivered,
  startMiniupnpd,
  startResponder,
  startServe,
  SYMMETRIC_IPV6_HOMES,
} from "./helpers/reach.ts";

/** Alice's router's pinhole service, as the test sees it. */
interface PinholeRouter {
  /** What it logged. */
  said(): string;
  /** How many rules of its firewall let inbound TCP reach [address]:port now. */
  rules(address: string, port: number): Promise<number>;
  stop(): Promise<void>;
  /** Restarts it: every pinhole forgotten, and the restart announced (the lab's router with --announce,
   * miniupnpd with NAT-PMP on). Resolves once it runs again. */
  restart?(): Promise<void>;
  /** What it says, after a restart, once alice's pinhole is open again (any of these). */
  reopened?(a6: string, port: number): string[];
}

/** The lab's own router service (portmap_responder.ts) with `flags`: its rules in the forward chain. */
async function labRouter(lab: Lab, flags: string[]): Promise<PinholeRouter> {
  const r = await startResponder(lab, "home", flags);
  return {
    said: r.said,
    rules: async (a, p) =>
      (await lab.run("home", ["nft", "list", "chain", "inet", "labf", "forward"]))
        .split(`ip6 daddr ${a} tcp dport ${p} accept`).length - 1,
    stop: r.stop,
    restart: async () => {
      const before = r.said().length;
      r.restart();
      // It comes from the router's link-local address, not the address alice asked.
      for (let i = 0; !/FORGOT\nANNOUNCED pcp6 from fe80:/.test(r.said().slice(before)); i++) {
        assert.ok(i < 50, `the router's restart in what it logged:\n${r.said()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    reopened: (a6, port) => [`PINHOLE ${a6} ${port}\n`],
  };
}

/** miniupnpd: its rules match the destination address as raw header bytes (offset 192 bits, 128 long). */
async function miniupnpd(lab: Lab, dir: string, natpmp = false, crash = false): Promise<PinholeRouter> {
  const m = await startMiniupnpd(lab, "home", dir, { natpmp });
  const hex = (a: string) => [...ipBytes(a)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return {
    said: m.said,
    rules: async (a, p) =>
      (await m.chain()).split(`th dport ${p} @nh,192,128 0x${hex(a)} @nh,48,8 0x6 accept`).length - 1,
    stop: m.stop,
    restart: () => m.restart(crash),
    // Asked again over PCP or UPnP, whichever answers first.
    reopened: (a6, port) => [
      `PCP MAP: added mapping TCP ${port}->${a6}:${port}`,
      `AddPinhole: (inbound) from []:0 to [${a6}]:${port} with proto 6`,
    ],
  };
}

interface Case {
  name: string;
  /** The way that opens the pinhole, as chat logs it. */
  via: RegExp;
  tools: string[];
  start(lab: Lab, root: string): Promise<PinholeRouter>;
  /** What the router must have logged once the pinhole is open (alice's address and port given). */
  logged(a6: string, port: number): string[];
  /** After the first contact the router restarts and announces it: the pinhole is opened again at once.
   * Alice's log says how she heard it, and from where (given the lab): the router's link-local or its IPv4
   * address. */
  restarts?: (lab: Lab) => RegExp;
}

const CASES: Case[] = [
  {
    name: "a PCP router",
    via: /PCP/,
    tools: [],
    start: (lab) => labRouter(lab, ["--protocols=pcp6"]),
    logged: (a6, port) => [`ASK pcp6 ${a6} `, `PINHOLE ${a6} ${port}`],
  },
  {
    name: "a PCP router that restarts (and says so with an ANNOUNCE)",
    via: /PCP/,
    tools: [],
    start: (lab) => labRouter(lab, ["--protocols=pcp6", "--announce"]),
    logged: (a6, port) => [`ASK pcp6 ${a6} `, `PINHOLE ${a6} ${port}`],
    restarts: () => /^the router restarted \(PCP ANNOUNCE from fe80:\S+, epoch \d+\)/,
  },
  {
    name: "a UPnP router",
    via: /UPnP/,
    tools: [],
    start: (lab) => labRouter(lab, ["--protocols=upnp6"]),
    // The search to ff02::c leaves from alice's link-local address (once she has one: see below), as on a
    // real LAN, and the router answers it there; the actions come from her own global address.
    logged: (a6, port) => ["ASK ssdp6 fe80:", `ASK soap6 ${a6} AddPinhole`, `PINHOLE ${a6} ${port}`],
  },
  {
    name: "a router running miniupnpd",
    // It answers both ways (PCP even with NAT-PMP off), and both open the one rule: the first to answer is
    // reported, and the other must not close it (one rule is left, below).
    via: /PCP|UPnP/,
    tools: ["miniupnpd"],
    start: (lab, root) => miniupnpd(lab, join(root, "miniupnpd")),
    logged: (a6, port) => [
      "SSDP M-SEARCH from [fe80:",
      `PCP MAP: added mapping TCP ${port}->${a6}:${port}`,
      `AddPinhole: (inbound) from []:0 to [${a6}]:${port} with proto 6`,
    ],
  },
  {
    // miniupnpd (checked with a packet capture) sends its start's ANNOUNCE to 224.0.0.1 on the LAN but to
    // ff02::1 out of its WAN interface: alice hears it over IPv4, from her IPv4 gateway, and that counts for
    // her IPv6 pinhole too.
    name: "a router running miniupnpd with NAT-PMP on that restarts (its ANNOUNCE comes over IPv4 only)",
    via: /PCP|UPnP/,
    tools: ["miniupnpd"],
    start: (lab, root) => miniupnpd(lab, join(root, "miniupnpd"), true),
    logged: (a6, port) => [`PCP MAP: added mapping TCP ${port}->${a6}:${port}`],
    restarts: (lab) =>
      new RegExp(
        `^the router restarted \\(PCP ANNOUNCE from ${dots(lab.routerLan.get("home")!)}, epoch \\d+\\)`,
      ),
  },
  {
    // With NAT-PMP and PCP's announcements off (UPnP alone, as many routers are set up), the restart is heard
    // from its SSDP NOTIFYs: a BOOTID other than before (here over IPv6 from its link-local address, or over
    // IPv4 from its LAN address, whichever comes first). It loses power: no byebye, its rules gone, and its
    // first periodic alive since alice started not sent yet (every 30 s): the BOOTID it is compared with comes
    // from the answer to alice's search at start.
    name: "a router running miniupnpd that loses power (and says so over UPnP only, at its start)",
    via: /PCP|UPnP/,
    tools: ["miniupnpd"],
    start: (lab, root) => miniupnpd(lab, join(root, "miniupnpd"), false, true),
    logged: (a6, port) => [`PCP MAP: added mapping TCP ${port}->${a6}:${port}`],
    restarts: (lab) =>
      new RegExp(
        `^the router restarted \\(UPnP NOTIFY from (fe80:\\S+|${
          dots(lab.routerLan.get("home")!)
        }), boot \\d+\\)`,
      ),
  },
];

/** `address` as a pattern. */
function dots(address: string): string {
  return address.replaceAll(".", "\\.");
}

for (const k of CASES) {
  Deno.test(withTools(k.tools, {
    name: `reach, IPv6 pinhole: ${k.name} opens its firewall for chat, and the first contact is direct`,
    ignore: !labAvailable() && !toolsRequired(),
    fn: async () => {
      assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
      const lab = await buildLab(SYMMETRIC_IPV6_HOMES);
      const root = await Deno.makeTempDir({ prefix: "securechat-pinhole-" });
      const capture = join(root, "relay-capture.bin");
      const procs = new Map<string, HeadlessProc>();
      let serve: Deno.ChildProcess | null = null;
      let router: PinholeRouter | null = null;
      try {
        router = await k.start(lab, root);
        const said = router.said;
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
            String(e.text).startsWith(`IPv6 pinhole: [${a6}]:${port} open for inbound (`) &&
            k.via.test(String(e.text)),
          20_000,
          "alice's pinhole",
        );
        // What it logged is read as it comes: waited for a little.
        for (let i = 0; !k.logged(a6, port).every((line) => said().includes(line)); i++) {
          assert.ok(i < 50, `${k.logged(a6, port).join(", ")} in what the router logged:\n${said()}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        // One rule lets alice's listener be reached (a pinhole opened the other way too is closed again).
        for (let i = 0; (await router.rules(a6, port)) !== 1; i++) {
          assert.ok(i < 50, `${await router.rules(a6, port)} rules for alice's listener`);
          await new Promise((r) => setTimeout(r, 100));
        }
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

        if (k.restarts) {
          // The router restarts: the pinhole is gone, its epoch begins again, and it says so (a PCP ANNOUNCE
          // to ff02::1 or over IPv4, or its UPnP NOTIFYs). Alice asks for the pinhole again within 5 s (her
          // renewal is ten minutes away), and it lets a new connection from bob's network through.
          const before = said().length;
          await router.restart!();
          const how = k.restarts(lab);
          await alice.waitEvent(
            (e) => e.event === "log" && how.test(String(e.text)),
            10_000,
            `alice heard the restart (${how})`,
          );
          const again = router.reopened!(a6, port);
          for (let i = 0; !again.some((line) => said().slice(before).includes(line)); i++) {
            assert.ok(i < 100, `the pinhole again after the restart:\n${said().slice(before)}`);
            await new Promise((r) => setTimeout(r, 100));
          }
          // A router that says it both ways (miniupnpd with NAT-PMP on: an ANNOUNCE and its NOTIFYs) has her
          // renew the pinhole and open it anew, each after its own random wait of up to 5 s: the rule may go
          // and come back once more meanwhile. So bob's network is given those seconds to get through.
          for (let i = 0;; i++) {
            try {
              await lab.run("bob", ["timeout", "5", "bash", "-c", `exec 3<>/dev/tcp/${a6}/${port}`]);
              break;
            } catch (e) {
              assert.ok(i < 16, `bob's network does not reach alice after the restart: ${e}`);
              await new Promise((r) => setTimeout(r, 500));
            }
          }
          for (let i = 0; (await router.rules(a6, port)) !== 1; i++) {
            assert.ok(
              i < 100,
              `${await router.rules(a6, port)} rules for alice's listener after the restart`,
            );
            await new Promise((r) => setTimeout(r, 100));
          }
        }

        // Alice quits: her pinhole is closed, the router's rule is gone.
        await alice.kill("SIGTERM");
        procs.delete("alice");
        for (let i = 0; (await router.rules(a6, port)) > 0; i++) {
          assert.ok(i < 100, "the pinhole stays open after alice quit");
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        await router?.stop();
        await endLabRun(procs.values(), serve, lab, root);
      }
    },
  }));
}
