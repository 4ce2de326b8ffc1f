/**
 * Reachability across machines and NATs, in network namespaces (tests/helpers/netlab.ts): a phonebook with
 * its relay on a public address; two users behind one home router, one behind another (cone NAT), one
 * behind a symmetric NAT, one behind carrier NAT (two layers), one on a public address behind a firewall
 * that drops inbound, two on public addresses. Each runs the real `securechat chat --headless` with default
 * flags. Every pair sends both ways; each message is delivered, and the path each session took is the one
 * the topology allows: direct within a LAN and to the public user, direct from the public user too (it asks
 * the callee through the relay to dial it back: connection reversal), relayed otherwise (the firewalled
 * user's dial-back requests fail, and it falls back to the relay). The relay's capture of
 * every byte it forwarded holds none of the messages.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, type Lab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import { CHILD_ENV, securechatArgs } from "./helpers/cli.ts";

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

/** Which path a session dialled by `from` to `to` can take in this lab. */
function expectedKind(from: string, to: string): "direct" | "relayed" {
  const f = USERS.find((u) => u.name === from)!;
  const t = USERS.find((u) => u.name === to)!;
  if (f.router && f.router === t.router) return "direct"; // the same LAN
  if (!t.router && !t.firewall) return "direct"; // a public address that answers
  if (!f.router && !f.firewall) return "direct"; // reversal: the callee dials the public caller back
  return "relayed";
}

async function startServe(lab: Lab, data: string, capture: string) {
  const ip = lab.host("pb").address;
  const child = lab.command("pb", Deno.execPath(), [
    ...securechatArgs("serve", "--data", data, "--listen", `${ip}:10040`, "--hostname", ip),
  ], {
    env: { ...CHILD_ENV, SECURECHAT_RELAY_CAPTURE: capture },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const reader = child.stdout.getReader();
  const dec = new TextDecoder();
  while (!/Users enroll with/.test(out)) {
    const r = await reader.read();
    if (r.done) throw new Error(`serve ended: ${out}`);
    out += dec.decode(r.value);
  }
  reader.releaseLock();
  void child.stdout.cancel().catch(() => {});
  const fp = /CA fingerprint \(SHA-256\): ([0-9a-f ]+)/.exec(out)![1].replaceAll(" ", "");
  assert.match(out, /Relay on tcp 198\.18\.0\.\d+:10041/);
  return { child, url: `https://${ip}:10040`, fp };
}

Deno.test({
  name: "reach matrix: every pair delivers both ways with default flags; direct where possible, else relayed",
  ignore: !labAvailable() && !toolsRequired(),
  fn: async () => {
    assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
    const lab = await buildLab({
      routers: [
        { name: "home1", nat: "cone" },
        { name: "home2", nat: "cone" },
        { name: "sym", nat: "symmetric" },
        { name: "carrier", nat: "cone" },
        { name: "inner", nat: "cone", behind: "carrier" },
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
      await Promise.all(USERS.map(async (u) => {
        const out = await lab.command(u.name, Deno.execPath(), [
          ...securechatArgs(
            "enroll",
            "--server",
            s.url,
            "--ca-fingerprint",
            s.fp,
            "--name",
            u.name,
            "--home",
            join(root, u.name),
          ),
        ], { env: CHILD_ENV, stdout: "piped", stderr: "piped", stdin: "null" }).output();
        assert.equal(out.code, 0, `${u.name} enroll: ${new TextDecoder().decode(out.stderr)}`);
      }));
      for (const u of USERS) {
        procs.set(u.name, spawnHeadless(join(root, u.name), { netns: lab.host(u.name).ns }));
      }
      for (const [name, p] of procs) await p.waitEvent((e) => e.event === "ready", 60_000, `${name} ready`);

      // Every unordered pair: the first named sends (and so dials), then the other answers over the session.
      const texts: string[] = [];
      let ref = 0;
      const send = async (from: string, to: string) => {
        const text = `secret from ${from} to ${to} ${crypto.randomUUID()}`;
        texts.push(text);
        const r = ++ref;
        const p = procs.get(from)!;
        await p.cmd({ cmd: "send", to, text, ref: r });
        const q = await p.waitEvent((e) => e.event === "queued" && e.ref === r, 15_000, `${from} queued`);
        await procs.get(to)!.waitEvent(
          (e) => e.event === "message" && e.text === text,
          30_000,
          `${to} receives from ${from}`,
        );
        await p.waitEvent(
          (e) => e.event === "delivered" && e.id === q.id,
          30_000,
          `${from}->${to} delivered`,
        );
      };
      const pathOf = async (from: string, to: string) => {
        const r = ++ref;
        const p = procs.get(from)!;
        await p.cmd({ cmd: "info", name: to, ref: r });
        const e = await p.waitEvent((x) => x.event === "info" && x.ref === r, 10_000, "info");
        return e.peer as { pathKind?: string; path?: string; connected: boolean };
      };
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
            const info = await pathOf(a, b);
            const kind = info.pathKind === "relayed" ? "relayed" : "direct";
            seen.push(`${a}->${b}: ${info.path}`);
            assert.equal(String(info.path).includes("::ffff:"), false, "IPv4 shown plain");
            assert.equal(kind, expectedKind(a, b), `${a} -> ${b} took ${info.path}`);
            if (kind === "direct") {
              const ra = USERS.find((u) => u.name === a)!.router;
              const sameLan = ra !== undefined && ra === USERS.find((u) => u.name === b)!.router;
              assert.equal(info.pathKind, sameLan ? "lan" : "public", `${a} -> ${b} took ${info.path}`);
            }
            // Both ends agree on how the session runs.
            const back = await pathOf(b, a);
            assert.equal(back.pathKind === "relayed", kind === "relayed", `${b} sees ${back.path}`);
          }),
        );
      }
      console.log(seen.join("\n"));

      // The relay forwarded sessions (so the relayed pairs really went through it) and never saw a message.
      const captured = await Deno.readFile(capture);
      assert.ok(captured.length > 10_000, `relay forwarded ${captured.length} bytes`);
      const hay = Buffer.from(captured);
      for (const t of texts) assert.equal(hay.includes(Buffer.from(t)), false, `relay saw "${t}"`);
      assert.equal(hay.includes(Buffer.from("secret from")), false);
    } finally {
      await Promise.all([...procs.values()].map((p) => p.kill("SIGTERM").catch(() => -1)));
      if (serve) {
        try {
          serve.kill("SIGTERM");
        } catch { /* gone */ }
        await serve.status;
        await serve.stderr.cancel().catch(() => {});
      }
      await lab.close();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  },
});
