/**
 * `deno task bench chat`: the chat engine over one mutual-TLS session, each figure against a raw node:tls
 * echo of the same frame size measured in the same run.
 * - messages/s from send to delivery receipt (stored on both sides, each message on disk before its receipt)
 *   with 1,000, 1,500 and 10,000 messages in flight (all sent at once; the group commit shares fsyncs among
 *   them), and with each send awaited before the next, vs echoes/s of as many frames written at once;
 * - the CPU time (user + system, this process) each of those messages cost, vs each echoed frame: steadier
 *   than the rates on a shared machine;
 * - median and p99 latency send -> delivery receipt, one message at a time, vs echo round trip;
 * - session set-up (TLS 1.3 + hello both ways + certificate checks) vs a bare mutual-TLS handshake;
 * - the store's writer thread on vs off, alternating rounds of 10,000 in flight on two pairs of engines in
 *   this run: messages/s, and how late the event loop answered meanwhile (what a terminal UI feels);
 * - resident memory of a client process holding 100 open sessions vs the same process idle.
 * Both engines, the echo server and the echo client run in this one process on one JavaScript thread; each
 * engine's store applies its batches on its own writer thread (client/store/writer_thread.ts), as it does for
 * a user, so a burst of ours may use the machine's second core where the echo, which stores nothing, has no
 * use for it. The CPU figures count every thread of the process (the writers' too): they are the cost.
 * When run as a program with `--hub` it is that client process (configuration on stdin).
 */
import tls from "node:tls";
import process from "node:process";
import { type BenchFigure, percentile } from "./harness.ts";
import { decodeKnockSecret, encodeKnockSecret } from "../contract/mod.ts";
import { makeTestCa, makeTestLeaf, type TestCa, type TestLeaf } from "../tests/helpers/pki.ts";
import { lineReader } from "../tests/helpers/cli.ts";
import {
  FakeDirectory,
  rawDial,
  type RawPeer,
  registerKnock,
  startTestEngine,
  type TestEngine,
} from "../tests/helpers/chat.ts";
import { encodeFrame } from "../client/protocol/mod.ts";
import { importPrivateKeyPem, x509 } from "../pki/mod.ts";

const THROUGHPUT_MESSAGES = 1000;
/** 1,500: a burst that is not a whole batch, so its last receipts go out in a write of their own at the end
 * (what Nagle's algorithm held for the peer's delayed ACK before the sessions set TCP_NODELAY). */
const IN_FLIGHT = [1000, 1500, 10_000];
const IN_FLIGHT_ROUNDS = 5;
const WRITER_IN_FLIGHT = 10_000;
const WRITER_ROUNDS = 7;
const LATENCY_MESSAGES = 1000;
const HANDSHAKES = 30;
const SESSIONS = 100;
const TEXT = "x".repeat(100);

function frameSize(): number {
  return encodeFrame({
    t: "msg",
    id: "0".repeat(32),
    from: "alice",
    to: "bob",
    text: TEXT,
    sentAt: Date.now(),
  }).length;
}

/** A raw TLS echo server and client exchanging frames of `size` bytes. */
async function echoPair(ca: TestCa, server: TestLeaf, client: TestLeaf, size: number) {
  const srv = tls.createServer({
    cert: server.certPem,
    key: server.keyPem,
    ca: ca.certPem,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
  }, (s) => s.on("data", (d) => s.write(d)));
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as { port: number }).port;
  const sock = await new Promise<tls.TLSSocket>((resolve) => {
    const c = tls.connect({
      host: "127.0.0.1",
      port,
      cert: client.certPem,
      key: client.keyPem,
      rejectUnauthorized: false,
      minVersion: "TLSv1.3",
    }, () => resolve(c));
  });
  let received = 0;
  let onBytes: (() => void) | null = null;
  sock.on("data", (d: Uint8Array) => {
    received += d.length;
    onBytes?.();
  });
  const payload = new Uint8Array(size).fill(7);
  /** Writes `n` frames and resolves when `n` frames came back. */
  const exchange = (n: number) =>
    new Promise<void>((resolve) => {
      const target = received + n * size;
      onBytes = () => {
        if (received >= target) {
          onBytes = null;
          resolve();
        }
      };
      for (let i = 0; i < n; i++) sock.write(payload);
    });
  return {
    exchange,
    close: async () => {
      sock.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

function cpuMicros(u: { user: number; system: number }): number {
  return u.user + u.system;
}

async function pairOfEngines(ca: TestCa, storeWriterThread?: boolean) {
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const bobDir = new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint });
  // The per-peer inbox limits (PEER_MESSAGE_BURST, PEER_UNREAD_BYTES) would cut this run's 35,000 unread
  // messages a minute short: this figure is the engine's throughput, `bench hostile` measures the limits.
  const inboxLimits = { burst: 1e9, perMinute: 1e9, unreadBytes: 1e12 };
  const bob = await startTestEngine(ca, bobLeaf, { directory: bobDir, inboxLimits, storeWriterThread });
  const alice = await startTestEngine(ca, aliceLeaf, {
    inboxLimits,
    storeWriterThread,
    directory: new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint }, bobDir.entries),
  });
  return { alice, bob, aliceLeaf, bobLeaf };
}

