/**
 * A victim chat engine in its own process (so its RSS is its own) and the hostile peers that flood it: the
 * parts shared by `deno task bench hostile` (bench/hostile_bench.ts) and tests/hostile_soak_test.ts.
 *
 * The victim runs with the real limits (message requests included); the honest peer named in `accept` is
 * one it already talks to. Over stdin it answers `rss` (its resident set, bytes) and `count NAME` (rows and
 * distinct ids of the messages from NAME in its store), one JSON line each.
 */
import net from "node:net";
import crypto from "node:crypto";
import { makeTestLeaf, type TestCa, type TestLeaf } from "./pki.ts";
import { rawDial, type RawPeer, registerKnock, startTestEngine } from "./chat.ts";
import { lineReader } from "./cli.ts";
import { decodeKnockSecret, encodeKnockSecret } from "../../contract/mod.ts";
import { encodeFrame, type Frame } from "../../client/protocol/mod.ts";
import { MAX_TEXT_BYTES } from "../../client/protocol/constants.ts";
import { importPrivateKeyPem, x509 } from "../../pki/mod.ts";

export interface VictimProcess {
  port: number;
  /** Its listener's knock secret (base64url), as the phonebook would list it. */
  knock: string;
  rss(): Promise<number>;
  /** Live JavaScript heap after a full collection, bytes. */
  heap(): Promise<number>;
  count(name: string): Promise<{ rows: number; distinct: number }>;
  stop(): Promise<void>;
}

export async function startVictimProcess(
  ca: TestCa,
  leaf: TestLeaf,
  accept: string[],
): Promise<VictimProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      // gc() before `heap` answers: live memory, not what V8 has not collected yet.
      "--v8-flags=--expose-gc",
      new URL(import.meta.url).pathname,
      "--victim",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
    env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
  }).spawn();
  const w = child.stdin.getWriter();
  const enc = new TextEncoder();
  await w.write(enc.encode(JSON.stringify({ ca, leaf, accept }) + "\n"));
  const { next: line, close: closeLines } = lineReader(child.stdout, "victim");
  // One question at a time: answers come back in order.
  let chain: Promise<unknown> = Promise.resolve();
  const ask = <T>(q: string): Promise<T> => {
    const p = chain.then(async () => {
      await w.write(enc.encode(q + "\n"));
      return JSON.parse(await line()) as T;
    });
    chain = p.catch(() => {});
    return p;
  };
  // The victim's knock secret comes over the pipe (never a command line), so the hostile peers can knock.
  const { port, knock } = JSON.parse(await line()) as { port: number; knock: string };
  registerKnock(port, decodeKnockSecret(knock)!);
  return {
    port,
    knock,
    rss: () => ask<number>("rss"),
    heap: () => ask<number>("heap"),
    count: (name) => ask<{ rows: number; distinct: number }>(`count ${name}`),
    stop: async () => {
      await w.close().catch(() => {});
      await closeLines();
      await child.status;
    },
  };
}

async function victimMain(): Promise<void> {
  const reader = Deno.stdin.readable.getReader();
  let buf = "";
  while (!buf.includes("\n")) {
    const r = await reader.read();
    if (r.done) return;
    buf += new TextDecoder().decode(r.value);
  }
  const { ca, leaf, accept } = JSON.parse(buf.slice(0, buf.indexOf("\n"))) as {
    ca: TestCa;
    leaf: TestLeaf;
    accept: string[];
  };
  // The CA's keys and certificate object do not survive JSON: rebuilt from the PEMs (the fake phonebook
  // signs its CRLs with them).
  ca.material = {
    cert: new x509.X509Certificate(ca.certPem),
    certPem: ca.certPem,
    keys: await importPrivateKeyPem(ca.keyPem),
  };
  // The real limits: an empty requestLimits is the defaults (the helper lifts them otherwise).
  const e = await startTestEngine(ca, leaf, { requestLimits: {} });
  for (const n of accept) e.engine.acceptRequest(n);
  console.log(JSON.stringify({ port: e.engine.address.port, knock: encodeKnockSecret(e.knockSecret) }));
  buf = buf.slice(buf.indexOf("\n") + 1);
  for (;;) {
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const q = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (q === "rss") console.log(JSON.stringify(Deno.memoryUsage().rss));
      else if (q === "heap") {
        (globalThis as { gc?: () => void }).gc?.();
        console.log(JSON.stringify(Deno.memoryUsage().heapUsed));
      } else if (q.startsWith("count ")) {
        const h = e.store((s) => s.history(q.slice(6)).filter((m) => m.direction === "in"));
        console.log(JSON.stringify({ rows: h.length, distinct: new Set(h.map((m) => m.id)).size }));
      }
    }
    const r = await reader.read();
    if (r.done) break;
    buf += new TextDecoder().decode(r.value);
  }
  await e.stop();
}

