/**
 * Issue 12 ("a terminal chat people keep open all day"), the parts not tested in a real terminal
 * (tests/tui_tmux_daily_test.ts): keys of one burst, /search, /log, /set and the settings file, notifications
 * written to the terminal, revoked contacts, the phonebook down at start, byte limits, NO_COLOR, Ctrl+L, and the
 * pure helpers behind them (safe widths, delivery marks, marks on the first line only).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cleanup, render } from "ink-testing-library";
import { App } from "../client/tui/app.tsx";
import { bodyWidth, layoutConversation } from "../client/tui/conversation_layout.ts";
import { deliveryLabel } from "../client/tui/format.ts";
import { bellFor, desktopNotification, titleFor } from "../client/tui/notify.ts";
import { toneStyle } from "../client/tui/panes.tsx";
import {
  applySetting,
  DEFAULT_SETTINGS,
  loadSettings,
  parseSettings,
  saveSettings,
  type Settings,
  SettingsError,
} from "../client/tui/settings.ts";
import { displayText, displayWidth } from "../client/tui/width.ts";
import type { ChatMessage } from "../client/engine_types.ts";
import { MouseFilteringStdin, type MouseSource, type RawInput } from "../client/tui/mouse_stdin.ts";
import { EventEmitter } from "node:events";
import { contact, FakeEngine, seededConversation, verifiedTime } from "./helpers/fake_engine.ts";

const T0 = Date.UTC(2026, 10, 28, 12, 0, 0);
// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;
const plain = (s: string | undefined) => (s ?? "").replace(ANSI, "");
// deno-lint-ignore no-control-regex
const ANSI_ANY = /\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[78])/g;

async function waitFor(what: string, check: () => boolean, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function type(stdin: { write: (s: string) => void }, ...keys: string[]): Promise<void> {
  for (const k of keys) {
    stdin.write(k);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const ENTER = "\r";
const PGUP = "\x1b[5~";

interface Harness {
  frame: () => string;
  stdin: { write: (s: string) => void };
  written: string[];
  saved: Settings[];
  repaints: () => number;
}

/** Mouse reports as the terminal would send them, bypassing Ink (which drops them). */
class FakeMouse implements MouseSource {
  private fns = new Set<(r: string) => void>();
  subscribe(fn: (r: string) => void) {
    this.fns.add(fn);
    return () => this.fns.delete(fn);
  }
  send(...reports: string[]) {
    for (const r of reports) for (const fn of this.fns) fn(r);
  }
}

function app(
  engine: FakeEngine,
  opts: {
    size?: { columns: number; rows: number };
    settings?: Settings;
    noColor?: boolean;
    mouse?: MouseSource;
  } = {},
): Harness {
  const written: string[] = [];
  const saved: Settings[] = [];
  let repaints = 0;
  const r = render(
    <App
      engine={engine}
      onQuit={() => {}}
      size={opts.size ?? { columns: 100, rows: 30 }}
      settings={opts.settings}
      noColor={opts.noColor}
      terminal={(s) => written.push(s)}
      saveSettings={(s) => {
        saved.push(s);
        return Promise.resolve();
      }}
      repaint={() => repaints++}
      mouse={opts.mouse}
    />,
  );
  return { frame: () => plain(r.lastFrame()), stdin: r.stdin, written, saved, repaints: () => repaints };
}

function msg(id: string, over: Partial<ChatMessage> = {}): ChatMessage {
  return {
    id,
    peer: "bob",
    from: "bob",
    direction: "in",
    text: `text of ${id}`,
    sentAt: T0,
    expiresAt: null,
    ttlMs: null,
    ttlMode: null,
    state: "delivered",
    ...over,
  };
}

// ---- pure parts ------------------------------------------------------------------------------------------

Deno.test("width: clusters terminals disagree on are drawn in a form of known width; the text is kept", () => {
  assert.equal(displayText("ok 👍🏽"), "ok 👍");
  assert.equal(displayText("🇫🇷"), "[FR]");
  assert.equal(displayText("1️⃣"), "[1]");
  assert.equal(displayText("👨‍👩‍👧"), "👨👩👧");
  assert.equal(displayText("❤️"), "❤");
  assert.equal(displayText("é 漢字 👍"), "é 漢字 👍", "what every terminal agrees on is left alone");
  // The width we count is the sum of the parts' widths: no cluster is counted narrower than drawn.
  for (const s of ["👍🏽", "🇫🇷", "👨‍👩‍👧", "1️⃣", "❤️"]) {
    const shown = displayText(s);
    const parts = [...shown].reduce((n, c) => n + displayWidth(c), 0);
    assert.equal(displayWidth(shown), parts, s);
  }
});

