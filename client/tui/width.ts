/**
 * Display width of text in terminal cells. Ink lays text out with `string-width`, so we measure with the same
 * function: if our wrapping and Ink's measuring disagreed, a wide character would push a pane's border out of
 * place. Everything here works on grapheme clusters, so a cut never splits an emoji or a combining sequence.
 */
import stringWidth from "string-width";

const segmenter = new Intl.Segmenter();

/** Cells a string takes on screen (CJK and emoji = 2, combining marks = 0). */
export function displayWidth(s: string): number {
  return stringWidth(s);
}

/** The grapheme clusters of `s`, in order. */
export function graphemes(s: string): string[] {
  const out: string[] = [];
  for (const seg of segmenter.segment(s)) out.push(seg.segment);
  return out;
}

// C0/C1 controls and the escape character would let a peer move the cursor or recolour the screen; tabs would
// make widths unpredictable. They are shown as visible placeholders instead.
// deno-lint-ignore no-control-regex
const CONTROL_RE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

// Bidirectional overrides and isolates can make text read differently from what it is ("Trojan Source"): a
// name or a message must look like what it says.
const BIDI_RE = /[\u202a-\u202e\u2066-\u2069]/g;

/** Makes text from the network safe to draw: no escape sequences or bidi overrides, tabs as spaces, no CR. */
export function sanitize(s: string): string {
  return s.replace(/\t/g, "  ").replace(/\r/g, "").replace(CONTROL_RE, "\u00b7").replace(BIDI_RE, "\ufffd");
}

// Sequences whose width terminals disagree on: one draws a thumbs-up with a skin tone in 2 cells, another
// draws the thumb and the tone side by side in 4; flags, keycaps, ZWJ families and variation selectors alike.
// Counting 2 where the terminal draws 4 pushes the rest of the row past the edge, and the terminal wraps it
// onto a row of its own, scrolling the whole screen. Such a cluster is drawn in a form whose width every
// terminal agrees on (the text itself, as sent and stored, is untouched).
const AMBIGUOUS_RE = /[\u200d\ufe0e\ufe0f\u20e3\u{1f3fb}-\u{1f3ff}\u{1f1e6}-\u{1f1ff}\u{e0020}-\u{e007f}]/u;
const MODIFIERS_RE = /[\u200d\ufe0e\ufe0f\u{1f3fb}-\u{1f3ff}\u{e0020}-\u{e007f}]/gu;
const REGIONAL_RE = /[\u{1f1e6}-\u{1f1ff}]/u;

/** One grapheme cluster in a form of known width (see AMBIGUOUS_RE). */
export function safeGrapheme(g: string): string {
  if (!AMBIGUOUS_RE.test(g)) return g;
  if (g.includes("\u20e3")) return `[${g.replace(/[\ufe0f\u20e3]/g, "")}]`; // keycap 1️⃣ -> [1]
  if (REGIONAL_RE.test(g)) {
    // A flag 🇫🇷 -> [FR]: regional indicators are letters A..Z.
    const letters = [...g].filter((c) => REGIONAL_RE.test(c))
      .map((c) => String.fromCharCode(0x41 + (c.codePointAt(0)! - 0x1f1e6)));
    return `[${letters.join("")}]`;
  }
  // Skin tones, ZWJ joins, variation selectors and tags dropped: what is left is each emoji's base, whose
  // width (2, or 1 for a text-style symbol) every terminal knows.
  return g.replace(MODIFIERS_RE, "");
}

/** Text as drawn: `sanitize`d, and clusters of unknowable width replaced by safe forms. */
export function displayText(s: string): string {
  const clean = sanitize(s);
  if (!AMBIGUOUS_RE.test(clean)) return clean;
  let out = "";
  for (const g of graphemes(clean)) out += safeGrapheme(g);
  return out;
}

/** Cuts `s` to at most `width` cells, ending with `ellipsis` when something was cut. */
export function truncate(s: string, width: number, ellipsis = "\u2026"): string {
  if (width <= 0) return "";
  if (displayWidth(s) <= width) return s;
  const room = width - displayWidth(ellipsis);
  if (room < 0) return "";
  let out = "";
  let used = 0;
  for (const g of graphemes(s)) {
    const w = displayWidth(g);
    if (used + w > room) break;
    out += g;
    used += w;
  }
  return out + ellipsis;
}

/** Pads `s` with spaces to exactly `width` cells (truncating when longer). */
export function fit(s: string, width: number): string {
  const t = truncate(s, width);
  return t + " ".repeat(Math.max(0, width - displayWidth(t)));
}

/**
 * Wraps text to lines of at most `width` cells: at spaces when a word fits, inside a word when it is longer
 * than a line, and always at "\n". Never returns an empty array (an empty text is one empty line).
 */
export function wrapText(text: string, width: number, firstWidth = width): string[] {
  const full = Math.max(1, width);
  let w = Math.max(1, firstWidth);
  const out: string[] = [];
  // The first line may be shorter (a message's marks sit at its end); every later one has the full width.
  const push = (l: string) => {
    out.push(l);
    w = full;
  };
  for (const para of text.split("\n")) {
    let line = "";
    let lineW = 0;
    // Split into words while keeping the spaces, so runs of spaces survive inside a line.
    for (const token of para.split(/( +)/)) {
      if (token === "") continue;
      const tw = displayWidth(token);
      if (lineW + tw <= w) {
        line += token;
        lineW += tw;
        continue;
      }
      if (token.trim() === "") {
        // Spaces at a break are dropped rather than starting the next line with them.
        push(line);
        line = "";
        lineW = 0;
        continue;
      }
      if (lineW > 0 && tw <= w) {
        push(line.trimEnd());
        line = token;
        lineW = tw;
        continue;
      }
      // A word longer than the room left: break it by grapheme.
      for (const g of graphemes(token)) {
        const gw = displayWidth(g);
        if (lineW + gw > w && lineW > 0) {
          push(line);
          line = "";
          lineW = 0;
        }
        line += g;
        lineW += gw;
      }
    }
    push(line);
  }
  return out;
}
