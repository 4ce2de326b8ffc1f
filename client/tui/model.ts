/**
 * The UI's state and how engine events change it: a pure reducer, so the whole screen logic can be tested by
 * feeding events, without a terminal or an engine. The UI never decides that a message has expired: it only
 * drops messages on the engine's `expired` event, and hides (never shows early) what the engine gave it.
 */
import type { TimeStatus } from "../../clock/types.ts";
import type { ChatMessage, Contact, EngineEvent, OwnCertificateStatus, PinState } from "../engine_types.ts";
import { formatTtl, groupFingerprint } from "./format.ts";

/** Log lines kept in memory (the log pane shows the newest). */
export const LOG_LIMIT = 500;
/** How long a "typing" notice stays after the last typing event, ms. */
export const TYPING_SHOWN_MS = 5000;

export type LogLevel = "info" | "warn" | "error";

export interface LogEntry {
  seq: number;
  /** Local wall-clock ms when the UI received it (a log timestamp, not a trusted time). */
  at: number;
  level: LogLevel;
  text: string;
}

export type Overlay = null | "help" | "log" | { kind: "verify"; peer: string; showing: "theirs" | "ours" };

/** A search in the open conversation: the matching messages (oldest first) and the current one. */
export interface SearchState {
  query: string;
  peer: string;
  matchIds: string[];
  /** Index into matchIds of the current match. */
  index: number;
}
export type Focus = "input" | "contacts";
export type PeerPaneMode = "auto" | "shown" | "hidden";

export interface UiState {
  me: string;
  contacts: Contact[];
  selected: string | null;
  /** Messages of each conversation the UI has loaded, oldest first. */
  conversations: Record<string, ChatMessage[]>;
  unread: Record<string, number>;
  /** Id of the first message under the "new messages" line, per conversation, set when it is opened. */
  newMarker: Record<string, string | null>;
  /** Unread count at the moment a not-yet-loaded conversation was opened (places the marker on load). */
  pendingUnread: Record<string, number>;
  /** Receipts that arrived before the message they are about (a send's result can come after its "sent"). */
  earlyReceipts: Record<string, ChatMessage["state"]>;
  /** Monotonic ms until which "X is typing" is shown. */
  typingUntil: Record<string, number>;
  time: TimeStatus;
  log: LogEntry[];
  logSeq: number;
  /** Lines scrolled up from the newest (0 = follow new messages). */
  scroll: number;
  overlay: Overlay;
  focus: Focus;
  contactQuery: string;
  contactCursor: number;
  /** "auto": shown when the terminal is wide enough; /peer switches between shown and hidden. */
  peerPane: PeerPaneMode;
  /** One-line hint above the input (errors of the last command, completion candidates). */
  notice: { text: string; level: LogLevel } | null;
  closing: boolean;
  /** Conversations with unread messages, in the order they became active (Alt+1..9). */
  activity: string[];
  search: SearchState | null;
  /** A paste over the input limit, waiting for the user to say whether it may be cut. */
  pendingPaste: string | null;
  /** Lines scrolled up in the /log screen (0 = newest at the bottom). */
  logScroll: number;
  /** Why the last connection to a peer failed (the engine's PEER_ errors), until it comes online. */
  peerProblem: Record<string, string>;
  /** Our own certificate's state (status bar), when the engine reports it. */
  certificate?: OwnCertificateStatus | null;
}

export type UiAction =
  | { type: "engine"; event: EngineEvent; at: number; mono: number }
  | { type: "contacts"; contacts: Contact[] }
  | { type: "history"; peer: string; messages: ChatMessage[] }
  | { type: "upsert"; message: ChatMessage }
  | { type: "select"; peer: string }
  | { type: "time"; status: TimeStatus }
  | { type: "scroll"; to: number }
  | { type: "overlay"; overlay: Overlay }
  | { type: "focus"; focus: Focus }
  | { type: "contact-query"; query: string }
  | { type: "contact-cursor"; index: number }
  | { type: "peer-pane"; mode: PeerPaneMode }
  | { type: "notice"; text: string | null; level?: LogLevel }
  | { type: "log"; level: LogLevel; text: string; at: number }
  | { type: "closing" }
  /** Scroll by a number of lines (keys of one burst add up: three PgDn move three pages). */
  | { type: "scroll-by"; delta: number }
  /** Next/previous conversation, from the state at the time of the key (not of the last frame). */
  | { type: "cycle"; step: number }
  /** Alt+N: the Nth conversation of the activity list. */
  | { type: "jump"; index: number }
  | { type: "search"; query: string | null }
  /** Next (+1, newer) or previous (-1, older) match. */
  | { type: "search-step"; step: number }
  | { type: "pending-paste"; text: string | null }
  | { type: "log-scroll"; delta: number };