async function deliveredCount(e: TestEngine, n: number): Promise<void> {
  while (e.log.of("delivered").length < n) await new Promise((r) => setTimeout(r, 1));
}

/** Sends `n` messages at once (all in flight together) and resolves when all `n` receipts are back. */
function sendAllAtOnce(e: TestEngine, n: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let left = n;
    const ids = new Set<string>();
    const early = new Set<string>();
    const off = e.engine.subscribe((ev) => {
      if (ev.event !== "delivered") return;
      if (ids.delete(ev.id)) {
        if (--left === 0) {
          off();
          resolve();
        }
      } else early.add(ev.id);
    });
    for (let i = 0; i < n; i++) {
      e.engine.send("bob", TEXT).then((m) => {
        // A receipt may come back before this send's own promise is seen.
        if (early.delete(m.id)) {
          if (--left === 0) {
            off();
            resolve();
          }
        } else ids.add(m.id);
      }, (err) => {
        off();
        reject(err);
      });
    }
  });
}

/** Event-loop lag while `fn` runs: how late a 1 ms interval fires, each time (ms). */
async function lagDuring(fn: () => Promise<void>): Promise<number[]> {
  const lags: number[] = [];
  let last = performance.now();
  const t = setInterval(() => {
    const now = performance.now();
    lags.push(Math.max(0, now - last - 1));
    last = now;
  }, 1);
  try {
    await fn();
  } finally {
    clearInterval(t);
  }
  return lags;
}

/** The store's writer thread on and off, side by side in this run: two pairs of engines, alternating rounds
 * of WRITER_IN_FLIGHT messages sent at once; the rate to the last receipt and how late the event loop (that
 * runs the sessions and the terminal) answered meanwhile. */
async function writerThreadFigures(ca: TestCa): Promise<BenchFigure[]> {
  const on = await pairOfEngines(ca, true);
  const off = await pairOfEngines(ca, false);
  const rates = { on: [] as number[], off: [] as number[] };
  const lags = { on: [] as number[], off: [] as number[] };
  try {
    for (const p of [on, off]) await sendAllAtOnce(p.alice, IN_FLIGHT[0]);
    for (let r = 0; r < WRITER_ROUNDS; r++) {
      for (const [which, p] of [["on", on], ["off", off]] as const) {
        const t = performance.now();
        lags[which].push(...await lagDuring(() => sendAllAtOnce(p.alice, WRITER_IN_FLIGHT)));
        rates[which].push(WRITER_IN_FLIGHT / ((performance.now() - t) / 1000));
      }
    }
  } finally {
    for (const p of [on, off]) {
      await p.alice.stop();
      await p.bob.stop();
    }
  }
  const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);
  for (const l of [lags.on, lags.off]) l.sort((a, b) => a - b);
  const lagNote = (xs: number[]) =>
    `p50 ${percentile(xs, 50).toFixed(1)}, p99 ${percentile(xs, 99).toFixed(1)}, max ${
      xs.at(-1)!.toFixed(1)
    } ms`;
  return [
    {
      name:
        `messages/s, ${WRITER_IN_FLIGHT} in flight, store writer thread on (median of ${WRITER_ROUNDS} rounds)`,
      value: median(rates.on),
      unit: "msg/s",
      baseline: { name: "the same engines' store without it, alternating rounds", value: median(rates.off) },
      notes: `rounds on ${rates.on.map((x) => x.toFixed(0)).join(" ")}; off ${
        rates.off.map((x) => x.toFixed(0)).join(" ")
      }`,
    },
    {
      name: `event-loop lag during those rounds, median, writer thread on`,
      value: percentile(lags.on, 50),
      unit: "ms",
      baseline: { name: "without it", value: percentile(lags.off, 50) },
      notes: `on: ${lagNote(lags.on)}; off: ${lagNote(lags.off)}`,
    },
  ];
}

