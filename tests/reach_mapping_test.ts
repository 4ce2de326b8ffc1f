/**
 * Port mapping in network namespaces: a home router that maps ports over NAT-PMP (the tests' own responder,
 * tests/helpers/natpmp_responder.ts, installing real nftables DNAT rules; the client side is the real
 * `@achingbrain/nat-port-mapper`). A user behind it running `securechat chat --headless` with default flags
 * gets a mapping, publishes it first, and a user behind another router reaches it directly through the
 * mapping (path `mapped`), before any relay or punching. When the mapped user quits, the mapping is removed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import { enrollIn, startServe } from "./helpers/reach.ts";

const RESPONDER = new URL("./helpers/natpmp_responder.ts", import.meta.url).pathname;

Deno.test({
  name: "port mapping: NAT-PMP maps our port, peers dial it directly (path mapped), quitting unmaps it",
  ignore: !labAvailable() && !toolsRequired(),
  fn: async () => {
    assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
    const lab = await buildLab({
      routers: [{ name: "pmp", nat: "cone", silentDrop: true }, {
        name: "home",
        nat: "cone",
        silentDrop: true,
      }],
      hosts: [{ name: "pb" }, { name: "mapped", router: "pmp" }, { name: "other", router: "home" }],
    });
    const root = await Deno.makeTempDir({ prefix: "securechat-pmp-" });
    const procs: HeadlessProc[] = [];
    let serve: Deno.ChildProcess | null = null;
    const responder = lab.command("pmp", Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-run",
      RESPONDER,
      lab.routerLan.get("pmp")!,
      lab.routerWan.get("pmp")!,
    ], { stdout: "piped", stderr: "piped", env: { NO_COLOR: "1" } }).spawn();
    let said = "";
    const reading = (async () => {
      for await (const c of responder.stdout) said += new TextDecoder().decode(c);
    })();
    const until = async (what: string, f: () => boolean, ms = 20_000) => {
      const end = Date.now() + ms;
      while (!f()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; responder said: ${said}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      await until("the responder", () => said.includes("ready"));
      const s = await startServe(lab, join(root, "pb"), join(root, "capture.bin"));
      serve = s.child;
      for (const u of ["mapped", "other"]) await enrollIn(lab, u, s, join(root, u));
      const m = spawnHeadless(join(root, "mapped"), { netns: lab.nsOf("mapped") });
      const o = spawnHeadless(join(root, "other"), { netns: lab.nsOf("other") });
      procs.push(m, o);
      const ready = await m.waitEvent((e) => e.event === "ready", 60_000, "mapped ready");
      await o.waitEvent((e) => e.event === "ready", 60_000, "other ready");
      const port = Number(String(ready.address).split(":").pop());
      const wan = lab.routerWan.get("pmp")!;
      await m.waitEvent(
        (e) => e.event === "log" && String(e.text).startsWith(`port mapping: ${wan}:${port} -> `),
        20_000,
        "the mapping",
      ).catch((e) => {
        throw new Error(
          `${e.message}; responder: ${said}; stderr: ${m.stderr().replaceAll("\n", " ").slice(-1500)}`,
        );
      });
      assert.match(said, new RegExp(`MAP ${port} -> ${lab.host("mapped").address}:${port}`));
      assert.match(
        await lab.run("pmp", ["nft", "list", "chain", "ip", "lab", "pre"]),
        new RegExp(`dport ${port} dnat`),
      );

      // The phonebook lists the mapping first; the other user's first try reaches it.
      await o.cmd({ cmd: "send", to: "mapped", text: "through your router's mapping", ref: 1 });
      const q = await o.waitEvent((e) => e.event === "queued" && e.ref === 1);
      await m.waitEvent((e) => e.event === "message" && e.text === "through your router's mapping", 30_000);
      await o.waitEvent((e) => e.event === "delivered" && e.id === q.id, 30_000);
      await o.cmd({ cmd: "info", name: "mapped", ref: 2 });
      const info = (await o.waitEvent((e) => e.event === "info" && e.ref === 2)).peer as Record<
        string,
        string
      >;
      assert.equal(info.pathKind, "mapped", info.path);
      assert.equal(info.pathAddress, `${wan}:${port}`);

      assert.equal(await m.kill("SIGTERM"), 0);
      await until("the unmapping", () => said.includes(`UNMAP ${port}`));
      assert.doesNotMatch(await lab.run("pmp", ["nft", "list", "chain", "ip", "lab", "pre"]), /dnat/);
    } finally {
      await Promise.all(procs.map((p) => p.kill("SIGTERM").catch(() => -1)));
      for (const c of [serve, responder]) {
        if (!c) continue;
        try {
          c.kill("SIGTERM");
        } catch { /* gone */ }
        await c.status;
      }
      await reading.catch(() => {});
      await serve?.stderr.cancel().catch(() => {});
      await responder.stderr.cancel().catch(() => {});
      await lab.close();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  },
});
