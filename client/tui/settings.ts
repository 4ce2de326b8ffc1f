/**
 * The chat screen's settings, kept in `settings.json` in the home folder (docs/usage-tui.md "Settings"):
 * the peer pane, notifications, timestamps, colours and the default lifetime. Parsing and `/set` are pure;
 * reading and writing the file are the two I/O functions at the end.
 */
import { join } from "node:path";
import { DurationError, formatTtl, parseDuration } from "./format.ts";
import type { PeerPaneMode } from "./model.ts";

export const SETTINGS_FILE = "settings.json";

export type BellMode = "off" | "other" | "all";
export type DesktopMode = "off" | "osc9" | "osc777";

export interface Settings {
  /** "auto": shown when the terminal is wide enough for it and a comfortable conversation. */
  peerPane: PeerPaneMode;
  /** Terminal bell: never, on a message in another conversation, or on every incoming message. */
  bell: BellMode;
  /** Unread count and the open conversation in the terminal's title. */
  title: boolean;
  /** Desktop notification through the terminal (OSC 9: iTerm2, kitty, WezTerm; OSC 777: VTE, foot). */
  desktop: DesktopMode;
  /** Timestamps with seconds (14:05:09) instead of 14:05. */
  seconds: boolean;
  /** Colours; NO_COLOR in the environment turns them off whatever this says. */
  colors: boolean;
  /** Lifetime for messages in conversations that have none of their own (/ttl), ms; null: none. */
  lifetimeMs: number | null;
  /** Mouse: click a contact, wheel to scroll (the terminal's own selection then needs Shift). */
  mouse: boolean;
}

export const DEFAULT_SETTINGS: Settings = {
  peerPane: "auto",
  bell: "other",
  title: true,
  desktop: "off",
  seconds: false,
  colors: true,
  lifetimeMs: null,
  mouse: true,
};

export class SettingsError extends Error {
  readonly code = "BAD_SETTING";
  constructor(message: string) {
    super(message);
    this.name = "SettingsError";
  }
}

interface SettingSpec {
  key: string;
  values: string;
  help: string;
  parse(v: string, s: Settings): Settings;
  show(s: Settings): string;
}

function onOff(key: string, v: string): boolean {
  const t = v.trim().toLowerCase();
  if (["on", "true", "yes", "1"].includes(t)) return true;
  if (["off", "false", "no", "0"].includes(t)) return false;
  throw new SettingsError(`${key}: "${v}" is not on or off`);
}

function oneOf<T extends string>(key: string, v: string, allowed: readonly T[]): T {
  const t = v.trim().toLowerCase() as T;
  if (!allowed.includes(t)) throw new SettingsError(`${key}: "${v}" is not one of ${allowed.join(", ")}`);
  return t;
}

/** Every setting, in the order `/set` and the help screen list them. */
export const SETTINGS: readonly SettingSpec[] = [
  {
    key: "pane",
    values: "auto|shown|hidden",
    help: "the peer pane (certificate, TLS, pin); /peer toggles it and is remembered",
    parse: (v, s) => ({ ...s, peerPane: oneOf("pane", v, ["auto", "shown", "hidden"] as const) }),
    show: (s) => s.peerPane,
  },
  {
    key: "bell",
    values: "off|other|all",
    help: "terminal bell on a message in another conversation (other) or on every message (all)",
    parse: (v, s) => ({ ...s, bell: oneOf("bell", v, ["off", "other", "all"] as const) }),
    show: (s) => s.bell,
  },
  {
    key: "title",
    values: "on|off",
    help: "unread count and conversation in the terminal's title",
    parse: (v, s) => ({ ...s, title: onOff("title", v) }),
    show: (s) => (s.title ? "on" : "off"),
  },
  {
    key: "desktop",
    values: "off|osc9|osc777",
    help: "desktop notification through the terminal (osc9: iTerm2, kitty, WezTerm; osc777: VTE, foot)",
    parse: (v, s) => ({ ...s, desktop: oneOf("desktop", v, ["off", "osc9", "osc777"] as const) }),
    show: (s) => s.desktop,
  },
  {
    key: "seconds",
    values: "on|off",
    help: "timestamps with seconds (14:05:09)",
    parse: (v, s) => ({ ...s, seconds: onOff("seconds", v) }),
    show: (s) => (s.seconds ? "on" : "off"),
  },
  {
    key: "colors",
    values: "on|off",
    help: "colours (NO_COLOR in the environment turns them off)",
    parse: (v, s) => ({ ...s, colors: onOff("colors", v) }),
    show: (s) => (s.colors ? "on" : "off"),
  },
  {
    key: "mouse",
    values: "on|off",
    help: "click a contact, wheel to scroll (hold Shift to select text in the terminal)",
    parse: (v, s) => ({ ...s, mouse: onOff("mouse", v) }),
    show: (s) => (s.mouse ? "on" : "off"),
  },
  {
    key: "lifetime",
    values: "30s|5m|1h|off",
    help: "lifetime of messages in conversations without their own /ttl",
    parse: (v, s) => {
      try {
        return { ...s, lifetimeMs: parseDuration(v) };
      } catch (e) {
        if (e instanceof DurationError) throw new SettingsError(`lifetime: ${e.message}`);
        throw e;
      }
    },
    show: (s) => (s.lifetimeMs === null ? "off" : formatTtl(s.lifetimeMs)),
  },
];

