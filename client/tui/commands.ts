/**
 * The input line's language: plain text is a message to the open conversation, a line starting with "/" is a
 * command. Parsing and Tab completion are pure so they can be tested without a terminal.
 */
import { DurationError, parseDuration } from "./format.ts";
import type { TtlMode } from "../engine_types.ts";

export type UiCommand =
  /** ttlMs undefined = use the conversation default; null = explicitly no lifetime. */
  | { kind: "send"; text: string; ttlMs?: number | null; ttlMode?: TtlMode }
  | { kind: "ttl"; ttlMs: number | null | undefined }
  | { kind: "verify" }
  | { kind: "accept-key" }
  | { kind: "contacts"; query: string }
  | { kind: "open"; name: string }
  /** name undefined: the open conversation. */
  | { kind: "block"; name?: string }
  | { kind: "unblock"; name?: string }
  | { kind: "accept"; name?: string }
  | { kind: "decline"; name?: string }
  | { kind: "peer" }
  | { kind: "log" }
  /** key undefined: list the settings. */
  | { kind: "set"; key?: string; value?: string }
  /** query "": end the search. */
  | { kind: "search"; query: string }
  | { kind: "help" }
  | { kind: "quit" }
  | { kind: "none" }
  | { kind: "error"; message: string };

export interface CommandSpec {
  name: string;
  args: string;
  help: string;
}

/** Every command, in the order the help screen lists them. Aliases map to these in ALIASES. */
export const COMMANDS: readonly CommandSpec[] = [
  { name: "/msg", args: "TEXT --ttl 10s [--after-read]", help: "send one message with its own lifetime" },
  {
    name: "/ttl",
    args: "30s|5m|1h|off",
    help: "default lifetime for this conversation (no argument: show it)",
  },
  { name: "/verify", args: "", help: "compare fingerprints (text and QR) and mark the contact verified" },
  { name: "/accept-key", args: "", help: "accept a contact's changed key after checking it out of band" },
  { name: "/contacts", args: "[SEARCH]", help: "focus the contact list (type to search, Enter to open)" },
  { name: "/open", args: "NAME", help: "open the conversation with NAME" },
  {
    name: "/block",
    args: "[NAME]",
    help: "block NAME (default: this conversation): refused at connect, nothing of theirs stored; remembered",
  },
  { name: "/unblock", args: "[NAME]", help: "unblock NAME (default: this conversation)" },
  { name: "/accept", args: "[NAME]", help: "accept a message request (replying does too)" },
  { name: "/decline", args: "[NAME]", help: "decline a message request: its messages are deleted" },
  { name: "/peer", args: "", help: "show or hide the peer pane (certificate, TLS, pin); remembered" },
  {
    name: "/search",
    args: "TEXT",
    help: "highlight TEXT in this conversation; Ctrl+F older match, Ctrl+G newer, Esc or /search ends it",
  },
  { name: "/log", args: "", help: "the whole log, every line in full (Up/Down/PgUp/PgDn, Esc closes)" },
  { name: "/set", args: "[KEY VALUE]", help: "show the settings, or change one (saved in settings.json)" },
  { name: "/help", args: "", help: "this screen (also F1)" },
  { name: "/quit", args: "", help: "close connections, withdraw our address and exit (also Ctrl+C)" },
];

const ALIASES: Record<string, string> = {
  "/exit": "/quit",
  "/q": "/quit",
  "/query": "/open",
  "/j": "/open",
  "/find": "/search",
};

