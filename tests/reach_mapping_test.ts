/**
 * Port mapping in network namespaces: a home router that maps ports over UPnP-IGD, PCP or NAT-PMP (the
 * tests' own responder, tests/helpers/portmap_responder.ts, installing real nftables DNAT rules; the client
 * side is the real program: `@achingbrain/nat-port-mapper` for UPnP-IGD and NAT-PMP, client/pcp.ts for PCP).
 * A user behind it running `securechat chat --headless` with default flags gets a mapping, publishes it
 * first, and a user behind another router reaches it directly through the mapping (path `mapped`). A PCP
 * lease the router keeps short is renewed while chat runs. When the mapped user quits, the mapping is
 * removed (the rule is gone). A user of the same LAN with `--no-port-mapping` asks the router nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import { enrollIn, responderArgs, startServe } from "./helpers/reach.ts";

interface Case {
  /** What the router speaks (the responder's --protocols). */
  offers: string;
  /** The protocol that must win, as chat logs it. */
  wins: RegExp;
  /** The responder's tag of the winner's rules. */
  tag: string;
  pcpLifetime?: number;
  /** The lease chat asks for (SECURECHAT_MAPPING_LEASE_S): short, so its renewal is seen. */
  leaseS?: number;
  /** The router holds every port asked for for someone else and assigns another (from 20000). */
  portsTaken?: boolean;
  /** Also run a user with --no-port-mapping on the same LAN. */
  withNoMapping?: boolean;
  /** UPnP as an InternetGatewayDevice:1 (the responder's --igd=1), with these of its variants. */
  igd1?: { ppp?: boolean; permanentOnly?: boolean };
  /** The router's mapping service starts only after chat found none (chat asks again every 2 s), and is
   * stopped after the first renewal: the lease runs out unrenewed, and chat drops the mapping. */
  routerLate?: boolean;
  /** The router forgets its mappings this many seconds after the first (a reboot); the renewal restores it. */
  forgetAfterS?: number;
  /** The router announces its restart (forgetAfterS: PCP ANNOUNCE or NAT-PMP announcement, epoch from 0) or
   * its new address (wanMovesTo, NAT-PMP), and chat maps again at once: the renewal is minutes away. */
  announce?: boolean;
  /** The router's public address becomes this one 2 s after the first mapping; the renewal sees it. */
  wanMovesTo?: string;
  /** The router does not answer the first UPnP search (of its IGD version): lost, as multicast can be. */
  dropSearches?: number;
}

