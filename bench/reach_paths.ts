/**
 * The lab rows of `deno task bench reach`: session set-up time per path with the real program, in network
 * namespaces (tests/helpers/netlab.ts), each against a bare mutual TLS handshake between the same
 * namespaces measured in the same run (bench/tls_probe.ts). Needs root, iproute2 and nftables; without
 * them the rows are skipped with the reason printed.
 *
 * The small internet: a phonebook with its relay and two users on the public segment ("caller", "pub"); a
 * user behind a router that maps ports (the tests' portmap_responder.ts: PCP, NAT-PMP, UPnP-IGD); users
 * behind two cone NATs that drop unsolicited SYNs (as RFC 5382 asks) and one behind a symmetric NAT. Paths:
 *   direct    caller -> pub     (its public address answers)
 *   mapped    caller -> mapd    (its router's mapping)
 *   reversed  caller -> natd    (natd cannot be dialled; asked through the relay, it dials the caller back)
 *   relayed   natb   -> symm    (no direct way: a symmetric NAT)
 *   punched   natb   -> natd    (relayed first, then TCP hole punching timed through the relay)
 * Set-up time is from `send` on a new session (both processes just started) to the `delivered` receipt: the
 * phonebook look-up, the dial race, TLS, the hello, the message and its receipt; for punched, to the moment
 * `info` reports the punched path. The baseline for each is a bare handshake between the two namespaces in
 * the direction the network allows (for relayed and punched, from the dialer to the relay's host).
 *
 * The IPv6 rows (labIpv6PunchFigures): two homes behind symmetric IPv4 NATs and IPv6 firewalls, punched over
 * IPv6, then direct through the callee's pinhole opened over PCP, over UPnP, and by Debian's miniupnpd where
 * it is installed.
 */
import { join } from "node:path";
import { type BenchFigure, percentile } from "./harness.ts";
import { buildLab, type Lab, labAvailable } from "../tests/helpers/netlab.ts";
import { type HeadlessProc, spawnHeadless } from "../tests/helpers/chat.ts";
import {
  enrollIn,
  responderArgs,
  startMiniupnpd,
  startResponder,
  startServe,
} from "../tests/helpers/reach.ts";
import { haveTool } from "../tests/helpers/tools.ts";

const REPS = 5;
const HANDSHAKES = 30;
const PROBE_PORT = 10099;
const PROBE = new URL("./tls_probe.ts", import.meta.url).pathname;

interface PathSpec {
  path: "direct" | "mapped" | "reversed" | "relayed" | "punched" | "pinhole";
  from: string;
  to: string;
  /** The pathKind `info` must end on. */
  kind: string;
  /** The bare-TLS baseline: dial from this namespace to a probe server in that one. */
  baseline: [string, string];
}

const PATHS: PathSpec[] = [
  { path: "direct", from: "caller", to: "pub", kind: "public", baseline: ["caller", "pub"] },
  { path: "mapped", from: "caller", to: "mapd", kind: "mapped", baseline: ["mapd", "caller"] },
  { path: "reversed", from: "caller", to: "natd", kind: "public", baseline: ["natd", "caller"] },
  { path: "relayed", from: "natb", to: "symm", kind: "relayed", baseline: ["natb", "pb"] },
  { path: "punched", from: "natb", to: "natd", kind: "punched", baseline: ["natb", "pb"] },
];

/** Why the lab rows cannot run here, or null. */
export function labSkipReason(): string | null {
  if (labAvailable()) return null;
  return Deno.uid() !== 0
    ? "not root (network namespaces need root)"
    : "iproute2 (ip) or nftables (nft) is missing";
}