if (import.meta.main && Deno.args.includes("--victim")) await victimMain();

/** What the flood did, for the report. */
export interface FloodStats {
  sessions: number;
  refused: Record<string, number>;
  frames: number;
  scans: number;
}

function msgFrame(from: string, to: string, text: string): Frame {
  return { t: "msg", id: crypto.randomBytes(16).toString("hex"), from, to, text, sentAt: Date.now() };
}

/**
 * Floods `port` until `stop()`: `hostile` enrolled peers in a loop of sessions each sending pings, typing
 * notices, big messages and then garbage as fast as the socket takes them; `strangers` enrolled peers the
 * victim never talked to, each writing big messages; one scanner opening raw TCP connections and TLS
 * connections without a certificate. Returns once everything stopped.
 */
export function flood(
  ca: TestCa,
  port: number,
  victim: string,
  opts: { hostile: number; strangers: number },
): { stop(): Promise<FloodStats> } {
  let running = true;
  const stats: FloodStats = { sessions: 0, refused: {}, frames: 0, scans: 0 };
  const note = (p: RawPeer) => {
    const err = p.frames.find((f) => f.t === "error");
    const code = err && err.t === "error" ? err.code : "closed";
    stats.refused[code] = (stats.refused[code] ?? 0) + 1;
  };
  const big = "h".repeat(MAX_TEXT_BYTES);
  const kinds: ((from: string) => Frame)[] = [
    () => ({ t: "ping" }),
    () => ({ t: "typing" }),
    (from) => msgFrame(from, victim, big),
  ];
  const session = async (leaf: TestLeaf, kind: number) => {
    let p: RawPeer;
    try {
      p = await rawDial(port, leaf);
      p.send(p.hello({ from: leaf.name, to: victim, signKeyPem: leaf.keyPem }));
      await p.waitFrame((f) => f.t === "hello" || f.t === "error", 5_000);
    } catch {
      stats.refused.connect = (stats.refused.connect ?? 0) + 1;
      await new Promise((r) => setTimeout(r, 50));
      return;
    }
    stats.sessions++;
    const make = kinds[kind % kinds.length];
    for (let i = 0; running && !p.isClosed() && i < 5_000; i++) {
      stats.frames++;
      if (!p.socket.write(encodeFrame(make(leaf.name)))) {
        await Promise.race([new Promise((r) => p.socket.once("drain", r)), p.closed]);
      }
    }
    // Then garbage: a length prefix promising a frame and bytes that are not JSON.
    if (!p.isClosed()) p.raw(crypto.randomBytes(4096));
    await Promise.race([p.closed, new Promise((r) => setTimeout(r, 2_000))]);
    note(p);
    p.socket.destroy();
  };
  const workers: Promise<void>[] = [];
  const leaves = Promise.all([
    ...Array.from({ length: opts.hostile }, (_, i) => makeTestLeaf(ca, `hostile${i}`)),
    ...Array.from({ length: opts.strangers }, (_, i) => makeTestLeaf(ca, `stranger${i}`)),
  ]);
  workers.push(leaves.then(async (all) => {
    const loops = all.map(async (leaf, i) => {
      for (let k = i; running; k++) await session(leaf, leaf.name.startsWith("stranger") ? 2 : k);
    });
    await Promise.all(loops);
  }));
  // The scanner: a raw TCP connection that sends junk, then a TLS one without a certificate.
  workers.push((async () => {
    while (running) {
      stats.scans++;
      await new Promise<void>((resolve) => {
        const s = net.connect({ host: "127.0.0.1", port });
        s.on("error", () => resolve());
        s.on("close", () => resolve());
        s.once("connect", () => {
          s.write(crypto.randomBytes(512));
          setTimeout(() => s.destroy(), 100);
        });
      });
      try {
        const p = await rawDial(port, null);
        await Promise.race([p.closed, new Promise((r) => setTimeout(r, 500))]);
        p.socket.destroy();
      } catch {
        // refused: what a scanner should get
      }
    }
  })());
  return {
    stop: async () => {
      running = false;
      await Promise.all(workers);
      return stats;
    },
  };
}
