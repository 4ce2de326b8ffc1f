/**
 * The reachability check across real NATs, in network namespaces (tests/helpers/netlab.ts), with the real
 * `securechat serve` and `securechat chat --headless`:
 * - a user behind a home router (cone NAT, no mapping): its LAN candidate and the address the phonebook saw
 *   are listed, neither as reachable (the phonebook may not reach into a LAN, and the NAT drops its probe);
 * - a user behind a router that maps its port over NAT-PMP: the mapping is listed as reachable, its LAN
 *   address is not;
 * - a user on a public address that also advertises an address where nobody answers, first: only the real
 *   one is reachable, and a caller's first (and here only) attempt goes to it: the caller's own namespace
 *   counts the SYNs it sends to the dead address, and there are none.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildLab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";
import { type HeadlessProc, spawnHeadless } from "./helpers/chat.ts";
import { enrollIn, startResponder, startServe } from "./helpers/reach.ts";

/** On the public segment, where no host is: a candidate nobody answers at. */
const DEAD = "198.18.0.77";
const PUB_PORT = 4100;

/** Reads a user entry from inside the lab (the phonebook listens on the lab's public segment only). */
const LOOKUP = `
const [url, caFile, name] = Deno.args;
const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(caFile)] });
const r = await fetch(url + "/v1/users/" + name, { client });
console.log(await r.text());
`;

interface Entry {
  candidates: { host: string; port: number; via?: string }[];
  reachable: { host: string; port: number }[];
  reachCheckedAt: number | null;
}

