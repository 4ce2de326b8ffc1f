/**
 * Turns a conversation into screen lines: date lines, the "new messages" line, one header line per message
 * (time, sender, text, delivery mark, countdown) and its wrapped continuation lines. Only the lines that fit
 * the viewport are built, walking back from the newest message, so a 10,000-message conversation costs what
 * the screen shows plus a cached wrap per message.
 */
import type { ChatMessage } from "../engine_types.ts";
import { dayKey, deliveryLabel, formatClock, formatCountdown, formatDay, formatTtl } from "./format.ts";
import { displayWidth, fit, sanitize, truncate, wrapText } from "./width.ts";

/** Cells reserved at the right of a message's first line for its delivery mark and countdown. */
export const META_WIDTH = 11;
/** Longest sender name column. */
export const NAME_WIDTH_MAX = 12;

export type Tone = "normal" | "dim" | "me" | "peer" | "accent" | "warn" | "error" | "good";

export interface Segment {
  text: string;
  tone: Tone;
}

export interface ScreenLine {
  key: string;
  segments: Segment[];
}

export interface ConversationView {
  lines: ScreenLine[];
  /** The scroll offset actually used (clamped to what exists). */
  scroll: number;
  /** True when older lines exist above the viewport. */
  more: boolean;
}

export interface LayoutInput {
  messages: readonly ChatMessage[];
  me: string;
  peer: string;
  width: number;
  height: number;
  /** Lines scrolled up from the newest. */
  scroll: number;
  /** Trusted now in Unix ms for countdowns (null when unknown: countdowns show "--"). */
  now: number | null;
  newMarkerId: string | null;
}

// Wrapped bodies per message object and width: messages are immutable values in the UI state, so a changed
// message is a new object and is wrapped again.
const wrapCache = new WeakMap<ChatMessage, { width: number; lines: string[] }>();

function wrapped(m: ChatMessage, width: number): string[] {
  const hit = wrapCache.get(m);
  if (hit && hit.width === width) return hit.lines;
  const lines = wrapText(sanitize(m.text), width);
  wrapCache.set(m, { width, lines });
  return lines;
}

/** Right-hand meta of a message: delivery mark for ours, countdown for expiring ones. */
export function messageMeta(m: ChatMessage, now: number | null): Segment[] {
  const out: Segment[] = [];
  if (m.expiresAt !== null) {
    out.push({ text: `\u23f1${now === null ? "--" : formatCountdown(m.expiresAt - now)}`, tone: "warn" });
  } else if (m.ttlMs !== null) {
    // An "after read" lifetime whose clock has not started yet.
    out.push({ text: `\u23f1${formatTtl(m.ttlMs)}r`, tone: "warn" });
  }
  if (m.direction === "out") {
    const d = deliveryLabel(m.state);
    const tone: Tone = m.state === "failed" ? "error" : m.state === "read" ? "good" : "dim";
    out.unshift({ text: d.mark, tone });
  }
  return out;
}

function blockFor(
  m: ChatMessage,
  input: LayoutInput,
  nameW: number,
  bodyW: number,
): ScreenLine[] {
  const body = wrapped(m, bodyW);
  const who = m.direction === "out" ? input.me : m.from;
  const meta = messageMeta(m, input.now);
  const metaText = meta.map((s) => s.text).join(" ");
  const metaPad = Math.max(0, META_WIDTH - displayWidth(metaText) - 1);
  const lines: ScreenLine[] = [];
  body.forEach((text, i) => {
    const segs: Segment[] = i === 0
      ? [
        { text: formatClock(m.sentAt) + " ", tone: "dim" },
        { text: fit(sanitize(who), nameW) + " ", tone: m.direction === "out" ? "me" : "peer" },
      ]
      : [{ text: " ".repeat(6 + nameW + 1), tone: "normal" }];
    segs.push({ text: fit(text, bodyW), tone: m.state === "failed" ? "error" : "normal" });
    if (i === 0 && meta.length > 0) {
      segs.push({ text: " ".repeat(metaPad + 1), tone: "normal" });
      meta.forEach((s, j) => {
        if (j > 0) segs.push({ text: " ", tone: "normal" });
        segs.push(s);
      });
    }
    lines.push({ key: `${m.id}:${i}`, segments: segs });
  });
  if (m.direction === "out" && m.state === "failed") {
    // The engine keeps it in its outbox and sends it again when the peer is reachable.
    lines.push({
      key: `${m.id}:failed`,
      segments: [
        { text: " ".repeat(6 + nameW + 1), tone: "normal" },
        { text: "\u2717 not delivered yet: resent when they are reachable", tone: "error" },
      ],
    });
  }
  return lines;
}

function rule(key: string, label: string, width: number, tone: Tone): ScreenLine {
  const inner = ` ${label} `;
  const side = Math.max(0, width - displayWidth(inner));
  const l = Math.floor(side / 2);
  return {
    key,
    segments: [{ text: truncate("\u2500".repeat(l) + inner + "\u2500".repeat(side - l), width), tone }],
  };
}

/** Lays out the viewport of a conversation. */
export function layoutConversation(input: LayoutInput): ConversationView {
  const { messages, width, height } = input;
  const nameW = Math.min(
    NAME_WIDTH_MAX,
    Math.max(displayWidth(sanitize(input.me)), displayWidth(sanitize(input.peer)), 3),
  );
  const bodyW = Math.max(8, width - (6 + nameW + 1) - META_WIDTH);
  const want = Math.max(0, input.scroll) + height;
  // Blocks collected from the newest backwards; each is a run of lines in display order.
  const blocks: ScreenLine[][] = [];
  let count = 0;
  let i = messages.length - 1;
  for (; i >= 0 && count < want; i--) {
    const m = messages[i];
    const block = blockFor(m, input, nameW, bodyW);
    if (m.id === input.newMarkerId) block.unshift(rule(`new:${m.id}`, "new messages", width, "accent"));
    const prev = messages[i - 1];
    if (!prev || dayKey(prev.sentAt) !== dayKey(m.sentAt)) {
      block.unshift(rule(`day:${m.id}`, formatDay(m.sentAt), width, "dim"));
    }
    blocks.push(block);
    count += block.length;
  }
  const all: ScreenLine[] = [];
  for (let b = blocks.length - 1; b >= 0; b--) all.push(...blocks[b]);
  const olderExist = i >= 0;
  const maxScroll = Math.max(0, all.length - height);
  // Without older messages left to walk, the scroll is capped to the top of what exists.
  const scroll = olderExist ? Math.max(0, input.scroll) : Math.min(Math.max(0, input.scroll), maxScroll);
  const end = all.length - scroll;
  const start = Math.max(0, end - height);
  return { lines: all.slice(start, end), scroll, more: olderExist || start > 0 };
}
