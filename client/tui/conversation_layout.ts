/**
 * Turns a conversation into screen lines: date lines, the "new messages" line, one header line per message
 * (time, sender, text, delivery mark, countdown) and its wrapped continuation lines. Only the lines that fit
 * the viewport are built, walking back from the newest message, so a 10,000-message conversation costs what
 * the screen shows plus a cached wrap per message.
 */
import type { ChatMessage } from "../engine_types.ts";
import {
  dayKey,
  DELIVERY_MARK_WIDTH,
  deliveryLabel,
  formatClock,
  formatCountdown,
  formatDay,
  formatTtl,
  type ShownDelivery,
} from "./format.ts";
import { displayText, displayWidth, fit, truncate, wrapText } from "./width.ts";

/** Longest sender name column. */
export const NAME_WIDTH_MAX = 12;
/** Cells a countdown may take ("⏱" and at most "59:59" / "47h59" / "30d" / "30dr"), reserved whole so the
 * message does not re-wrap as its countdown shortens. */
export const COUNTDOWN_WIDTH = 6;

export type Tone =
  | "normal"
  | "dim"
  | "me"
  | "peer"
  | "accent"
  | "warn"
  | "error"
  | "good"
  | "match"
  | "current";

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
  /** Timestamps with seconds. */
  seconds?: boolean;
  /** Why our messages still "sending" wait (the peer is offline, revoked...), or null when it is reachable:
   * they are shown as queued, and the newest one gets a line with the reason. */
  queuedReason?: string | null;
  /** Text to highlight (case-insensitive) and the id of the message of the current match. */
  search?: { query: string; currentId: string | null } | null;
}

// Wrapped bodies per message object and width: messages are immutable values in the UI state, so a changed
// message is a new object and is wrapped again.
const wrapCache = new WeakMap<ChatMessage, { width: number; first: number; lines: string[] }>();

function wrapped(m: ChatMessage, width: number): string[] {
  const first = Math.max(1, width - metaWidth(m));
  const hit = wrapCache.get(m);
  if (hit && hit.width === width && hit.first === first) return hit.lines;
  const lines = wrapText(displayText(m.text), width, first);
  wrapCache.set(m, { width, first, lines });
  return lines;
}

/** Cells kept at the end of a message's first line for its marks (only the first line has them). */
export function metaWidth(m: ChatMessage): number {
  let w = 0;
  if (m.direction === "out") w += 1 + DELIVERY_MARK_WIDTH;
  if (m.expiresAt !== null || m.ttlMs !== null) w += 1 + COUNTDOWN_WIDTH;
  return w;
}

/** The delivery state a message of ours is shown with (queued when the peer cannot be reached). */
export function shownDelivery(m: ChatMessage, queuedReason: string | null | undefined): ShownDelivery {
  return m.state === "sending" && queuedReason ? "queued" : m.state;
}

/** Right-hand meta of a message: delivery mark for ours, countdown for expiring ones. */
export function messageMeta(m: ChatMessage, now: number | null, queuedReason?: string | null): Segment[] {
  const out: Segment[] = [];
  if (m.expiresAt !== null) {
    out.push({ text: `\u23f1${now === null ? "--" : formatCountdown(m.expiresAt - now)}`, tone: "warn" });
  } else if (m.ttlMs !== null) {
    // An "after read" lifetime whose clock has not started yet.
    out.push({ text: `\u23f1${formatTtl(m.ttlMs)}r`, tone: "warn" });
  }
  if (m.direction === "out") {
    const state = shownDelivery(m, queuedReason);
    const d = deliveryLabel(state);
    const tone: Tone = state === "failed"
      ? "error"
      : state === "read"
      ? "good"
      : state === "queued"
      ? "warn"
      : "dim";
    out.unshift({ text: d.mark, tone });
  }
  return out;
}

/** Splits a line into plain and highlighted parts where `query` occurs (case-insensitive). */
export function highlight(text: string, query: string, tone: Tone, hit: Tone): Segment[] {
  if (query === "") return [{ text, tone }];
  const lower = text.toLowerCase();
  const q = query.toLowerCase();
  const out: Segment[] = [];
  let at = 0;
  for (let i = lower.indexOf(q); i >= 0 && q.length > 0; i = lower.indexOf(q, at)) {
    if (i > at) out.push({ text: text.slice(at, i), tone });
    out.push({ text: text.slice(i, i + q.length), tone: hit });
    at = i + q.length;
  }
  if (at < text.length) out.push({ text: text.slice(at), tone });
  return out;
}

function prefixWidth(nameW: number, seconds: boolean | undefined): number {
  return (seconds ? 8 : 5) + 1 + nameW + 1;
}