const CASES: Case[] = [
  // 10-second leases asked: renewed (5 s in) while chat runs; the router's first answer to a search is lost.
  { offers: "upnp", wins: /\(UPnP-IGD at /, tag: "upnp", leaseS: 10, dropSearches: 1 },
  // The router reserves another public port than the one asked for: that one is published, renewed and
  // removed (the library's own unmap() would name the internal port).
  { offers: "upnp", wins: /\(UPnP-IGD at /, tag: "upnp", portsTaken: true },
  // A version 1 router (no AddAnyPortMapping; the version 2 library finds nothing): mapped with
  // AddPortMapping on WANIPConnection:1, and the 10-second lease renewed.
  // Its first answer to a search is lost: the search is sent again.
  { offers: "upnp", igd1: {}, dropSearches: 1, wins: /\(UPnP-IGD v1 at /, tag: "upnp", leaseS: 10 },
  // A version 1 PPPoE router that grants only permanent mappings (725) and on which another host holds our
  // port (718): asked again with lease 0 on another public port, which is published and removed at exit.
  {
    offers: "upnp",
    igd1: { ppp: true, permanentOnly: true },
    wins: /\(UPnP-IGD v1 at /,
    tag: "upnp",
    portsTaken: true,
    // The permanent mapping is asked for again on the renewal schedule: the router reboots (forgets it) 2 s
    // after, and has it again at the renewal (5 s).
    leaseS: 10,
    forgetAfterS: 2,
  },
  // A PCP router restarts 2 s after mapping (forgets it, its epoch starts again) and says so with an ANNOUNCE
  // to 224.0.0.1:5350: chat asks again within 5 s, not at the renewal of its 20-minute lease.
  { offers: "pcp", wins: /\(PCP at /, tag: "pcp", forgetAfterS: 2, announce: true },
  // The same over NAT-PMP: the gateway's public address announcement after its restart (5 s in: its epoch
  // must be visibly younger than the mapping, RFC 6886 §3.6) and after the ISP gave it another address.
  { offers: "pmp", wins: /\(NAT-PMP at /, tag: "pmp", forgetAfterS: 5, announce: true },
  { offers: "pmp", wins: /\(NAT-PMP at /, tag: "pmp", wanMovesTo: "198.18.0.200", announce: true },
  // A 4-second lease: chat must renew it (at 1/2 to 5/8 of it) while it runs.
  { offers: "pcp", wins: /\(PCP at /, tag: "pcp", pcpLifetime: 4 },
  // The router's mapping service comes up after chat started (a laptop that was faster than its network):
  // chat asks again while it holds none, says the failure once, and publishes the mapping when it comes.
  // Then the service goes away: once the lease has run out unrenewed the mapping is dropped, and asked for
  // again (the failure is said again: it is news after a loss).
  { offers: "pmp", wins: /\(NAT-PMP at /, tag: "pmp", leaseS: 10, routerLate: true },
  // The ISP gives the router another public address: the renewal (5 s) sees it, chat publishes the mapping
  // at the new address, and a connection to it from the internet reaches us. 198.18.0.200 is unused in the
  // lab's public segment (its hosts and routers count up from 198.18.0.2).
  { offers: "pmp", wins: /\(NAT-PMP at /, tag: "pmp", leaseS: 10, wanMovesTo: "198.18.0.200" },
  // A router speaking all three: whichever answers first wins, the others share its rule (same port), and
  // quitting leaves no rule behind. A LAN neighbour with --no-port-mapping sends nothing at all.
  {
    offers: "pmp,pcp,upnp",
    wins: /\((PCP|NAT-PMP|UPnP-IGD) at /,
    tag: "(pmp|pcp|upnp)",
    withNoMapping: true,
  },
];

for (const c of CASES) {
  Deno.test({
    name:
      `port mapping (router offers ${c.offers}): peers dial the mapping directly (path mapped), quitting unmaps it${
        c.pcpLifetime || c.leaseS ? ", the short lease is renewed" : ""
      }${c.withNoMapping ? ", --no-port-mapping asks nothing" : ""}${
        c.routerLate ? ", a router that comes up later is asked again, one that goes away is dropped" : ""
      }${
        c.wanMovesTo ? `, a new public address is published${c.announce ? " at its announcement" : ""}` : ""
      }${
        c.forgetAfterS
          ? `, a router that forgot it has it again${c.announce ? " at its announcement" : ""}`
          : ""
      }${c.dropSearches ? ", the first search lost" : ""}${
        c.portsTaken ? ", on the port the router reserved when ours is taken" : ""
      }${
        c.igd1
          ? `, IGD v1${c.igd1.ppp ? " PPP" : ""}${c.igd1.permanentOnly ? " permanent leases only" : ""}`
          : ""
      }`,
    ignore: !labAvailable() && !toolsRequired(),
    fn: () => mappingCase(c),
  });
}

async function mappingCase(c: Case): Promise<void> {
  assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
  const lab = await buildLab({
    routers: [{ name: "map", nat: "cone", silentDrop: true }, {
      name: "home",
      nat: "cone",
      silentDrop: true,
    }],
    hosts: [
      { name: "pb" },
      { name: "mapped", router: "map" },
      { name: "other", router: "home" },
      ...(c.withNoMapping ? [{ name: "nomap", router: "map" }] : []),
    ],
  });
  const root = await Deno.makeTempDir({ prefix: "securechat-map-" });
  const procs: HeadlessProc[] = [];
  let serve: Deno.ChildProcess | null = null;
  let responder: Deno.ChildProcess | null = null;
  let said = "";
  let reading: Promise<void> = Promise.resolve();
  const startResponder = () => {
    const child = lab.command(
      "map",
      Deno.execPath(),
      responderArgs(lab, "map", [
        `--protocols=${c.offers}`,
        ...(c.pcpLifetime ? [`--pcp-lifetime=${c.pcpLifetime}`] : []),
        ...(c.announce ? ["--announce"] : []),
        ...(c.portsTaken ? ["--ports-taken"] : []),
        ...(c.igd1 ? ["--igd=1"] : []),
        ...(c.igd1?.ppp ? ["--ppp"] : []),
        ...(c.igd1?.permanentOnly ? ["--permanent-only"] : []),
        ...(c.dropSearches ? [`--drop-searches=${c.dropSearches}`] : []),
        ...(c.forgetAfterS ? [`--forget-after=${c.forgetAfterS}`] : []),
        ...(c.wanMovesTo ? [`--wan-moves-to=${c.wanMovesTo}`] : []),
      ]),
      { stdout: "piped", stderr: "piped", env: { NO_COLOR: "1" } },
    ).spawn();
    responder = child;
    reading = (async () => {
      for await (const chunk of child.stdout) said += new TextDecoder().decode(chunk);
    })();
  };
  const until = async (what: string, f: () => boolean, ms = 20_000) => {
    const end = Date.now() + ms;
    while (!f()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; responder said: ${said}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const rulesNow = () => lab.run("map", ["nft", "list", "chain", "ip", "lab", "pre"]);
  try {
    if (!c.routerLate) {
      startResponder();
      await until("the responder", () => said.includes("ready"));
    }
    const s = await startServe(lab, join(root, "pb"), join(root, "capture.bin"));
    serve = s.child;
    const users = ["mapped", "other", ...(c.withNoMapping ? ["nomap"] : [])];
    for (const u of users) await enrollIn(lab, u, s, join(root, u));
    const nomap = c.withNoMapping
      ? spawnHeadless(join(root, "nomap"), { netns: lab.nsOf("nomap"), args: ["--no-port-mapping"] })
      : null;
    if (nomap) {
      procs.push(nomap);
      await nomap.waitEvent((e) => e.event === "ready", 60_000, "nomap ready");
    }
    const m = spawnHeadless(join(root, "mapped"), {
      netns: lab.nsOf("mapped"),
      env: {
        ...(c.leaseS ? { SECURECHAT_MAPPING_LEASE_S: String(c.leaseS) } : {}),
        ...(c.routerLate ? { SECURECHAT_MAPPING_RETRY_S: "2" } : {}),
      },
    });
    const o = spawnHeadless(join(root, "other"), { netns: lab.nsOf("other") });
    procs.push(m, o);
    const ready = await m.waitEvent((e) => e.event === "ready", 60_000, "mapped ready");
    await o.waitEvent((e) => e.event === "ready", 60_000, "other ready");
    const noMapping = (e: { event: string; text?: unknown }) =>
      e.event === "log" && String(e.text).startsWith("no port mapping (");
    if (c.routerLate) {
      // Nothing answers at first; chat says so once and keeps asking.
      await m.waitEvent(noMapping, 20_000, "the first attempt's failure");
      startResponder();
      await until("the responder", () => said.includes("ready"));
    }
    const port = Number(String(ready.address).split(":").pop());
    const wan = lab.routerWan.get("map")!;
    const mappedAt = lab.host("mapped").address;
    const log = await m.waitEvent(
      (e) => e.event === "log" && String(e.text).startsWith(`port mapping: ${wan}:`),
      20_000,
      "the mapping",
    ).catch((e) => {
      throw new Error(
        `${e.message}; responder: ${said}; stderr: ${m.stderr().replaceAll("\n", " ").slice(-1500)}`,
      );
    });
    assert.match(String(log.text), c.wins);
    if (c.routerLate) {
      assert.equal(m.events.filter(noMapping).length, 1, "the same failure is said once, not at every retry");
    }
    const ext = Number(/^port mapping: [\d.]+:(\d+) -> /.exec(String(log.text))![1]);
    if (!c.portsTaken) assert.equal(ext, port, "the port asked for is the one mapped");
    // A v2 router reserves one from 20000; a v1 router refuses (718) and chat asks for another.
    else if (!c.igd1) assert.equal(ext, 20000);
    else {
      assert.notEqual(ext, port);
      assert.match(said, /ASK soap \S+ AddPortMapping lease=0\n(.|\n)*ASK soap \S+ AddPortMapping lease=0\n/);
    }
    if (c.dropSearches) {
      // The lost search was one for the router's version, and another came after it.
      const st = `urn:schemas-upnp-org:device:InternetGatewayDevice:${c.igd1 ? 1 : 2}`;
      assert.match(said, new RegExp(`^DROP ssdp \\S+ ${st}$`, "m"));
      assert.ok((said.match(new RegExp(`^ASK ssdp \\S+ ${st}$`, "gm")) ?? []).length >= 2, said);
    }
    if (c.igd1?.permanentOnly) {
      // 725 to the lease asked for, then lease 0; the user is told a crash would leave it.
      assert.match(said, /ASK soap \S+ AddPortMapping lease=(?!0\n)\d+\n/);
      await m.waitEvent(
        (e) => e.event === "log" && String(e.text).includes("grants only permanent mappings"),
        5_000,
        "the permanent-lease notice",
      );
    }
    // Every protocol the router speaks is asked (all at once, at start; the losers may still be on the way).
    for (const p of c.offers.split(",")) {
      const asked = p === "upnp" ? ["ssdp", "http", "soap"] : [p];
      for (const a of asked) await until(`${a} asked`, () => said.includes(`ASK ${a} ${mappedAt}`));
    }
    assert.match(said, new RegExp(`MAP ${c.tag} ${ext} -> ${mappedAt.replaceAll(".", "\\.")}:${port}\\n`));
    assert.match(await rulesNow(), new RegExp(`dport ${ext} dnat`));
    // Until the phonebook has the new publication, a dialer would get the candidates without the mapping.
    await m.waitEvent(
      (e) => e.event === "log" && e.text === `published the port mapping ${wan}:${ext} first`,
      20_000,
      "the publication",
    );

    // The phonebook lists the mapping first; the other user's first try reaches it.
    await o.cmd({ cmd: "send", to: "mapped", text: "through your router's mapping", ref: 1 });
    const q = await o.waitEvent((e) => e.event === "queued" && e.ref === 1);
    await m.waitEvent((e) => e.event === "message" && e.text === "through your router's mapping", 30_000);
    await o.waitEvent((e) => e.event === "delivered" && e.id === q.id, 30_000);
    await o.cmd({ cmd: "info", name: "mapped", ref: 2 });
    const info = (await o.waitEvent((e) => e.event === "info" && e.ref === 2)).peer as Record<string, string>;
    assert.equal(info.pathKind, "mapped", info.path);
    assert.equal(info.pathAddress, `${wan}:${ext}`);

    if (c.pcpLifetime) {
      // Granted 4 s, asked again (same nonce, same port) 2 to 2.5 s later, and again, while chat runs.
      await until("a PCP renewal", () => said.includes(`RENEW pcp ${port}`), 15_000);
      await m.waitEvent((e) => e.event === "log" && String(e.text).startsWith("PCP mapping renewed"), 15_000);
    }
    if (c.leaseS) {
      // The lease is asked in seconds (NAT-PMP's field is seconds on the wire), renewed halfway for the port held.
      if (c.tag === "pmp") {
        assert.match(
          said,
          new RegExp(`^ASK pmp ${mappedAt.replaceAll(".", "\\.")} lifetime=${c.leaseS}$`, "m"),
        );
      }
      await until(`a ${c.tag} renewal`, () => said.includes(`RENEW ${c.tag} ${ext}`), 20_000);
      const name = c.tag === "pmp" ? "NAT-PMP" : c.igd1 ? "UPnP-IGD v1" : "UPnP-IGD";
      await m.waitEvent((e) => e.event === "log" && e.text === `${name} mapping renewed`, 20_000);
      if (c.wanMovesTo) {
        const moved = `port mapping moved: ${wan}:${ext} -> ${c.wanMovesTo}:${ext} (NAT-PMP)`;
        await m.waitEvent((e) => e.event === "log" && e.text === moved, 20_000, "the move");
        await m.waitEvent(
          (e) => e.event === "log" && e.text === `published the port mapping ${c.wanMovesTo}:${ext} first`,
          20_000,
          "the new publication",
        );
        // From the other user's network, across its router's NAT, the new address forwards to us.
        await lab.run("other", ["timeout", "5", "bash", "-c", `exec 3<>/dev/tcp/${c.wanMovesTo}/${ext}`]);
      }
      if (c.routerLate) {
        const r = responder as Deno.ChildProcess | null;
        r?.kill("SIGTERM");
        await r?.status;
        const failuresBefore = m.events.filter(noMapping).length;
        await m.waitEvent(
          (e) =>
            e.event === "log" &&
            e.text ===
              `port mapping lost: ${wan}:${ext} (NAT-PMP: no renewal answered before the lease ended)`,
          30_000,
          "the loss",
        );
        await m.waitEvent(
          (e) => noMapping(e) && m.events.filter(noMapping).length > failuresBefore,
          20_000,
          "the next attempt's failure",
        );
        // Nothing is left to unmap (the router's service is gone): chat still quits cleanly.
        assert.equal(await m.kill("SIGTERM"), 0);
        return;
      }
      if (c.igd1?.permanentOnly) {
        // Renewed as permanent: one refusal (725) at the start, never again.
        assert.equal((said.match(/AddPortMapping lease=(?!0\n)\d+\n/g) ?? []).length, 1, said);
      }
      if (c.forgetAfterS) {
        // Forgotten, then installed again by the renewal, and forwarding again.
        await until(
          "the mapping again after the router forgot it",
          () => new RegExp(`FORGOT\\n(.|\\n)*MAP ${c.tag} ${ext} -> `).test(said),
        );
        assert.match(await rulesNow(), new RegExp(`dport ${ext} dnat`));
      }
    }
    if (c.announce) {
      // The router announced what happened over the protocol that mapped, chat heard it (from the router, its
      // epoch begun again, or its new address) and mapped again at once: the renewal is ten minutes (PCP) or
      // nineteen (NAT-PMP) away. The other network reaches the mapping again.
      const heard = c.tag === "pcp"
        ? /^the router restarted \(PCP ANNOUNCE from [0-9.]+, epoch [01]\): mapping again in /
        : c.wanMovesTo
        ? `the router has another public address, ${c.wanMovesTo} (NAT-PMP announcement): mapping again`
        : "the router restarted (NAT-PMP announcement): mapping again";
      await until(
        "the announcement",
        () => new RegExp(`(FORGOT|MOVED \\S+)\\nANNOUNCED ${c.tag}\\n`).test(said),
      );
      await m.waitEvent(
        (e) =>
          e.event === "log" &&
          (typeof heard === "string" ? e.text === heard : heard.test(String(e.text))),
        10_000,
        "the announcement heard",
      );
      let reachAt = wan;
      if (c.wanMovesTo) {
        await m.waitEvent(
          (e) =>
            e.event === "log" &&
            e.text === `port mapping moved: ${wan}:${ext} -> ${c.wanMovesTo}:${ext} (NAT-PMP)`,
          10_000,
          "the move",
        );
        await m.waitEvent(
          (e) => e.event === "log" && e.text === `published the port mapping ${c.wanMovesTo}:${ext} first`,
          10_000,
          "the new publication",
        );
        reachAt = c.wanMovesTo;
      } else {
        await until(
          "the mapping again after the restart",
          () => new RegExp(`ANNOUNCED ${c.tag}\\n(.|\\n)*MAP ${c.tag} ${ext} -> `).test(said),
          10_000,
        );
        assert.match(await rulesNow(), new RegExp(`dport ${ext} dnat`));
      }
      await lab.run("other", ["timeout", "5", "bash", "-c", `exec 3<>/dev/tcp/${reachAt}/${ext}`]);
    }

    assert.equal(await m.kill("SIGTERM"), 0);
    await until("the unmapping", () => new RegExp(`UNMAP ${c.tag} ${ext}\\n`).test(said));
    assert.doesNotMatch(await rulesNow(), /dnat/, "quitting leaves no forwarding rule");

    if (nomap) {
      const nomapAt = lab.host("nomap").address;
      // It ran all along (ready before the mapped user started), next to a user whose requests were seen.
      const asked = new RegExp(`^ASK \\w+ ${nomapAt.replaceAll(".", "\\.")}( |$)`, "m");
      assert.doesNotMatch(said, asked, "--no-port-mapping asked the router");
    }
  } finally {
    await Promise.all(procs.map((p) => p.kill("SIGTERM").catch(() => -1)));
    for (const child of [serve, responder as Deno.ChildProcess | null]) {
      if (!child) continue;
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    }
    await reading.catch(() => {});
    await serve?.stderr.cancel().catch(() => {});
    await (responder as Deno.ChildProcess | null)?.stderr.cancel().catch(() => {});
    await lab.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}