async function hubMemory(ca: TestCa): Promise<BenchFigure> {
  const hubLeaf = await makeTestLeaf(ca, "hub");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      new URL(import.meta.url).pathname,
      "--hub",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
    env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify({ ca, hub: hubLeaf }) + "\n"));
  /** The next line the hub prints. */
  const { next: line, close: closeLines } = lineReader(child.stdout, "hub");
  const rss = async (): Promise<number> => {
    await w.write(new TextEncoder().encode("rss\n"));
    return Number(await line());
  };
  const { port, knock } = JSON.parse(await line()) as { port: number; knock: string };
  registerKnock(port, decodeKnockSecret(knock)!);
  await new Promise((r) => setTimeout(r, 500));
  const idle = await rss();
  const peers: RawPeer[] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const leaf = await makeTestLeaf(ca, `peer${i}`);
    const p = await rawDial(port, { certPem: leaf.certPem, keyPem: leaf.keyPem });
    p.send(p.hello({ from: leaf.name, to: "hub", signKeyPem: leaf.keyPem }));
    await p.waitFrame((f) => f.t === "hello", 10_000);
    peers.push(p);
  }
  await new Promise((r) => setTimeout(r, 500));
  const busy = await rss();
  for (const p of peers) p.socket.destroy();
  await w.close();
  await closeLines();
  await child.status;
  return {
    name: `client RSS with ${SESSIONS} open sessions`,
    value: busy / 2 ** 20,
    unit: "MiB",
    baseline: { name: "same client idle", value: idle / 2 ** 20 },
    notes: `${((busy - idle) / SESSIONS / 1024).toFixed(1)} KiB per session`,
  };
}