Deno.test("marks: each delivery state has its own shape, not only its own colour", () => {
  const marks = (["queued", "sending", "sent", "delivered", "read", "failed"] as const).map((s) =>
    deliveryLabel(s).mark
  );
  assert.equal(new Set(marks).size, marks.length, marks.join(" "));
});

Deno.test("layout: marks on the first line only; later lines use the whole width; countdown cells reserved", () => {
  const long = "word ".repeat(60).trim();
  const v = layoutConversation({
    messages: [msg("a", { direction: "out", from: "alice", text: long, state: "read" })],
    me: "alice",
    peer: "bob",
    width: 80,
    height: 20,
    scroll: 0,
    now: T0,
    newMarkerId: null,
  });
  const rows = v.lines.filter((l) => l.key.startsWith("a:")).map((l) =>
    l.segments.map((s) => s.text).join("")
  );
  const body = bodyWidth("alice", "bob", 80);
  assert.equal(body, 80 - (5 + 1 + 5 + 1), "the text starts after the time and the name only");
  assert.match(rows[0], /◉$/, "the read mark at the end of the first line");
  for (const r of rows.slice(1)) assert.ok(!r.includes("◉"));
  const textOf = (r: string) => r.slice(12).trimEnd();
  assert.ok(displayWidth(textOf(rows[1])) > body - 5, `a later line uses the width: ${rows[1]}`);
  // A countdown that shortens (10s -> 9s) does not re-wrap the message.
  const at = (now: number) =>
    layoutConversation({
      messages: [msg("t", { text: long, ttlMs: 60_000, ttlMode: "send", expiresAt: T0 + 10_000 })],
      me: "alice",
      peer: "bob",
      width: 80,
      height: 20,
      scroll: 0,
      now,
      newMarkerId: null,
    }).lines.filter((l) => l.key.startsWith("t:")).map((l) => l.segments.map((s) => s.text).join(""));
  const before = at(T0);
  const after = at(T0 + 1500);
  assert.equal(before.length, after.length);
  assert.notEqual(before[0], after[0], "the countdown moved");
  assert.deepEqual(before.slice(1), after.slice(1));
  assert.equal(before[0].indexOf("⏱"), after[0].indexOf("⏱") - 1, "right-aligned in its reserved cells");
});

Deno.test("settings: /set parses and refuses with the values it takes; the file round-trips; a bad file is reported", async () => {
  let s = applySetting(DEFAULT_SETTINGS, "bell", "all");
  s = applySetting(s, "lifetime", "5m");
  s = applySetting(s, "seconds", "on");
  assert.equal(s.bell, "all");
  assert.equal(s.lifetimeMs, 300_000);
  assert.throws(
    () => applySetting(s, "bell", "loud"),
    (e) => e instanceof SettingsError && /off, other, all/.test(e.message),
  );
  assert.throws(() => applySetting(s, "volume", "3"), /unknown setting "volume"/);
  assert.throws(() => applySetting(s, "lifetime", "0s"), /lifetime: bad lifetime/);
  const home = await Deno.makeTempDir();
  try {
    assert.deepEqual((await loadSettings(home)).settings, DEFAULT_SETTINGS, "no file: defaults");
    await saveSettings(home, s);
    assert.deepEqual((await loadSettings(home)).settings, s);
    await Deno.writeTextFile(join(home, "settings.json"), `{"bell": "loud"}`);
    const bad = await loadSettings(home);
    assert.deepEqual(bad.settings, DEFAULT_SETTINGS, "nothing half applied");
    assert.match(bad.warnings[0], /settings\.json ignored .*bell/);
    assert.deepEqual(parseSettings(`{"future": 1, "title": false}`).warnings, [
      'unknown setting "future" ignored',
    ]);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("notify: bell per setting; the title counts unread; notifications name the sender, never the text", () => {
  assert.equal(bellFor("other", true), true);
  assert.equal(bellFor("other", false), false);
  assert.equal(bellFor("all", false), true);
  assert.equal(bellFor("off", true), false);
  assert.equal(titleFor("alice", "bob", 3), "\x1b]0;securechat (3) · alice → bob\x07");
  assert.equal(desktopNotification("off", "x"), null);
  assert.equal(desktopNotification("osc9", "message from bob"), "\x1b]9;securechat: message from bob\x07");
  assert.equal(desktopNotification("osc777", "a;b\x07c"), "\x1b]777;notify;securechat;a b·c\x07");
});

Deno.test("colours: without colour (NO_COLOR, colors off) no tone carries a colour", () => {
  for (const t of ["me", "peer", "accent", "warn", "error", "good", "current"] as const) {
    assert.equal(toneStyle(t, true).color, undefined, t);
  }
  assert.equal(toneStyle("error", false).color, "red");
});

// ---- the App ----------------------------------------------------------------------------------------------

Deno.test("App: keys of one burst each count (3 PgUp in one write scroll 3 pages; 3 Ctrl+N move 3 contacts)", async () => {
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("bob"), contact("carol"), contact("dave"), contact("erin")],
    now: () => T0,
    time: verifiedTime(T0),
  });
  for (const m of seededConversation("bob", "alice", 300, T0)) engine.seed(m);
  const r = app(engine);
  try {
    await waitFor("bob open", () => r.frame().includes("alice → bob") && r.frame().includes("message 299"));
    await type(r.stdin, PGUP);
    await waitFor("one page", () => /scrolled up \d+ lines/.test(r.frame()));
    const page = Number(/scrolled up (\d+) lines/.exec(r.frame())![1]);
    await type(r.stdin, "\x1b[F"); // End: back to the newest
    await waitFor("newest", () => !/scrolled up/.test(r.frame()));
    await type(r.stdin, PGUP + PGUP + PGUP);
    await waitFor("three pages", () => r.frame().includes(`scrolled up ${3 * page} lines`));
    await type(r.stdin, "\x0e\x0e\x0e"); // Ctrl+N three times, one write
    await waitFor("three contacts on", () => r.frame().includes("alice → erin"));
  } finally {
    cleanup();
  }
});

