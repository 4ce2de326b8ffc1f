/**
 * What the screen tells the terminal outside its frame: the bell, the window title and a desktop
 * notification (OSC 9 or OSC 777). Pure: each returns the control sequence to write, or decides whether to.
 */
import type { BellMode, DesktopMode } from "./settings.ts";
import { displayText } from "./width.ts";

const BEL = "\x07";
const OSC = "\x1b]";

/** Whether a new incoming message rings the bell; `elsewhere`: it is not in the open conversation. */
export function bellFor(mode: BellMode, elsewhere: boolean): boolean {
  return mode === "all" || (mode === "other" && elsewhere);
}

// A title or a notification is text inside an escape sequence: anything that could end it early (BEL, ESC,
// other controls) or a ";" that OSC 777 reads as a separator is taken out first.
function oscSafe(s: string): string {
  // deno-lint-ignore no-control-regex
  return displayText(s).replace(/[\x00-\x1f\x7f-\x9f;]/g, " ").slice(0, 120);
}

/** Saves the terminal's title on its stack / puts it back (XTWINOPS; terminals without it ignore them). */
export const TITLE_SAVE = "\x1b[22;0t";
export const TITLE_RESTORE = "\x1b[23;0t";

/** OSC 0: "securechat (3) · you → bob", the number being unread messages in other conversations. */
export function titleFor(me: string, open: string | null, unread: number): string {
  const count = unread > 0 ? ` (${unread})` : "";
  const where = open ? ` \u00b7 ${me} \u2192 ${open}` : ` \u00b7 ${me}`;
  return `${OSC}0;${oscSafe(`securechat${count}${where}`)}${BEL}`;
}

/** A desktop notification as the terminal expects it, or null when turned off. */
export function desktopNotification(mode: DesktopMode, body: string): string | null {
  switch (mode) {
    case "off":
      return null;
    case "osc9":
      return `${OSC}9;${oscSafe(`securechat: ${body}`)}${BEL}`;
    case "osc777":
      return `${OSC}777;notify;securechat;${oscSafe(body)}${BEL}`;
  }
}
