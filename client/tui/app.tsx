/**
 * The chat screen: wires the engine's events into the UI state (model.ts), keys into the input model
 * (input_state.ts) and commands (commands.ts), and draws the panes. Everything that decides something is in
 * those pure modules; this file only connects them.
 */
import { codeOf, messageOf } from "../../coded_error.ts";
import { Box, Text, useInput, usePaste, useWindowSize } from "ink";
import type { Key } from "ink";
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "react";
import type { TimeStatus } from "../../clock/types.ts";
import type { ChatEngineApi, Contact, EngineEvent, SendOptions } from "../engine_types.ts";
import type { EarlyEvents } from "../early_events.ts";
import { complete, parseInput, type UiCommand } from "./commands.ts";
import { layoutConversation, rowsAfter } from "./conversation_layout.ts";
import { formatTtl } from "./format.ts";
import * as ed from "./input_state.ts";
import { inputRows } from "./input_box.tsx";
import { computeLayout, MIN_COLUMNS, MIN_ROWS, peerVisible } from "./layout.ts";
import { MAX_TEXT_BYTES } from "../protocol/constants.ts";
import {
  applySetting,
  DEFAULT_SETTINGS,
  describeSettings,
  type Settings,
  SettingsError,
} from "./settings.ts";
import { MonochromeContext } from "./panes.tsx";
import { bellFor, desktopNotification, TITLE_RESTORE, TITLE_SAVE, titleFor } from "./notify.ts";
import {
  filterContacts,
  initialState,
  reduce,
  type UiAction,
  type UiState,
  visibleMessages,
} from "./model.ts";
import { helpLines } from "./overlays.tsx";
import { ChatScreen } from "./screen.tsx";
import { MOUSE_OFF, MOUSE_ON, type MouseEvent, needsSplit, parseMouse, splitKeys } from "./keys.ts";
import { contactWindowStart } from "./panes.tsx";
import type { MouseSource } from "./mouse_stdin.ts";
import { sanitize } from "./width.ts";
import { byteLength, cutToBytes } from "./input_state.ts";

/** How often countdowns and the clock summary are refreshed, ms. */
export const TICK_MS = 500;
/** Without a countdown on screen, the clock summary is redrawn every this many ticks. */
export const IDLE_TICKS = 4;
/** Lines one notch of the mouse wheel scrolls. */
export const WHEEL_LINES = 3;
/** How often the contact list (online, revoked) is asked of the engine again, ms. */
export const CONTACTS_REFRESH_MS = 30_000;
/** At most one "typing" notice to the peer per this many ms. */
export const TYPING_EVERY_MS = 3000;
/** Scroll amount that means "the oldest message": the layout caps it to what exists. */
const TOP = Number.MAX_SAFE_INTEGER;

/** Room a command and its flags take besides the text ("/msg ... --ttl 10s --after-read"). */
export const COMMAND_ROOM_BYTES = 64;

/** Largest input in UTF-8 bytes: a message's limit, plus room for the command when it is one. */
export function inputLimitBytes(text: string): number {
  return text.startsWith("/") && !text.startsWith("//")
    ? MAX_TEXT_BYTES + COMMAND_ROOM_BYTES
    : MAX_TEXT_BYTES;
}

export interface AppProps {
  engine: ChatEngineApi;
  /** Events emitted while the engine started, then every later one (instead of engine.subscribe). */
  early?: EarlyEvents;
  /** Called once when the user asks to quit (Ctrl+C, /quit); the caller closes the engine. */
  onQuit: () => void;
  /** Settings read from the home folder (defaults otherwise). */
  settings?: Settings;
  /** Problems met reading the settings file, shown in the log. */
  settingsWarnings?: string[];
  /** Saves changed settings (/set, /peer); none: they last for this run only. */
  saveSettings?: (s: Settings) => Promise<void>;
  /** NO_COLOR is set: no colours whatever the settings say. */
  noColor?: boolean;
  /** Writes control sequences straight to the terminal: bell, title, desktop notification. */
  terminal?: (sequence: string) => void;
  /** Ctrl+L: forget what is on screen and draw everything again. */
  repaint?: () => void;
  /** Mouse reports taken from the terminal's input before Ink (which drops them). */
  mouse?: MouseSource;
  /** Fixed size for tests; the terminal's size (live, with resize) otherwise. */
  size?: { columns: number; rows: number };
  /** Monotonic clock in ms (tests pass their own). */
  mono?: () => number;
}