Deno.test("App: /search highlights, Ctrl+F/Ctrl+G step through the matches, Esc ends it", async () => {
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("bob")],
    now: () => T0,
    time: verifiedTime(T0),
  });
  for (const [i, t] of ["apple pie", "banana", "apple juice", "cherry", "Apple tart"].entries()) {
    engine.seed(msg(`m${i}`, { text: t, sentAt: T0 + i }));
  }
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("Apple tart"));
    await type(r.stdin, "/search apple", ENTER);
    await waitFor("3 matches, at the newest", () => r.frame().includes(`search "apple": 3/3`));
    await type(r.stdin, "\x06"); // Ctrl+F: older
    await waitFor("2/3", () => r.frame().includes(`search "apple": 2/3`));
    await type(r.stdin, "\x06", "\x06");
    await waitFor("1/3, no further", () => r.frame().includes(`search "apple": 1/3`));
    await type(r.stdin, "\x07"); // Ctrl+G: newer
    await waitFor("2/3 again", () => r.frame().includes(`search "apple": 2/3`));
    await type(r.stdin, "\x1b");
    await waitFor("ended", () => !r.frame().includes(`search "apple"`));
    await type(r.stdin, "/search durian", ENTER);
    await waitFor("no match said", () => r.frame().includes(`no message with "durian" here`));
  } finally {
    cleanup();
  }
});

Deno.test("App: /log shows every entry in full, scrollable; the strip keeps the newest", async () => {
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob")] });
  const r = app(engine, { size: { columns: 80, rows: 24 } });
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    const reason = "dial to bob refused: TLS (certificate verify failed: the chain does not end at our CA " +
      "and this sentence goes on well past the width of the screen) END-OF-REASON";
    engine.emit({ event: "log", level: "warn", text: reason });
    for (let i = 0; i < 40; i++) engine.emit({ event: "log", level: "info", text: `filler ${i}` });
    await waitFor("strip", () => r.frame().includes("filler 39"));
    await type(r.stdin, "/log", ENTER);
    await waitFor("log screen", () => /log: \d+ entries/.test(r.frame()));
    assert.ok(!r.frame().includes("END-OF-REASON"), "scrolled to the newest first");
    await type(r.stdin, PGUP, PGUP);
    await waitFor("the long reason, whole", () => r.frame().includes("END-OF-REASON"));
    assert.match(r.frame(), /certificate verify failed/);
    await type(r.stdin, "\x1b");
    await waitFor("closed", () => r.frame().includes("alice → bob") && !/log: \d+ entries/.test(r.frame()));
  } finally {
    cleanup();
  }
});

