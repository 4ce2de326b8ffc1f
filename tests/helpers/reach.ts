/** Pieces of the reachability tests in network namespaces (tests/reach_*_test.ts). */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Lab, LabSpec } from "./netlab.ts";
import { CHILD_ENV, securechatArgs } from "./cli.ts";
import type { HeadlessProc } from "./chat.ts";

/** `securechat serve` on the lab host "pb" (phonebook, CA, Roughtime, relay), the CA fingerprint read from
 * its banner; relayed bytes are appended to `capture`. */
export async function startServe(lab: Lab, data: string, capture: string) {
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

/** `securechat enroll` run on the user's own machine of the lab. */
export async function enrollIn(
  lab: Lab,
  name: string,
  serve: { url: string; fp: string },
  home: string,
): Promise<void> {
  const out = await lab.command(name, Deno.execPath(), [
    ...securechatArgs(
      "enroll",
      "--server",
      serve.url,
      "--ca-fingerprint",
      serve.fp,
      "--name",
      name,
      "--home",
      home,
    ),
  ], { env: CHILD_ENV, stdout: "piped", stderr: "piped", stdin: "null" }).output();
  assert.equal(out.code, 0, `${name} enroll: ${new TextDecoder().decode(out.stderr)}`);
}

const PORTMAP_RESPONDER = new URL("./portmap_responder.ts", import.meta.url).pathname;

/** `deno` arguments that run the lab's port-mapping service (portmap_responder.ts) in router `router`, with
 * the responder's `flags`. */
export function responderArgs(lab: Lab, router: string, flags: string[] = []): string[] {
  return [
    "run",
    "--allow-net",
    "--allow-run",
    PORTMAP_RESPONDER,
    lab.routerLan.get(router)!,
    lab.routerWan.get(router)!,
    ...(lab.routerLan6.has(router) ? [`--lan6=${lab.routerLan6.get(router)}`] : []),
    ...flags,
  ];
}

/** Ends a router's service (SIGTERM), waiting for it and for the reading of what it printed. */
async function endService(child: Deno.ChildProcess, reading: Promise<unknown>): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* gone */ }
  await child.status;
  await reading.catch(() => {});
}

/** The lab's port-mapping service running in router `router` (portmap_responder.ts with `flags`), started
 * and ready: what it has said so far, a wait for what it says, and its end. */