/**
 * Applies `/set KEY VALUE`.
 * @throws SettingsError naming the key and the values it takes.
 */
export function applySetting(s: Settings, key: string, value: string): Settings {
  const spec = SETTINGS.find((x) => x.key === key.trim().toLowerCase());
  if (!spec) {
    throw new SettingsError(`unknown setting "${key}" (one of ${SETTINGS.map((x) => x.key).join(", ")})`);
  }
  if (value.trim() === "") throw new SettingsError(`${spec.key} needs a value: ${spec.values}`);
  return spec.parse(value, s);
}

/** "pane=auto bell=other ..." for `/set` without arguments. */
export function describeSettings(s: Settings): string {
  return SETTINGS.map((x) => `${x.key}=${x.show(s)}`).join("  ");
}

/** The file's JSON: the same keys as `/set` takes, values as strings. */
export function settingsJson(s: Settings): Record<string, string> {
  return Object.fromEntries(SETTINGS.map((x) => [x.key, x.show(s)]));
}

/**
 * Settings from the file's JSON. Unknown keys are reported, not fatal (a newer version may have written them).
 * @throws SettingsError when it is not a JSON object or a value is wrong (nothing is half applied).
 */
export function parseSettings(text: string): { settings: Settings; warnings: string[] } {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    throw new SettingsError("not valid JSON");
  }
  if (typeof j !== "object" || j === null || Array.isArray(j)) throw new SettingsError("not a JSON object");
  let s = DEFAULT_SETTINGS;
  const warnings: string[] = [];
  for (const [k, v] of Object.entries(j)) {
    if (!SETTINGS.some((x) => x.key === k)) {
      warnings.push(`unknown setting "${k}" ignored`);
      continue;
    }
    s = applySetting(s, k, typeof v === "boolean" ? (v ? "on" : "off") : String(v));
  }
  return { settings: s, warnings };
}

/** True when the environment asks for no colour (https://no-color.org: set and not empty). */
export function noColorEnv(): boolean {
  try {
    return (Deno.env.get("NO_COLOR") ?? "") !== "";
  } catch {
    return false;
  }
}

/** Reads `settings.json` from the home folder: defaults when there is none; a bad file is reported. */
export async function loadSettings(home: string): Promise<{ settings: Settings; warnings: string[] }> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(home, SETTINGS_FILE));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { settings: DEFAULT_SETTINGS, warnings: [] };
    return { settings: DEFAULT_SETTINGS, warnings: [`${SETTINGS_FILE} unreadable: ${(e as Error).message}`] };
  }
  try {
    return parseSettings(text);
  } catch (e) {
    return {
      settings: DEFAULT_SETTINGS,
      warnings: [`${SETTINGS_FILE} ignored (${(e as Error).message}): defaults used; /set rewrites it`],
    };
  }
}

/** Writes `settings.json` whole (a temporary file renamed over it, so a crash never leaves half a file). */
export async function saveSettings(home: string, s: Settings): Promise<void> {
  const path = join(home, SETTINGS_FILE);
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(settingsJson(s), null, 2) + "\n");
  await Deno.rename(tmp, path);
}
