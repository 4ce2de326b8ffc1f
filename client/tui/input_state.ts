/**
 * The input box's editing model, kept pure (state in, state out) so every key can be tested without a
 * terminal. The cursor is a UTF-16 index that always sits on a grapheme boundary, so moving or deleting never
 * splits an emoji or a base letter from its accents.
 */
import { displayWidth, graphemes, safeGrapheme, sanitize } from "./width.ts";

/** How many submitted lines the history keeps. */
export const HISTORY_LIMIT = 200;
/** Largest input accepted by `insert`, in UTF-8 bytes (what the protocol limits), as a last safety net: the
 * App warns before anything reaches it (app.tsx INPUT_LIMIT_BYTES). */
export const INPUT_LIMIT = 64 * 1024;

const encoder = new TextEncoder();

/** UTF-8 bytes of `s`: what the message limit counts (a CJK character is 3, an emoji 4). */
export function byteLength(s: string): number {
  return encoder.encode(s).length;
}

/** The longest prefix of `s` of at most `max` UTF-8 bytes that ends on a grapheme boundary. */
export function cutToBytes(s: string, max: number): string {
  if (byteLength(s) <= max) return s;
  let out = "";
  let used = 0;
  for (const g of graphemes(s)) {
    const b = byteLength(g);
    if (used + b > max) break;
    out += g;
    used += b;
  }
  return out;
}

export interface InputState {
  text: string;
  cursor: number;
  history: readonly string[];
  /** Position while browsing history (index into history), or null when editing the draft. */
  historyIndex: number | null;
  /** What was being typed before history browsing started. */
  draft: string;
}

export const emptyInput = (history: readonly string[] = []): InputState => ({
  text: "",
  cursor: 0,
  history,
  historyIndex: null,
  draft: "",
});

/** Grapheme boundaries of `text` as UTF-16 offsets, including 0 and text.length. */
function boundaries(text: string): number[] {
  const out = [0];
  let i = 0;
  for (const g of graphemes(text)) {
    i += g.length;
    out.push(i);
  }
  return out;
}

function edit(s: InputState, text: string, cursor: number): InputState {
  return { ...s, text, cursor, historyIndex: null, draft: "" };
}

/** Inserts typed or pasted text at the cursor (controls removed, CRLF and CR become LF). */
export function insert(s: InputState, raw: string): InputState {
  const clean = sanitize(raw.replace(/\r\n?/g, "\n"));
  const room = INPUT_LIMIT - byteLength(s.text);
  if (room <= 0 || clean === "") return s;
  // Cut on a grapheme boundary so no half emoji is left at the end.
  const add = cutToBytes(clean, room);
  if (add === "") return s;
  return edit(s, s.text.slice(0, s.cursor) + add + s.text.slice(s.cursor), s.cursor + add.length);
}

export function backspace(s: InputState): InputState {
  if (s.cursor === 0) return s;
  const b = boundaries(s.text);
  const prev = b[b.indexOf(s.cursor) - 1] ?? 0;
  return edit(s, s.text.slice(0, prev) + s.text.slice(s.cursor), prev);
}

export function deleteForward(s: InputState): InputState {
  const b = boundaries(s.text);
  const next = b[b.indexOf(s.cursor) + 1];
  if (next === undefined) return s;
  return edit(s, s.text.slice(0, s.cursor) + s.text.slice(next), s.cursor);
}

export function left(s: InputState): InputState {
  const b = boundaries(s.text);
  return { ...s, cursor: b[b.indexOf(s.cursor) - 1] ?? 0 };
}

export function right(s: InputState): InputState {
  const b = boundaries(s.text);
  return { ...s, cursor: b[b.indexOf(s.cursor) + 1] ?? s.text.length };
}

/** Start of the current line (Home, Ctrl+A). */
export function lineStart(s: InputState): InputState {
  return { ...s, cursor: s.text.lastIndexOf("\n", s.cursor - 1) + 1 };
}

/** End of the current line (End, Ctrl+E). */
export function lineEnd(s: InputState): InputState {
  const nl = s.text.indexOf("\n", s.cursor);
  return { ...s, cursor: nl < 0 ? s.text.length : nl };
}

/** Ctrl+U: delete from the start of the line to the cursor. */
export function killToStart(s: InputState): InputState {
  const start = s.text.lastIndexOf("\n", s.cursor - 1) + 1;
  return edit(s, s.text.slice(0, start) + s.text.slice(s.cursor), start);
}

/** Ctrl+K: delete from the cursor to the end of the line. */
export function killToEnd(s: InputState): InputState {
  const nl = s.text.indexOf("\n", s.cursor);
  const end = nl < 0 ? s.text.length : nl;
  return edit(s, s.text.slice(0, s.cursor) + s.text.slice(end), s.cursor);
}

