/**
 * The listener's per-address pending cap counts an IPv6 /64 as one address (one host usually holds a whole
 * /64): real sockets from several addresses of one /64 share its slots, another /64 has its own. IPv6 test
 * addresses (2001:db8::/32, RFC 3849) exist only on the loopback of a network namespace the test makes; the
 * listener and the connections run in a child process inside it. Needs root and `ip`.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { haveTool } from "./helpers/tools.ts";
import { startTestListener, until } from "./helpers/chat.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";

const SAME_64 = ["2001:db8:1:2::10", "2001:db8:1:2::20", "2001:db8:1:2:ffff::30"];
const OTHER_64 = "2001:db8:1:3::10";

/** In the namespace: a listener on an IPv6 test address, cap 2 per address; raw TCP connections that never start
 * TLS from the addresses above, one at a time; prints what the listener did. */
async function child(): Promise<void> {
  const ca = await makeTestCa();
  const bob = await makeTestLeaf(ca, "bob");
  const l = await startTestListener(ca, bob, {
    host: "2001:db8:1:2::1",
    limits: { maxPendingPerAddress: 2, handshakeTimeoutMs: 30_000 },
  });
  const open = (from: string) =>
    new Promise<{ closed: () => boolean }>((resolve, reject) => {
      let closed = false;
      const s = net.connect({ host: "2001:db8:1:2::1", port: l.address.port, localAddress: from });
      s.once("error", reject);
      s.once("close", () => closed = true);
      s.once("connect", () => resolve({ closed: () => closed }));
    });
  const sockets: { closed: () => boolean }[] = [];
  // Two from the /64: its two slots.
  sockets.push(await open(SAME_64[0]), await open(SAME_64[1]));
  await until(() => l.sessions.stats.accepted === 2, 5000, "two accepted");
  const evictedAfterTwo = l.sessions.stats.evicted;
  // A third address of the same /64: the /64 is full, its oldest pending connection goes.
  sockets.push(await open(SAME_64[2]));
  await until(() => sockets[0].closed(), 5000, "oldest of the /64 evicted");
  const evictedAfterThird = l.sessions.stats.evicted;
  // Another /64 has slots of its own: nothing is evicted.
  sockets.push(await open(OTHER_64));
  await until(() => l.sessions.stats.accepted === 4, 5000, "four accepted");
  await new Promise((r) => setTimeout(r, 200));
  console.log(JSON.stringify({
    evictedAfterTwo,
    evictedAfterThird,
    evictedAfterOther: l.sessions.stats.evicted,
    open: sockets.map((s) => !s.closed()),
  }));
  await l.stop();
  Deno.exit(0);
}

if (import.meta.main && Deno.args.includes("--child")) await child();

async function sh(args: string[]): Promise<void> {
  const out = await new Deno.Command(args[0], { args: args.slice(1), stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

Deno.test({
  name: "listener cap: addresses of one IPv6 /64 share its pending slots; another /64 has its own",
  ignore: Deno.args.includes("--child"),
  fn: async () => {
    if (Deno.uid() !== 0 || !haveTool("ip")) {
      console.warn("not root or no `ip`: skipping the IPv6 /64 listener test (needs a network namespace)");
      return;
    }
    const ns = `sc-v6-${crypto.randomUUID().slice(0, 8)}`;
    await sh(["ip", "netns", "add", ns]);
    try {
      await sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
      for (const a of ["2001:db8:1:2::1", ...SAME_64, OTHER_64]) {
        await sh(["ip", "-n", ns, "-6", "addr", "add", `${a}/64`, "dev", "lo", "nodad"]);
      }
      const out = await new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          ns,
          Deno.execPath(),
          "run",
          "--allow-net",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          "--allow-sys",
          new URL(import.meta.url).pathname,
          "--child",
        ],
        stdout: "piped",
        stderr: "piped",
        env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, text + new TextDecoder().decode(out.stderr));
      const r = JSON.parse(text.trim().split("\n").pop()!);
      assert.equal(r.evictedAfterTwo, 0, "two connections fit the /64's two slots");
      assert.equal(r.evictedAfterThird, 1, "a third address of the same /64 evicts its oldest");
      assert.equal(r.evictedAfterOther, 1, "another /64 evicts nothing");
      assert.deepEqual(r.open, [false, true, true, true]);
    } finally {
      await sh(["ip", "netns", "del", ns]);
    }
  },
});
