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
export function wrapText(text: string, width: number): string[] {
  const w = Math.max(1, width);
  const out: string[] = [];
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
        out.push(line);
        line = "";
        lineW = 0;
        continue;
      }
      if (lineW > 0 && tw <= w) {
        out.push(line.trimEnd());
        line = token;
        lineW = tw;
        continue;
      }
      // A word longer than the room left: break it by grapheme.
      for (const g of graphemes(token)) {
        const gw = displayWidth(g);
        if (lineW + gw > w && lineW > 0) {
          out.push(line);
          line = "";
          lineW = 0;
        }
        line += g;
        lineW += gw;
      }
    }
    out.push(line);
  }
  return out;
}