/**
 * The trusted instant countdowns count to: the LATEST time the trusted interval allows. The engine deletes a
 * message once that end of the interval reaches its deadline, so a countdown on it ends exactly when the
 * message dies and never shows more time than is left. When two calls return the same instant (an engine that
 * refreshes it only on verification) it is carried forward on the monotonic clock, never on the wall clock,
 * so changing the system time does not change a countdown.
 */
export class TrustedNow {
  private anchor: { trusted: number; mono: number } | null = null;
  private lastSeen: number | null = null;

  update(status: TimeStatus, mono: number): number | null {
    if (status.state === "unverified" || status.time === null) {
      this.anchor = null;
      this.lastSeen = null;
      return null;
    }
    const latest = status.time.latestMs;
    if (latest !== this.lastSeen || this.anchor === null) {
      this.anchor = { trusted: latest, mono };
      this.lastSeen = latest;
    }
    return this.anchor.trusted + (mono - this.anchor.mono);
  }
}

function isFunctionKey(input: string, key: Key): boolean {
  // Ink names F1..F12 and Insert but reports them all as an empty input with no flag set.
  return input === "" && !Object.entries(key).some(([k, v]) => v === true && k !== "eventType");
}

function errorText(e: unknown): string {
  const code = codeOf(e);
  return code ? `${code}: ${messageOf(e)}` : messageOf(e);
}

const performanceNow = () => performance.now();