export function initialState(me: string, time: TimeStatus): UiState {
  return {
    me,
    contacts: [],
    selected: null,
    conversations: {},
    unread: {},
    newMarker: {},
    pendingUnread: {},
    earlyReceipts: {},
    typingUntil: {},
    time,
    log: [],
    logSeq: 0,
    scroll: 0,
    overlay: null,
    focus: "input",
    contactQuery: "",
    contactCursor: 0,
    peerPane: "auto",
    notice: null,
    closing: false,
    activity: [],
    search: null,
    pendingPaste: null,
    logScroll: 0,
    peerProblem: {},
  };
}

function addLog(s: UiState, level: LogLevel, text: string, at: number): UiState {
  const entry: LogEntry = { seq: s.logSeq + 1, at, level, text };
  const log = s.log.length >= LOG_LIMIT ? [...s.log.slice(-(LOG_LIMIT - 1)), entry] : [...s.log, entry];
  return { ...s, log, logSeq: entry.seq };
}

/**
 * Replaces a message (by id) in place, or appends a new one. New messages go at the end, in arrival order like
 * the engine's history: ordering by `sentAt` would let two clocks' uncertainty put an answer above its question.
 */
export function upsertMessage(list: readonly ChatMessage[], m: ChatMessage): ChatMessage[] {
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i].id !== m.id) continue;
    const copy = list.slice();
    copy[i] = m;
    return copy;
  }
  return [...list, m];
}

function patchMessage(
  s: UiState,
  peer: string,
  id: string,
  patch: (m: ChatMessage) => ChatMessage,
): { state: UiState; found: ChatMessage | null } {
  const list = s.conversations[peer];
  if (!list) return { state: s, found: null };
  const i = list.findIndex((x) => x.id === id);
  if (i < 0) return { state: s, found: null };
  const copy = list.slice();
  copy[i] = patch(list[i]);
  return { state: { ...s, conversations: { ...s.conversations, [peer]: copy } }, found: list[i] };
}

function ensureContact(s: UiState, name: string, patch: Partial<Contact> = {}): UiState {
  const i = s.contacts.findIndex((c) => c.name === name);
  if (i < 0) {
    const c: Contact = { name, online: false, unread: 0, pin: "first-use", defaultTtlMs: null, ...patch };
    return { ...s, contacts: [...s.contacts, c] };
  }
  const copy = s.contacts.slice();
  copy[i] = { ...copy[i], ...patch };
  return { ...s, contacts: copy };
}

function setPin(s: UiState, name: string, pin: PinState): UiState {
  return ensureContact(s, name, { pin });
}

function expiryNote(m: ChatMessage | null): string {
  if (!m || m.ttlMs === null) return "";
  return ` (${formatTtl(m.ttlMs)} lifetime)`;
}

