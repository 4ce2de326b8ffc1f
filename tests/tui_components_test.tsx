/**
 * Component tests with ink-testing-library: each pane and the input box drawn on their own, then the whole
 * App on a fake engine, driven with keys and engine events, asserting what is on screen and what the UI
 * asked of the engine.
 */
import assert from "node:assert/strict";
import { cleanup, render } from "ink-testing-library";
import { App } from "../client/tui/app.tsx";
import { InputBox } from "../client/tui/input_box.tsx";
import { ContactList, LogPane, PeerPane, TopBar } from "../client/tui/panes.tsx";
import { VerifyScreen } from "../client/tui/overlays.tsx";
import { displayWidth } from "../client/tui/width.ts";
import {
  contact,
  FAKE_FINGERPRINT_ME,
  FakeEngine,
  fakePeerInfo,
  unverifiedTime,
  verifiedTime,
} from "./helpers/fake_engine.ts";

const T0 = Date.UTC(2026, 10, 28, 12, 0, 0);

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;
const plain = (s: string | undefined) => (s ?? "").replace(ANSI, "");

/** Polls until `check` passes (a frame is drawn asynchronously after a key or an event). */
async function waitFor(what: string, check: () => boolean, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const KEY = {
  enter: "\r",
  altEnter: "\x1b\r",
  ctrlJ: "\n",
  ctrlC: "\x03",
  esc: "\x1b",
  tab: "\t",
  backspace: "\x7f",
  up: "\x1b[A",
  pageUp: "\x1b[5~",
  ctrlEnd: "\x1b[1;5F",
  f1: "\x1bOP",
  pasteStart: "\x1b[200~",
  pasteEnd: "\x1b[201~",
};

/** Writes keys one write at a time, letting Ink handle each before the next (as a person types). */
async function type(stdin: { write: (s: string) => void }, ...keys: string[]): Promise<void> {
  for (const k of keys) {
    stdin.write(k);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// ---- panes on their own --------------------------------------------------------------------------------------

Deno.test("ContactList: online, unread, verified, unverified and key-changed markers; search header", () => {
  const contacts = [
    contact("alice", { pin: "verified" }),
    contact("bob", { pin: "changed" }),
    contact("carol", { online: false, pin: "first-use" }),
  ];
  const r = render(
    <ContactList
      contacts={contacts}
      unread={{ carol: 3 }}
      selected="alice"
      query=""
      cursor={0}
      focused={false}
      width={20}
      height={5}
    />,
  );
  const rows = plain(r.lastFrame()).split("\n");
  r.unmount();
  assert.equal(rows.length, 5);
  assert.match(rows[0], /Contacts \(3\)/);
  assert.match(rows[1], /▸● alice +✓/);
  assert.match(rows[2], /● bob +!/);
  assert.match(rows[3], /○ carol +\? 3/);
  for (const row of rows) assert.ok(displayWidth(row) <= 20, row);
  const s = render(
    <ContactList
      contacts={[]}
      unread={{}}
      selected={null}
      query="zz"
      cursor={0}
      focused
      width={20}
      height={3}
    />,
  );
  assert.match(plain(s.lastFrame()), /search: zz/);
  assert.match(plain(s.lastFrame()), /no match/);
  s.unmount();
});

Deno.test("PeerPane: certificate, validity on trusted time, revocation, TLS and pin state", () => {
  const info = fakePeerInfo("bob", {
    pin: "changed",
    pinnedFingerprint: "00".repeat(32),
    revoked: true,
    path: "relayed via 198.18.0.1:10041",
    pathKind: "relayed",
  });
  const r = render(<PeerPane info={info} contact={contact("bob")} width={40} height={30} />);
  const f = plain(r.lastFrame());
  r.unmount();
  for (
    const want of [
      /subject +CN=bob/,
      /issuer +CN=securechat test CA/,
      /serial +0f1e2d3c4b5a6978/,
      /KEY CHANGED/,
    ]
  ) {
    assert.match(f, want);
  }
  assert.match(f, /revoked +YES - REVOKED/);
  assert.match(f, /TLS +TLSv1\.3/);
  assert.match(f, /cipher +TLS_AES_256_GCM_SHA384\b/, "the cipher name whole");
  assert.match(f, /path +relayed via 198\.18\.0\.1:10041/, "how the session runs");
  assert.match(f, /valid now \(trusted time\)/);
  assert.match(f, /pinned \(old\) key fingerprint/);
  assert.match(f, new RegExp(info.fingerprint.slice(0, 4)));
  // On a 60x20 terminal the pane has 12 rows: what matters for trust comes first and stays visible.
  const small = render(<PeerPane info={info} contact={contact("bob")} width={43} height={12} />);
  const sf = plain(small.lastFrame());
  small.unmount();
  for (const want of [/KEY CHANGED/, /valid now/, /revoked +YES/, /SHA-256 fingerprint/]) {
    assert.match(sf, want);
  }
  assert.ok(sf.includes(info.fingerprint.slice(60, 64)), "the whole fingerprint fits");
  const u = render(
    <PeerPane info={{ ...info, validNow: null }} contact={contact("bob")} width={40} height={24} />,
  );
  assert.match(plain(u.lastFrame()), /unknown: time unverified/);
  u.unmount();
});

Deno.test("TopBar and LogPane: time status always shown; log keeps the newest lines", () => {
  const t = render(<TopBar me="alice" time={unverifiedTime()} width={80} />);
  assert.match(plain(t.lastFrame()), /securechat · alice .*time UNVERIFIED/);
  t.unmount();
  const entries = Array.from(
    { length: 10 },
    (_, i) => ({ seq: i, at: T0, level: "info" as const, text: `event ${i}` }),
  );
  const l = render(<LogPane entries={entries} width={40} height={3} />);
  const f = plain(l.lastFrame());
  l.unmount();
  assert.ok(f.includes("event 9") && f.includes("event 7") && !f.includes("event 6"), f);
});

Deno.test("InputBox: wide characters, multi-line text and a cursor that stays visible", () => {
  const text = "first line\n日本語の文字 and 🎉 emoji";
  const r = render(<InputBox text={text} cursor={text.length} width={20} maxRows={2} />);
  const rows = plain(r.lastFrame()).split("\n");
  r.unmount();
  assert.equal(rows.length, 2); // three rows of text, capped at two and scrolled to the cursor
  assert.match(rows[1], /🎉 emoji/);
  assert.ok(!rows.join("").includes("first line"));
  for (const row of rows) assert.ok(displayWidth(row) <= 20, row);
  const p = render(<InputBox text="" cursor={0} width={30} maxRows={3} placeholder="message bob" />);
  assert.match(plain(p.lastFrame()), /> +message bob/);
  p.unmount();
});

Deno.test("VerifyScreen: both fingerprints as text and a QR code when there is room", () => {
  const theirs = fakePeerInfo("bob").fingerprint;
  const r = render(
    <VerifyScreen
      me="alice"
      peer="bob"
      ours={FAKE_FINGERPRINT_ME}
      theirs={theirs}
      showing="theirs"
      width={80}
      height={24}
    />,
  );
  const f = plain(r.lastFrame());
  r.unmount();
  assert.match(f, /your key \(alice\)/);
  assert.match(f, /a1a1 a1a1/);
  assert.match(f, new RegExp(theirs.slice(0, 4) + " " + theirs.slice(4, 8)));
  assert.match(f, /QR: bob's key/);
  assert.ok(f.includes("█▀▀▀▀▀█") || f.includes("▄▄▄▄▄"), "QR finder pattern drawn");
});

// ---- the App on a fake engine --------------------------------------------------------------------------------

function app(engine: FakeEngine, size = { columns: 100, rows: 30 }) {
  let quits = 0;
  const r = render(<App engine={engine} onQuit={() => quits++} size={size} />);
  return { ...r, quits: () => quits, frame: () => plain(r.lastFrame()) };
}

Deno.test({
  name: "App: send a message, see it delivered, receive an answer",
  fn: async () => {
    const engine = new FakeEngine({ name: "alice", contacts: [contact("bob")], autoDeliver: true });
    const r = app(engine);
    try {
      await waitFor("bob opened", () => r.frame().includes("alice → bob"));
      await type(r.stdin, "hello bob", KEY.enter);
      await waitFor("sent", () => engine.sent.length === 1);
      assert.deepEqual(engine.sent[0], { to: "bob", text: "hello bob", opts: { ttlMs: null } });
      await waitFor("delivered mark", () => /alice +hello bob +✓✓/.test(r.frame()));
      engine.receive("bob", "hi alice 👋");
      await waitFor("answer", () => r.frame().includes("hi alice 👋"));
      // Shown in the open conversation: the engine is told it was read.
      await waitFor("markRead", () => engine.readMarks.length === 1);
      // Typing notices both ways: ours is sent (throttled), theirs is shown above the input.
      assert.deepEqual(engine.typingTo, ["bob"]); // once for "hello bob", however many keys
      engine.emit({ event: "typing", from: "bob" });
      await waitFor("typing notice", () => r.frame().includes("bob is typing..."));
    } finally {
      cleanup();
    }
  },
});

Deno.test("App: an expiring message counts down on trusted time and vanishes on the expired event", async () => {
  let now = T0;
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("bob")],
    now: () => now,
    time: verifiedTime(T0),
  });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    const m = engine.receive("bob", "burn after reading", {
      ttlMs: 30_000,
      ttlMode: "send",
      expiresAt: T0 + 30_000,
    });
    await waitFor("countdown 30s", () => /burn after reading +⏱30s/.test(r.frame()));
    now = T0 + 12_000;
    await waitFor("countdown 18s", () => /burn after reading +⏱18s/.test(r.frame()));
    engine.expire(m.id);
    await waitFor("gone", () => !r.frame().includes("burn after reading"));
    assert.match(r.frame(), /a message from bob expired \(30s lifetime\)/);
  } finally {
    cleanup();
  }
});

