/**
 * Issue 12 ("a terminal chat people keep open all day") in a real terminal (tmux), on the scripted fake engine
 * (tests/helpers/fake_engine.ts): a skin-tone emoji at 80x24 leaves the top bar in place, text wraps at the
 * pane's width at 60x20 and 120x40, a message to an offline contact is shown queued with its reason, a
 * message in another conversation rings the bell and shows in the title, a 20,000-character paste is not cut
 * without asking, and /peer is remembered in settings.json. Skipped with a message when tmux is missing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { displayWidth } from "../client/tui/width.ts";
import { withTools } from "./helpers/tools.ts";
import { newSession, Screen, tmux } from "./helpers/tmux.ts";

const REPO = new URL("..", import.meta.url).pathname;

const FAKE = "deno run --allow-env tests/helpers/fake_engine.ts";

/** The fake engine's screen, once it is drawn (with the assistant's greeting): no key is sent before. */
async function startFake(cmd: string, columns: number, rows: number): Promise<Screen> {
  const s = await Screen.start(cmd, columns, rows);
  await s.waitFor("the first screen", (t) => t.includes("securechat · you") && t.includes("Hello!"), 60_000);
  return s;
}

function rowsOf(screen: string): string[] {
  return screen.replace(/\n$/, "").split("\n");
}

Deno.test(withTools("tmux", {
  name: "tmux 80x24: messages with a skin-tone emoji, a flag and a ZWJ family leave the top bar on screen",
  fn: async () => {
    const s = await startFake(FAKE, 80, 24);
    try {
      for (let i = 0; i < 6; i++) {
        await s.type(`ok ${i} 👍🏽 🇫🇷 👨‍👩‍👧`, "Enter");
        await s.waitFor(`message ${i} on screen`, (t) => t.includes(`ok ${i} `));
      }
      // Each one delivered and read: its mark on its own row, not pushed onto the next one.
      const screen = await s.waitFor(
        "the six messages read",
        (t) => (t.match(/ok \d .*◉/g) ?? []).length >= 4,
      );
      const rows = rowsOf(screen);
      assert.equal(rows.length, 24);
      assert.match(rows[0], /securechat · you/, "the top bar stays on the first row");
      assert.match(rows[0], /time verified/);
      assert.match(rows[2], /assistant/, "the first contact is still on screen");
      assert.match(rows[rows.length - 1], /you → assistant/, "the status bar stays on the last row");
      for (const r of rows) {
        assert.ok(displayWidth(r) <= 79, `nothing drawn in the last column: ${r}`);
        assert.ok(!/^\s*[◉✓…]\s*$/.test(r), `a mark alone on a row: ${JSON.stringify(r)}`);
      }
      // Another program scribbles over the screen (as `wall` or a background job would): Ctrl+L draws
      // everything again.
      const tty = await s.display("#{pane_tty}");
      // Through a shell: Deno asks for --allow-all to open a device file itself.
      const scribble = await new Deno.Command("sh", {
        args: ["-c", `printf '\\033[1;1HGARBAGE-TOP\\033[12;30HGARBAGE-MIDDLE\\n\\n' > "$0"`, tty],
      }).output();
      assert.ok(scribble.success, new TextDecoder().decode(scribble.stderr));
      await s.waitFor("the scribbles", (t) => t.includes("GARBAGE-TOP") && t.includes("GARBAGE-MIDDLE"));
      await s.type("", "C-l");
      const again = await s.waitFor(
        "repainted",
        (t) =>
          !t.includes("GARBAGE") && rowsOf(t)[0].includes("securechat · you") && /you → assistant/.test(t),
      );
      assert.match(rowsOf(again)[0], /securechat · you/);
      assert.match(rowsOf(again)[rows.length - 1], /you → assistant/);
      assert.equal((again.match(/ok \d /g) ?? []).length, (screen.match(/ok \d /g) ?? []).length);
    } finally {
      await s.close();
    }
  },
}));

/** Cells of message text per row: the numbered words of the WRAP message on each of its rows. */
async function wrapWidths(columns: number, rows: number): Promise<number[]> {
  const s = await startFake(`${FAKE} --script wrap`, columns, rows);
  try {
    const screen = await s.waitFor("the long message", (t) => t.includes("WRAP w00"));
    const lines = rowsOf(screen).filter((r) => /w\d\d/.test(r));
    assert.ok(lines.length >= 2, screen);
    // The text of each row: from the first word to the last on it.
    return lines.map((r) => {
      const m = /(WRAP )?(w\d\d( w\d\d)*)/.exec(r)!;
      return displayWidth(m[0]);
    }).slice(0, -1); // the last row of a message is as short as its text
  } finally {
    await s.close();
  }
}

Deno.test(withTools("tmux", {
  name: "tmux: text wraps at the pane's width, not at a fraction of it (60x20 and 120x40)",
  fn: async () => {
    // 60x20: 59 cells drawn, 14 contacts, 1 rule, "16:05 assistant " (16): 28 for text. Before: 16.
    const narrow = await wrapWidths(60, 20);
    for (const w of narrow) assert.ok(w >= 25, `60x20: a row of ${w} cells`);
    // 120x40: the peer pane is closed by default (it opens from 140 columns), 22 contacts: 80 for text.
    const wide = await wrapWidths(120, 40);
    for (const w of wide) assert.ok(w >= 75, `120x40: a row of ${w} cells`);
  },
}));