Deno.test("App: /set changes and saves a setting, lists them, refuses a bad one; seconds and lifetime apply", async () => {
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("bob")],
    now: () => T0,
    time: verifiedTime(T0),
  });
  engine.seed(msg("a", { text: "stamped", sentAt: T0 + 9000 }));
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("stamped"));
    assert.ok(!/\d\d:\d\d:09 bob/.test(r.frame()));
    await type(r.stdin, "/set seconds on", ENTER);
    await waitFor("seconds shown", () => /\d\d:\d\d:09 bob +stamped/.test(r.frame()));
    await waitFor("saved", () => r.saved.length === 1);
    assert.equal(r.saved[0].seconds, true);
    await type(r.stdin, "/set bell loud", ENTER);
    await waitFor("refused", () => r.frame().includes(`/set: bell: "loud" is not one of off, other, all`));
    assert.equal(r.saved.length, 1, "nothing saved");
    await type(r.stdin, "/set lifetime 5m", ENTER);
    await waitFor("saved lifetime", () => r.saved.length === 2);
    await type(r.stdin, "hello", ENTER);
    await waitFor("sent", () => engine.sent.length === 1);
    assert.equal(engine.sent[0].opts?.ttlMs, 300_000, "the default lifetime of the settings");
    await type(r.stdin, "/set", ENTER);
    await waitFor("listed", () => /pane=auto +bell=other +title=on/.test(r.frame()));
  } finally {
    cleanup();
  }
});

Deno.test("App: a message in another conversation rings the bell and notifies without its text; the open one does not", async () => {
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob"), contact("carol")] });
  const r = app(engine, { settings: { ...DEFAULT_SETTINGS, desktop: "osc9" } });
  try {
    await waitFor("bob open", () => r.frame().includes("alice → bob"));
    engine.receive("bob", "in the open one");
    await waitFor("shown", () => r.frame().includes("in the open one"));
    assert.ok(!r.written.includes("\x07"), "no bell for the open conversation");
    engine.receive("carol", "secret words");
    await waitFor("bell", () => r.written.includes("\x07"));
    assert.ok(r.written.includes("\x1b]9;securechat: message from carol\x07"));
    assert.ok(!r.written.some((w) => w.includes("secret words")), "the text never leaves the screen");
    await waitFor("title", () => r.written.some((w) => w.includes("securechat (1)")));
    await waitFor("activity list", () => r.frame().includes("act 1:carol(1)"));
    await type(r.stdin, "\x1b1"); // Alt+1
    await waitFor(
      "carol opened",
      () => r.frame().includes("alice → carol") && r.frame().includes("secret words"),
    );
  } finally {
    cleanup();
  }
});

Deno.test("App: a revoked contact is never shown online; a message to it is queued with the reason", async () => {
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("dave", { online: true, revoked: true })],
    autoDeliver: true,
  });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → dave"));
    assert.match(r.frame(), /× dave/);
    assert.ok(!/● dave/.test(r.frame()));
    await type(r.stdin, "still there?", ENTER);
    await waitFor("queued", () => /still there\? +⧖/.test(r.frame()));
    assert.match(r.frame(), /queued: dave's certificate is revoked: it cannot be delivered/);
  } finally {
    cleanup();
  }
});

Deno.test("App: a phonebook that is down at start is said at once, with its reason", async () => {
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("bob")],
    phonebook: { reachable: false, reason: "connect ECONNREFUSED 127.0.0.1:8443" },
  });
  const r = app(engine);
  try {
    await waitFor(
      "said",
      () => r.frame().includes("phonebook unreachable: connect ECONNREFUSED 127.0.0.1:8443"),
    );
  } finally {
    cleanup();
  }
});

Deno.test("App: a message over the byte limit is refused before the input is cleared; CJK counts 3 bytes", async () => {
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob")] });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    // 5,480 CJK characters: 16,440 bytes, over the 16,384 of a message; with "/msg " the input takes them.
    await type(r.stdin, "/msg " + "漢".repeat(5480));
    await waitFor("counter", () => r.frame().includes("16,445/16,448 bytes"));
    await type(r.stdin, ENTER);
    await waitFor("refused", () => r.frame().includes("message is 16,440 bytes, at most 16,384"));
    assert.equal(engine.sent.length, 0);
    assert.match(r.frame(), /漢漢漢/, "the input is kept");
  } finally {
    cleanup();
  }
});

Deno.test("App: Ctrl+L asks for a full repaint", async () => {
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob")] });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    await type(r.stdin, "\x0c");
    await waitFor("repaint", () => r.repaints() === 1);
  } finally {
    cleanup();
  }
});

