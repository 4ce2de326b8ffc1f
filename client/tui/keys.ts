/**
 * Ink hands over several keys as one input when they arrive in one write (fast typing, tmux send-keys,
 * terminals without bracketed paste): "ab\r" or "x\u0001\ny". Escape sequences and DEL are already split by
 * Ink, but printable text and C0 controls are not. This splits such an input into single keys so that Enter
 * still submits and Ctrl+A still moves, instead of being inserted as text.
 */
import type { Key } from "ink";

export const NO_KEY: Key = {
  upArrow: false,
  downArrow: false,
  leftArrow: false,
  rightArrow: false,
  pageDown: false,
  pageUp: false,
  home: false,
  end: false,
  return: false,
  escape: false,
  ctrl: false,
  shift: false,
  tab: false,
  backspace: false,
  delete: false,
  meta: false,
  super: false,
  hyper: false,
  capsLock: false,
  numLock: false,
};

export interface KeyPress {
  input: string;
  key: Key;
}

/** True when `input` holds more than one key that must be handled one by one. */
export function needsSplit(input: string): boolean {
  // deno-lint-ignore no-control-regex
  return input.length > 1 && /[\u0000-\u001f\u007f]/.test(input);
}

/** Splits text into printable runs and single control keys, each with the Key Ink would have reported. */
export function splitKeys(input: string): KeyPress[] {
  const out: KeyPress[] = [];
  let run = "";
  const flush = () => {
    if (run) out.push({ input: run, key: { ...NO_KEY } });
    run = "";
  };
  for (const ch of input) {
    const c = ch.codePointAt(0) ?? 0;
    if (c >= 0x20 && c !== 0x7f) {
      run += ch;
      continue;
    }
    flush();
    if (ch === "\r") out.push({ input: "\r", key: { ...NO_KEY, return: true } });
    else if (ch === "\n") out.push({ input: "\n", key: { ...NO_KEY } });
    else if (ch === "\t") out.push({ input: "", key: { ...NO_KEY, tab: true } });
    else if (ch === "\x7f" || ch === "\b") out.push({ input: "", key: { ...NO_KEY, backspace: true } });
    else if (ch === "\x1b") out.push({ input: "", key: { ...NO_KEY, escape: true } });
    else if (c >= 1 && c <= 26) {
      out.push({ input: String.fromCharCode(c + 96), key: { ...NO_KEY, ctrl: true } });
    }
    // Other controls (NUL, FS..US) have no meaning here and are dropped.
  }
  flush();
  return out;
}

/** A mouse report (SGR mode, 1006): what happened and where (1-based cell). */
export interface MouseEvent {
  kind: "press" | "release" | "wheel-up" | "wheel-down" | "other";
  button: number;
  x: number;
  y: number;
}

/** Turns SGR mouse reports on (button presses and the wheel; no motion, so no flood of events) / off. */
export const MOUSE_ON = "\x1b[?1000h\x1b[?1006h";
export const MOUSE_OFF = "\x1b[?1006l\x1b[?1000l";

// "ESC [ < b ; x ; y M" (press) or "... m" (release), as mouse_stdin.ts takes it out of the input.
// deno-lint-ignore no-control-regex
const SGR_MOUSE = /^\x1b\[<(\d+);(\d+);(\d+)([Mm])$/;

/** The mouse report in an input, or null when it is something else. */
export function parseMouse(input: string): MouseEvent | null {
  const m = SGR_MOUSE.exec(input);
  if (!m) return null;
  const code = Number(m[1]);
  const x = Number(m[2]);
  const y = Number(m[3]);
  if (code & 64) return { kind: code & 1 ? "wheel-down" : "wheel-up", button: code, x, y };
  if (code & 32) return { kind: "other", button: code, x, y }; // motion
  return { kind: m[4] === "M" ? "press" : "release", button: code & 3, x, y };
}