Deno.test({
  name:
    "reach check in a lab: LAN and NATed candidates unverified, public and mapped ones verified, dialled first",
  ignore: !labAvailable() && !toolsRequired(),
  fn: async () => {
    assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
    const lab = await buildLab({
      routers: [
        { name: "home", nat: "cone", silentDrop: true },
        { name: "pmp", nat: "cone", silentDrop: true },
        { name: "away", nat: "cone", silentDrop: true },
      ],
      hosts: [
        { name: "pb" },
        { name: "pub" },
        { name: "natted", router: "home" },
        { name: "mapped", router: "pmp" },
        { name: "caller", router: "away" },
      ],
    });
    const root = await Deno.makeTempDir({ prefix: "securechat-check-" });
    const procs: HeadlessProc[] = [];
    let serve: Deno.ChildProcess | null = null;
    let responder: Awaited<ReturnType<typeof startResponder>> | null = null;
    try {
      responder = await startResponder(lab, "pmp");
      const s = await startServe(lab, join(root, "pb"), join(root, "capture.bin"));
      serve = s.child;
      const entry = async (name: string): Promise<Entry> => {
        const out = await lab.command("caller", Deno.execPath(), [
          "eval",
          "--quiet",
          LOOKUP,
          "--",
          s.url,
          join(root, "pb", "ca.pem"),
          name,
        ], { stdout: "piped", stderr: "piped", env: { NO_COLOR: "1" } }).output();
        assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
        return JSON.parse(new TextDecoder().decode(out.stdout));
      };
      /** The entry once `ok` holds for it (bounded). */
      const entryWhen = async (name: string, ok: (e: Entry) => boolean, what: string) => {
        const end = Date.now() + 30_000;
        let e = await entry(name);
        while (!ok(e)) {
          if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(e)}`);
          await new Promise((r) => setTimeout(r, 250));
          e = await entry(name);
        }
        return e;
      };
      for (const u of ["pub", "natted", "mapped", "caller"]) await enrollIn(lab, u, s, join(root, u));
      const pubIp = lab.host("pub").address;
      const pub = spawnHeadless(join(root, "pub"), {
        netns: lab.nsOf("pub"),
        args: [
          "--listen",
          `0.0.0.0:${PUB_PORT}`,
          "--advertise",
          `${DEAD}:${PUB_PORT}`,
          "--advertise",
          `${pubIp}:${PUB_PORT}`,
        ],
      });
      const natted = spawnHeadless(join(root, "natted"), { netns: lab.nsOf("natted") });
      const mapped = spawnHeadless(join(root, "mapped"), { netns: lab.nsOf("mapped") });
      const caller = spawnHeadless(join(root, "caller"), { netns: lab.nsOf("caller") });
      procs.push(pub, natted, mapped, caller);
      for (
        const [n, p] of [["pub", pub], ["natted", natted], ["mapped", mapped], ["caller", caller]] as const
      ) {
        await p.waitEvent((e) => e.event === "ready", 60_000, `${n} ready`);
      }

      // Behind a NAT without a mapping: listed, checked, not reachable.
      const lanIp = lab.host("natted").address;
      const n = await entryWhen(
        "natted",
        (e) => e.reachCheckedAt !== null && e.candidates.some((c) => c.host === lanIp),
        "natted's check",
      );
      assert.ok(
        n.candidates.some((c) => c.host === lab.routerWan.get("home")),
        "the observed address listed",
      );
      assert.deepEqual(n.reachable, [], JSON.stringify(n));

      // Mapped: the mapping answers as the user, the LAN address is not tried.
      const wan = lab.routerWan.get("pmp")!;
      const m = await entryWhen(
        "mapped",
        (e) => e.candidates.some((c) => c.via === "mapping") && e.reachCheckedAt !== null,
        `mapped's check (responder: ${responder.said()})`,
      );
      const mapping = m.candidates.find((c) => c.via === "mapping")!;
      assert.equal(mapping.host, wan);
      assert.ok(m.reachable.some((r) => r.host === wan && r.port === mapping.port), JSON.stringify(m));
      assert.equal(m.reachable.some((r) => r.host === lab.host("mapped").address), false);

      // Public with a dead address listed first: only the real one is reachable.
      const p = await entryWhen("pub", (e) => e.reachCheckedAt !== null, "pub's check");
      assert.deepEqual(p.candidates.slice(0, 2), [{ host: DEAD, port: PUB_PORT }, {
        host: pubIp,
        port: PUB_PORT,
      }]);
      assert.deepEqual(p.reachable, [{ host: pubIp, port: PUB_PORT }]);

      // The caller's first attempt goes to the verified address: no SYN ever leaves it for the dead one.
      const cns = "caller";
      await lab.run(cns, ["nft", "add", "table", "ip", "probe"]);
      await lab.run(cns, [
        "nft",
        "add chain ip probe out { type filter hook output priority 0 ; }",
      ]);
      await lab.run(cns, ["nft", "add", "rule", "ip", "probe", "out", "ip", "daddr", DEAD, "counter"]);
      await caller.cmd({ cmd: "send", to: "pub", text: "to the address the phonebook reached", ref: 1 });
      const q = await caller.waitEvent((e) => e.event === "queued" && e.ref === 1);
      await pub.waitEvent(
        (e) => e.event === "message" && e.text === "to the address the phonebook reached",
        30_000,
      );
      await caller.waitEvent((e) => e.event === "delivered" && e.id === q.id, 30_000);
      await caller.cmd({ cmd: "info", name: "pub", ref: 2 });
      const info = (await caller.waitEvent((e) => e.event === "info" && e.ref === 2)).peer as Record<
        string,
        string
      >;
      assert.equal(info.pathKind, "public", info.path);
      assert.equal(info.pathAddress, `${pubIp}:${PUB_PORT}`);
      const counted = await lab.run(cns, ["nft", "list", "table", "ip", "probe"]);
      assert.match(counted, /counter packets 0 bytes 0/, counted);
    } finally {
      await Promise.all(procs.map((p) => p.kill("SIGTERM").catch(() => -1)));
      if (serve) {
        try {
          serve.kill("SIGTERM");
        } catch { /* gone */ }
        await serve.status;
      }
      await responder?.stop();
      await serve?.stderr.cancel().catch(() => {});
      await lab.close();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  },
});