function blockFor(
  m: ChatMessage,
  input: LayoutInput,
  nameW: number,
  bodyW: number,
  queuedNote: boolean,
): ScreenLine[] {
  const body = wrapped(m, bodyW);
  const who = m.direction === "out" ? input.me : m.from;
  const meta = messageMeta(m, input.now, input.queuedReason);
  const metaText = meta.map((s) => s.text).join(" ");
  const indent = " ".repeat(prefixWidth(nameW, input.seconds));
  const tone: Tone = m.state === "failed" ? "error" : "normal";
  const search = input.search ?? null;
  const hit: Tone = search && search.currentId === m.id ? "current" : "match";
  const lines: ScreenLine[] = [];
  body.forEach((text, i) => {
    const segs: Segment[] = i === 0
      ? [
        { text: formatClock(m.sentAt, input.seconds) + " ", tone: "dim" },
        { text: fit(displayText(who), nameW) + " ", tone: m.direction === "out" ? "me" : "peer" },
      ]
      : [{ text: indent, tone: "normal" }];
    segs.push(...highlight(text, search?.query ?? "", tone, hit));
    if (i === 0 && meta.length > 0) {
      // The marks right-aligned in the cells the first line keeps free for them.
      const pad = Math.max(1, bodyW - displayWidth(text) - displayWidth(metaText));
      segs.push({ text: " ".repeat(pad), tone: "normal" });
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
        { text: indent, tone: "normal" },
        { text: "\u2717 not delivered yet: resent when they are reachable", tone: "error" },
      ],
    });
  }
  if (queuedNote) {
    lines.push({
      key: `${m.id}:queued`,
      segments: [
        { text: indent, tone: "normal" },
        { text: `\u29d6 queued: ${input.queuedReason}`, tone: "warn" },
      ],
    });
  }
  return lines;
}

/** The newest of our messages shown as queued: the one that carries the reason line. */
function queuedNoteId(messages: readonly ChatMessage[], reason: string | null | undefined): string | null {
  if (!reason) return null;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m.direction === "out" && m.state === "sending") return m.id;
  }
  return null;
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
  queuedId: string | null = null,
): number {
  const m = messages[i];
  return wrapped(m, bodyW).length + (m.direction === "out" && m.state === "failed" ? 1 : 0) +
    (m.id === markerId ? 1 : 0) + (startsDay(messages, i) ? 1 : 0) + (m.id === queuedId ? 1 : 0);
}

function nameWidth(me: string, peer: string): number {
  return Math.min(
    NAME_WIDTH_MAX,
    Math.max(displayWidth(displayText(me)), displayWidth(displayText(peer)), 3),
  );
}

/** Cells of message text per line: everything right of the time and the sender. */
export function bodyWidth(me: string, peer: string, width: number, seconds?: boolean): number {
  return Math.max(8, width - prefixWidth(nameWidth(me, peer), seconds));
}

/**
 * Rows taken by the messages after the one with id `afterId` (0 when it is not there any more): how far a
 * reader scrolled up must move to keep looking at the same lines when new messages arrive below.
 */
export function rowsAfter(
  input: Pick<LayoutInput, "messages" | "me" | "peer" | "width" | "newMarkerId" | "seconds" | "queuedReason">,
  afterId: string,
): number {
  const bodyW = bodyWidth(input.me, input.peer, input.width, input.seconds);
  const queuedId = queuedNoteId(input.messages, input.queuedReason);
  let rows = 0;
  for (let i = input.messages.length - 1; i >= 0; i--) {
    if (input.messages[i].id === afterId) return rows;
    rows += blockHeight(input.messages, i, bodyW, input.newMarkerId, queuedId);
  }
  return 0; // it is gone (expired): nothing sensible to keep the view on
}

/**
 * Lays out the viewport of a conversation. Heights come from the wrap cache, so only the messages that
 * reach the screen are turned into lines: scrolled to the top of 10,000 messages, a frame costs what it shows.
 */
export function layoutConversation(input: LayoutInput): ConversationView {
  const { messages, width, height } = input;
  const nameW = nameWidth(input.me, input.peer);
  const bodyW = bodyWidth(input.me, input.peer, width, input.seconds);
  const queuedId = queuedNoteId(messages, input.queuedReason);
  const want = Math.max(0, input.scroll) + height;
  // Walk back from the newest until the viewport's top is covered (or the conversation starts), counting rows
  // only; `first` is the oldest message with a row on screen.
  let below = 0; // rows from the bottom to the top of message `first`
  let first = messages.length;
  while (first > 0 && below < want) {
    first--;
    below += blockHeight(messages, first, bodyW, input.newMarkerId, queuedId);
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
    lines.push(...blockFor(m, input, nameW, bodyW, m.id === queuedId));
    rowsBelowEnd -= blockHeight(messages, i, bodyW, input.newMarkerId, queuedId);
  }
  // `lines` starts at row `below` from the bottom; keep the rows in [scroll, scroll + height).
  const topRow = below; // from the bottom, exclusive
  const start = Math.max(0, topRow - (scroll + height));
  const end = Math.min(lines.length, topRow - scroll);
  return { lines: lines.slice(start, end), scroll, more: olderExist || start > 0 };
}