export function App(
  {
    engine,
    onQuit,
    size,
    mono = performanceNow,
    settings: initialSettings = DEFAULT_SETTINGS,
    settingsWarnings = [],
    saveSettings,
    noColor = false,
    terminal,
    repaint,
    mouse,
    early,
  }: AppProps,
) {
  const win = useWindowSize();
  const columns = size?.columns ?? win.columns;
  const rows = size?.rows ?? win.rows;
  const [state, dispatch] = useReducer(
    reduce,
    undefined,
    () => ({
      ...initialState(engine.name, engine.timeStatus()),
      peerPane: initialSettings.peerPane,
      certificate: engine.certificateStatus?.() ?? null,
    }),
  );
  const [settings, setSettingsState] = useState<Settings>(initialSettings);
  const settingsRef = useRef(settings);
  settingsRef.current = settings;
  const [input, setInputState] = useState<ed.InputState>(() => ed.emptyInput());
  // Keys of one write are handled in a loop before React re-renders: edits go through this ref.
  const inputRef = useRef(input);
  const setInput = (next: ed.InputState) => {
    inputRef.current = next;
    setInputState(next);
  };
  const [helpOffset, setHelpOffset] = useState(0);
  const tracker = useRef(new TrustedNow());
  // Re-renders the countdowns; the trusted instant itself is read at every render (below), so a message
  // drawn between two ticks never shows a countdown older than the frame.
  const [, setTick] = useState(0);
  const stateRef = useRef<UiState>(state);
  stateRef.current = state;
  const marked = useRef(new Set<string>());
  const lastTyping = useRef(Number.NEGATIVE_INFINITY);
  const quitting = useRef(false);

  const log = useCallback(
    (level: "info" | "warn" | "error", text: string) =>
      dispatch({ type: "log", level, text, at: Date.now() }),
    [],
  );
  const notice = useCallback(
    (text: string | null, level: "info" | "warn" | "error" = "info") =>
      dispatch({ type: "notice", text, level }),
    [],
  );

  const changeSettings = useCallback((next: Settings) => {
    settingsRef.current = next;
    setSettingsState(next);
    saveSettings?.(next).catch((e: unknown) => log("error", `settings not saved: ${errorText(e)}`));
  }, [saveSettings, log]);

  // Once at start: what the settings file and the phonebook said before the screen was there to show it.
  useEffect(() => {
    for (const w of settingsWarnings) log("warn", w);
    const pb = engine.phonebookStatus?.();
    if (pb && !pb.reachable) {
      const why = `phonebook unreachable: ${pb.reason ?? "no answer"}`;
      log(
        "error",
        `${why}. Contacts cannot find you and messages wait in the outbox; retrying in the background`,
      );
      notice(`${why} (see /log)`, "error");
    }
    // Only at mount: later changes arrive as engine events.
  }, []);

  const refreshContacts = useCallback(() => {
    engine.contacts().then(
      (contacts: Contact[]) => dispatch({ type: "contacts", contacts }),
      (e: unknown) => log("warn", `could not load contacts: ${errorText(e)}`),
    );
  }, [engine, log]);

  const loadHistory = useCallback((peer: string) => {
    try {
      dispatch({ type: "history", peer, messages: engine.history(peer) });
    } catch (e) {
      log("error", `could not load the conversation with ${peer}: ${errorText(e)}`);
    }
  }, [engine, log]);

  const quit = useCallback(() => {
    if (quitting.current) return;
    quitting.current = true;
    dispatch({ type: "closing" });
    onQuit();
  }, [onQuit]);

  // Engine events.
  useEffect(() => {
    const listen = (fn: (e: EngineEvent) => void) => early ? early.attach(fn) : engine.subscribe(fn);
    const off = listen((event) => {
      if (event.event === "message" && event.message.direction === "in" && terminal) {
        const m = event.message;
        const known = stateRef.current.conversations[m.peer]?.some((x) => x.id === m.id) ?? false;
        if (!known) {
          const s = settingsRef.current;
          const elsewhere = stateRef.current.selected !== m.peer;
          if (bellFor(s.bell, elsewhere)) terminal("\x07");
          // Who wrote, never what: a self-destructing text must not outlive itself in a notification centre.
          const osc = desktopNotification(s.desktop, `message from ${m.peer}`);
          if (osc) terminal(osc);
        }
      }
      dispatch({ type: "engine", event, at: Date.now(), mono: mono() } satisfies UiAction);
      if (event.event === "peer-online" || event.event === "peer-offline" || event.event === "key-changed") {
        refreshContacts();
      }
      // Our "after read" message was read: its lifetime starts now, and the deadline is in the engine's store.
      if (event.event === "read") {
        const m = stateRef.current.conversations[event.by]?.find((x) => x.id === event.id);
        if (m && m.ttlMode === "read" && m.expiresAt === null) loadHistory(event.by);
      }
    });
    refreshContacts();
    // The phonebook's view (who is online, who was revoked) changes without an event reaching us.
    const every = setInterval(refreshContacts, CONTACTS_REFRESH_MS);
    return () => {
      off();
      clearInterval(every);
    };
  }, [engine, early, refreshContacts, loadHistory, mono, terminal]);

  // Countdown and clock tick: a frame every TICK_MS while a countdown is on screen, else every
  // IDLE_TICKS ticks for the clock summary (a long conversation is not laid out twice a second for nothing).
  const countdownShown = useRef(false);
  useEffect(() => {
    let n = 0;
    const t = setInterval(() => {
      const status = engine.timeStatus();
      if (countdownShown.current || ++n % IDLE_TICKS === 0) setTick((k) => k + 1);
      if (status.state !== stateRef.current.time.state) dispatch({ type: "time", status });
    }, TICK_MS);
    return () => clearInterval(t);
  }, [engine]);

  // When trust in time changes, the engine's idea of what is visible changes: reload what is on screen.
  const timeState = state.time.state;
  useEffect(() => {
    for (const peer of Object.keys(stateRef.current.conversations)) loadHistory(peer);
  }, [timeState, loadHistory]);

  // Opening a conversation loads it.
  const selected = state.selected;
  useEffect(() => {
    if (selected !== null && stateRef.current.conversations[selected] === undefined) loadHistory(selected);
  }, [selected, loadHistory]);

  // Mouse reports on while the setting says so, and always off again when the screen goes.
  useEffect(() => {
    if (!terminal || !settings.mouse) return;
    terminal(MOUSE_ON);
    return () => terminal(MOUSE_OFF);
  }, [terminal, settings.mouse]);

  const lastTitle = useRef<string | null>(null);
  // The title the terminal had is saved (XTWINOPS 22) and given back when the screen goes (23).
  useEffect(() => {
    if (!terminal || !settings.title) return;
    terminal(TITLE_SAVE);
    return () => {
      lastTitle.current = null;
      terminal(TITLE_RESTORE);
    };
  }, [terminal, settings.title]);

  // The terminal's title: unread count and the open conversation, written only when it changes.
  const totalUnread = Object.entries(state.unread).reduce((n, [k, v]) => n + (k === selected ? 0 : v), 0);
  useEffect(() => {
    if (!terminal || !settings.title) return;
    const t = titleFor(state.me, selected, totalUnread);
    if (t === lastTitle.current) return;
    lastTitle.current = t;
    terminal(t);
  }, [terminal, settings.title, state.me, selected, totalUnread]);

  // Read at every frame: the top bar's uncertainty grows between syncs, and countdowns must be current.
  const liveTime = engine.timeStatus();
  const now = tracker.current.update(liveTime, mono());
  const conversation = selected !== null ? state.conversations[selected] : undefined;
  const visible = useMemo(
    () => visibleMessages(conversation ?? [], state.time, now),
    [conversation, state.time, now],
  );
  countdownShown.current = visible.some((m) => m.expiresAt !== null);

  // Incoming messages shown in the open conversation are read: tell the engine once per message. An "after
  // read" lifetime starts then, so the conversation is reloaded to pick up its deadline.
  useEffect(() => {
    if (selected === null || state.overlay !== null) return;
    let startsClock = false;
    for (const m of visible) {
      if (m.direction !== "in" || marked.current.has(m.id)) continue;
      marked.current.add(m.id);
      try {
        engine.markRead(m.id);
      } catch (e) {
        log("warn", `could not mark a message read: ${errorText(e)}`);
      }
      if (m.ttlMode === "read" && m.expiresAt === null) startsClock = true;
    }
    if (startsClock) {
      const t = setTimeout(() => loadHistory(selected), 50);
      return () => clearTimeout(t);
    }
  }, [visible, selected, state.overlay, engine, loadHistory, log]);

  const contactsShown = useMemo(
    () => filterContacts(state.contacts, state.focus === "contacts" ? state.contactQuery : ""),
    [state.contacts, state.focus, state.contactQuery],
  );
  const contact = state.contacts.find((c) => c.name === selected);
  const layout = computeLayout(
    columns,
    rows,
    state.peerPane,
    inputRows(input.text, Math.max(1, columns - 1), rows >= 30 ? 6 : 3),
  );
  const width = layout.columns;
  const peerRevoked = contact?.revoked === true ||
    (selected !== null && engine.peerInfo(selected)?.revoked === true);
  const queuedReason = selected === null
    ? null
    : peerRevoked
    ? `${selected}'s certificate is revoked: it cannot be delivered`
    : contact && !contact.online
    ? `${selected} is offline: sent when they come online`
    : state.peerProblem[selected] !== undefined
    ? `cannot reach ${selected} (${state.peerProblem[selected]}): tried again every few seconds`
    : null;
  const search = state.search && state.search.peer === selected
    ? { query: state.search.query, currentId: state.search.matchIds[state.search.index] ?? null }
    : null;

  const view = useMemo(() =>
    layoutConversation({
      messages: visible,
      me: state.me,
      peer: selected ?? "",
      width: Math.max(1, layout.conversationWidth),
      height: layout.mainHeight,
      scroll: state.scroll,
      now,
      newMarkerId: selected !== null ? state.newMarker[selected] ?? null : null,
      seconds: settings.seconds,
      queuedReason,
      search,
    }), [
    visible,
    state.me,
    selected,
    layout.conversationWidth,
    layout.mainHeight,
    state.scroll,
    now,
    state.newMarker,
    settings.seconds,
    queuedReason,
    search?.query,
    search?.currentId,
  ]);

  // The scroll the layout could honour becomes the state's, so the next PgDn starts from what is shown.
  useEffect(() => {
    if (view.scroll !== state.scroll) dispatch({ type: "scroll", to: view.scroll });
  }, [view.scroll, state.scroll]);

  // A search step brings its match into view (its last line at the bottom of the pane).
  const currentMatch = search?.currentId ?? null;
  useEffect(() => {
    if (currentMatch === null) return;
    const rowsBelow = rowsAfter({
      messages: visible,
      me: state.me,
      peer: selected ?? "",
      width: Math.max(1, layout.conversationWidth),
      newMarkerId: selected !== null ? stateRef.current.newMarker[selected] ?? null : null,
      seconds: settingsRef.current.seconds,
      queuedReason,
    }, currentMatch);
    dispatch({ type: "scroll", to: rowsBelow });
    // Only when the current match changes, not on every frame.
  }, [currentMatch]);

  // Scrolled up, a reader keeps looking at the same lines when messages arrive below (the view would
  // otherwise slide up under them): the scroll grows by the rows they take.
  const newest = visible.length > 0 ? visible[visible.length - 1].id : null;
  const lastNewest = useRef<{ peer: string | null; id: string | null }>({ peer: selected, id: newest });
  useEffect(() => {
    const before = lastNewest.current;
    lastNewest.current = { peer: selected, id: newest };
    if (
      before.peer !== selected || before.id === null || before.id === newest || stateRef.current.scroll === 0
    ) {
      return;
    }
    const added = rowsAfter({
      messages: visible,
      me: state.me,
      peer: selected ?? "",
      width: Math.max(1, layout.conversationWidth),
      newMarkerId: selected !== null ? state.newMarker[selected] ?? null : null,
      seconds: settingsRef.current.seconds,
      queuedReason,
    }, before.id);
    if (added > 0) dispatch({ type: "scroll", to: stateRef.current.scroll + added });
  }, [newest, selected, visible, state.me, state.newMarker, layout.conversationWidth]);

  const openPeer = useCallback((name: string) => {
    dispatch({ type: "select", peer: name });
  }, []);

  const cycleConversation = (step: number) => dispatch({ type: "cycle", step });

  const send = (peer: string, text: string, opts: SendOptions) => {
    engine.send(peer, text, opts).then(
      (m) => dispatch({ type: "upsert", message: m }),
      (e: unknown) => {
        notice(`not sent: ${errorText(e)}`, "error");
        log("error", `message to ${peer} not sent: ${errorText(e)}`);
      },
    );
    const ttl = opts.ttlMs ?? null;
    if (ttl !== null && stateRef.current.time.state === "unverified") {
      notice("sent with a lifetime: hidden here until time is verified", "warn");
    } else {
      notice(null);
    }
  };

  /** Commands that act on the open conversation. */
  const runForPeer = (cmd: UiCommand, peer: string) => {
    switch (cmd.kind) {
      case "send": {
        const ttlMs = cmd.ttlMs !== undefined
          ? cmd.ttlMs
          : (contact?.defaultTtlMs ?? settingsRef.current.lifetimeMs ?? null);
        send(peer, cmd.text, { ttlMs, ...(cmd.ttlMode ? { ttlMode: cmd.ttlMode } : {}) });
        dispatch({ type: "scroll", to: 0 });
        return;
      }
      case "ttl": {
        if (cmd.ttlMs === undefined) {
          const cur = contact?.defaultTtlMs ?? null;
          notice(`lifetime for ${peer}: ${cur === null ? "off" : formatTtl(cur)}`);
          return;
        }
        try {
          engine.setDefaultTtl(peer, cmd.ttlMs);
        } catch (e) {
          notice(`/ttl failed: ${errorText(e)}`, "error");
          return;
        }
        const ttlMs = cmd.ttlMs;
        dispatch({
          type: "contacts",
          contacts: stateRef.current.contacts.map((c) => c.name === peer ? { ...c, defaultTtlMs: ttlMs } : c),
        });
        const label = ttlMs === null ? "off" : formatTtl(ttlMs);
        log("info", `default lifetime for ${peer}: ${label}`);
        notice(`new messages to ${peer} now live ${ttlMs === null ? "forever" : label}`);
        return;
      }
      case "verify":
        dispatch({ type: "overlay", overlay: { kind: "verify", peer, showing: "theirs" } });
        return;
      case "accept-key": {
        const pin = engine.peerInfo(peer)?.pin ?? contact?.pin;
        if (pin !== "changed") {
          notice(`${peer}'s key has not changed: nothing to accept`, "warn");
          return;
        }
        try {
          engine.acceptKey(peer);
        } catch (e) {
          notice(`/accept-key failed: ${errorText(e)}`, "error");
          return;
        }
        log("warn", `accepted the new key of ${peer} (not verified: use /verify)`);
        notice(null);
        refreshContacts();
        return;
      }
    }
  };

  const run = (cmd: UiCommand) => {
    switch (cmd.kind) {
      case "none":
        return;
      case "contacts":
        dispatch({ type: "focus", focus: "contacts" });
        dispatch({ type: "contact-query", query: cmd.query });
        refreshContacts();
        return;
      case "open": {
        const want = cmd.name.replace(/^@/, "").toLowerCase();
        const c = stateRef.current.contacts.find((x) => x.name.toLowerCase() === want);
        if (!c) {
          notice(`no contact named ${cmd.name}: /contacts lists them`, "error");
          return;
        }
        openPeer(c.name);
        return;
      }
      case "block":
      case "unblock":
      case "accept":
      case "decline": {
        const who = cmd.name ?? stateRef.current.selected;
        if (who === null) {
          notice(`usage: /${cmd.kind} NAME (or open the conversation first)`, "warn");
          return;
        }
        const act = {
          block: engine.block,
          unblock: engine.unblock,
          accept: engine.acceptRequest,
          decline: engine.declineRequest,
        }[cmd.kind];
        if (!act) {
          notice(`/${cmd.kind} is not supported by this engine`, "error");
          return;
        }
        try {
          const n = act.call(engine, who);
          const said = {
            block: `${n} is blocked: their connections are refused and nothing of theirs is stored`,
            unblock: `${n} is no longer blocked`,
            accept: `${n}'s message request accepted: this is a conversation now`,
            decline: `${n}'s message request declined: its messages are deleted`,
          }[cmd.kind];
          log("info", said);
          notice(said);
          if (cmd.kind === "decline") loadHistory(n);
        } catch (e) {
          notice(`/${cmd.kind} failed: ${errorText(e)}`, "error");
          return;
        }
        refreshContacts();
        return;
      }
      case "peer": {
        const shown = peerVisible(stateRef.current.peerPane, columns);
        const mode = shown ? "hidden" : "shown";
        dispatch({ type: "peer-pane", mode });
        changeSettings({ ...settingsRef.current, peerPane: mode });
        return;
      }
      case "log":
        dispatch({ type: "log-scroll", delta: -stateRef.current.logScroll });
        dispatch({ type: "overlay", overlay: "log" });
        return;
      case "set": {
        if (cmd.key === undefined) {
          notice(describeSettings(settingsRef.current));
          return;
        }
        try {
          const next = applySetting(settingsRef.current, cmd.key, cmd.value ?? "");
          changeSettings(next);
          if (next.peerPane !== stateRef.current.peerPane) {
            dispatch({ type: "peer-pane", mode: next.peerPane });
          }
          notice(`${cmd.key} set: ${describeSettings(next)}`);
        } catch (e) {
          if (!(e instanceof SettingsError)) throw e;
          notice(`/set: ${e.message}`, "error");
        }
        return;
      }
      case "search":
        dispatch({ type: "search", query: cmd.query === "" ? null : cmd.query });
        return;
      case "help":
        setHelpOffset(0);
        dispatch({ type: "overlay", overlay: "help" });
        return;
      case "quit":
        quit();
        return;
      case "error":
        notice(cmd.message, "error");
        return;
      default: {
        const peer = stateRef.current.selected;
        if (peer === null) notice("open a conversation first (/contacts or /open NAME)", "warn");
        else runForPeer(cmd, peer);
      }
    }
  };

  const page = Math.max(1, layout.mainHeight - 1);

  /** Inserts typed or pasted text, never past the byte limit, and never cutting without asking first. */
  const insertText = (text: string, pasted: boolean) => {
    const cur = inputRef.current;
    const clean = text.replace(/\r\n?/g, "\n");
    const room = inputLimitBytes(cur.text === "" ? clean : cur.text) - byteLength(cur.text);
    const size = byteLength(clean);
    if (size <= room) {
      setInput(ed.insert(cur, clean));
      return true;
    }
    if (room <= 0) {
      notice(`input full: a message is at most ${MAX_TEXT_BYTES.toLocaleString("en")} bytes`, "warn");
      return false;
    }
    if (!pasted) {
      setInput(ed.insert(cur, cutToBytes(clean, room)));
      notice(`input full: a message is at most ${MAX_TEXT_BYTES.toLocaleString("en")} bytes`, "warn");
      return true;
    }
    dispatch({ type: "pending-paste", text: clean });
    notice(
      `paste is ${size.toLocaleString("en")} bytes, only ${room.toLocaleString("en")} fit ` +
        `(a message is at most ${MAX_TEXT_BYTES.toLocaleString("en")}): y inserts the first ` +
        `${room.toLocaleString("en")} bytes, n or Esc drops the paste`,
      "warn",
    );
    return false;
  };

  const openOverlay = (o: "help" | "log") => {
    if (o === "help") setHelpOffset(0);
    dispatch({ type: "overlay", overlay: o });
  };

  /** A click or the wheel, at a cell of the screen (1-based, as the terminal reports it). */
  const onMouse = (m: MouseEvent): void => {
    const s = stateRef.current;
    if (s.closing || s.pendingPaste !== null) return;
    const wheel = m.kind === "wheel-up" ? 1 : m.kind === "wheel-down" ? -1 : 0;
    if (s.overlay === "log") {
      if (wheel) dispatch({ type: "log-scroll", delta: wheel * WHEEL_LINES });
      return;
    }
    if (s.overlay === "help") {
      if (wheel) setHelpOffset((o) => Math.max(0, o - wheel * WHEEL_LINES));
      return;
    }
    if (s.overlay !== null) return;
    const inMain = m.y >= 2 && m.y <= 1 + layout.mainHeight;
    if (wheel) {
      if (inMain) dispatch({ type: "scroll-by", delta: wheel * WHEEL_LINES });
      return;
    }
    if (m.kind !== "press" || m.button !== 0 || !inMain || m.x > layout.contactsWidth) return;
    // Row 2 is the list's heading; the contacts start on row 3.
    const list = s.focus === "contacts" ? contactsShown : filterContacts(s.contacts, "");
    const first = contactWindowStart(
      list,
      s.selected,
      s.contactCursor,
      s.focus === "contacts",
      layout.mainHeight,
    );
    const c = list[first + (m.y - 3)];
    if (m.y >= 3 && c) openPeer(c.name);
  };

  const onMouseRef = useRef(onMouse);
  onMouseRef.current = onMouse;

  const onKey = (text: string, key: Key): void => {
    if (needsSplit(text)) {
      for (const k of splitKeys(text)) onKey(k.input, k.key);
      return;
    }
    if (key.ctrl && text === "c") {
      quit();
      return;
    }
    if (key.ctrl && text === "l") {
      repaint?.();
      setTick((k) => k + 1);
      return;
    }
    if (stateRef.current.closing) return;
    const cur0 = stateRef.current;
    if (cur0.pendingPaste !== null) {
      const pending = cur0.pendingPaste;
      dispatch({ type: "pending-paste", text: null });
      if (text === "y" || text === "Y") {
        const cur = inputRef.current;
        const room = inputLimitBytes(cur.text === "" ? pending : cur.text) - byteLength(cur.text);
        setInput(ed.insert(cur, cutToBytes(pending, room)));
        notice(`paste cut to ${room.toLocaleString("en")} bytes`, "warn");
      } else notice("paste dropped: nothing inserted");
      return;
    }
    const overlay = state.overlay;
    if (overlay === "help") {
      const total = helpLines(width).length;
      if (key.escape || key.return || text === "q") dispatch({ type: "overlay", overlay: null });
      else if (key.downArrow || key.pageDown) {
        setHelpOffset((o) => Math.min(Math.max(0, total - (rows - 2)), o + (key.pageDown ? page : 1)));
      } else if (key.upArrow || key.pageUp) setHelpOffset((o) => Math.max(0, o - (key.pageUp ? page : 1)));
      return;
    }
    if (overlay === "log") {
      if (key.escape || key.return || text === "q") dispatch({ type: "overlay", overlay: null });
      else if (key.upArrow || key.pageUp) {
        dispatch({ type: "log-scroll", delta: key.pageUp ? rows - 3 : 1 });
      } else if (key.downArrow || key.pageDown) {
        dispatch({ type: "log-scroll", delta: -(key.pageDown ? rows - 3 : 1) });
      } else if (key.end) dispatch({ type: "log-scroll", delta: -stateRef.current.logScroll });
      return;
    }
    if (overlay !== null) {
      if (key.escape || text === "n" || text === "q") dispatch({ type: "overlay", overlay: null });
      else if (key.tab) {
        dispatch({
          type: "overlay",
          overlay: { ...overlay, showing: overlay.showing === "theirs" ? "ours" : "theirs" },
        });
      } else if (text === "y" && engine.peerInfo(overlay.peer)) {
        try {
          engine.markVerified(overlay.peer);
          log("info", `${overlay.peer} marked verified: fingerprints compared`);
        } catch (e) {
          log("error", `could not mark ${overlay.peer} verified: ${errorText(e)}`);
        }
        dispatch({ type: "overlay", overlay: null });
        refreshContacts();
      }
      return;
    }
    if (isFunctionKey(text, key)) {
      openOverlay("help");
      return;
    }
    // Alt+1..9: the conversations of the activity list.
    if (key.meta && /^[1-9]$/.test(text)) {
      dispatch({ type: "jump", index: Number(text) - 1 });
      return;
    }
    if (state.focus === "contacts") {
      if (key.escape || key.tab) dispatch({ type: "focus", focus: "input" });
      else if (key.upArrow) dispatch({ type: "contact-cursor", index: state.contactCursor - 1 });
      else if (key.downArrow) {
        dispatch({
          type: "contact-cursor",
          index: Math.min(contactsShown.length - 1, state.contactCursor + 1),
        });
      } else if (key.return) {
        const c = contactsShown[state.contactCursor];
        if (c) openPeer(c.name);
      } else if (key.backspace) dispatch({ type: "contact-query", query: state.contactQuery.slice(0, -1) });
      else if (text && !key.ctrl && !key.meta) {
        dispatch({ type: "contact-query", query: state.contactQuery + sanitize(text) });
      }
      return;
    }
    // Input focus.
    const cur = inputRef.current;
    if ((key.return && key.meta) || text === "\n") {
      insertText("\n", false);
      return;
    }
    if (key.return) {
      const cmd = parseInput(cur.text);
      if (cmd.kind === "send" && byteLength(cmd.text) > MAX_TEXT_BYTES) {
        // Refused before the input is cleared: nothing typed is lost.
        notice(
          `message is ${byteLength(cmd.text).toLocaleString("en")} bytes, at most ` +
            `${MAX_TEXT_BYTES.toLocaleString("en")}: shorten it or split it`,
          "error",
        );
        return;
      }
      const { state: next } = ed.submit(cur);
      setInput(next);
      run(cmd);
      return;
    }
    if (key.tab) {
      const names = state.contacts.map((c) => c.name);
      const r = complete(cur.text, cur.cursor, names);
      setInput({ ...cur, text: r.text, cursor: r.cursor });
      notice(r.candidates.length > 1 ? r.candidates.join("  ") : null);
      return;
    }
    // Scrolling adds up over the keys of one burst (three PgDn: three pages), from the state, not the frame.
    if (key.pageUp) return dispatch({ type: "scroll-by", delta: page });
    if (key.pageDown) return dispatch({ type: "scroll-by", delta: -page });
    if (key.home && (key.ctrl || cur.text === "")) return dispatch({ type: "scroll", to: TOP });
    if (key.end && (key.ctrl || cur.text === "")) return dispatch({ type: "scroll", to: 0 });
    if (key.ctrl && text === "f") return dispatch({ type: "search-step", step: -1 });
    if (key.ctrl && text === "g") return dispatch({ type: "search-step", step: 1 });
    if (key.escape) {
      notice(null);
      if (stateRef.current.search) dispatch({ type: "search", query: null });
      if (state.scroll > 0) dispatch({ type: "scroll", to: 0 });
      return;
    }
    let op: ((s: ed.InputState) => ed.InputState) | null = null;
    if (key.leftArrow) op = ed.left;
    else if (key.rightArrow) op = ed.right;
    else if (key.upArrow) op = ed.up;
    else if (key.downArrow) op = ed.down;
    else if (key.home || (key.ctrl && text === "a")) op = ed.lineStart;
    else if (key.end || (key.ctrl && text === "e")) op = ed.lineEnd;
    else if (key.backspace) op = ed.backspace;
    else if (key.delete) op = ed.deleteForward;
    else if (key.ctrl && text === "u") op = ed.killToStart;
    else if (key.ctrl && text === "k") op = ed.killToEnd;
    else if (key.ctrl && text === "w") op = ed.killWord;
    else if (key.ctrl && text === "n") return cycleConversation(1);
    else if (key.ctrl && text === "p") return cycleConversation(-1);
    else if (text && !key.ctrl && !key.meta) {
      if (insertText(text, false)) typingPing();
      return;
    }
    if (op) setInput(op(cur));
  };

  const typingPing = () => {
    const peer = stateRef.current.selected;
    const t = mono();
    if (peer === null || t - lastTyping.current < TYPING_EVERY_MS) return;
    lastTyping.current = t;
    try {
      engine.typing(peer);
    } catch {
      // A typing notice is best effort: a peer that is offline simply does not get it.
    }
  };

  useInput(onKey);
  useEffect(() => {
    if (!mouse) return;
    return mouse.subscribe((r) => {
      const m = parseMouse(r);
      if (m) onMouseRef.current(m);
    });
  }, [mouse]);
  usePaste((text) => {
    if (state.overlay !== null || state.closing) return;
    if (state.focus === "contacts") {
      dispatch({ type: "contact-query", query: state.contactQuery + sanitize(text.replace(/\s+/g, " ")) });
      return;
    }
    insertText(text, true);
  });

  if (layout.tooSmall) {
    return (
      <Box flexDirection="column" width={columns} height={rows}>
        <Text wrap="truncate">
          securechat needs at least {MIN_COLUMNS}x{MIN_ROWS}; this terminal is {columns}x{rows}.
        </Text>
        <Text wrap="truncate">Enlarge it, or press Ctrl+C to quit.</Text>
      </Box>
    );
  }

  const used = byteLength(input.text);
  const activity = state.activity.map((name) => ({ name, unread: state.unread[name] ?? 0 }))
    .filter((a) => a.unread > 0);
  return (
    <MonochromeContext.Provider value={noColor || !settings.colors}>
      <ChatScreen
        state={state}
        layout={layout}
        view={view}
        input={input}
        contactsShown={contactsShown}
        peerInfo={selected !== null ? engine.peerInfo(selected) : null}
        verifyFingerprints={state.overlay !== null && state.overlay !== "help" && state.overlay !== "log"
          ? {
            ours: engine.ownFingerprint(),
            theirs: engine.peerInfo(state.overlay.peer)?.fingerprint ?? null,
          }
          : null}
        time={liveTime}
        helpOffset={helpOffset}
        typing={selected !== null && (state.typingUntil[selected] ?? 0) > mono()}
        seconds={settings.seconds}
        activity={activity}
        inputBytes={used > MAX_TEXT_BYTES * 0.75 ? { used, limit: inputLimitBytes(input.text) } : null}
      />
    </MonochromeContext.Provider>
  );
}