Deno.test("mouse: reports are taken out of the input and handed on; keys reach the reader unchanged", () => {
  class FakeTty extends EventEmitter implements RawInput {
    isTTY = true;
    chunks: string[] = [];
    raw: boolean[] = [];
    setRawMode(b: boolean) {
      this.raw.push(b);
    }
    setEncoding() {}
    read() {
      return this.chunks.shift() ?? null;
    }
  }
  const tty = new FakeTty();
  const stdin = new MouseFilteringStdin(tty);
  const reports: string[] = [];
  stdin.subscribe((r) => reports.push(r));
  const read: string[] = [];
  const onReadable = () => {
    let c;
    while ((c = stdin.read()) !== null) read.push(c);
  };
  stdin.on("readable", onReadable);
  assert.equal(tty.listenerCount("readable"), 1, "reads the terminal while someone listens");
  stdin.setRawMode(true);
  tty.chunks.push("ab\x1b[<64;40;10M\x1b[A\x1b[<0;4;5mc");
  tty.emit("readable");
  assert.deepEqual(reports, ["\x1b[<64;40;10M", "\x1b[<0;4;5m"]);
  assert.deepEqual(read, ["ab\x1b[Ac"]);
  assert.deepEqual(tty.raw, [true]);
  stdin.off("readable", onReadable);
  assert.equal(tty.listenerCount("readable"), 0, "lets go of the terminal with the last listener");
});

Deno.test("App: the mouse - a click opens a contact, the wheel scrolls; reports are turned on and off", async () => {
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("bob"), contact("carol"), contact("dave")],
    now: () => T0,
    time: verifiedTime(T0),
  });
  for (const m of seededConversation("bob", "alice", 100, T0)) engine.seed(m);
  const mouse = new FakeMouse();
  const r = app(engine, { mouse });
  try {
    await waitFor("bob open", () => r.frame().includes("alice → bob") && r.frame().includes("message 99"));
    assert.ok(r.written.includes("\x1b[?1000h\x1b[?1006h"), "mouse reports asked for");
    mouse.send("\x1b[<64;40;10M"); // wheel up over the conversation
    await waitFor("scrolled 3", () => r.frame().includes("scrolled up 3 lines"));
    mouse.send("\x1b[<64;40;10M", "\x1b[<64;40;10M"); // two notches before a frame
    await waitFor("scrolled 9", () => r.frame().includes("scrolled up 9 lines"));
    mouse.send("\x1b[<65;40;10M");
    await waitFor("scrolled 6", () => r.frame().includes("scrolled up 6 lines"));
    mouse.send("\x1b[<64;5;25M"); // the wheel over the log strip is not the conversation's
    await new Promise((res) => setTimeout(res, 50));
    assert.ok(r.frame().includes("scrolled up 6 lines"));
    // Row 1: top bar, row 2: "Contacts (3)", rows 3..: bob, carol, dave.
    mouse.send("\x1b[<0;4;5M", "\x1b[<0;4;5m");
    await waitFor("dave opened", () => r.frame().includes("alice → dave"));
    await type(r.stdin, "/set mouse off", ENTER);
    await waitFor("mouse off", () => r.written.includes("\x1b[?1006l\x1b[?1000l"));
  } finally {
    cleanup();
  }
});

Deno.test("docs/usage-tui.md and the help screen show every key, command, mark and setting", async () => {
  const { KEYS, MARKS, helpLines } = await import("../client/tui/overlays.tsx");
  const { COMMANDS } = await import("../client/tui/commands.ts");
  const { SETTINGS } = await import("../client/tui/settings.ts");
  const doc = await Deno.readTextFile(new URL("../docs/usage-tui.md", import.meta.url));
  const help = helpLines(200).map((l) => l.segments.map((s) => s.text).join("")).join("\n");
  // Keys: every key named in the help (Ctrl+U, PgUp, Alt+1, ...) is in the docs.
  for (const [k] of KEYS) {
    for (const token of k.split(/[\s,/]+/).filter((t) => t !== "" && t !== ".." && t !== "Mouse")) {
      assert.ok(doc.includes(token), `key ${token} (${k}) missing from the docs`);
    }
  }
  assert.ok(doc.includes("| Mouse"), "mouse in the key table");
  for (const c of COMMANDS) {
    assert.ok(doc.includes(`\`${c.name}`), `command ${c.name} missing from the docs`);
    assert.ok(help.includes(c.name), `command ${c.name} missing from help`);
  }
  for (const [m] of MARKS) {
    for (const glyph of m.split(" ").filter((g) => !/^[a-z]+$/.test(g))) {
      assert.ok(doc.includes(glyph), `mark ${glyph} missing from the docs`);
    }
    assert.ok(help.includes(m), `mark ${m} missing from help`);
  }
  for (const s of SETTINGS) {
    assert.ok(doc.includes(`| \`${s.key}\``), `setting ${s.key} missing from the docs' table`);
    assert.ok(help.includes(s.key), `setting ${s.key} missing from help`);
  }
});

