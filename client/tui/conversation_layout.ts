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

const dayCache = new WeakMap<ChatMessage, string>();

function dayOf(m: ChatMessage): string {
  let d = dayCache.get(m);
  if (d === undefined) {
    d = dayKey(m.sentAt);
    dayCache.set(m, d);
  }
  return d;
}

/** Whether message `i` opens a new day (and gets a date line above it). */
function startsDay(messages: readonly ChatMessage[], i: number): boolean {
  return i === 0 || dayOf(messages[i - 1]) !== dayOf(messages[i]);
}

/** Rows message `i` takes: its wrapped text, and the date, "new messages" and "not delivered" lines. */
function blockHeight(
  messages: readonly ChatMessage[],
  i: number,
  bodyW: number,
  markerId: string | null,
): number {
  const m = messages[i];
  return wrapped(m, bodyW).length + (m.direction === "out" && m.state === "failed" ? 1 : 0) +
    (m.id === markerId ? 1 : 0) + (startsDay(messages, i) ? 1 : 0);
}

function bodyWidth(me: string, peer: string, width: number): number {
  const nameW = Math.min(
    NAME_WIDTH_MAX,
    Math.max(displayWidth(sanitize(me)), displayWidth(sanitize(peer)), 3),
  );
  return Math.max(8, width - (6 + nameW + 1) - META_WIDTH);
}

/**
 * Rows taken by the messages after the one with id `afterId` (0 when it is not there any more): how far a
 * reader scrolled up must move to keep looking at the same lines when new messages arrive below.
 */
export function rowsAfter(
  input: Pick<LayoutInput, "messages" | "me" | "peer" | "width" | "newMarkerId">,
  afterId: string,
): number {
  const bodyW = bodyWidth(input.me, input.peer, input.width);
  let rows = 0;
  for (let i = input.messages.length - 1; i >= 0; i--) {
    if (input.messages[i].id === afterId) return rows;
    rows += blockHeight(input.messages, i, bodyW, input.newMarkerId);
  }
  return 0; // it is gone (expired): nothing sensible to keep the view on
}

/**
 * Lays out the viewport of a conversation. Heights come from the wrap cache, so only the messages that
 * reach the screen are turned into lines: scrolled to the top of 10,000 messages, a frame costs what it shows.
 */
export function layoutConversation(input: LayoutInput): ConversationView {
  const { messages, width, height } = input;
  const nameW = Math.min(
    NAME_WIDTH_MAX,
    Math.max(displayWidth(sanitize(input.me)), displayWidth(sanitize(input.peer)), 3),
  );
  const bodyW = bodyWidth(input.me, input.peer, width);
  const want = Math.max(0, input.scroll) + height;
  // Walk back from the newest until the viewport's top is covered (or the conversation starts), counting rows
  // only; `first` is the oldest message with a row on screen.
  let below = 0; // rows from the bottom to the top of message `first`
  let first = messages.length;
  while (first > 0 && below < want) {
    first--;
    below += blockHeight(messages, first, bodyW, input.newMarkerId);
  }
  const olderExist = first > 0;
  const scroll = olderExist
    ? Math.max(0, input.scroll)
    : Math.min(Math.max(0, input.scroll), Math.max(0, below - height));
  // Build lines from `first` to the last message that still reaches the viewport's bottom edge.
  const lines: ScreenLine[] = [];
  let rowsBelowEnd = below; // rows from the bottom to the top of the message being built
  for (let i = first; i < messages.length && rowsBelowEnd > scroll; i++) {
    const m = messages[i];
    if (startsDay(messages, i)) lines.push(rule(`day:${m.id}`, formatDay(m.sentAt), width, "dim"));
    if (m.id === input.newMarkerId) lines.push(rule(`new:${m.id}`, "new messages", width, "accent"));
    lines.push(...blockFor(m, input, nameW, bodyW));
    rowsBelowEnd -= blockHeight(messages, i, bodyW, input.newMarkerId);
  }
  // `lines` starts at row `below` from the bottom; keep the rows in [scroll, scroll + height).
  const topRow = below; // from the bottom, exclusive
  const start = Math.max(0, topRow - (scroll + height));
  const end = Math.min(lines.length, topRow - scroll);
  return { lines: lines.slice(start, end), scroll, more: olderExist || start > 0 };
}
