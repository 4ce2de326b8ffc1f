/**
 * The roaming row of `deno task bench reach`, in network namespaces with the real program: a friend on the
 * public side writes to a laptop at the very moment the laptop moves between its home router's LAN and a
 * café's (each router maps ports over NAT-PMP: the tests' portmap_responder.ts), and the time from that send
 * to its receipt is set against the same message when nothing moved, measured in the same run over the same
 * session. What the difference is made of: the laptop noticing the change (the address set read twice,
 * NETWORK_POLL_MS apart), dialling the friend again from its new address, and the friend probing its dead
 * session before taking the new one (DUPLICATE_PROBE_MS).
 */
import { join } from "node:path";
import { type BenchFigure, percentile } from "./harness.ts";
import { buildLab } from "../tests/helpers/netlab.ts";
import { type HeadlessProc, spawnHeadless } from "../tests/helpers/chat.ts";
import { enrollIn, responderArgs, startServe } from "../tests/helpers/reach.ts";
import { firstLine, labSkipReason, stopChildren } from "./reach_paths.ts";

const MOVES = 4;
const STILL = 10;

export async function labRoamingFigures(): Promise<BenchFigure[]> {
  const why = labSkipReason();
  if (why) {
    console.log(`  skipped: a message to a laptop that just changed networks (${why})`);
    return [];
  }
  const lab = await buildLab({
    routers: [
      { name: "home", nat: "cone", silentDrop: true },
      { name: "cafe", nat: "cone", silentDrop: true },
    ],
    hosts: [{ name: "pb" }, { name: "laptop", router: "home" }, { name: "friend" }],
  });
  const root = await Deno.makeTempDir({ prefix: "securechat-bench-roam-" });
  const children: Deno.ChildProcess[] = [];
  const procs: HeadlessProc[] = [];
  try {
    for (const r of ["home", "cafe"]) {
      const c = lab.command(r, Deno.execPath(), responderArgs(lab, r, ["--protocols=pmp"]), {
        stdout: "piped",
        stderr: "null",
        env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
      }).spawn();
      children.push(c);
      await firstLine(c, "ready");
    }
    const serve = await startServe(lab, join(root, "pb"), "");
    children.push(serve.child);
    void serve.child.stderr.pipeTo(new WritableStream()).catch(() => {});
    for (const u of ["laptop", "friend"]) await enrollIn(lab, u, serve, join(root, u));
    const laptop = spawnHeadless(join(root, "laptop"), { netns: lab.nsOf("laptop") });
    const friend = spawnHeadless(join(root, "friend"), { netns: lab.nsOf("friend") });
    procs.push(laptop, friend);
    await laptop.waitEvent((e) => e.event === "ready", 60_000, "laptop ready");
    await friend.waitEvent((e) => e.event === "ready", 60_000, "friend ready");
    const published = (router: string, after: number) =>
      laptop.waitEvent(
        (e) =>
          e.event === "log" &&
          String(e.text).startsWith(`published the port mapping ${lab.routerWan.get(router)}:`) &&
          laptop.events.indexOf(e) >= after,
        30_000,
        `the ${router} mapping published`,
      );
    await published("home", 0);

    let ref = 0;
    /** Send to receipt, friend -> laptop. */
    const message = async (text: string, before?: () => Promise<void>): Promise<number> => {
      const r = ++ref;
      const t0 = performance.now();
      await before?.();
      await friend.cmd({ cmd: "send", to: "laptop", text, ref: r });
      const q = await friend.waitEvent((e) => e.event === "queued" && e.ref === r, 15_000, "queued");
      await friend.waitEvent((e) => e.event === "delivered" && e.id === q.id, 90_000, `"${text}" delivered`);
      return performance.now() - t0;
    };
    await message("first contact");
    // The laptop answers: the friend is a contact from now on, not a stranger whose message request holds only
    // a few messages.
    await laptop.cmd({ cmd: "send", to: "friend", text: "hello", ref: 1000 });
    const q = await laptop.waitEvent((e) => e.event === "queued" && e.ref === 1000, 15_000, "queued");
    await laptop.waitEvent((e) => e.event === "delivered" && e.id === q.id, 30_000, "the answer delivered");
    const still: number[] = [];
    for (let i = 0; i < STILL; i++) still.push(await message(`still ${i}`));
    const moved: number[] = [];
    for (let i = 0; i < MOVES; i++) {
      const to = i % 2 === 0 ? "cafe" : "home";
      const mark = laptop.events.length;
      moved.push(
        await message(`moved ${i}`, async () => {
          await lab.move("laptop", to);
        }),
      );
      // The next move starts from a settled laptop: its new mapping published.
      await published(to, mark);
    }
    return [{
      name:
        "a message to a laptop that changed networks as it was sent, send to receipt (real chat processes, median)",
      value: percentile(moved.sort((a, b) => a - b), 50),
      unit: "ms",
      baseline: {
        name: "the same message when nothing moved",
        value: percentile(still.sort((a, b) => a - b), 50),
      },
      notes: `${MOVES} moves between two routers' LANs, fastest first (${
        moved.map((m) => (m / 1000).toFixed(1)).join(" ")
      } s); ` +
        `${STILL} messages for the baseline`,
    }];
  } finally {
    await Promise.all(procs.map((p) => p.kill("SIGTERM").catch(() => -1)));
    await stopChildren(children);
    await lab.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}