Deno.test(withTools("tmux", {
  name: "tmux: a message to an offline contact is shown queued, with the reason, not as sending",
  fn: async () => {
    const s = await startFake(FAKE, 100, 30);
    try {
      await s.type("/open carol", "Enter");
      await s.waitFor("carol's conversation", (t) => /you → carol/.test(t));
      await s.type("are you there", "Enter");
      const screen = await s.waitFor("the queued mark", (t) => /you +are you there +⧖/.test(t));
      assert.match(screen, /⧖ queued: carol is offline: sent when they come online/);
      assert.ok(!/are you there +…/.test(screen), "not shown as sending");
    } finally {
      await s.close();
    }
  },
}));

Deno.test(withTools("tmux", {
  name:
    "tmux: a message in another conversation rings the bell, and shows in the title and the activity list",
  fn: async () => {
    const s = await startFake(`${FAKE} --script other`, 100, 30);
    try {
      await s.waitFor("the greeting read", (t) => t.includes("Hello!"));
      assert.equal(await s.display("#{window_bell_flag}"), "0", "no bell for the open conversation");
      const screen = await s.waitFor("carol in the activity list", (t) => /act 1:carol\(1\)/.test(t));
      assert.match(rowsOf(screen)[0], /act 1:carol\(1\)/);
      const end = performance.now() + 5000;
      while (await s.display("#{window_bell_flag}") !== "1" && performance.now() < end) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(await s.display("#{window_bell_flag}"), "1", "the terminal bell rang");
      assert.match(await s.display("#{pane_title}"), /securechat \(1\)/, "unread count in the title");
      // Alt+1 jumps to it.
      await s.type("", "M-1");
      await s.waitFor(
        "carol's conversation opened",
        (t) => /you → carol/.test(t) && t.includes("a word from"),
      );
    } finally {
      await s.close();
    }
  },
}));

Deno.test(withTools("tmux", {
  name: "tmux: a 20,000-character paste is not cut without a word: y inserts what fits, n drops it",
  fn: async () => {
    const s = await startFake(FAKE, 100, 30);
    try {
      const big = "x".repeat(20_000);
      await s.paste(big);
      const warned = await s.waitFor("the warning", (t) => /paste is 20,000 bytes/.test(t));
      assert.match(warned, /y inserts the first 16,384/, "a message's limit, in bytes");
      assert.ok(!/> x/.test(warned), "nothing inserted before the answer");
      await s.type("n");
      await s.waitFor("dropped", (t) => /paste dropped: nothing inserted/.test(t));
      await s.paste(big);
      await s.waitFor("the warning again", (t) => /paste is 20,000 bytes/.test(t));
      await s.type("y");
      const cut = await s.waitFor("inserted, cut", (t) => /paste cut to 16,384 bytes/.test(t));
      assert.match(cut, /^ {2}x{90}/m, "the input holds the first 16,384 characters");
      // Typing more is refused with a word, not silently.
      await s.type("z");
      await s.waitFor("input full", (t) => /input full: a message is at most 16,384 bytes/.test(t));
    } finally {
      await s.close();
    }
  },
}));

Deno.test(withTools("tmux", {
  name: "tmux: /peer is remembered in settings.json for the next start",
  fn: async () => {
    const home = await Deno.makeTempDir();
    try {
      const cmd = `deno run --allow-env --allow-read='${home}' --allow-write='${home}' ` +
        `tests/helpers/fake_engine.ts --home '${home}'`;
      const s = await startFake(cmd, 120, 30);
      try {
        assert.ok(!(await s.capture()).includes("SHA-256 fingerprint"), "closed by default at 120 columns");
        await s.type("/peer", "Enter");
        await s.waitFor("the pane open", (t) => t.includes("SHA-256 fingerprint"));
      } finally {
        await s.close();
      }
      const saved = JSON.parse(await Deno.readTextFile(join(home, "settings.json")));
      assert.equal(saved.pane, "shown");
      const again = await startFake(cmd, 120, 30);
      try {
        await again.waitFor("the pane open at start", (t) => t.includes("SHA-256 fingerprint"));
      } finally {
        await again.close();
      }
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  },
}));

/** The pane with its escape sequences: colours are SGR 30-37, 38;..., 90-97 (foreground). */
async function colouredCells(cmdEnv: string): Promise<number> {
  const session = `scdaily-${crypto.randomUUID().slice(0, 8)}`;
  const cmd = `cd '${REPO}' && ${cmdEnv} ${FAKE}; sleep 60`;
  await newSession("-d", "-s", session, "-x", "100", "-y", "30", cmd);
  try {
    const s = new Screen(session);
    await s.waitFor(
      "the first screen",
      (t) => t.includes("securechat · you") && t.includes("Hello!"),
      60_000,
    );
    const raw = await tmux("capture-pane", "-p", "-e", "-t", session);
    // deno-lint-ignore no-control-regex
    return [...raw.matchAll(/\x1b\[([0-9;]*)m/g)].filter((m) =>
      m[1].split(";").some((p) => /^(3[0-8]|9[0-7])$/.test(p))
    ).length;
  } finally {
    await tmux("kill-session", "-t", session).catch(() => "");
  }
}

Deno.test(withTools("tmux", {
  name: "tmux: NO_COLOR is honoured (no colour at all), colours otherwise",
  fn: async () => {
    assert.ok(await colouredCells("unset NO_COLOR; export FORCE_COLOR=1 &&") > 0, "colours without NO_COLOR");
    assert.equal(await colouredCells("export NO_COLOR=1 &&"), 0, "no colour with NO_COLOR");
  },
}));
