/**
 * Reachability across machines and NATs, in network namespaces (tests/helpers/netlab.ts): a phonebook with
 * its relay on a public address; two users behind one home router, one behind another (cone NAT), one
 * behind a symmetric NAT, one behind carrier NAT (two layers), one on a public address behind a firewall
 * that drops inbound, two on public addresses. Each runs the real `securechat chat --headless` with default
 * flags. Every pair sends both ways; each message is delivered, and each pair ends on the path the topology
 * allows: direct within a LAN and to a public user; direct from the public user too (it asks the callee
 * through the relay to dial it back: connection reversal); between users behind NATs that keep ports (and
 * the firewalled one), relayed first and then direct by TCP hole punching timed through the relay; relayed
 * for good when a symmetric NAT is on the way. Messages then flow both ways again on the final paths. The relay's capture of
 * every byte it forwarded holds none of the messages.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import { endLabRun, enrollIn, peerInfo, sendDelivered, startServe } from "./helpers/reach.ts";

// In pair order the first named sends first (and so dials): "public" dials everyone (reversal where the
// callee is behind NAT), everyone dials "server" (its listed address answers).
const USERS: { name: string; router?: string; firewall?: boolean }[] = [
  { name: "public" },
  { name: "walled", firewall: true },
  { name: "homea", router: "home1" },
  { name: "homeb", router: "home1" },
  { name: "cone", router: "home2" },
  { name: "symm", router: "sym" },
  { name: "mobile", router: "inner" },
  { name: "server" },
];

/** The path a session dialled by `from` to `to` ends up on in this lab. */
function expectedPath(from: string, to: string): "lan" | "public" | "punched" | "relayed" {
  const f = USERS.find((u) => u.name === from)!;
  const t = USERS.find((u) => u.name === to)!;
  if (f.router && f.router === t.router) return "lan"; // the same LAN
  if (!t.router && !t.firewall) return "public"; // a public address that answers
  if (!f.router && !f.firewall) return "public"; // reversal: the callee dials the public caller back
  // Relayed first; hole punching then makes it direct unless a symmetric NAT picks a new port per peer.
  if (f.router !== "sym" && t.router !== "sym") return "punched";
  return "relayed";
}

Deno.test({
  name:
    "reach matrix: every pair delivers both ways with default flags; direct (LAN, public, reversed, punched) where possible, else relayed",
  ignore: !labAvailable() && !toolsRequired(),
  fn: async () => {
    assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
    const lab = await buildLab({
      routers: [
        // Routers that answer no unsolicited SYN (RFC 5382 REQ-4), as NATs should: hole punching needs it.
        { name: "home1", nat: "cone", silentDrop: true },
        { name: "home2", nat: "cone", silentDrop: true },
        { name: "sym", nat: "symmetric", silentDrop: true },
        { name: "carrier", nat: "cone", silentDrop: true },
        { name: "inner", nat: "cone", behind: "carrier", silentDrop: true },
      ],
      hosts: [{ name: "pb" }, ...USERS],
    });
    const root = await Deno.makeTempDir({ prefix: "securechat-reach-" });
    const capture = join(root, "relay-capture.bin");
    const procs = new Map<string, HeadlessProc>();
    let serve: Deno.ChildProcess | null = null;
    try {
      const s = await startServe(lab, join(root, "pb"), capture);
      serve = s.child;
      // Each user enrolls from its own machine, as a new user would.
      await Promise.all(USERS.map((u) => enrollIn(lab, u.name, s, join(root, u.name))));
      for (const u of USERS) {
        procs.set(u.name, spawnHeadless(join(root, u.name), { netns: lab.host(u.name).ns }));
      }
      for (const [name, p] of procs) await p.waitEvent((e) => e.event === "ready", 60_000, `${name} ready`);

      // Every unordered pair: the first named sends (and so dials), then the other answers over the session.
      const texts: string[] = [];
      const send = async (from: string, to: string) => {
        const text = `secret from ${from} to ${to} ${crypto.randomUUID()}`;
        texts.push(text);
        await sendDelivered(procs.get(from)!, to, procs.get(to)!, text);
      };
      const pathOf = (from: string, to: string) => peerInfo(procs.get(from)!, to);
      const pairs: [string, string][] = [];
      for (let i = 0; i < USERS.length; i++) {
        for (let j = i + 1; j < USERS.length; j++) pairs.push([USERS[i].name, USERS[j].name]);
      }
      const seen: string[] = [];
      // A few pairs at a time: bounded time on two cores, and each pair's first message still says who dials.
      for (let k = 0; k < pairs.length; k += 4) {
        await Promise.all(
          pairs.slice(k, k + 4).map(async ([a, b]) => {
            await send(a, b);
            await send(b, a);
            // Right after the first messages a pair that will be punched may still be relayed.
            const info = await pathOf(a, b);
            const want = expectedPath(a, b);
            assert.ok(
              info.pathKind === want || (want === "punched" && info.pathKind === "relayed"),
              `${a} -> ${b} took ${info.path}, expected ${want}`,
            );
          }),
        );
      }
      // Every punch has had its chance (PUNCH_TIMEOUT_MS is 4 s): each pair is on its final path, the same at
      // both ends, and messages still flow both ways over it.
      await new Promise((r) => setTimeout(r, 5000));
      await Promise.all(pairs.map(async ([a, b]) => {
        const want = expectedPath(a, b);
        const deadline = Date.now() + 15_000;
        let info = await pathOf(a, b);
        while (info.pathKind !== want && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 500));
          info = await pathOf(a, b);
        }
        seen.push(`${a}->${b}: ${info.path}${info.pathKind === want ? "" : `  EXPECTED ${want}`}`);
        if (info.pathKind !== want) return;
        assert.equal(String(info.path).includes("::ffff:"), false, "IPv4 shown plain");
        const back = await pathOf(b, a);
        const backWant = want === "public" && !USERS.find((u) => u.name === b)!.router ? "public" : want;
        assert.equal(back.pathKind === "relayed", backWant === "relayed", `${b} -> ${a} is on ${back.path}`);
      }));
      console.log(seen.sort().join("\n"));
      assert.deepEqual(
        seen.filter((l) => l.includes("EXPECTED")),
        [],
        "every pair on the path the topology allows",
      );
      for (let k = 0; k < pairs.length; k += 4) {
        await Promise.all(
          pairs.slice(k, k + 4).map(async ([a, b]) => {
            await send(a, b);
            await send(b, a);
          }),
        );
      }

      // The relay forwarded sessions (so the relayed pairs really went through it) and never saw a message.
      const captured = await Deno.readFile(capture);
      assert.ok(captured.length > 10_000, `relay forwarded ${captured.length} bytes`);
      const hay = Buffer.from(captured);
      for (const t of texts) assert.equal(hay.includes(Buffer.from(t)), false, `relay saw "${t}"`);
      assert.equal(hay.includes(Buffer.from("secret from")), false);
    } finally {
      await endLabRun(procs.values(), serve, lab, root);
    }
  },
});
