/**
 * `deno task bench tui`: the terminal UI's cost.
 * - In process (always): time to the first frame (baseline: a plain ink <Text>), time until a conversation
 *   of 10,000 messages is on screen and the time to redraw it when a message arrives (baseline: the same with
 *   an empty conversation).
 * - Bytes written to the terminal per second while a countdown is on screen (baseline: the same screen with
 *   nothing counting down), with Ink's incremental rendering as the chat screen uses it, and without it.
 * - In a real terminal (when tmux is installed): process start to first drawn screen and resident memory of
 *   the running UI (baseline: a plain ink program started the same way).
 */
import { EventEmitter } from "node:events";
import { render, Text } from "ink";
import { createElement } from "react";
import { App } from "../client/tui/app.tsx";
import { TERMINAL_RENDER_OPTIONS } from "../client/tui/mod.ts";
import { type BenchFigure, opsPerSecond, percentile } from "./harness.ts";
import { layoutConversation } from "../client/tui/conversation_layout.ts";
import { contact, FakeEngine, seededConversation } from "../tests/helpers/fake_engine.ts";

const COLUMNS = 120;
const ROWS = 40;
const MESSAGES = 10_000;
const REDRAWS = 30;

/** A stdout Ink can draw on: remembers the last frame and wakes whoever waits for some text. */
class FrameSink extends EventEmitter {
  columns = COLUMNS;
  rows = ROWS;
  isTTY = false;
  last = "";
  write = (frame: string): boolean => {
    this.last = frame;
    this.emit("frame", frame);
    return true;
  };
  waitFor(text: string, timeoutMs = 10_000): Promise<number> {
    if (this.last.includes(text)) return Promise.resolve(performance.now());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off("frame", on);
        reject(new Error(`no frame with "${text}" within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (f: string) => {
        if (!f.includes(text)) return;
        clearTimeout(timer);
        this.off("frame", on);
        resolve(performance.now());
      };
      this.on("frame", on);
    });
  }
}

class StdinStub extends EventEmitter {
  isTTY = true;
  setEncoding() {}
  setRawMode() {}
  resume() {}
  pause() {}
  ref() {}
  unref() {}
  read = () => null;
}

function mount(node: Parameters<typeof render>[0]) {
  const stdout = new FrameSink();
  const instance = render(node, {
    stdout: stdout as unknown as NodeJS.WriteStream,
    stdin: new StdinStub() as unknown as NodeJS.ReadStream,
    debug: true,
    exitOnCtrlC: false,
    patchConsole: false,
  });
  return { stdout, instance };
}

async function timeFirstFrame(make: () => Parameters<typeof render>[0], marker: string): Promise<number> {
  const t0 = performance.now();
  const { stdout, instance } = mount(make());
  const t1 = await stdout.waitFor(marker);
  instance.unmount();
  return t1 - t0;
}

/** A terminal-like stdout that counts the bytes the UI writes. */
class ByteCounter extends EventEmitter {
  columns = COLUMNS;
  rows = ROWS;
  isTTY = true;
  bytes = 0;
  write = (chunk: string | Uint8Array, cb?: unknown): boolean => {
    this.bytes += typeof chunk === "string" ? new TextEncoder().encode(chunk).length : chunk.length;
    if (typeof cb === "function") cb();
    return true;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Bytes per second written while the screen shows a conversation, with or without a countdown on it. */
async function terminalBytesPerSecond(countdown: boolean, incremental: boolean, windowMs: number) {
  const engine = new FakeEngine({ name: "you", contacts: [contact("peer")] });
  const now = Date.now();
  for (const m of seededConversation("peer", "you", 30, now)) engine.seed(m);
  if (countdown) {
    engine.seed({
      id: "ttl",
      peer: "peer",
      from: "peer",
      direction: "in",
      text: "this one counts down",
      sentAt: now,
      expiresAt: now + 3_600_000,
      ttlMs: 3_600_000,
      ttlMode: "send",
      state: "read",
    });
  }
  const stdout = new ByteCounter();
  const instance = render(createElement(App, { engine, onQuit: () => {} }), {
    ...TERMINAL_RENDER_OPTIONS,
    stdout: stdout as unknown as NodeJS.WriteStream,
    stdin: new StdinStub() as unknown as NodeJS.ReadStream,
    patchConsole: false,
    incrementalRendering: incremental,
  });
  await sleep(1500); // the first frames: contacts, history, the first tick
  const start = stdout.bytes;
  const t0 = performance.now();
  await sleep(windowMs);
  const perSecond = (stdout.bytes - start) / ((performance.now() - t0) / 1000);
  instance.unmount();
  return perSecond;
}

const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);

function engineWith(n: number): FakeEngine {
  const now = Date.now();
  const engine = new FakeEngine({ name: "you", contacts: [contact("peer")], now: () => now });
  for (const m of seededConversation("peer", "you", n, now)) engine.seed(m);
  return engine;
}

/** Mounts the UI on a conversation of `n` messages: time until it is on screen, then redraw times. */
async function conversationFigures(n: number): Promise<{ shownMs: number; redrawMs: number[] }> {
  const engine = engineWith(n);
  const lastText = n > 0 ? `message ${n - 1}:` : "you → peer";
  const t0 = performance.now();
  const { stdout, instance } = mount(
    createElement(App, { engine, onQuit: () => {}, size: { columns: COLUMNS, rows: ROWS } }),
  );
  const shownMs = (await stdout.waitFor(lastText)) - t0;
  const redrawMs: number[] = [];
  for (let i = 0; i < REDRAWS; i++) {
    const text = `incoming ${i} ${crypto.randomUUID().slice(0, 8)}`;
    const t = performance.now();
    engine.receive("peer", text);
    redrawMs.push((await stdout.waitFor(text)) - t);
  }
  instance.unmount();
  return { shownMs, redrawMs };
}

function hasTmux(): boolean {
  try {
    return new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

function tmux(...args: string[]): string {
  const out = new Deno.Command("tmux", { args, stdout: "piped", stderr: "null" }).outputSync();
  return new TextDecoder().decode(out.stdout);
}

/** Resident set size through `ps` (Deno asks for --allow-all to read /proc directly). */
function rssKiB(pid: number): number {
  const out = new Deno.Command("ps", {
    args: ["-o", "rss=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  })
    .outputSync();
  return Number(new TextDecoder().decode(out.stdout).trim());
}

/** Starts `cmd` in a detached tmux window; ms until `marker` is on screen, and RSS once it is. */
async function inTerminal(cmd: string[], marker: string): Promise<{ startMs: number; rssKiB: number }> {
  const session = `scbench-${crypto.randomUUID().slice(0, 8)}`;
  const root = new URL("..", import.meta.url).pathname;
  const quoted = cmd.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  const t0 = performance.now();
  tmux(
    "new-session",
    "-d",
    "-s",
    session,
    "-x",
    String(COLUMNS),
    "-y",
    String(ROWS),
    "-c",
    root,
    `exec ${quoted}`,
  );
  try {
    const deadline = t0 + 20_000;
    while (!tmux("capture-pane", "-p", "-t", session).includes(marker)) {
      if (performance.now() > deadline) throw new Error(`"${marker}" never appeared`);
      await new Promise((r) => setTimeout(r, 10));
    }
    const startMs = performance.now() - t0;
    const pid = Number(tmux("display-message", "-p", "-t", session, "#{pane_pid}").trim());
    await new Promise((r) => setTimeout(r, 300)); // let the first effects (history load) settle
    return { startMs, rssKiB: rssKiB(pid) };
  } finally {
    tmux("kill-session", "-t", session);
  }
}

export async function run(): Promise<BenchFigure[]> {
  const figures: BenchFigure[] = [];

  // Warm up module code paths once so the first measurement is not the JIT's.
  await timeFirstFrame(() => createElement(Text, null, "warm"), "warm");
  await conversationFigures(10);

  const plain: number[] = [];
  const ui: number[] = [];
  for (let i = 0; i < 5; i++) {
    plain.push(await timeFirstFrame(() => createElement(Text, null, "hello"), "hello"));
    ui.push(
      await timeFirstFrame(
        () =>
          createElement(App, {
            engine: engineWith(0),
            onQuit: () => {},
            size: { columns: COLUMNS, rows: ROWS },
          }),
        "securechat",
      ),
    );
  }
  figures.push({
    name: "in-process first frame, chat UI",
    value: median(ui),
    unit: "ms",
    baseline: { name: "plain ink <Text>", value: median(plain) },
    notes: `median of 5, ${COLUMNS}x${ROWS}`,
  });

  const empty = await conversationFigures(0);
  const big = await conversationFigures(MESSAGES);
  figures.push({
    name: `conversation on screen, ${MESSAGES} messages`,
    value: big.shownMs,
    unit: "ms",
    baseline: { name: "empty conversation", value: empty.shownMs },
    notes: "mount, contacts, history load, layout of the visible lines",
  });
  figures.push({
    name: `redraw on a new message, ${MESSAGES} messages`,
    value: median(big.redrawMs),
    unit: "ms",
    baseline: { name: "empty conversation", value: median(empty.redrawMs) },
    notes: `median of ${REDRAWS}; p95 ${
      percentile([...big.redrawMs].sort((a, b) => a - b), 95).toFixed(2)
    } ms`,
  });
  // Scrolled to the oldest message, a frame must still cost what it shows, not the whole conversation.
  const seeded = seededConversation("peer", "you", MESSAGES, Date.now());
  const layoutAt = (scroll: number) => () => {
    layoutConversation({
      messages: seeded,
      me: "you",
      peer: "peer",
      width: COLUMNS - 23,
      height: ROWS - 10,
      scroll,
      now: Date.now(),
      newMarkerId: null,
    });
  };
  layoutAt(Number.MAX_SAFE_INTEGER)(); // first pass wraps every message once (cached afterwards)
  const top = 1000 / await opsPerSecond(layoutAt(Number.MAX_SAFE_INTEGER), 500);
  const bottom = 1000 / await opsPerSecond(layoutAt(0), 500);
  figures.push({
    name: `conversation layout scrolled to the oldest of ${MESSAGES}`,
    value: top,
    unit: "ms",
    baseline: { name: "at the newest", value: bottom },
    notes: "per frame, wraps cached",
  });

  const WINDOW_MS = 4000;
  const still = await terminalBytesPerSecond(false, true, WINDOW_MS);
  const ticking = await terminalBytesPerSecond(true, true, WINDOW_MS);
  const ticking_full = await terminalBytesPerSecond(true, false, WINDOW_MS);
  figures.push({
    name: "bytes written to the terminal per second, countdown on screen",
    value: ticking,
    unit: "B/s",
    baseline: { name: "static screen", value: still },
    notes: `${COLUMNS}x${ROWS}, ${
      WINDOW_MS / 1000
    } s window, incremental rendering (as the chat screen runs)`,
  });
  figures.push({
    name: "bytes per second, countdown, whole-frame rendering",
    value: ticking_full,
    unit: "B/s",
    baseline: { name: "incremental rendering", value: ticking },
    notes: "what redrawing every frame whole would cost (issue 12 measured about 11 KB/s)",
  });

  if (!hasTmux()) {
    figures.push({
      name: "real terminal figures",
      value: 0,
      unit: "skipped",
      notes: "tmux is not installed",
    });
    return figures;
  }
  const deno = Deno.execPath();
  const driver = ["run", "--allow-env", "--allow-read", "tests/helpers/fake_engine.ts"];
  const plainInk = [
    "eval",
    `import { render, Text } from "ink"; import { createElement } from "react"; ` +
    `render(createElement(Text, null, "plain ink ready")); setInterval(() => {}, 1000);`,
  ];
  const uiStart: number[] = [];
  const inkStart: number[] = [];
  let uiRss = 0;
  let uiBigRss = 0;
  let inkRss = 0;
  for (let i = 0; i < 3; i++) {
    const a = await inTerminal([deno, ...driver], "securechat ·");
    const b = await inTerminal([deno, ...plainInk], "plain ink ready");
    uiStart.push(a.startMs);
    inkStart.push(b.startMs);
    uiRss = a.rssKiB;
    inkRss = b.rssKiB;
  }
  uiBigRss =
    (await inTerminal([deno, ...driver, "--seed", String(MESSAGES)], `message ${MESSAGES - 1}:`)).rssKiB;
  figures.push({
    name: "process start to first drawn screen (tmux)",
    value: median(uiStart),
    unit: "ms",
    baseline: { name: "plain ink program", value: median(inkStart) },
    notes: "median of 3, fake engine",
  });
  figures.push({
    name: "resident memory of the running UI",
    value: uiRss / 1024,
    unit: "MiB",
    baseline: { name: "plain ink program", value: inkRss / 1024 },
  });
  figures.push({
    name: `resident memory of the running UI, ${MESSAGES} messages`,
    value: uiBigRss / 1024,
    unit: "MiB",
    baseline: { name: "plain ink program", value: inkRss / 1024 },
  });
  return figures;
}