export async function run(): Promise<BenchFigure[]> {
  const figures: BenchFigure[] = [];
  const ca = await makeTestCa();
  const size = frameSize();
  const { alice, bob, aliceLeaf, bobLeaf } = await pairOfEngines(ca);
  const echo = await echoPair(ca, bobLeaf, aliceLeaf, size);
  try {
    // Warm up: open the session, fill caches, let the JIT see both paths once.
    await alice.engine.send("bob", TEXT);
    await deliveredCount(alice, 1);
    await sendAllAtOnce(alice, IN_FLIGHT[0]);
    await echo.exchange(IN_FLIGHT[0]);

    // Latency: one message at a time (nothing to share a commit with), before the history grows.
    const lat: number[] = [];
    for (let i = 0; i < LATENCY_MESSAGES; i++) {
      // Waits on the receipt event itself (polling a timer would add its own granularity, ~1-4 ms).
      const s = performance.now();
      await sendAllAtOnce(alice, 1);
      lat.push(performance.now() - s);
    }
    const echoLat: number[] = [];
    for (let i = 0; i < LATENCY_MESSAGES; i++) {
      const s = performance.now();
      await echo.exchange(1);
      echoLat.push(performance.now() - s);
    }
    lat.sort((a, b) => a - b);
    echoLat.sort((a, b) => a - b);
    figures.push({
      name: "latency send -> delivery receipt, one at a time, median",
      value: percentile(lat, 50),
      unit: "ms",
      baseline: { name: "raw node:tls echo round trip", value: percentile(echoLat, 50) },
    });
    figures.push({
      name: "latency send -> delivery receipt, one at a time, p99",
      value: percentile(lat, 99),
      unit: "ms",
      baseline: { name: "raw node:tls echo round trip", value: percentile(echoLat, 99) },
    });

    // Throughput with many messages in flight: all sent at once, until every receipt is back. Each round
    // measures ours then the echo of as many frames; the figure is the median round (the machine is noisy).
    // CPU time (this process, all threads) per message beside the rates: on a shared machine a wall-clock
    // rate depends on what else runs at that moment, the CPU a message costs much less.
    for (const n of IN_FLIGHT) {
      const rounds: { ours: number; echo: number; oursCpu: number; echoCpu: number }[] = [];
      for (let r = 0; r < IN_FLIGHT_ROUNDS; r++) {
        const t = performance.now();
        const c = process.cpuUsage();
        await sendAllAtOnce(alice, n);
        const ours = n / ((performance.now() - t) / 1000);
        const oursCpu = cpuMicros(process.cpuUsage(c)) / n;
        const e = performance.now();
        const ec = process.cpuUsage();
        await echo.exchange(n);
        const echoCpu = cpuMicros(process.cpuUsage(ec)) / n;
        rounds.push({ ours, echo: n / ((performance.now() - e) / 1000), oursCpu, echoCpu });
      }
      const ratios = rounds.map((x) => x.ours / x.echo).sort((a, b) => a - b);
      const mid = [...rounds].sort((a, b) => a.ours / a.echo - b.ours / b.echo)[IN_FLIGHT_ROUNDS >> 1];
      figures.push({
        name: `messages/s, ${n} in flight, send to delivery receipt (stored both sides)`,
        value: mid.ours,
        unit: "msg/s",
        baseline: { name: `raw node:tls echo of ${n} frames`, value: mid.echo },
        notes: `${size} bytes framed, one session; median of ${IN_FLIGHT_ROUNDS} rounds, ratios ${
          ratios.map((x) => x.toFixed(3)).join(" ")
        }`,
      });
      const cpu = [...rounds].sort((a, b) => a.oursCpu - b.oursCpu)[IN_FLIGHT_ROUNDS >> 1];
      figures.push({
        name: `CPU per message, ${n} in flight (both engines, TLS both ways, stored both sides)`,
        value: cpu.oursCpu,
        unit: "us",
        baseline: { name: `CPU per frame of the raw echo`, value: cpu.echoCpu },
        notes: `median of ${IN_FLIGHT_ROUNDS} rounds; echo/ours ${
          (cpu.echoCpu / cpu.oursCpu).toFixed(3)
        } (read like the rate ratio above)`,
      });
    }

    // Throughput: each send awaited (stored) before the next, receipts not awaited.
    let t0 = performance.now();
    const base = alice.log.of("delivered").length;
    for (let i = 0; i < THROUGHPUT_MESSAGES; i++) await alice.engine.send("bob", TEXT);
    await deliveredCount(alice, base + THROUGHPUT_MESSAGES);
    const msgRate = THROUGHPUT_MESSAGES / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    await echo.exchange(THROUGHPUT_MESSAGES);
    const echoRate = THROUGHPUT_MESSAGES / ((performance.now() - t0) / 1000);
    figures.push({
      name: "messages/s, sends awaited one by one, to delivery receipt (stored both sides)",
      value: msgRate,
      unit: "msg/s",
      baseline: { name: "raw node:tls echo", value: echoRate },
      notes: `${THROUGHPUT_MESSAGES} messages of ${size} bytes framed, one session`,
    });

    // Session set-up: dial, TLS 1.3, certificate checks, hello both ways.
    const port = bob.engine.address.port;
    const hs: number[] = [];
    const rawHs: number[] = [];
    for (let i = 0; i < HANDSHAKES; i++) {
      const s = performance.now();
      const p = await rawDial(port, { certPem: aliceLeaf.certPem, keyPem: aliceLeaf.keyPem });
      p.send(p.hello({ from: "alice", to: "bob", signKeyPem: aliceLeaf.keyPem }));
      await p.waitFrame((f) => f.t === "hello");
      hs.push(performance.now() - s);
      p.socket.destroy();
      await p.closed;
      const r = performance.now();
      const q = await rawDial(port, { certPem: aliceLeaf.certPem, keyPem: aliceLeaf.keyPem });
      rawHs.push(performance.now() - r);
      q.socket.destroy();
      await q.closed;
    }
    hs.sort((a, b) => a - b);
    rawHs.sort((a, b) => a - b);
    figures.push({
      name: "session set-up (TLS 1.3 + checks + hellos), median",
      value: percentile(hs, 50),
      unit: "ms",
      baseline: { name: "bare mutual TLS 1.3 handshake", value: percentile(rawHs, 50) },
    });
  } finally {
    await echo.close();
    await alice.stop();
    await bob.stop();
  }
  figures.push(...await writerThreadFigures(ca));
  figures.push(await hubMemory(ca));
  return figures;
}

/** The client process of the memory figure: an engine on a test CA, port on stdout, until stdin closes. */
async function hubMain(): Promise<void> {
  const reader = Deno.stdin.readable.getReader();
  let buf = "";
  while (!buf.includes("\n")) {
    const r = await reader.read();
    if (r.done) return;
    buf += new TextDecoder().decode(r.value);
  }
  const { ca, hub } = JSON.parse(buf) as { ca: TestCa; hub: TestLeaf };
  // The CA's keys do not survive JSON; the fake phonebook signs its CRLs with them.
  ca.material = {
    cert: new x509.X509Certificate(ca.certPem),
    certPem: ca.certPem,
    keys: await importPrivateKeyPem(ca.keyPem),
  };
  const e = await startTestEngine(ca, hub);
  // The port and the listener's knock secret, over the pipe (never a command line).
  console.log(JSON.stringify({ port: e.engine.address.port, knock: encodeKnockSecret(e.knockSecret) }));
  buf = buf.slice(buf.indexOf("\n") + 1);
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    buf += new TextDecoder().decode(r.value);
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      if (buf.slice(0, i) === "rss") console.log(Deno.memoryUsage().rss);
      buf = buf.slice(i + 1);
    }
  }
  await e.stop();
}

if (import.meta.main && Deno.args.includes("--hub")) await hubMain();
