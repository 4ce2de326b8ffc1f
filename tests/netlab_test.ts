/**
 * The network lab itself (tests/helpers/netlab.ts), so that tests built on it can trust it: hosts behind a
 * NAT reach the public segment and are seen there as their router's WAN address (two layers of NAT show the
 * outer one), the public side cannot open a connection to a host behind a NAT, a firewalled public host
 * answers no new connection, and close() leaves no namespace behind.
 */
import assert from "node:assert/strict";
import { buildLab, type Lab, labAvailable } from "./helpers/netlab.ts";
import { toolsRequired } from "./helpers/tools.ts";

/** A TCP server in `host` that writes back the address it sees, and exits after `n` connections. */
const ECHO_ADDR = `
const l = Deno.listen({ hostname: "0.0.0.0", port: 7000 });
console.log("ready");
let n = Number(Deno.args[0]);
for await (const c of l) {
  await c.write(new TextEncoder().encode(c.remoteAddr.hostname + "\\n"));
  c.close();
  if (--n === 0) break;
}
`;
const CONNECT = `
try {
  const c = await Deno.connect({ hostname: Deno.args[0], port: 7000 });
  const buf = new Uint8Array(100);
  const n = await c.read(buf);
  console.log(new TextDecoder().decode(buf.subarray(0, n ?? 0)).trim());
} catch (e) {
  console.log("ERR " + e.name);
}
`;

const deno = Deno.execPath();

/** Runs `script` (deno eval) in the lab's `host` and returns what it printed. */
async function runScript(lab: Lab, host: string, script: string, args: string[]): Promise<string> {
  const out = await lab.command(host, deno, ["eval", "--quiet", script, "--", ...args], {
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test({
  name: "network lab: NATs rewrite sources, block unsolicited inbound; a host firewall drops new connections",
  ignore: !labAvailable() && !toolsRequired(),
  fn: async () => {
    assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
    const lab = await buildLab({
      routers: [
        { name: "home", nat: "cone" },
        { name: "sym", nat: "symmetric" },
        { name: "carrier", nat: "cone" },
        { name: "inner", nat: "cone", behind: "carrier" },
      ],
      hosts: [
        { name: "pub" },
        { name: "fw", firewall: true },
        { name: "a", router: "home" },
        { name: "b", router: "sym" },
        { name: "c", router: "inner" },
      ],
    });
    const run = (host: string, script: string, args: string[]) => runScript(lab, host, script, args);
    const server = lab.command("pub", deno, ["eval", "--quiet", ECHO_ADDR, "--", "3"], {
      stdout: "piped",
      stderr: "null",
    }).spawn();
    try {
      const reader = server.stdout.getReader();
      assert.match(new TextDecoder().decode((await reader.read()).value), /ready/);
      const pub = lab.host("pub").address;
      assert.match(pub, /^198\.18\.0\./);
      assert.equal(await run("a", CONNECT, [pub]), lab.routerWan.get("home"));
      assert.equal(await run("b", CONNECT, [pub]), lab.routerWan.get("sym"));
      assert.equal(await run("c", CONNECT, [pub]), lab.routerWan.get("carrier"), "outer NAT is what is seen");
      // From the public side, a host behind NAT has no reachable address; the firewalled host drops the SYN.
      assert.match(await run("pub", CONNECT, [lab.host("a").address]), /^ERR/);
      assert.match(await run("pub", CONNECT, [lab.routerWan.get("home")!]), /^ERR/);
      const fw = await Promise.race([
        run("pub", CONNECT, [lab.host("fw").address]),
        new Promise<string>((r) => setTimeout(() => r("TIMEOUT"), 3000)),
      ]);
      assert.ok(fw === "TIMEOUT" || fw.startsWith("ERR"), `firewalled host answered: ${fw}`);
      reader.releaseLock();
    } finally {
      try {
        server.kill("SIGKILL");
      } catch { /* already gone */ }
      await server.status;
      await lab.close();
    }
    const left = new TextDecoder().decode(
      (await new Deno.Command("ip", { args: ["netns", "list"] }).output()).stdout,
    );
    assert.equal(
      left.split("\n").filter((l) => [...lab.hosts.values()].some((h) => l.startsWith(h.ns))).length,
      0,
    );
  },
});

/** As ECHO_ADDR, on every IPv6 address. */
const ECHO_ADDR6 = ECHO_ADDR.replace('hostname: "0.0.0.0"', 'hostname: "::"');

Deno.test({
  name:
    "network lab, IPv6: no NAT (a host is seen as itself), and a home router forwards no unsolicited inbound",
  ignore: !labAvailable() && !toolsRequired(),
  fn: async () => {
    assert.ok(labAvailable(), "the lab needs root, iproute2 and nftables (CI installs them)");
    const lab = await buildLab({
      ipv6: true,
      routers: [{ name: "home", nat: "cone" }, { name: "other", nat: "symmetric" }],
      hosts: [{ name: "pub" }, { name: "a", router: "home" }, { name: "b", router: "other" }],
    });
    const run = (host: string, script: string, args: string[]) => runScript(lab, host, script, args);
    const servers: Deno.ChildProcess[] = [];
    const serve = async (host: string) => {
      const s = lab.command(host, deno, ["eval", "--quiet", ECHO_ADDR6, "--", "10"], {
        stdout: "piped",
        stderr: "null",
      }).spawn();
      servers.push(s);
      const reader = s.stdout.getReader();
      assert.match(new TextDecoder().decode((await reader.read()).value), /ready/);
      reader.releaseLock();
    };
    const silent = (p: Promise<string>) =>
      Promise.race([p, new Promise<string>((r) => setTimeout(() => r("TIMEOUT"), 3000))]);
    try {
      const a6 = lab.host("a").address6!;
      const b6 = lab.host("b").address6!;
      const pub6 = lab.host("pub").address6!;
      assert.match(pub6, /^2001:db8:ff::/);
      assert.match(a6, /^2001:db8:\d+::/);
      await serve("pub");
      // Out through the home router: the public side sees the host's own address (no NAT on IPv6), and
      // IPv4 still goes through the NAT.
      assert.equal(await run("a", CONNECT, [pub6]), a6);
      assert.equal(await run("b", CONNECT, [pub6]), b6);
      // (The dual-stack server sees IPv4 as an IPv4-mapped IPv6 address.)
      assert.equal(
        (await run("a", CONNECT, [lab.host("pub").address])).replace(/^::ffff:/, ""),
        lab.routerWan.get("home"),
      );
      // In: a connection from outside to a home host is dropped by its router (no answer, not a reset).
      await serve("a");
      const fromPub = await silent(run("pub", CONNECT, [a6]));
      assert.ok(fromPub === "TIMEOUT" || fromPub.startsWith("ERR"), `a answered the public side: ${fromPub}`);
      assert.equal(
        await silent(run("b", CONNECT, [a6])),
        "TIMEOUT",
        "dropped silently, from another home too",
      );
      // Within the LAN nothing is in the way.
      await lab.move("b", "home");
      assert.equal(await run("b", CONNECT, [a6]), lab.host("b").address6);
    } finally {
      for (const s of servers) {
        try {
          s.kill("SIGKILL");
        } catch { /* already gone */ }
        await s.status;
      }
      await lab.close();
    }
  },
});
