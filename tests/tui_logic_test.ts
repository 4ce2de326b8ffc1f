/**
 * The terminal UI's pure logic: display widths, lifetimes, command parsing and completion, the input editing
 * model, key splitting, the state reducer (events from the engine), the conversation layout and the screen
 * geometry. No terminal involved.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { complete, parseInput } from "../client/tui/commands.ts";
import { COUNTDOWN_WIDTH, layoutConversation } from "../client/tui/conversation_layout.ts";
import {
  DurationError,
  formatCountdown,
  formatTimeStatus,
  formatTtl,
  groupFingerprint,
  MAX_TTL_MS,
  parseDuration,
} from "../client/tui/format.ts";
import * as ed from "../client/tui/input_state.ts";
import { splitKeys } from "../client/tui/keys.ts";
import { COMFORTABLE_CONVERSATION, computeLayout, MIN_COLUMNS, MIN_ROWS } from "../client/tui/layout.ts";
import {
  filterContacts,
  initialState,
  markerFor,
  reduce,
  type UiState,
  visibleMessages,
} from "../client/tui/model.ts";
import { qrMatrix } from "../client/tui/qr.ts";
import { TrustedNow } from "../client/tui/app.tsx";
import { displayWidth, graphemes, sanitize, truncate, wrapText } from "../client/tui/width.ts";
import type { ChatMessage, EngineEvent } from "../client/engine_types.ts";
import { contact, unverifiedTime, verifiedTime } from "./helpers/fake_engine.ts";

const T0 = Date.UTC(2026, 10, 28, 12, 0, 0);

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

// ---- width ---------------------------------------------------------------------------------------------------

Deno.test("width: CJK and emoji take two cells, combining marks none", () => {
  assert.equal(displayWidth("abc"), 3);
  assert.equal(displayWidth("日本語"), 6);
  assert.equal(displayWidth("🎉"), 2);
  assert.equal(displayWidth("👩‍👩‍👧"), 2); // one ZWJ family
  assert.equal(displayWidth("e\u0301"), 1); // e + combining acute
  assert.equal(displayWidth("ｈｉ"), 4); // fullwidth forms
});

Deno.test("width: truncate never splits a grapheme and never exceeds the width", () => {
  assert.equal(truncate("日本語です", 5), "日本…");
  assert.equal(truncate("ab🎉cd", 4), "ab…");
  assert.equal(truncate("short", 10), "short");
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 40 }), fc.integer({ min: 1, max: 30 }), (s, w) => {
      const t = truncate(s, w);
      assert.ok(displayWidth(t) <= w, `${JSON.stringify(t)} wider than ${w}`);
    }),
  );
});

Deno.test("width: wrapText lines fit and keep every non-space character in order", () => {
  fc.assert(
    fc.property(
      fc.string({ unit: "grapheme", maxLength: 120 }),
      fc.integer({ min: 2, max: 40 }),
      (s, w) => {
        const clean = sanitize(s);
        const lines = wrapText(clean, w);
        // A line fits, or is one grapheme wider than the line (it cannot be split further).
        for (const l of lines) {
          assert.ok(displayWidth(l) <= w || graphemes(l).length === 1, `${JSON.stringify(l)} > ${w}`);
        }
        assert.equal(lines.join("").replace(/\s/g, ""), clean.replace(/\s/g, ""));
      },
    ),
  );
  assert.deepEqual(wrapText("hello world foo", 11), ["hello world", "foo"]);
  assert.deepEqual(wrapText("a\nb", 10), ["a", "b"]);
});

Deno.test("width: sanitize removes escape sequences a peer could use to repaint the screen", () => {
  const evil = "hi\x1b[2J\x1b]0;pwned\x07\u009b31m";
  const s = sanitize(evil);
  // deno-lint-ignore no-control-regex
  assert.ok(!/[\x00-\x08\x0b-\x1f\x7f-\x9f]/.test(s), JSON.stringify(s));
  assert.ok(s.startsWith("hi"));
  assert.ok(!/[\u202a-\u202e\u2066-\u2069]/.test(sanitize("evil\u202egnp.exe")), "bidi override neutralised");
});

// ---- format --------------------------------------------------------------------------------------------------

Deno.test("format: lifetimes parse and print", () => {
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("2d"), 172_800_000);
  assert.equal(parseDuration("45"), 45_000);
  assert.equal(parseDuration("off"), null);
  assert.equal(parseDuration(" OFF "), null);
  for (const bad of ["0s", "-5s", "5x", "s", "", "1.5m", "5m junk", "31d", "NaN", "1e3s"]) {
    assert.throws(() => parseDuration(bad), DurationError, bad);
  }
  assert.equal(parseDuration("30d"), MAX_TTL_MS);
  assert.equal(formatTtl(30_000), "30s");
  assert.equal(formatTtl(300_000), "5m");
  assert.equal(formatTtl(5_400_000), "1h 30m");
  for (const ms of [1000, 59_000, 60_000, 3_600_000, 86_400_000]) {
    assert.equal(parseDuration(formatTtl(ms).replace(" ", "")), ms);
  }
});

Deno.test("format: countdown rounds up so a visible message never shows 0", () => {
  assert.equal(formatCountdown(9_001), "10s");
  assert.equal(formatCountdown(1), "1s");
  assert.equal(formatCountdown(0), "0s");
  assert.equal(formatCountdown(-500), "0s");
  assert.equal(formatCountdown(65_000), "1:05");
  assert.equal(formatCountdown(2 * 3_600_000 + 60_000), "2h01");
});

Deno.test("format: time status names the state, agreement and uncertainty", () => {
  assert.match(formatTimeStatus(verifiedTime(T0, 12)), /verified 3\/3 agree ±12ms/);
  assert.match(formatTimeStatus(unverifiedTime()), /UNVERIFIED .*expiring messages hidden/);
  assert.match(formatTimeStatus({ ...verifiedTime(T0, 2500), state: "stale" }), /STALE 3\/3 agree ±2\.5s/);
  assert.equal(groupFingerprint("AB:CD:" + "0".repeat(60)).split(" ").length, 16);
});

// ---- commands ------------------------------------------------------------------------------------------------

Deno.test("commands: plain text, /msg with a lifetime in any position, and errors", () => {
  assert.deepEqual(parseInput("hello"), { kind: "send", text: "hello" });
  assert.deepEqual(parseInput("//etc/passwd"), { kind: "send", text: "/etc/passwd" });
  assert.deepEqual(parseInput("/msg secret plan --ttl 10s"), {
    kind: "send",
    text: "secret plan",
    ttlMs: 10_000,
  });
  assert.deepEqual(parseInput("/msg --ttl=5m later"), { kind: "send", text: "later", ttlMs: 300_000 });
  assert.deepEqual(parseInput("/msg x --ttl 30s --after-read"), {
    kind: "send",
    text: "x",
    ttlMs: 30_000,
    ttlMode: "read",
  });
  assert.deepEqual(parseInput("/msg keep --ttl off"), { kind: "send", text: "keep", ttlMs: null });
  assert.equal(parseInput("/msg --ttl 10s").kind, "error");
  assert.equal(parseInput("/msg hi --ttl").kind, "error");
  assert.equal(parseInput("/msg hi --ttl 0s").kind, "error");
  assert.equal(parseInput("/msg hi --after-read").kind, "error");
  assert.deepEqual(parseInput("/ttl 5m"), { kind: "ttl", ttlMs: 300_000 });
  assert.deepEqual(parseInput("/ttl off"), { kind: "ttl", ttlMs: null });
  assert.deepEqual(parseInput("/ttl"), { kind: "ttl", ttlMs: undefined });
  assert.equal(parseInput("/ttl forever").kind, "error");
  assert.deepEqual(parseInput("/quit"), { kind: "quit" });
  assert.deepEqual(parseInput("/EXIT"), { kind: "quit" });
  assert.deepEqual(parseInput("/contacts ali"), { kind: "contacts", query: "ali" });
  assert.deepEqual(parseInput("/open bob"), { kind: "open", name: "bob" });
  assert.equal(parseInput("/frobnicate").kind, "error");
  assert.deepEqual(parseInput("   "), { kind: "none" });
  assert.deepEqual(parseInput("two\nlines"), { kind: "send", text: "two\nlines" });
});

Deno.test("commands: Tab completes commands and names, listing ambiguous candidates", () => {
  assert.deepEqual(complete("/ve", 3, []), { text: "/verify ", cursor: 8, candidates: [] });
  const names = ["alice", "alfred", "bob"];
  const r = complete("hi al", 5, names);
  assert.equal(r.text, "hi al");
  assert.deepEqual(r.candidates, ["alfred", "alice"]);
  assert.deepEqual(complete("hi ali", 6, names), { text: "hi alice ", cursor: 9, candidates: [] });
  assert.deepEqual(complete("/open b", 7, names), { text: "/open bob ", cursor: 10, candidates: [] });
  assert.deepEqual(complete("x", 1, names), { text: "x", cursor: 1, candidates: [] });
  // Completing in the middle keeps what follows the cursor.
  assert.deepEqual(complete("bo tail", 2, names), { text: "bob  tail", cursor: 4, candidates: [] });
});

// ---- input model ---------------------------------------------------------------------------------------------

Deno.test("input: editing works on graphemes, not UTF-16 units", () => {
  let s = ed.insert(ed.emptyInput(), "a👩‍👩‍👧é");
  s = ed.backspace(s);
  assert.equal(s.text, "a👩‍👩‍👧");
  s = ed.left(s);
  assert.equal(s.cursor, 1);
  s = ed.insert(s, "日");
  assert.equal(s.text, "a日👩‍👩‍👧");
  s = ed.deleteForward(s);
  assert.equal(s.text, "a日");
  assert.equal(ed.backspace(ed.lineStart(s)).text, "a日");
});

Deno.test("input: two backspaces in a row both apply (the ink-text-input bug)", () => {
  let s = ed.insert(ed.emptyInput(), "abc");
  s = ed.backspace(ed.backspace(s));
  assert.equal(s.text, "a");
});

Deno.test("input: multi-line moves by line, history on the first and last line", () => {
  let s = ed.insert(ed.emptyInput(["old one", "old two"]), "line1\nline2");
  s = ed.up(s);
  assert.equal(s.cursor, 5); // same column on the first line
  s = ed.up(s);
  assert.equal(s.text, "old two");
  s = ed.up(s);
  assert.equal(s.text, "old one");
  s = ed.down(s);
  assert.equal(s.text, "old two");
  s = ed.down(s);
  assert.equal(s.text, "line1\nline2"); // back to the draft
  const { value, state } = ed.submit(s);
  assert.equal(value, "line1\nline2");
  assert.deepEqual(state.history, ["old one", "old two", "line1\nline2"]);
  assert.equal(state.text, "");
  assert.equal(ed.submit(ed.insert(state, "line1\nline2")).state.history.length, 3); // no duplicate
});

Deno.test("input: kill commands and paste normalisation", () => {
  const s = ed.insert(ed.emptyInput(), "one two three");
  assert.equal(ed.killWord(s).text, "one two ");
  assert.equal(ed.killToStart(s).text, "");
  assert.equal(ed.killToEnd(ed.lineStart(s)).text, "");
  assert.equal(ed.insert(ed.emptyInput(), "a\r\nb\rc\x1b[31m").text, "a\nb\nc·[31m");
  assert.equal(ed.insert(ed.emptyInput(), "x".repeat(ed.INPUT_LIMIT + 10)).text.length, ed.INPUT_LIMIT);
});

Deno.test("input: layout places the cursor by cells with wide characters", () => {
  const v = ed.layoutInput("日本語abc", 6, 6); // cursor after 語 (3 wide chars, 6 UTF-16 units? no: 3)
  assert.equal(v.rows.join("|"), "日本|語abc");
  const w = ed.layoutInput("日本語abc", 3, 6);
  assert.deepEqual([w.cursorRow, w.cursorCol], [1, 2]);
  fc.assert(
    fc.property(
      fc.string({ unit: "grapheme", maxLength: 60 }),
      fc.integer({ min: 4, max: 30 }),
      (s, width) => {
        const text = sanitize(s);
        const view = ed.layoutInput(text, text.length, width);
        for (const r of view.rows) assert.ok(displayWidth(r) <= width - 1);
        assert.ok(view.cursorCol <= width - 1);
        assert.equal(view.rows.join("").replace(/\n/g, ""), text.replace(/\n/g, ""));
      },
    ),
  );
});

Deno.test("keys: one write holding text and controls splits into single keys", () => {
  const k = splitKeys("ab\r");
  assert.deepEqual(k.map((x) => [x.input, x.key.return]), [["ab", false], ["\r", true]]);
  const c = splitKeys("x\u0001\ny\x7f");
  assert.deepEqual(c.map((x) => [x.input, x.key.ctrl, x.key.backspace]), [
    ["x", false, false],
    ["a", true, false],
    ["\n", false, false],
    ["y", false, false],
    ["", false, true],
  ]);
});

// ---- reducer -------------------------------------------------------------------------------------------------

function feed(s: UiState, ...events: EngineEvent[]): UiState {
  return events.reduce((acc, event) => reduce(acc, { type: "engine", event, at: T0, mono: 1000 }), s);
}

function withBob(): UiState {
  let s = initialState("alice", verifiedTime(T0));
  s = reduce(s, { type: "contacts", contacts: [contact("bob"), contact("carol", { online: false })] });
  return reduce(s, { type: "history", peer: "bob", messages: [] });
}

Deno.test("model: first online contact opens; messages elsewhere count as unread", () => {
  let s = withBob();
  assert.equal(s.selected, "bob");
  s = feed(s, { event: "message", message: msg("c1", { peer: "carol", from: "carol" }) });
  s = feed(s, { event: "message", message: msg("c2", { peer: "carol", from: "carol" }) });
  assert.equal(s.unread.carol, 2);
  s = feed(s, { event: "message", message: msg("b1") });
  assert.equal(s.unread.bob ?? 0, 0);
  assert.deepEqual(s.conversations.bob.map((m) => m.id), ["b1"]);
  s = reduce(s, { type: "select", peer: "carol" });
  assert.equal(s.unread.carol, 0);
  s = reduce(s, {
    type: "history",
    peer: "carol",
    messages: [
      msg("c0", { peer: "carol", from: "carol", direction: "out" }),
      msg("c1", { peer: "carol" }),
      msg("c2", { peer: "carol" }),
    ],
  });
  assert.equal(s.newMarker.carol, "c1"); // the line goes before the first of the two unread
});

Deno.test("model: an expired message leaves the screen and the log says so without its text", () => {
  let s = withBob();
  s = feed(s, {
    event: "message",
    message: msg("b1", { text: "the launch code is 1234", ttlMs: 10_000, expiresAt: T0 + 10_000 }),
  });
  s = feed(s, { event: "expired", id: "b1", peer: "bob" });
  assert.equal(s.conversations.bob.length, 0);
  const last = s.log[s.log.length - 1];
  assert.match(last.text, /message from bob expired \(10s lifetime\)/);
  assert.ok(!s.log.some((l) => l.text.includes("launch") || l.text.includes("1234")));
});

Deno.test("model: receipts never move a message's state backwards; failures are logged", () => {
  let s = withBob();
  s = reduce(s, {
    type: "upsert",
    message: msg("o1", { direction: "out", from: "alice", state: "sending" }),
  });
  s = feed(s, { event: "read", id: "o1", by: "bob" }, { event: "delivered", id: "o1", to: "bob" });
  assert.equal(s.conversations.bob[0].state, "read");
  s = reduce(s, {
    type: "upsert",
    message: msg("o2", { direction: "out", from: "alice", state: "sending", sentAt: T0 + 1 }),
  });
  s = feed(s, { event: "failed", id: "o2", to: "bob", reason: "peer offline" });
  assert.equal(s.conversations.bob[1].state, "failed");
  assert.match(s.log[s.log.length - 1].text, /not delivered \(peer offline\): kept and resent/);
});

Deno.test("model: key change marks the contact and is logged as an error", () => {
  const s = feed(withBob(), {
    event: "key-changed",
    name: "bob",
    oldFingerprint: "aa".repeat(32),
    newFingerprint: "bb".repeat(32),
  });
  assert.equal(s.contacts.find((c) => c.name === "bob")?.pin, "changed");
  assert.equal(s.log[s.log.length - 1].level, "error");
  assert.match(s.log[s.log.length - 1].text, /KEY CHANGED for bob/);
});

Deno.test("model: expiring messages are never visible while time is unverified", () => {
  const list = [
    msg("plain"),
    msg("timed", { ttlMs: 30_000, expiresAt: T0 + 30_000 }),
    msg("after-read", { ttlMs: 30_000, ttlMode: "read" }),
  ];
  assert.deepEqual(visibleMessages(list, unverifiedTime(), null).map((m) => m.id), ["plain"]);
  // Even a stray "now" does not unlock them while the state says unverified.
  assert.deepEqual(visibleMessages(list, unverifiedTime(), T0).map((m) => m.id), ["plain"]);
  assert.deepEqual(visibleMessages(list, verifiedTime(T0), T0).map((m) => m.id), [
    "plain",
    "timed",
    "after-read",
  ]);
  // Past its deadline on trusted time it is hidden even before the engine's expired event.
  assert.deepEqual(visibleMessages(list, verifiedTime(T0), T0 + 30_000).map((m) => m.id), [
    "plain",
    "after-read",
  ]);
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          ttl: fc.option(fc.integer({ min: 1, max: 1e6 })),
          dt: fc.integer({ min: -1e6, max: 1e6 }),
        }),
      ),
      fc.option(fc.integer({ min: T0 - 1e6, max: T0 + 1e6 })),
      (specs, now) => {
        const msgs = specs.map((x, i) =>
          msg(`m${i}`, { ttlMs: x.ttl, expiresAt: x.ttl === null ? null : T0 + x.dt })
        );
        for (const m of visibleMessages(msgs, unverifiedTime(), now)) assert.equal(m.ttlMs, null);
      },
    ),
  );
});

Deno.test("model: contact search filters case-insensitively, online first", () => {
  const list = [contact("zed"), contact("Alice", { online: false }), contact("alfred"), contact("bob")];
  assert.deepEqual(filterContacts(list, "AL").map((c) => c.name), ["alfred", "Alice"]);
  assert.deepEqual(filterContacts(list, "").map((c) => c.name), ["alfred", "bob", "zed", "Alice"]);
  assert.equal(markerFor([msg("a"), msg("b", { direction: "out" }), msg("c")], 2), "a");
});

Deno.test("TrustedNow: counts to the latest trusted instant, carried forward on the monotonic clock only", () => {
  const t = new TrustedNow();
  const u = 20; // verifiedTime's uncertainty: latestMs = now + 20
  assert.equal(t.update(unverifiedTime(), 0), null);
  assert.equal(t.update(verifiedTime(T0), 100), T0 + u);
  // Same trusted instant reported again 2 s later (an engine that refreshes only on verification).
  assert.equal(t.update(verifiedTime(T0), 2100), T0 + u + 2000);
  assert.equal(t.update(verifiedTime(T0 + 5000), 2200), T0 + 5000 + u);
  assert.equal(t.update(unverifiedTime(), 3000), null);
});

// ---- conversation layout -------------------------------------------------------------------------------------

function manyMessages(n: number): ChatMessage[] {
  return Array.from({ length: n }, (_, i) =>
    msg(`m${i}`, {
      text: `message number ${i} ${"word ".repeat(i % 7)}`,
      sentAt: T0 + i * 60_000,
      direction: i % 3 === 0 ? "out" : "in",
      from: i % 3 === 0 ? "alice" : "bob",
    }));
}

Deno.test("layout: the viewport of a 10,000-message conversation, scrolled and clamped", () => {
  const messages = manyMessages(10_000);
  const base = { messages, me: "alice", peer: "bob", width: 60, height: 12, now: T0, newMarkerId: null };
  const bottom = layoutConversation({ ...base, scroll: 0 });
  assert.equal(bottom.lines.length, 12);
  const text = (v: typeof bottom) => v.lines.map((l) => l.segments.map((s) => s.text).join("")).join("\n");
  assert.match(text(bottom), /message number 9999/);
  assert.ok(bottom.more);
  const up = layoutConversation({ ...base, scroll: 12 });
  assert.ok(!/message number 9999/.test(text(up)));
  const top = layoutConversation({ ...base, scroll: Number.MAX_SAFE_INTEGER });
  assert.match(text(top), /message number 0\b/);
  assert.match(text(top), /Sat 2026-11-28|2026-11-28/); // the first date line
  assert.equal(top.lines.length, 12);
  assert.ok(top.scroll < Number.MAX_SAFE_INTEGER);
  for (const l of [...bottom.lines, ...top.lines]) {
    assert.ok(displayWidth(l.segments.map((s) => s.text).join("")) <= 60);
  }
});

Deno.test("layout: any viewport is exactly the matching slice of the whole conversation's lines", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          words: fc.integer({ min: 0, max: 40 }),
          dayStep: fc.constantFrom(0, 0, 0, 86_400_000),
          out: fc.boolean(),
          failed: fc.boolean(),
        }),
        { maxLength: 40 },
      ),
      fc.integer({ min: 30, max: 120 }),
      fc.integer({ min: 1, max: 30 }),
      fc.integer({ min: 0, max: 400 }),
      fc.integer({ min: -1, max: 39 }),
      (specs, width, height, scroll, markerAt) => {
        let t = T0;
        const messages = specs.map((x, i) => {
          t += x.dayStep + 1000;
          return msg(`m${i}`, {
            text: "word ".repeat(x.words) + "日本🎉",
            sentAt: t,
            direction: x.out ? "out" : "in",
            state: x.out && x.failed ? "failed" : "delivered",
          });
        });
        const base = {
          messages,
          me: "alice",
          peer: "bob",
          width,
          now: T0,
          newMarkerId: markerAt >= 0 ? `m${markerAt}` : null,
        };
        const all = layoutConversation({ ...base, height: 1_000_000, scroll: 0 }).lines.map((l) => l.key);
        const v = layoutConversation({ ...base, height, scroll });
        const clamped = Math.min(scroll, Math.max(0, all.length - height));
        assert.equal(v.scroll, clamped);
        const want = all.slice(Math.max(0, all.length - clamped - height), all.length - clamped);
        assert.deepEqual(v.lines.map((l) => l.key), want);
        assert.equal(v.more, all.length - clamped - height > 0);
      },
    ),
  );
});

Deno.test("layout: countdown, delivery mark, new-messages line and date lines", () => {
  const messages = [
    msg("a", { sentAt: T0 - 86_400_000 }),
    msg("b", { direction: "out", from: "alice", state: "delivered", ttlMs: 30_000, expiresAt: T0 + 25_000 }),
    msg("c", { sentAt: T0 + 1 }),
    msg("d", { direction: "out", from: "alice", state: "failed", sentAt: T0 + 2 }),
  ];
  const v = layoutConversation({
    messages,
    me: "alice",
    peer: "bob",
    width: 70,
    height: 20,
    scroll: 0,
    now: T0,
    newMarkerId: "c",
  });
  const rows = v.lines.map((l) => l.segments.map((s) => s.text).join(""));
  assert.equal(rows.filter((r) => /─ \w{3} \d{4}-\d\d-\d\d ─/.test(r)).length, 2);
  const b = rows.find((r) => r.includes("text of b")) ?? "";
  assert.ok(b.includes("✓✓") && b.includes("⏱25s"), b);
  assert.ok(b.trimEnd().length <= 70);
  const marker = rows.findIndex((r) => r.includes("new messages"));
  assert.ok(marker >= 0 && rows[marker + 1].includes("text of c"));
  assert.ok(COUNTDOWN_WIDTH >= "⏱59:59".length);
  const d = rows.findIndex((r) => r.includes("text of d"));
  assert.ok(rows[d].includes("✗"), rows[d]);
  assert.match(rows[d + 1], /not delivered yet/);
});

Deno.test("layout: a peer's escape sequences and bidi overrides never reach the screen lines", () => {
  const evil = msg("e", { text: "evil\x1b[2J\x1b]0;owned\x07 \u202etxt.exe\r\ttab" });
  const v = layoutConversation({
    messages: [evil],
    me: "alice",
    peer: "bob",
    width: 60,
    height: 5,
    scroll: 0,
    now: T0,
    newMarkerId: null,
  });
  const text = v.lines.map((l) => l.segments.map((s) => s.text).join("")).join("\n");
  // deno-lint-ignore no-control-regex
  assert.ok(!/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/.test(text), JSON.stringify(text));
  assert.ok(text.includes("evil·[2J·]0;owned· \ufffdtxt.exe  tab"), text); // visible placeholders: the user sees something was there
});

// ---- geometry and QR -----------------------------------------------------------------------------------------

Deno.test("geometry: the panes add up to the terminal less its last column at every size from 60x20", () => {
  for (let cols = MIN_COLUMNS; cols <= 200; cols += 7) {
    for (let rows = MIN_ROWS; rows <= 60; rows += 3) {
      for (const mode of ["auto", "shown", "hidden"] as const) {
        for (const wanted of [1, 3, 9]) {
          const l = computeLayout(cols, rows, mode, wanted);
          assert.ok(!l.tooSmall);
          assert.equal(1 + l.mainHeight + 1 + l.logHeight + 1 + l.inputHeight + 1, rows, `${cols}x${rows}`);
          assert.ok(l.mainHeight >= 8, `${cols}x${rows}: main ${l.mainHeight}`);
          const used = l.contactsWidth + 1 + l.conversationWidth +
            (l.peerWidth && l.conversationWidth ? 1 : 0) +
            l.peerWidth;
          // The last column is never drawn into (a character wider than measured cannot wrap the row).
          assert.equal(used, cols - 1, `${cols}x${rows} ${mode}`);
          assert.equal(l.columns, cols - 1);
        }
      }
    }
  }
  // The peer pane opens by itself only where the conversation keeps a comfortable width beside it.
  for (let cols = MIN_COLUMNS; cols <= 200; cols++) {
    const l = computeLayout(cols, 30, "auto", 1);
    if (l.peerWidth > 0) assert.ok(l.conversationWidth >= COMFORTABLE_CONVERSATION, `${cols}`);
  }
  assert.equal(computeLayout(120, 40, "auto", 1).peerWidth, 0, "closed by default at 120 columns");
  assert.ok(computeLayout(120, 40, "shown", 1).peerWidth > 0, "opens on request at 120 columns");
  assert.ok(computeLayout(59, 30, "auto", 1).tooSmall);
  assert.ok(computeLayout(80, 19, "auto", 1).tooSmall);
});

Deno.test("qr: a fingerprint becomes a version 3 code with its three finder patterns", () => {
  const m = qrMatrix("AB".repeat(32));
  assert.equal(m.length, 29);
  for (const [r, c] of [[0, 0], [0, 22], [22, 0]]) {
    // A finder pattern: dark 7x7 ring, light ring, dark 3x3 core.
    assert.ok(m[r][c] && m[r + 6][c + 6] && !m[r + 1][c + 1] && m[r + 3][c + 3]);
  }
});
