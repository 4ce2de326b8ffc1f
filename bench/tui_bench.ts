/**
 * `deno task bench tui`: the terminal UI's cost.
 * - In process (always): time to the first frame (baseline: a plain ink <Text>), time until a conversation
 *   of 10,000 messages is on screen and the time to redraw it when a message arrives (baseline: the same with
 *   an empty conversation).
 * - In a real terminal (when tmux is installed): process start to first drawn screen and resident memory of
 *   the running UI (baseline: a plain ink program started the same way).
 */
import { EventEmitter } from "node:events";
import { render, Text } from "ink";
import { createElement } from "react";
import { App } from "../client/tui/app.tsx";
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
