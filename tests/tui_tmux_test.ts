/**
 * The chat screen in a real terminal (tmux): `deno task demo` as a user runs it (a phonebook with its Roughtime
 * server, two enrolled users, the real engine): type a message with a lifetime, see it delivered, see its
 * countdown go down, see it vanish (and the log say so without its text), resize down to 60x20, quit with
 * Ctrl+C and find the demo's folder removed. A second test runs the UI on the fake engine with time unverified
 * and checks that no expiring message is ever on screen until time is verified.
 * Skipped with a message when tmux is not installed (CI installs it).
 */
import assert from "node:assert/strict";
import { displayWidth } from "../client/tui/width.ts";
import { withTools } from "./helpers/tools.ts";
import { Screen, tmux } from "./helpers/tmux.ts";

const REPO = new URL("..", import.meta.url).pathname;

function fits(screen: string, columns: number, rows: number): boolean {
  try {
    assertFits(screen, columns, rows);
    return true;
  } catch {
    return false;
  }
}

function assertFits(screen: string, columns: number, rows: number): void {
  const lines = screen.replace(/\n$/, "").split("\n");
  assert.ok(lines.length <= rows, `${lines.length} lines on a ${rows}-row terminal`);
  for (const l of lines) assert.ok(displayWidth(l) <= columns, `line wider than ${columns}: ${l}`);
  assert.match(lines[0], /securechat · you/, "top bar on the first row");
  assert.match(screen, /time (verified|STALE|UNVERIFIED)/, "time status visible");
  assert.match(lines[lines.length - 1], /you → assistant/, "status bar on the last row");
}

async function demoRuns(): Promise<Set<string>> {
  const runs = new Set<string>();
  try {
    for await (const e of Deno.readDir(`${REPO}.securechat-demo`)) runs.add(e.name);
  } catch {
    // No demo folder at all.
  }
  return runs;
}

Deno.test(withTools("tmux", {
  name: "tmux: deno task demo - send with a lifetime, delivered, countdown, vanish, resize, Ctrl+C cleans up",

  fn: async () => {
    const before = await demoRuns();
    const s = await Screen.start("deno task demo", 120, 36);
    try {
      // Wait for the first drawn screen and the assistant's greeting before typing.
      await s.waitFor(
        "the chat screen",
        (t) => t.includes("securechat · you") && t.includes("I'm the demo"),
        90_000,
      );
      const ours = [...await demoRuns()].filter((r) => !before.has(r));
      assert.equal(ours.length, 1, "the demo made one temporary folder");

      await s.type("/msg vanishing words --ttl 8s", "Enter");
      const delivered = await s.waitFor(
        "our message delivered with a countdown",
        (t) => /you +vanishing words +(?:✓✓|◉) ⏱\d+s/.test(t),
      );
      const first = Number(/you +vanishing words +(?:✓✓|◉) ⏱(\d+)s/.exec(delivered)![1]);
      assert.ok(first <= 8 && first > 0, `countdown ${first}`);
      // The assistant answers with the same lifetime: its countdown is shown too.
      await s.waitFor(
        "the answer",
        (t) => /Got "vanishing words"[\s\S]*/.test(t) && /assistant +Got.*⏱\d+s/.test(t),
      );
      const later = await s.waitFor(
        "the countdown going down",
        (t) => {
          const m = /you +vanishing words +(?:✓✓|◉) ⏱(\d+)s/.exec(t);
          return m !== null && Number(m[1]) < first;
        },
      );
      assert.ok(later.includes("vanishing words"));
      await s.waitFor("the message gone", (t) => !t.includes("vanishing words"), 20_000);
      // The engine's expired events follow within its sweep period; the log names them without their text.
      const logged = await s.waitFor(
        "both expiries logged",
        (t) =>
          /a message to assistant expired \(8s lifetime\)/.test(t) && /from assistant expired \(8s/.test(t),
      );
      assert.ok(!logged.includes("vanishing words"), "the text is gone from the screen, log included");

      await s.resize(60, 20);
      // Each size: the whole screen redrawn to fit (top bar first, status bar last, no line too wide).
      for (const [c, r] of [[60, 20], [100, 30], [61, 21], [60, 20]]) {
        await s.resize(c, r);
        await s.waitFor(
          `redraw at ${c}x${r}`,
          (t) => fits(t, c, r) && new RegExp(`─ log \\(/log: all, in full\\) ─{${c - 28}}`).test(t),
          10_000,
        );
      }

      await s.type("", "C-c");
      const end = await s.waitFor("a clean exit", (t) => t.includes("EXIT-STATUS="), 20_000);
      assert.match(end, /EXIT-STATUS=0/);
      assert.match(end, /Demo stopped: phonebook closed, temporary users removed/);
      const after = await demoRuns();
      assert.ok(!after.has(ours[0]), "the demo's temporary folder is removed");
    } finally {
      await s.close();
    }
  },
}));

Deno.test(withTools("tmux", {
  name: "tmux: closing the terminal window (SIGHUP) still closes the engines and removes the demo's folder",
  fn: async () => {
    const before = await demoRuns();
    const s = await Screen.start("deno task demo", 100, 30);
    let ours: string[] = [];
    try {
      await s.waitFor("the chat screen", (t) => t.includes("securechat · you"), 90_000);
      ours = [...await demoRuns()].filter((r) => !before.has(r));
      assert.equal(ours.length, 1);
    } finally {
      await tmux("kill-session", "-t", s.session).catch(() => "");
    }
    const end = performance.now() + 20_000;
    while ((await demoRuns()).has(ours[0]) && performance.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(!(await demoRuns()).has(ours[0]), "the demo's folder is removed after its terminal closed");
  },
}));

Deno.test(withTools("tmux", {
  name: "tmux: no expiring message on screen while time is unverified, then shown once verified",

  fn: async () => {
    const s = await Screen.start("deno run --allow-env tests/helpers/fake_engine.ts --unverified", 100, 30);
    try {
      await s.waitFor("first screen", (t) => t.includes("securechat · you"), 60_000);
      // Watch every screen until time is verified (the fake verifies it after 3 s).
      const seen: string[] = [];
      await s.waitFor("time verified", (t) => {
        seen.push(t);
        return /time verified/.test(t);
      });
      assert.ok(seen.some((t) => /time UNVERIFIED/.test(t)), "started unverified");
      for (const t of seen) {
        if (!/time UNVERIFIED/.test(t)) continue;
        assert.ok(!t.includes("destroys itself"), "expiring message shown while unverified");
        assert.ok(!t.includes("LEAKED"), "leaked expiring message shown while unverified");
      }
      await s.waitFor("expiring message shown after verification", (t) => t.includes("destroys itself"));
      assert.ok(!(await s.capture()).includes("LEAKED"), "a message the engine does not list is never shown");
      await s.type("", "C-c");
      await s.waitFor("exit", (t) => t.includes("EXIT-STATUS=0"), 20_000);
    } finally {
      await s.close();
    }
  },
}));
