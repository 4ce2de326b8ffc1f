/**
 * Full-area screens drawn over the conversation: help (F1, /help) and fingerprint verification (/verify).
 */
import { Box } from "ink";
import { COMMANDS } from "./commands.ts";
import { SETTINGS } from "./settings.ts";
import type { ScreenLine, Segment, Tone } from "./conversation_layout.ts";
import { fingerprintPayload, qrLines } from "./qr.ts";
import { fingerprintLines, Lines } from "./panes.tsx";
import { displayText, displayWidth, wrapText } from "./width.ts";

const seg = (text: string, tone: Tone = "normal"): Segment => ({ text, tone });
const line = (key: string, ...segments: Segment[]): ScreenLine => ({ key, segments });

/** Keys, one per row, as the help screen lists them. */
export const KEYS: readonly [string, string][] = [
  ["Enter", "send the message / run the command"],
  ["Alt+Enter, Ctrl+J", "new line in the message"],
  ["Up / Down", "move between lines, or browse input history"],
  ["Left/Right Home/End", "move in the input (Ctrl+A / Ctrl+E too)"],
  ["Ctrl+U / Ctrl+K / Ctrl+W", "delete to line start / to line end / word"],
  ["Tab", "complete a command or a contact name"],
  ["PgUp / PgDn", "scroll the conversation"],
  ["Ctrl+Home / Ctrl+End", "oldest / newest message (Home/End in an empty input)"],
  ["Ctrl+N / Ctrl+P", "next / previous conversation"],
  ["Alt+1 .. Alt+9", "the conversations of the activity list (top bar: act 1:bob(2) ...)"],
  ["Ctrl+F / Ctrl+G", "during /search: older / newer match"],
  ["Esc", "close this screen; leave the contact list or the search; back to the newest message"],
  ["y / n", "after a paste over the size limit: insert what fits / drop it"],
  ["Ctrl+L", "draw the whole screen again"],
  ["Mouse", "click a contact to open it; the wheel scrolls (Shift+drag selects text)"],
  ["F1", "this help (any function key: the terminal library cannot tell them apart)"],
  ["Ctrl+C", "quit (closes connections and withdraws your address)"],
];

/** Every mark the screen draws, as the help screen lists them. */
export const MARKS: readonly [string, string][] = [
  [
    "\u29d6 queued",
    "waiting: the peer is offline, revoked or unreachable (the line below says why); sent when reachable",
  ],
  ["\u2026 sending", "connecting to the peer, who the phonebook says is online"],
  ["\u2713 sent", "written to the connection, not acknowledged yet"],
  ["\u2713\u2713 delivered", "the peer's chat has stored it (acknowledged)"],
  ["\u25c9 read", "shown on the peer's screen"],
  ["\u2717 not delivered", "the connection broke first: kept, and resent when they are reachable"],
  ["\u23f1 25s", "time left before the message is destroyed on both sides (r: counted from when it is read)"],
  ["\u25cf \u25cb \u00d7 \u2298", "contact online / offline / certificate revoked / blocked (/unblock)"],
  ["\u2709 request", "a stranger's message request: /accept or reply to talk, /decline deletes it"],
  ["\u2713 ? !", "contact verified / not verified / KEY CHANGED; then the unread count"],
  ["act 1:bob(2)", "activity: conversations with unread messages (Alt+1..9)"],
];