export async function labPathFigures(): Promise<BenchFigure[]> {
  const why = labSkipReason();
  if (why) {
    console.log(`  skipped: set-up time per path in network namespaces (${why})`);
    return [];
  }
  const lab = await buildLab({
    routers: [
      { name: "maprtr", nat: "cone", silentDrop: true },
      { name: "home1", nat: "cone", silentDrop: true },
      { name: "home2", nat: "cone", silentDrop: true },
      { name: "sym", nat: "symmetric", silentDrop: true },
    ],
    hosts: [
      { name: "pb" },
      { name: "caller" },
      { name: "pub" },
      { name: "mapd", router: "maprtr" },
      { name: "natd", router: "home1" },
      { name: "natb", router: "home2" },
      { name: "symm", router: "sym" },
    ],
  });
  const root = await Deno.makeTempDir({ prefix: "securechat-bench-reach-" });
  const children: Deno.ChildProcess[] = [];
  const spawnQuiet = (host: string, args: string[]) => {
    const c = lab.command(host, Deno.execPath(), args, {
      stdout: "piped",
      stderr: "null",
      env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
    }).spawn();
    children.push(c);
    return c;
  };
  try {
    const responder = spawnQuiet("maprtr", responderArgs(lab, "maprtr", ["--protocols=pcp,pmp,upnp"]));
    await firstLine(responder, "ready");
    const serve = await startServe(lab, join(root, "pb"), "");
    children.push(serve.child);
    void serve.child.stderr.pipeTo(new WritableStream()).catch(() => {});
    const users = ["caller", "pub", "mapd", "natd", "natb", "symm"];
    await Promise.all(users.map((u) => enrollIn(lab, u, serve, join(root, u))));

    // The baselines: probe servers on the hosts dialled, each dialled from the namespace the path starts in.
    for (const host of new Set(PATHS.map((p) => p.baseline[1]))) {
      const home = join(root, host === "pb" ? "caller" : host);
      await startProbe(lab, host, home, children);
    }
    const baseline = new Map<string, number>();
    for (const p of PATHS) {
      const key = p.baseline.join(">");
      if (baseline.has(key)) continue;
      baseline.set(
        key,
        await probeDial(lab, p.baseline[0], lab.host(p.baseline[1]).address, join(root, p.baseline[0])),
      );
    }

    const figures: BenchFigure[] = [];
    for (const p of PATHS) {
      const times: number[] = [];
      const kinds: string[] = [];
      for (let i = 0; i < REPS; i++) {
        const r = await setUp(lab, root, p, i);
        times.push(r.ms);
        kinds.push(r.kind);
      }
      const off = kinds.filter((k) => k !== p.kind);
      figures.push({
        name: `session set-up, ${p.path} (${p.from} -> ${p.to}, real chat processes, median)`,
        value: percentile(times.sort((a, b) => a - b), 50),
        unit: "ms",
        baseline: {
          name: `bare mutual TLS handshake ${p.baseline[0]} -> ${p.baseline[1]}`,
          value: baseline.get(p.baseline.join(">"))!,
        },
        notes: `${REPS} fresh sessions, send to ${
          p.path === "punched" ? "the punched path" : "receipt"
        }; ${HANDSHAKES} handshakes for the baseline${
          off.length ? `; ENDED ON ${off.join(",")} instead of ${p.kind}` : ""
        }`,
      });
    }
    return figures;
  } finally {
    await stopChildren(children);
    await lab.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

/** Two homes behind symmetric IPv4 NATs with IPv6 firewalls (an IPv6 lab): relayed first, then punched over
 * IPv6 (client/upgrade.ts), timed like the punched row above, against a bare handshake from the dialer to the
 * relay's host. Each fresh session must end on a punched path to the callee's IPv6 address. */
export async function labIpv6PunchFigures(): Promise<BenchFigure[]> {
  if (labSkipReason()) return [];
  const lab = await buildLab({
    ipv6: true,
    routers: [
      { name: "home", nat: "symmetric", silentDrop: true },
      { name: "office", nat: "symmetric", silentDrop: true },
    ],
    hosts: [
      { name: "pb" },
      { name: "v6a", router: "home" },
      { name: "v6b", router: "office" },
      { name: "v6c", router: "home" },
      { name: "v6d", router: "office" },
    ],
  });
  const root = await Deno.makeTempDir({ prefix: "securechat-bench-reach6-" });
  const children: Deno.ChildProcess[] = [];
  let router: { stop(): Promise<void> } | null = null;
  try {
    const serve = await startServe(lab, join(root, "pb"), "");
    children.push(serve.child);
    void serve.child.stderr.pipeTo(new WritableStream()).catch(() => {});
    await Promise.all(["v6a", "v6b", "v6c", "v6d"].map((u) => enrollIn(lab, u, serve, join(root, u))));
    await startProbe(lab, "pb", join(root, "v6a"), children);
    const base = await probeDial(lab, "v6a", lab.host("pb").address, join(root, "v6a"));
    /** One pair per case: a stranger's messages beyond a few wait as a message request. */
    const spec = (from: string, to: string): PathSpec => ({
      path: "punched",
      from,
      to,
      kind: "punched",
      baseline: ["v6a", "pb"],
    });
    const figures: BenchFigure[] = [];
    /** REPS fresh sessions of `p`, sent `settleMs` after the start; each must end on pathKind `p.kind` to the
     * callee's IPv6 address. */
    const row = async (p: PathSpec, settleMs: number, name: string, what: string) => {
      const times: number[] = [];
      const off: string[] = [];
      for (let i = 0; i < REPS; i++) {
        const r = await setUp(lab, root, p, i, settleMs);
        times.push(r.ms);
        if (r.kind !== p.kind || !r.path.includes(lab.host(p.to).address6!)) off.push(r.path);
      }
      figures.push({
        name,
        value: percentile(times.sort((a, b) => a - b), 50),
        unit: "ms",
        baseline: { name: "bare mutual TLS handshake v6a -> pb", value: base },
        notes: `${REPS} fresh sessions, send to the ${what} path; runs ${
          times.map((t) => t.toFixed(0)).join("/")
        } ms${off.length ? `; ENDED ON ${off.join(", ")} instead of ${what} over IPv6` : ""}`,
      });
    };
    // Sent at once after the start (the phonebook's check of v6a's addresses, REACH_TIMEOUT_MS, still
    // running: v6a asks v6b to dial back and waits for it), and a few seconds later (the check found v6a's
    // IPv6 address closed: no dial-back is asked for, the relay is tried at once).
    for (
      const [when, settleMs, p] of [["sent at start", 0, spec("v6a", "v6b")], [
        "sent 3 s after start",
        3000,
        spec("v6c", "v6d"),
      ]] as [string, number, PathSpec][]
    ) {
      await row(
        p,
        settleMs,
        `session set-up, punched over IPv6 (${p.from} -> ${p.to}, both behind symmetric NATs, ${when}, median)`,
        "punched",
      );
    }
    // The same homes once the callee's router opens IPv6 pinholes over PCP (started only now: with it the
    // cases above would end direct instead of punched). The callee's check has run (3 s), as in the second
    // case above; the first contact goes straight to its IPv6 address.
    // Then once more with a router that offers UPnP's WANIPv6FirewallControl instead (the pinhole found by an
    // SSDP search over IPv6, then opened with SOAP).
    // And with Debian's miniupnpd as the callee's router, where it is installed (it answers both ways).
    const services: [string, () => Promise<{ stop(): Promise<void> }>][] = [
      ["PCP", () => startResponder(lab, "home", ["--protocols=pcp6"])],
      ["UPnP", () => startResponder(lab, "home", ["--protocols=upnp6"])],
    ];
    if (haveTool("miniupnpd")) {
      services.push(["miniupnpd", () => startMiniupnpd(lab, "home", join(root, "miniupnpd"))]);
    }
    for (const [via, start] of services) {
      router = await start();
      await row(
        { path: "pinhole", from: "v6d", to: "v6c", kind: "ipv6", baseline: ["v6a", "pb"] },
        3000,
        `session set-up, direct over IPv6 through the callee's ${via} pinhole (v6d -> v6c, sent 3 s after ` +
          "start, median)",
        "direct",
      );
      await router.stop();
      router = null;
    }
    return figures;
  } finally {
    await router?.stop();
    await stopChildren(children);
    await lab.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

/** Ends the lab's child processes (SIGTERM) and waits for them. */
export async function stopChildren(children: Deno.ChildProcess[]): Promise<void> {
  for (const c of children) {
    try {
      c.kill("SIGTERM");
    } catch { /* gone */ }
    await c.status;
    await c.stdout.cancel().catch(() => {});
  }
}

/** Reads `c`'s stdout until `want` appears, then drains it. */
export async function firstLine(c: Deno.ChildProcess, want: string): Promise<void> {
  const reader = c.stdout.getReader();
  const dec = new TextDecoder();
  let out = "";
  try {
    while (!out.includes(want)) {
      const r = await reader.read();
      if (r.done) throw new Error(`child ended before "${want}": ${out}`);
      out += dec.decode(r.value);
    }
  } finally {
    reader.releaseLock();
  }
  // Drained from now on, so a chatty child never blocks on a full pipe.
  void c.stdout.pipeTo(new WritableStream()).catch(() => {});
}

/** Starts the bare-TLS baseline's server (bench/tls_probe.ts) in `host`, with the certificate of the user at
 * `home`, and waits until it listens; the process goes into `children` (ended by the caller). */
async function startProbe(
  lab: Lab,
  host: string,
  home: string,
  children: Deno.ChildProcess[],
): Promise<void> {
  const c = lab.command(host, Deno.execPath(), [
    "run",
    "--allow-net",
    "--allow-read",
    PROBE,
    "serve",
    home,
    "0.0.0.0",
    `${PROBE_PORT}`,
  ], { stdout: "piped", stderr: "null", env: { NO_COLOR: "1", RUST_BACKTRACE: "0" } }).spawn();
  children.push(c);
  await firstLine(c, "listening");
}

async function probeDial(lab: Lab, from: string, host: string, home: string): Promise<number> {
  const out = await lab.command(from, Deno.execPath(), [
    "run",
    "--allow-net",
    "--allow-read",
    PROBE,
    "dial",
    home,
    host,
    String(PROBE_PORT),
    String(HANDSHAKES),
  ], { stdout: "piped", stderr: "piped", env: { NO_COLOR: "1", RUST_BACKTRACE: "0" } }).output();
  if (!out.success) throw new Error(`tls probe ${from} -> ${host}: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(new TextDecoder().decode(out.stdout)).medianMs;
}

/** One fresh session on `p`'s path: both chats started anew, send to receipt (or to the punched path). */
async function setUp(
  lab: Lab,
  root: string,
  p: PathSpec,
  rep: number,
  settleMs = 0,
): Promise<{ ms: number; kind: string; path: string }> {
  const callee = spawnHeadless(join(root, p.to), { netns: lab.nsOf(p.to) });
  const dialer = spawnHeadless(join(root, p.from), { netns: lab.nsOf(p.from) });
  const procs: HeadlessProc[] = [callee, dialer];
  try {
    await callee.waitEvent((e) => e.event === "ready", 60_000, `${p.to} ready`);
    await dialer.waitEvent((e) => e.event === "ready", 60_000, `${p.from} ready`);
    if (p.path === "mapped") {
      await callee.waitEvent(
        (e) => e.event === "log" && String(e.text).startsWith("published the port mapping "),
        20_000,
        "the mapping published",
      );
    }
    if (p.path === "pinhole") {
      await callee.waitEvent(
        (e) => e.event === "log" && String(e.text).startsWith("IPv6 pinhole: "),
        20_000,
        "the pinhole open",
      );
    }
    // A contact made a while after the start: the phonebook's check of both listings has run.
    if (settleMs) await new Promise((r) => setTimeout(r, settleMs));
    const t0 = performance.now();
    await dialer.cmd({ cmd: "send", to: p.to, text: `set-up ${p.path} ${rep}`, ref: 1 });
    const q = await dialer.waitEvent((e) => e.event === "queued" && e.ref === 1, 15_000, "queued");
    await dialer.waitEvent((e) => e.event === "delivered" && e.id === q.id, 60_000, `${p.path} delivered`);
    let ms = performance.now() - t0;
    let ref = 1;
    let path = "";
    const kindNow = async () => {
      await dialer.cmd({ cmd: "info", name: p.to, ref: ++ref });
      const r = ref;
      const e = await dialer.waitEvent((x) => x.event === "info" && x.ref === r, 10_000, "info");
      path = String((e.peer as { path?: string }).path);
      return String((e.peer as { pathKind?: string }).pathKind);
    };
    let kind = await kindNow();
    if (p.path === "punched") {
      const end = Date.now() + 30_000;
      while (kind !== "punched" && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 50));
        kind = await kindNow();
      }
      ms = performance.now() - t0;
    }
    return { ms, kind, path };
  } finally {
    await Promise.all(procs.map((x) => x.kill("SIGTERM").catch(() => -1)));
  }
}