Deno.test("App: an expiring message never appears while time is unverified", async () => {
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("bob")],
    now: () => T0,
    time: unverifiedTime(),
  });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    engine.receive("bob", "plain hello");
    // The fake engine hides it itself; the UI must also refuse one the engine leaks in an event.
    engine.emit({
      event: "message",
      message: {
        id: "leak",
        peer: "bob",
        from: "bob",
        direction: "in",
        text: "SECRET-EXPIRING",
        sentAt: T0,
        expiresAt: T0 + 60_000,
        ttlMs: 60_000,
        ttlMode: "send",
        state: "delivered",
      },
    });
    engine.receive("bob", "second expiring", { ttlMs: 60_000, ttlMode: "send", expiresAt: T0 + 60_000 });
    await waitFor("plain shown", () => r.frame().includes("plain hello"));
    for (const f of r.frames) assert.ok(!f.includes("SECRET-EXPIRING") && !f.includes("second expiring"));
    assert.match(r.frame(), /time UNVERIFIED/);
    assert.ok(!engine.readMarks.includes("leak"), "a hidden message is not marked read");
    // Once time is verified, the engine's history has it and the UI shows it.
    engine.setTime(verifiedTime(T0));
    await waitFor("shown after verification", () => r.frame().includes("second expiring"));
  } finally {
    cleanup();
  }
});