function reduceEngine(s: UiState, e: EngineEvent, at: number, mono: number): UiState {
  switch (e.event) {
    case "ready":
      return addLog(s, "info", `ready as ${e.name}, reachable at ${e.address}`, at);
    case "message": {
      const m = e.message;
      let next = ensureContact(s, m.peer);
      if (next.conversations[m.peer] || next.selected === m.peer) {
        next = {
          ...next,
          conversations: {
            ...next.conversations,
            [m.peer]: upsertMessage(next.conversations[m.peer] ?? [], m),
          },
        };
      }
      const isNew = !(s.conversations[m.peer] ?? []).some((x) => x.id === m.id);
      if (m.direction === "in" && isNew) {
        const { [m.peer]: _gone, ...typingUntil } = next.typingUntil;
        next = { ...next, typingUntil };
        if (next.selected !== m.peer) {
          next = {
            ...next,
            unread: { ...next.unread, [m.peer]: (next.unread[m.peer] ?? 0) + 1 },
            activity: next.activity.includes(m.peer) ? next.activity : [...next.activity, m.peer],
          };
        }
      }
      if (next.selected === null) next = selectPeer(next, m.peer);
      return next;
    }
    case "sent":
    case "delivered":
    case "read": {
      const peer = e.event === "read" ? e.by : e.to;
      const state = e.event;
      const r = patchMessage(s, peer, e.id, (m) => ({ ...m, state: laterState(m.state, state) }));
      return r.found ? r.state : rememberReceipt(s, e.id, state);
    }
    case "failed": {
      const r = patchMessage(s, e.to, e.id, (m) => ({ ...m, state: "failed" }));
      const next = r.found ? r.state : rememberReceipt(s, e.id, "failed");
      return addLog(
        next,
        "warn",
        `message to ${e.to} not delivered (${e.reason}): kept and resent when they are reachable`,
        at,
      );
    }
    case "expired": {
      const list = s.conversations[e.peer];
      const gone = list?.find((m) => m.id === e.id) ?? null;
      let next = s;
      if (list && gone) {
        next = { ...s, conversations: { ...s.conversations, [e.peer]: list.filter((m) => m.id !== e.id) } };
      }
      // The log records that a message died, never what it said.
      const who = gone ? (gone.direction === "out" ? `to ${e.peer}` : `from ${e.peer}`) : `with ${e.peer}`;
      return addLog(next, "info", `a message ${who} expired${expiryNote(gone)}`, at);
    }
    case "request":
      return addLog(
        ensureContact(s, e.from, { request: true }),
        "warn",
        `message request from ${e.from}: /accept ${e.from} (or reply) to talk, /decline ${e.from} deletes it`,
        at,
      );
    case "requests-full":
      return addLog(
        s,
        "warn",
        `message requests from ${e.strangers} strangers are pending: new strangers are turned away until you ` +
          `/accept or /decline some (or they expire after 7 days)`,
        at,
      );
    case "typing":
      return { ...s, typingUntil: { ...s.typingUntil, [e.from]: mono + TYPING_SHOWN_MS } };
    case "peer-online": {
      const { [e.name]: _solved, ...peerProblem } = s.peerProblem;
      return addLog(
        { ...ensureContact(s, e.name, { online: true }), peerProblem },
        "info",
        `${e.name} is online`,
        at,
      );
    }
    case "peer-offline":
      return addLog(ensureContact(s, e.name, { online: false }), "info", `${e.name} went offline`, at);
    case "key-changed":
      return addLog(
        setPin(s, e.name, "changed"),
        "error",
        `KEY CHANGED for ${e.name}: was ${groupFingerprint(e.oldFingerprint)}, now ${
          groupFingerprint(e.newFingerprint)
        } - compare it with them (/verify), then /accept-key`,
        at,
      );
    case "time": {
      const before = s.time.state;
      const next = { ...s, time: e.status };
      if (before === e.status.state) return next;
      return addLog(next, e.status.state === "verified" ? "info" : "warn", `time is ${e.status.state}`, at);
    }
    case "certificate": {
      const before = s.certificate ?? null;
      const next = { ...s, certificate: e.status };
      const st = e.status;
      if (before && before.state === st.state && before.expiringSoon === st.expiringSoon) return next;
      if (st.state === "expired" || st.state === "revoked") {
        return addLog(next, "error", `your certificate is ${st.state}: ${st.fix ?? ""}`, at);
      }
      if (st.expiringSoon) {
        return addLog(
          next,
          "warn",
          `your certificate lapses ${new Date(st.notAfter).toISOString()} and is not renewed yet${
            st.lastError ? ` (${st.lastError})` : ""
          }`,
          at,
        );
      }
      if (before && before.state !== "valid" && st.state === "valid") {
        return addLog(
          next,
          "info",
          `certificate renewed: valid until ${new Date(st.notAfter).toISOString()}`,
          at,
        );
      }
      return next;
    }
    case "log":
      return addLog(s, e.level, e.text, at);
    case "error": {
      // "PEER_CONNECT_FAILED" with "bob: ...": what keeps bob's messages waiting.
      const peer = e.code.startsWith("PEER_") ? /^([^:\s]+): /.exec(e.message)?.[1] : undefined;
      const next = peer
        ? {
          ...s,
          peerProblem: { ...s.peerProblem, [peer]: `${e.code}: ${e.message.slice(peer.length + 2)}` },
        }
        : s;
      return addLog(next, "error", `${e.code}: ${e.message}`, at);
    }
  }
}