/** Help rows for a width: "key  description" side by side when it fits, else the description below. */
export function helpLines(width: number): ScreenLine[] {
  const out: ScreenLine[] = [line("t", seg("securechat help", "accent"), seg("  (Esc to close)", "dim"))];
  const col = 28;
  const entry = (key: string, name: string, text: string) => {
    if (width >= col + 30 && displayWidth(name) < col - 2) {
      wrapText(text, width - col).forEach((t, i) =>
        out.push(
          line(`${key}:${i}`, seg(i === 0 ? `  ${name.padEnd(col - 2)}` : " ".repeat(col), "me"), seg(t)),
        )
      );
      return;
    }
    out.push(line(key, seg(`  ${name}`, "me")));
    wrapText(text, width - 6).forEach((t, i) => out.push(line(`${key}:${i}`, seg(`      ${t}`))));
  };
  out.push(line("k", seg("Keys", "accent")));
  for (const [k, v] of KEYS) entry(`k:${k}`, k, v);
  out.push(line("c", seg("Commands", "accent")));
  for (const c of COMMANDS) entry(`c:${c.name}`, `${c.name} ${c.args}`.trim(), c.help);
  out.push(line("m", seg("Marks", "accent")));
  for (const [k, v] of MARKS) entry(`m:${k}`, k, v);
  out.push(line("s", seg("Settings (/set KEY VALUE, kept in settings.json)", "accent")));
  for (const x of SETTINGS) entry(`s:${x.key}`, `${x.key} ${x.values}`, x.help);
  return out;
}

export function HelpScreen(
  { width, height, offset }: { width: number; height: number; offset: number },
) {
  const all = helpLines(width);
  const start = Math.max(0, Math.min(offset, all.length - height));
  return <Lines lines={all.slice(start)} width={width} height={height} />;
}

export interface VerifyProps {
  me: string;
  peer: string;
  ours: string;
  theirs: string | null;
  showing: "theirs" | "ours";
  width: number;
  height: number;
}

/** Text of the verify screen; the QR code goes beside it when the width allows, else below, else not. */
export function verifyTextLines(p: VerifyProps, textWidth: number): ScreenLine[] {
  const text = (key: string, t: string, tone: Tone) =>
    wrapText(t, textWidth).map((row, i) => line(`${key}:${i}`, seg(row, tone)));
  const out: ScreenLine[] = [
    line("t", seg(`Verify ${displayText(p.peer)}`, "accent")),
    ...text("h", "Compare both keys with them in person or by call.", "dim"),
    ...text("o", `your key (${displayText(p.me)}):`, "me"),
    ...fingerprintLines("of", p.ours, textWidth, "normal"),
    ...text("p", `${displayText(p.peer)}'s key as you see it:`, "peer"),
  ];
  if (p.theirs) out.push(...fingerprintLines("tf", p.theirs, textWidth, "normal"));
  else out.push(...text("tf", "not seen yet: they must connect once", "warn"));
  if (p.theirs) out.push(...text("k", "y: they match, mark verified", "good"));
  out.push(
    ...text("k2", `Tab: QR of ${p.showing === "theirs" ? "your" : "their"} key`, "dim"),
    ...text("k3", "Esc: cancel", "dim"),
  );
  return out;
}

export function VerifyScreen(p: VerifyProps) {
  const fp = p.showing === "theirs" ? p.theirs : p.ours;
  const qr = fp ? qrLines(fingerprintPayload(fp)) : [];
  const qrW = qr[0]?.length ?? 0;
  const label = line(
    "ql",
    seg(`QR: ${p.showing === "theirs" ? `${displayText(p.peer)}'s key` : "your key"}`, "dim"),
  );
  const qrScreen: ScreenLine[] = [label, ...qr.map((q, i) => line(`q:${i}`, seg(q)))];
  const sideBySide = qr.length > 0 && p.width >= qrW + 2 + 24 && p.height >= qrScreen.length;
  if (sideBySide) {
    const textW = p.width - qrW - 2;
    return (
      <Box flexDirection="row" width={p.width} height={p.height}>
        <Lines lines={verifyTextLines(p, textW)} width={textW} height={p.height} />
        <Box width={2} />
        <Lines lines={qrScreen} width={qrW} height={p.height} />
      </Box>
    );
  }
  const text = verifyTextLines(p, p.width);
  const below = qr.length > 0 && text.length + qrScreen.length <= p.height ? qrScreen : [
    line("qn", seg("(enlarge the window to see the QR code)", "dim")),
  ];
  return <Lines lines={[...text, ...below]} width={p.width} height={p.height} />;
}