/** Parses one submitted input (may contain newlines; only the first word decides if it is a command). */
export function parseInput(raw: string): UiCommand {
  const text = raw.replace(/\s+$/, "");
  if (text.trim() === "") return { kind: "none" };
  if (!text.startsWith("/")) return { kind: "send", text };
  // "//text" sends "/text": the escape for a message that starts with a slash.
  if (text.startsWith("//")) return { kind: "send", text: text.slice(1) };
  const m = /^(\/\S+)\s*([\s\S]*)$/.exec(text);
  if (!m) return { kind: "none" };
  const name = ALIASES[m[1].toLowerCase()] ?? m[1].toLowerCase();
  const rest = m[2];
  switch (name) {
    case "/msg":
      return parseMsg(rest);
    case "/ttl":
      if (rest.trim() === "") return { kind: "ttl", ttlMs: undefined };
      return withDuration(rest.trim(), (ttlMs) => ({ kind: "ttl", ttlMs }));
    case "/verify":
      return { kind: "verify" };
    case "/accept-key":
      return { kind: "accept-key" };
    case "/contacts":
      return { kind: "contacts", query: rest.trim() };
    case "/open":
      return rest.trim()
        ? { kind: "open", name: rest.trim() }
        : { kind: "error", message: "usage: /open NAME" };
    case "/block":
    case "/unblock":
    case "/accept":
    case "/decline": {
      const who = rest.trim().replace(/^@/, "");
      if (/\s/.test(who)) return { kind: "error", message: `usage: ${name} [NAME]` };
      const kind = name.slice(1) as "block" | "unblock" | "accept" | "decline";
      return who ? { kind, name: who } : { kind };
    }
    case "/peer":
      return { kind: "peer" };
    case "/log":
      return { kind: "log" };
    case "/search":
      return { kind: "search", query: rest.trim() };
    case "/set": {
      const a = /^(\S+)\s*([\s\S]*)$/.exec(rest.trim());
      if (!a) return { kind: "set" };
      if (a[2].trim() === "") {
        return { kind: "error", message: `usage: /set ${a[1]} VALUE (/set lists them)` };
      }
      return { kind: "set", key: a[1], value: a[2].trim() };
    }
    case "/help":
      return { kind: "help" };
    case "/quit":
      return { kind: "quit" };
    default:
      return {
        kind: "error",
        message: `unknown command ${m[1]} (see /help; "//" sends a line starting with /)`,
      };
  }
}

function withDuration(s: string, make: (ms: number | null) => UiCommand): UiCommand {
  try {
    return make(parseDuration(s));
  } catch (e) {
    if (e instanceof DurationError) return { kind: "error", message: e.message };
    throw e;
  }
}

/** "/msg TEXT --ttl 10s" (the flag may also come first), "--after-read" starts the clock when it is read. */
function parseMsg(rest: string): UiCommand {
  let text = rest;
  let ttl: string | undefined;
  let afterRead = false;
  const flag = /(^|\s)--ttl(?:=|\s+)(\S+)(?=\s|$)/;
  const f = flag.exec(text);
  if (f) {
    ttl = f[2];
    text = (text.slice(0, f.index) + f[1] + text.slice(f.index + f[0].length)).trim();
  } else if (/(^|\s)--ttl\s*$/.test(text)) {
    return { kind: "error", message: "--ttl needs a lifetime, e.g. --ttl 10s" };
  }
  const ar = /(^|\s)--after-read(?=\s|$)/.exec(text);
  if (ar) {
    afterRead = true;
    text = (text.slice(0, ar.index) + text.slice(ar.index + ar[0].length)).trim();
  }
  text = text.trim();
  if (text === "") return { kind: "error", message: "usage: /msg TEXT --ttl 10s" };
  if (ttl === undefined) {
    return afterRead ? { kind: "error", message: "--after-read needs --ttl" } : { kind: "send", text };
  }
  return withDuration(ttl, (ttlMs) => ({
    kind: "send",
    text,
    ttlMs,
    ...(afterRead && ttlMs !== null ? { ttlMode: "read" as const } : {}),
  }));
}

export interface Completion {
  text: string;
  cursor: number;
  /** All matches when more than one remains (shown to the user), else empty. */
  candidates: string[];
}

/**
 * Tab completion at `cursor`: a command name when the word is the first and starts with "/", otherwise a
 * contact name. Completes to the longest common prefix; a unique match gets a trailing space.
 */
export function complete(text: string, cursor: number, names: readonly string[]): Completion {
  const before = text.slice(0, cursor);
  const start = before.search(/\S*$/);
  const word = before.slice(start);
  const isFirst = before.slice(0, start).trim() === "";
  const pool = isFirst && word.startsWith("/")
    ? [...COMMANDS.map((c) => c.name), ...Object.keys(ALIASES)]
    : names.map((n) => (word.startsWith("@") ? "@" + n : n));
  const matches = [...new Set(pool.filter((p) => p.toLowerCase().startsWith(word.toLowerCase())))].sort();
  if (word === "" || matches.length === 0) return { text, cursor, candidates: [] };
  const insert = matches.length === 1 ? matches[0] + " " : commonPrefix(matches);
  if (insert.length < word.length) return { text, cursor, candidates: matches };
  const next = text.slice(0, start) + insert + text.slice(cursor);
  return { text: next, cursor: start + insert.length, candidates: matches.length > 1 ? matches : [] };
}

function commonPrefix(words: string[]): string {
  let p = words[0];
  for (const w of words) {
    while (!w.toLowerCase().startsWith(p.toLowerCase())) p = p.slice(0, -1);
  }
  return p;
}