Deno.test("App: /msg with --ttl, /ttl default, multi-line input, paste and history", async () => {
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob")], now: () => T0 });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    await type(r.stdin, "/msg self destruct --ttl 10s", KEY.enter);
    await waitFor("sent", () => engine.sent.length === 1);
    assert.deepEqual(engine.sent[0].opts, { ttlMs: 10_000 });
    await waitFor("countdown", () => /self destruct +… ⏱10s/.test(r.frame()));
    await type(r.stdin, "/ttl 5m", KEY.enter);
    await waitFor("ttl set", () => engine.ttlSet.length === 1);
    assert.deepEqual(engine.ttlSet[0], { peer: "bob", ttlMs: 300_000 });
    await waitFor("status bar", () => r.frame().includes("ttl 5m"));
    await type(r.stdin, "line one", KEY.altEnter, "line two", KEY.ctrlJ, "three", KEY.enter);
    await waitFor("multi-line sent", () => engine.sent.length === 2);
    assert.equal(engine.sent[1].text, "line one\nline two\nthree");
    assert.deepEqual(engine.sent[1].opts, { ttlMs: 300_000 });
    await type(r.stdin, KEY.pasteStart + "pasted\nblock" + KEY.pasteEnd);
    await waitFor("paste in box", () => /> pasted\n +block/.test(r.frame()));
    await type(r.stdin, KEY.enter);
    await waitFor("paste sent", () => engine.sent.length === 3);
    assert.equal(engine.sent[2].text, "pasted\nblock");
    await type(r.stdin, KEY.up);
    await waitFor("history recalls the paste", () => /> pasted/.test(r.frame()));
    // Keys that arrive in one write (fast typing, tmux): each is handled.
    await type(r.stdin, "\x1b[B"); // Down: back from history to the empty draft
    await waitFor("draft", () => !/> pasted/.test(r.frame()));
    await type(r.stdin, "xy" + "\x15" + "ab" + "\x7f" + "c\r");
    await waitFor("one-write send", () => engine.sent.length === 4);
    assert.equal(engine.sent[3].text, "ac");
  } finally {
    cleanup();
  }
});