/** Bound on remembered early receipts: they only bridge the moment between a send and its result. */
const EARLY_RECEIPTS_MAX = 64;

function rememberReceipt(s: UiState, id: string, state: ChatMessage["state"]): UiState {
  const prev = s.earlyReceipts[id];
  const entries = Object.entries({ ...s.earlyReceipts, [id]: prev ? laterState(prev, state) : state });
  return { ...s, earlyReceipts: Object.fromEntries(entries.slice(-EARLY_RECEIPTS_MAX)) };
}

/** Applies a receipt that came before the message itself, and forgets it. */
function withEarlyReceipt(s: UiState, m: ChatMessage): { state: UiState; message: ChatMessage } {
  const early = s.earlyReceipts[m.id];
  if (!early) return { state: s, message: m };
  const { [m.id]: _used, ...rest } = s.earlyReceipts;
  return { state: { ...s, earlyReceipts: rest }, message: { ...m, state: laterState(m.state, early) } };
}

const STATE_ORDER: Record<ChatMessage["state"], number> = {
  sending: 0,
  sent: 1,
  delivered: 2,
  read: 3,
  failed: 1,
};

/** Receipts may arrive out of order (read before delivered): never move a message's state backwards. */
function laterState(current: ChatMessage["state"], next: ChatMessage["state"]): ChatMessage["state"] {
  return STATE_ORDER[next] >= STATE_ORDER[current] ? next : current;
}

function selectPeer(s: UiState, peer: string): UiState {
  const unread = s.unread[peer] ?? s.contacts.find((c) => c.name === peer)?.unread ?? 0;
  const loaded = s.conversations[peer];
  return {
    ...ensureContact(s, peer),
    selected: peer,
    scroll: 0,
    activity: s.activity.filter((n) => n !== peer),
    search: s.search?.peer === peer ? s.search : null,
    unread: { ...s.unread, [peer]: 0 },
    newMarker: { ...s.newMarker, [peer]: loaded && unread > 0 ? markerFor(loaded, unread) : null },
    // Not loaded yet: the marker is placed when the history arrives.
    pendingUnread: { ...s.pendingUnread, [peer]: loaded ? 0 : unread },
  };
}

/** The first of the last `unread` incoming messages: where the "new messages" line goes. */
export function markerFor(list: readonly ChatMessage[], unread: number): string | null {
  let n = 0;
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i].direction !== "in") continue;
    n++;
    if (n === unread) return list[i].id;
  }
  return null;
}