Deno.test("App on a terminal: a countdown rewrites its own cells each second, not the screen", async () => {
  const { render: inkRender } = await import("ink");
  const { TERMINAL_RENDER_OPTIONS } = await import("../client/tui/mod.ts");
  class Tty extends EventEmitter {
    columns = 120;
    rows = 40;
    isTTY = true;
    writes: string[] = [];
    write = (chunk: string | Uint8Array, cb?: unknown): boolean => {
      this.writes.push(typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk));
      if (typeof cb === "function") cb();
      return true;
    };
  }
  class NoInput extends EventEmitter {
    isTTY = true;
    setEncoding() {}
    setRawMode() {}
    ref() {}
    unref() {}
    read = () => null;
  }
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob")] });
  for (const m of seededConversation("bob", "alice", 30, Date.now())) engine.seed(m);
  engine.seed(
    msg("ttl", {
      text: "counting down",
      sentAt: Date.now(),
      ttlMs: 3_600_000,
      ttlMode: "send",
      expiresAt: Date.now() + 3_600_000,
    }),
  );
  const out = new Tty();
  const app = inkRender(<App engine={engine} onQuit={() => {}} />, {
    ...TERMINAL_RENDER_OPTIONS,
    stdout: out as unknown as NodeJS.WriteStream,
    stdin: new NoInput() as unknown as NodeJS.ReadStream,
    patchConsole: false,
  });
  try {
    await waitFor("the whole screen once", () => out.writes.join("").includes("counting down"));
    await new Promise((r) => setTimeout(r, 700)); // history load, first tick
    const full = Math.max(...out.writes.map((w) => w.length));
    const from = out.writes.length;
    // Each frame rewrites only from the first changed cell: the seconds of "⏱59:58".
    const ticks = () => out.writes.slice(from).filter((w) => /\d/.test(w.replace(ANSI_ANY, "")));
    await waitFor("two countdown frames", () => ticks().length >= 2, 5000);
    const frames = out.writes.slice(from).filter((w) => w.length > 0);
    for (const f of frames) {
      assert.ok(f.length * 10 < full, `a frame of ${f.length} bytes against ${full} for the whole screen`);
      assert.ok(!f.includes("Contacts ("), "the contact list is not written again");
    }
  } finally {
    app.unmount();
    await app.waitUntilExit().catch(() => {});
  }
});

Deno.test("App: a message to a peer that cannot be reached is queued with the connection's error", async () => {
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob", { online: true })] });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    await type(r.stdin, "knock knock", ENTER);
    await waitFor("sending", () => /knock knock +…/.test(r.frame()));
    engine.emit({ event: "error", code: "PEER_TLS", message: "bob: certificate verify failed" });
    await waitFor("queued with the reason", () => /knock knock +⧖/.test(r.frame()));
    assert.match(r.frame(), /queued: cannot reach bob \(PEER_TLS: certificate verify failed\)/);
    engine.emit({ event: "peer-online", name: "bob" });
    await waitFor("sending again", () => /knock knock +…/.test(r.frame()));
  } finally {
    cleanup();
  }
});

Deno.test("layout: /search highlights every match, the current one apart, case-insensitively", () => {
  const v = layoutConversation({
    messages: [msg("a", { text: "Apple and apple" }), msg("b", { text: "an apple a day", sentAt: T0 + 1 })],
    me: "alice",
    peer: "bob",
    width: 80,
    height: 10,
    scroll: 0,
    now: T0,
    newMarkerId: null,
    search: { query: "apple", currentId: "b" },
  });
  const segs = v.lines.flatMap((l) => l.segments);
  assert.deepEqual(segs.filter((s) => s.tone === "match").map((s) => s.text), ["Apple", "apple"]);
  assert.deepEqual(segs.filter((s) => s.tone === "current").map((s) => s.text), ["apple"]);
  assert.equal(toneStyle("match", true).inverse, true, "visible without colour");
});