Deno.test("App: /verify shows fingerprints and marks verified on y; /accept-key only for a changed key", async () => {
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob")], now: () => T0 });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    await type(r.stdin, "/accept-key", KEY.enter);
    await waitFor("refused", () => r.frame().includes("has not changed"));
    assert.equal(engine.accepted.length, 0);
    await type(r.stdin, "/verify", KEY.enter);
    await waitFor("verify screen", () => r.frame().includes("Verify bob"));
    assert.match(r.frame(), /a1a1 a1a1/);
    await type(r.stdin, "y");
    await waitFor("verified", () => engine.verified.length === 1);
    await waitFor("marker", () => /bob +✓/.test(r.frame()));
    engine.setPeerInfo("bob", fakePeerInfo("bob", { pin: "changed" }));
    engine.emit({
      event: "key-changed",
      name: "bob",
      oldFingerprint: "aa".repeat(32),
      newFingerprint: "bb".repeat(32),
    });
    await waitFor("key change logged", () => r.frame().includes("KEY CHANGED for bob"));
    await type(r.stdin, "/accept-key", KEY.enter);
    await waitFor("accepted", () => engine.accepted.length === 1);
  } finally {
    cleanup();
  }
});

Deno.test("App: F1 help, Tab completion, contact search and switching, Ctrl+C quits", async () => {
  const engine = new FakeEngine({
    name: "alice",
    contacts: [contact("bob"), contact("carol"), contact("dave", { online: false })],
    now: () => T0,
  });
  const r = app(engine);
  try {
    await waitFor("open", () => r.frame().includes("alice → bob"));
    await type(r.stdin, KEY.f1);
    await waitFor("help", () => r.frame().includes("securechat help"));
    await type(r.stdin, KEY.esc);
    await waitFor("help closed", () => !r.frame().includes("securechat help"));
    await type(r.stdin, "/he", KEY.tab);
    await waitFor("completed", () => r.frame().includes("> /help"));
    await type(r.stdin, KEY.enter);
    await waitFor("help via command", () => r.frame().includes("securechat help"));
    await type(r.stdin, KEY.esc);
    await waitFor("help closed again", () => !r.frame().includes("securechat help"));
    await type(r.stdin, "/contacts", KEY.enter);
    await waitFor("search focus", () => r.frame().includes("search:"));
    await type(r.stdin, "car", KEY.enter);
    await waitFor("carol open", () => r.frame().includes("alice → carol"));
    engine.receive("bob", "ping from bob");
    await waitFor("unread badge", () => /bob +\? 1/.test(r.frame()));
    await type(r.stdin, "\x10"); // Ctrl+P: previous conversation
    await waitFor("switched", () => r.frame().includes("alice → bob"));
    await waitFor("read", () => r.frame().includes("ping from bob"));
    assert.equal(r.quits(), 0);
    await type(r.stdin, KEY.ctrlC);
    await waitFor("quit", () => r.quits() === 1);
    assert.match(r.frame(), /closing connections and withdrawing your address/);
  } finally {
    cleanup();
  }
});

Deno.test("App: draws within 60x20 exactly, and asks for more room below it", async () => {
  const engine = new FakeEngine({ name: "alice", contacts: [contact("bob")], now: () => T0 });
  for (let i = 0; i < 30; i++) {
    engine.seed({
      id: `s${i}`,
      peer: "bob",
      from: i % 2 ? "bob" : "alice",
      direction: i % 2 ? "in" : "out",
      text: `seeded ${i} 日本語 🎉 ${"long ".repeat(i % 5)}`,
      sentAt: T0 - (30 - i) * 1000,
      expiresAt: null,
      ttlMs: null,
      ttlMode: null,
      state: "read",
    });
  }
  const r = app(engine, { columns: 60, rows: 20 });
  try {
    await waitFor("history", () => r.frame().includes("seeded 29"));
    const rows = r.frame().split("\n");
    assert.equal(rows.length, 20);
    for (const row of rows) assert.ok(displayWidth(row) <= 60, `${displayWidth(row)}: ${row}`);
    await type(r.stdin, KEY.pageUp);
    await waitFor("scrolled", () => !r.frame().includes("seeded 29") && r.frame().includes("scrolled up"));
    // Scrolled up, new messages arriving below do not move what the reader is looking at.
    const conversationRows = (f: string) => f.split("\n").slice(1, 13).map((l) => l.slice(17)).join("\n");
    const before = conversationRows(r.frame());
    engine.receive("bob", "a new one\nwith two lines");
    await waitFor("scroll grew", () => /scrolled up \d+ lines/.test(r.frame()) && r.frame() !== before);
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(conversationRows(r.frame()), before);
    await type(r.stdin, KEY.ctrlEnd);
    await waitFor("back at the newest", () => r.frame().includes("with two lines"));
  } finally {
    cleanup();
  }
  const small = app(new FakeEngine({ name: "alice" }), { columns: 50, rows: 15 });
  try {
    await waitFor("too small", () => small.frame().includes("needs at least 60x20"));
  } finally {
    cleanup();
  }
});