export async function startResponder(lab: Lab, router: string, flags: string[] = []) {
  const child = lab.command(router, Deno.execPath(), responderArgs(lab, router, flags), {
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let said = "";
  const reading = (async () => {
    for await (const chunk of child.stdout) said += new TextDecoder().decode(chunk);
  })();
  /** Resolves once `f(what it said)` holds; throws after `ms` with all it said. */
  const until = async (what: string, f: (said: string) => boolean, ms = 20_000) => {
    const end = Date.now() + ms;
    while (!f(said)) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; the router said: ${said}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const stop = async () => {
    await endService(child, reading);
    await child.stderr.cancel().catch(() => {});
  };
  try {
    await until("the router's mapping service", (s) => s.includes("ready"));
  } catch (e) {
    await stop();
    throw e;
  }
  /** Restarts the router (SIGUSR1: it forgets every mapping and pinhole, and announces it with --announce). */
  const restart = () => child.kill("SIGUSR1");
  return { said: () => said, until, stop, restart };
}

/** The lab of the IPv6 home tests: alice at home and bob at the office, each behind a router with a symmetric
 * IPv4 NAT (IPv4 hole punching cannot work) and an IPv6 firewall that silently drops whatever its LAN did not
 * start; the phonebook on the public side. */
export const SYMMETRIC_IPV6_HOMES: LabSpec = {
  ipv6: true,
  routers: [
    { name: "home", nat: "symmetric", silentDrop: true },
    { name: "office", nat: "symmetric", silentDrop: true },
  ],
  hosts: [{ name: "pb" }, { name: "alice", router: "home" }, { name: "bob", router: "office" }],
};

/** Refs of the commands these helpers send: far above the ones a test numbers itself. */
let helperRef = 1_000_000;

/** `from` sends `text` to `to`; resolves once `toProc` shows it and `from` has its receipt, within `ms`
 * each. */
export async function sendDelivered(
  from: HeadlessProc,
  to: string,
  toProc: HeadlessProc,
  text: string,
  ms = 30_000,
): Promise<void> {
  const r = ++helperRef;
  await from.cmd({ cmd: "send", to, text, ref: r });
  const q = await from.waitEvent((e) => e.event === "queued" && e.ref === r, 15_000, `"${text}" queued`);
  await toProc.waitEvent((e) => e.event === "message" && e.text === text, ms, `"${text}" arrives`);
  await from.waitEvent((e) => e.event === "delivered" && e.id === q.id, ms, `"${text}" delivered`);
}

/** What `p` says of its session with `name` (the headless `info` command; the path fields are absent while
 * no session is open). */
export async function peerInfo(
  p: HeadlessProc,
  name: string,
): Promise<{ pathKind: string; path: string; pathAddress: string; connected: boolean }> {
  const r = ++helperRef;
  await p.cmd({ cmd: "info", name, ref: r });
  const e = await p.waitEvent((x) => x.event === "info" && x.ref === r, 10_000, `info on ${name}`);
  return e.peer as { pathKind: string; path: string; pathAddress: string; connected: boolean };
}

/** Ends a lab test: the chat processes, then `securechat serve`, then the lab and the test's folder. */
export async function endLabRun(
  procs: Iterable<HeadlessProc>,
  serve: Deno.ChildProcess | null,
  lab: Lab,
  root: string,
): Promise<void> {
  await Promise.all([...procs].map((p) => p.kill("SIGTERM").catch(() => -1)));
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

/** Debian's miniupnpd (package miniupnpd-nftables), a real home router's UPnP daemon, as router `router`'s
 * IPv6 firewall control: UPnP-IGD 2 on the LAN, secure mode, NAT-PMP off unless `natpmp` (it answers PCP
 * over IPv6 all the same, so both ways reach it). Its pinholes go to a chain
 * `miniupnpd` of the router's `labf` table, which the forward chain jumps to first (its IPv4 port mappings
 * stay refused: the lab's outside address is a reserved one, see docs/protocol.md "Port mapping"). Resolves
 * once it listens; `said()` is its debug log (of every start), `chain()` its chain as nft lists it. */
export async function startMiniupnpd(lab: Lab, router: string, dir: string, opts: { natpmp?: boolean } = {}) {
  await Deno.mkdir(dir, { recursive: true });
  await lab.run(router, ["nft", "add", "chain", "inet", "labf", "miniupnpd"]);
  await lab.run(router, ["nft", "insert", "rule", "inet", "labf", "forward", "jump", "miniupnpd"]);
  // The chains of its IPv4 mappings must exist for it to start, though nothing is mapped there.
  await lab.run(router, ["nft", "add", "table", "inet", "labnat"]);
  for (const c of ["prerouting_miniupnpd", "postrouting_miniupnpd"]) {
    await lab.run(router, ["nft", "add", "chain", "inet", "labnat", c]);
  }
  const conf = join(dir, "miniupnpd.conf");
  await Deno.writeTextFile(
    conf,
    [
      "ext_ifname=wan",
      "listening_ip=lan",
      "http_port=5000",
      // With it, miniupnpd also announces its start (a PCP ANNOUNCE, over IPv4 on the LAN).
      `enable_natpmp=${opts.natpmp ? "yes" : "no"}`,
      "enable_upnp=yes",
      "secure_mode=yes",
      `lease_file=${join(dir, "leases")}`,
      "uuid=5ecc4a70-0000-4000-8000-00000000ab1e",
      "upnp_table_name=labf",
      "upnp_forward_chain=miniupnpd",
      "upnp_nat_table_name=labnat",
      "upnp_nat_chain=prerouting_miniupnpd",
      "upnp_nat_postrouting_chain=postrouting_miniupnpd",
      "allow 1024-65535 192.168.0.0/16 1024-65535",
      "deny 0-65535 0.0.0.0/0 0-65535",
      "",
    ].join("\n"),
  );
  let said = "";
  const decoder = new TextDecoder();
  /** Starts the daemon; resolves with its end once it listens. */
  const spawn = async () => {
    const child = lab.command(router, "miniupnpd", ["-d", "-f", conf, "-P", join(dir, "miniupnpd.pid")], {
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const from = said.length;
    const reading = Promise.all([child.stdout, child.stderr].map(async (s) => {
      for await (const chunk of s) said += decoder.decode(chunk);
    }));
    const stop = () => endService(child, reading);
    const end = Date.now() + 10_000;
    while (!said.slice(from).includes("HTTP listening on port")) {
      if (Date.now() > end) {
        await stop();
        throw new Error(`miniupnpd did not start: ${said.slice(from)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    /** SIGKILL to the daemon itself (`ip netns exec` execs it: the child's pid is its pid). */
    const kill = async () => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await stop();
    };
    return { stop, kill };
  };
  let daemon = await spawn();
  const stop = () => daemon.stop();
  return {
    said: () => said,
    chain: () => lab.run(router, ["nft", "list", "chain", "inet", "labf", "miniupnpd"]),
    stop,
    /** Stops the daemon (SIGTERM: it says byebye and removes its rules) and starts it again on the same
     * configuration. `crash`: as a power cut instead, SIGKILL (nothing said) and its rules flushed by hand (a
     * router that lost power has none). */
    restart: async (crash = false) => {
      if (crash) {
        await daemon.kill();
        await lab.run(router, ["nft", "flush", "chain", "inet", "labf", "miniupnpd"]);
      } else await daemon.stop();
      daemon = await spawn();
    },
  };
}
