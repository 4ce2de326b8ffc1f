/**
 * The terminal UI of `securechat chat`. Contract used by client/cli.ts:
 * - `runFirstRun(home)`: interactive enrollment when the home folder has no identity yet.
 * - `runTui(engine, opts)`: full-screen UI on top of the chat engine; resolves when the user quits, after the
 *   engine is closed (connections ended, our address withdrawn from the phonebook).
 */
import process from "node:process";
import { render, type RenderOptions } from "ink";
import { createElement } from "react";
import type { ChatEngineApi } from "../engine_types.ts";
import type { EarlyEvents } from "../early_events.ts";
import { CliError } from "../../cli_error.ts";
import { App, type AppProps } from "./app.tsx";
import { loadSettings, noColorEnv, saveSettings } from "./settings.ts";
import { MouseFilteringStdin } from "./mouse_stdin.ts";

export interface TuiOptions {
  /** The home folder, where settings.json is kept; null: default settings, not saved. */
  home: string | null;
  /** The events the engine emitted while starting (its onEvent was `early.push`): shown first. */
  early?: EarlyEvents;
}

/** How long quitting waits for the engine to close before giving up on a clean goodbye. */
export const CLOSE_TIMEOUT_MS = 5000;
/** How long quitting waits for the terminal to take the last frame. */
export const UNMOUNT_TIMEOUT_MS = 1000;

/**
 * How the chat screen asks Ink to draw on a terminal (tests and the benchmark use the same).
 * - interactive: Ink turns itself into a log printer when it sees a CI variable, even on a terminal; this
 *   screen is only ever started on one, so it is interactive wherever it runs.
 * - incrementalRendering: only the rows (and within them, the cells from the first change) that differ are
 *   written, so a countdown costs its own cells, not the whole screen, every tick.
 */
export const TERMINAL_RENDER_OPTIONS = {
  alternateScreen: true,
  exitOnCtrlC: false,
  patchConsole: true,
  interactive: true,
  incrementalRendering: true,
} as const satisfies RenderOptions;

export async function runFirstRun(home: string): Promise<void> {
  // Loaded on demand: the prompts and the enrollment code are not needed by an enrolled user's chat screen.
  const { firstRun } = await import("./first_run.ts");
  await firstRun(home);
}

function isTerminal(): boolean {
  try {
    return Deno.stdin.isTerminal() && Deno.stdout.isTerminal();
  } catch {
    return false;
  }
}

/** Closes the engine, but never hangs the exit on it. */
async function closeEngine(engine: ChatEngineApi, timeoutMs: number): Promise<Error | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      engine.close(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`engine did not close within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
    return null;
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs the chat screen with the given Ink render options until the user quits (or `quit` settles), then
 * closes the engine (bounded by `closeTimeoutMs`) while the "closing" notice is on screen, and unmounts.
 * @throws CliError when the engine could not close cleanly; the UI's own error when it crashed.
 */
export async function runTuiOn(
  engine: ChatEngineApi,
  opts: {
    render: RenderOptions;
    quit?: Promise<void>;
    closeTimeoutMs?: number;
    /** Settings, terminal writer...: the App's props other than the engine and onQuit. */
    app?: Omit<AppProps, "engine" | "onQuit" | "repaint">;
  },
): Promise<void> {
  let requestQuit = () => {};
  const quitRequested = new Promise<void>((resolve) => (requestQuit = resolve));
  opts.quit?.then(() => requestQuit(), () => requestQuit());
  const out = opts.render.stdout ?? process.stdout;
  // Ctrl+L: forget the frame Ink believes is on screen and clear the terminal, so the next frame is drawn
  // whole (whatever another program or a width disagreement left there).
  const repaint = () => {
    app.clear();
    out.write("\x1b[2J\x1b[H");
  };
  const app = render(
    createElement(App, { ...opts.app, engine, onQuit: () => requestQuit(), repaint }),
    opts.render,
  );
  let uiError: unknown = null;
  try {
    await Promise.race([quitRequested, app.waitUntilExit()]);
  } catch (e) {
    uiError = e;
  }
  const closeError = await closeEngine(engine, opts.closeTimeoutMs ?? CLOSE_TIMEOUT_MS);
  try {
    app.unmount();
  } catch {
    // The terminal is gone (EIO): the engine is closed, which is what matters.
  }
  // Unmounting settles once the terminal took the last writes; a wedged terminal must not keep us here.
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    app.waitUntilExit().catch(() => {}),
    new Promise<void>((r) => (timer = setTimeout(r, UNMOUNT_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (uiError) throw uiError;
  if (closeError) throw new CliError(`closing: ${closeError.message}`);
}

export async function runTui(engine: ChatEngineApi, opts: TuiOptions): Promise<void> {
  if (!isTerminal()) {
    throw new CliError("the chat screen needs a terminal (use --headless for JSON lines)");
  }
  const home = opts.home;
  const { settings, warnings } = home === null
    ? { settings: undefined, warnings: [] }
    : await loadSettings(home);
  let onSignal = () => {};
  const signalled = new Promise<void>((resolve) => (onSignal = resolve));
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  for (const s of signals) {
    try {
      Deno.addSignalListener(s, onSignal);
    } catch {
      // Not every platform has every signal; Ctrl+C and /quit still work.
    }
  }
  // When the terminal goes away (window closed: SIGHUP) the next writes fail with EPIPE or EIO, as an
  // asynchronous stream error that would otherwise kill the process before the engine withdraws our address.
  // Ink writes frames to stdout and restores the cursor on stderr. Nothing can be drawn any more: quit cleanly.
  const onStdoutError = () => onSignal();
  process.stdout.on("error", onStdoutError);
  process.stderr.on("error", onStdoutError);
  try {
    // Mouse reports are taken out of the input before Ink sees it (it would drop them).
    const stdin = new MouseFilteringStdin(process.stdin);
    await runTuiOn(engine, {
      render: { ...TERMINAL_RENDER_OPTIONS, stdin: stdin as unknown as NodeJS.ReadStream },
      quit: signalled,
      app: {
        early: opts.early,
        settings,
        settingsWarnings: warnings,
        saveSettings: home === null ? undefined : (s) => saveSettings(home, s),
        noColor: noColorEnv(),
        mouse: stdin,
        terminal: (seq) => {
          process.stdout.write(seq);
        },
      },
    });
  } finally {
    for (const s of signals) {
      try {
        Deno.removeSignalListener(s, onSignal);
      } catch {
        // See above.
      }
    }
    // The stream error listeners stay: a write still queued (the cursor restore) may fail after we return,
    // and must not turn into an uncaught error while the caller is cleaning up.
  }
}