/** Ctrl+W: delete the word before the cursor (and the spaces after it). */
export function killWord(s: InputState): InputState {
  const before = s.text.slice(0, s.cursor);
  const start = before.replace(/\S*\s*$/, "").length;
  return edit(s, s.text.slice(0, start) + s.text.slice(s.cursor), start);
}

/** Row of the cursor and the column (in cells) inside its logical line. */
function lineAndColumn(text: string, cursor: number): { line: number; col: number } {
  const before = text.slice(0, cursor);
  const line = before.split("\n").length - 1;
  const col = displayWidth(before.slice(before.lastIndexOf("\n") + 1));
  return { line, col };
}

/** Offset in `lineText` whose display column is the closest at or before `col`. */
function offsetAtColumn(lineText: string, col: number): number {
  let w = 0;
  let off = 0;
  for (const g of graphemes(lineText)) {
    const gw = displayWidth(g);
    if (w + gw > col) break;
    w += gw;
    off += g.length;
  }
  return off;
}

/** Up arrow: previous line of a multi-line input, or the previous history entry on the first line. */
export function up(s: InputState): InputState {
  const { line, col } = lineAndColumn(s.text, s.cursor);
  if (line > 0) {
    const lines = s.text.split("\n");
    const startPrev = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
    return { ...s, cursor: startPrev + offsetAtColumn(lines[line - 1], col) };
  }
  if (s.history.length === 0) return s;
  const idx = s.historyIndex === null ? s.history.length - 1 : Math.max(0, s.historyIndex - 1);
  const text = s.history[idx];
  return {
    ...s,
    text,
    cursor: text.length,
    historyIndex: idx,
    draft: s.historyIndex === null ? s.text : s.draft,
  };
}

/** Down arrow: next line, or the next history entry (and finally back to the draft) on the last line. */
export function down(s: InputState): InputState {
  const { line, col } = lineAndColumn(s.text, s.cursor);
  const lines = s.text.split("\n");
  if (line < lines.length - 1) {
    const startNext = lines.slice(0, line + 1).reduce((a, l) => a + l.length + 1, 0);
    return { ...s, cursor: startNext + offsetAtColumn(lines[line + 1], col) };
  }
  if (s.historyIndex === null) return s;
  if (s.historyIndex >= s.history.length - 1) {
    return { ...s, text: s.draft, cursor: s.draft.length, historyIndex: null, draft: "" };
  }
  const idx = s.historyIndex + 1;
  return { ...s, text: s.history[idx], cursor: s.history[idx].length, historyIndex: idx };
}

/** Enter: returns the submitted text and a cleared box whose history has the text appended. */
export function submit(s: InputState): { value: string; state: InputState } {
  const value = s.text;
  let history = s.history;
  if (value.trim() !== "" && history[history.length - 1] !== value) {
    history = [...history, value].slice(-HISTORY_LIMIT);
  }
  return { value, state: emptyInput(history) };
}

export interface InputView {
  /** Visual rows (logical lines wrapped to the width). */
  rows: string[];
  cursorRow: number;
  /** Cell column of the cursor in its row. */
  cursorCol: number;
}

/** Wraps the text to `width` cells (one cell kept free for the cursor) and locates the cursor. */
export function layoutInput(text: string, cursor: number, width: number): InputView {
  const w = Math.max(2, width - 1);
  const rows: string[] = [];
  let cursorRow = 0;
  let cursorCol = 0;
  let offset = 0;
  for (const line of text.split("\n")) {
    // Hard-wrap by cells (not at words) so a cursor position maps to exactly one place.
    let row = "";
    let rowW = 0;
    const placeIfHere = () => {
      if (offset === cursor) {
        cursorRow = rows.length;
        cursorCol = rowW;
      }
    };
    for (const g of graphemes(line)) {
      // Drawn in a form of known width (width.ts): the text itself keeps the skin tone or flag.
      const shown = safeGrapheme(g);
      const gw = displayWidth(shown);
      if (rowW + gw > w) {
        rows.push(row);
        row = "";
        rowW = 0;
      }
      placeIfHere();
      row += shown;
      rowW += gw;
      offset += g.length;
    }
    placeIfHere();
    rows.push(row);
    offset += 1; // the "\n"
  }
  return { rows, cursorRow, cursorCol };
}

/** Splits a row at a cell column into the part before the cursor, the cell under it, and the rest. */
export function splitAtColumn(row: string, col: number): [string, string, string] {
  let w = 0;
  let i = 0;
  const gs = graphemes(row);
  for (; i < gs.length; i++) {
    if (w >= col) break;
    w += displayWidth(gs[i]);
  }
  return [gs.slice(0, i).join(""), gs[i] ?? " ", gs.slice(i + 1).join("")];
}