export function reduce(s: UiState, a: UiAction): UiState {
  switch (a.type) {
    case "engine":
      return reduceEngine(s, a.event, a.at, a.mono);
    case "contacts": {
      // The engine's unread counts win, except for the open conversation, which is being read.
      const unread: Record<string, number> = {};
      for (const c of a.contacts) unread[c.name] = c.name === s.selected ? 0 : c.unread;
      const known = new Set(a.contacts.map((c) => c.name));
      // Keep people we have talked to even if the phonebook no longer lists them.
      const extra = s.contacts.filter((c) => !known.has(c.name) && s.conversations[c.name]?.length);
      const active = a.contacts.filter((c) => unread[c.name] > 0 && !s.activity.includes(c.name));
      let next: UiState = {
        ...s,
        contacts: [...a.contacts, ...extra],
        unread: { ...s.unread, ...unread },
        activity: [
          ...s.activity.filter((n) => (unread[n] ?? s.unread[n] ?? 0) > 0),
          ...active.map((c) => c.name),
        ],
      };
      if (next.selected === null && a.contacts.length > 0) {
        const first = a.contacts.find((c) => c.online) ?? a.contacts[0];
        next = selectPeer(next, first.name);
      }
      return next;
    }
    case "history": {
      // The engine's order (arrival) is kept.
      const messages = a.messages;
      const pending = s.pendingUnread[a.peer] ?? 0;
      let next: UiState = { ...s, conversations: { ...s.conversations, [a.peer]: messages } };
      if (pending > 0) {
        next = {
          ...next,
          newMarker: { ...next.newMarker, [a.peer]: markerFor(messages, pending) },
          pendingUnread: { ...next.pendingUnread, [a.peer]: 0 },
        };
      }
      return next;
    }
    case "upsert": {
      const { state: base, message: m } = withEarlyReceipt(s, a.message);
      const list = upsertMessage(base.conversations[m.peer] ?? [], m);
      return { ...ensureContact(base, m.peer), conversations: { ...base.conversations, [m.peer]: list } };
    }
    case "select":
      return { ...selectPeer(s, a.peer), focus: "input", notice: null };
    case "time":
      return reduceEngine(s, { event: "time", status: a.status }, Date.now(), 0);
    case "scroll":
      return { ...s, scroll: Math.max(0, a.to) };
    case "overlay":
      return { ...s, overlay: a.overlay };
    case "focus":
      return { ...s, focus: a.focus, contactCursor: 0 };
    case "contact-query":
      return { ...s, contactQuery: a.query, contactCursor: 0 };
    case "contact-cursor":
      return { ...s, contactCursor: Math.max(0, a.index) };
    case "peer-pane":
      return { ...s, peerPane: a.mode };
    case "notice":
      return { ...s, notice: a.text === null ? null : { text: a.text, level: a.level ?? "info" } };
    case "log":
      return addLog(s, a.level, a.text, a.at);
    case "closing":
      return { ...s, closing: true };
    case "scroll-by":
      return { ...s, scroll: Math.max(0, s.scroll + a.delta) };
    case "cycle": {
      const list = filterContacts(s.contacts, "");
      if (list.length === 0) return s;
      const i = list.findIndex((c) => c.name === s.selected);
      const next = list[((i < 0 ? 0 : i + a.step) % list.length + list.length) % list.length];
      return { ...selectPeer(s, next.name), focus: "input", notice: null };
    }
    case "jump": {
      const name = s.activity[a.index];
      if (name === undefined) {
        return {
          ...s,
          notice: { text: `no conversation ${a.index + 1} in the activity list`, level: "warn" },
        };
      }
      return { ...selectPeer(s, name), focus: "input", notice: null };
    }
    case "search": {
      if (a.query === null || a.query === "" || s.selected === null) return { ...s, search: null };
      const q = a.query.toLowerCase();
      const list = visibleOnly(s);
      const matchIds = list.filter((m) => m.text.toLowerCase().includes(q)).map((m) => m.id);
      if (matchIds.length === 0) {
        return { ...s, search: null, notice: { text: `no message with "${a.query}" here`, level: "warn" } };
      }
      return {
        ...s,
        search: { query: a.query, peer: s.selected, matchIds, index: matchIds.length - 1 },
        notice: null,
      };
    }
    case "search-step": {
      if (!s.search) return s;
      const n = s.search.matchIds.length;
      const index = Math.min(n - 1, Math.max(0, s.search.index + a.step));
      return { ...s, search: { ...s.search, index } };
    }
    case "pending-paste":
      return { ...s, pendingPaste: a.text };
    case "log-scroll":
      return { ...s, logScroll: Math.max(0, s.logScroll + a.delta) };
  }
}

/** The loaded messages of the open conversation (search runs over what the UI has; the engine hides the rest). */
function visibleOnly(s: UiState): readonly ChatMessage[] {
  const list = s.selected === null ? [] : s.conversations[s.selected] ?? [];
  // Fail closed like the screen: while time is unverified an expiring message is not even searched.
  if (s.time.state !== "unverified") return list;
  return list.filter((m) => m.expiresAt === null && m.ttlMs === null);
}

/** Contacts matching the search, in a stable order: online first, then by name. */
export function filterContacts(contacts: readonly Contact[], query: string): Contact[] {
  const q = query.trim().toLowerCase();
  return contacts
    .filter((c) => q === "" || c.name.toLowerCase().includes(q))
    .sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
}

/**
 * Messages the screen may show at trusted time `now`: everything the engine gave, except (fail closed) a
 * message with a lifetime while time is unverified, and one whose deadline has passed on trusted time but
 * whose `expired` event has not arrived yet.
 */
export function visibleMessages(
  list: readonly ChatMessage[],
  time: TimeStatus,
  now: number | null,
): ChatMessage[] {
  const trusted = time.state !== "unverified" && now !== null;
  return list.filter((m) => {
    const expiring = m.expiresAt !== null || m.ttlMs !== null;
    if (!expiring) return true;
    if (!trusted) return false;
    return m.expiresAt === null || m.expiresAt > now;
  });
}
