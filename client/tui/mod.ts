/**
 * The terminal UI of `securechat chat` (issue 5). Contract used by client/cli.ts:
 * - `runFirstRun(home)`: interactive enrollment when the home folder has no identity yet.
 * - `runTui(engine, opts)`: full-screen UI on top of the chat engine; resolves when the user quits, after the
 *   engine is closed (connections ended, our address withdrawn from the phonebook).
 */
import process from "node:process";
import { render } from "ink";
import { createElement } from "react";
import type { ChatEngineApi } from "../engine_types.ts";
import { CliError } from "../../cli_error.ts";
import { App } from "./app.tsx";
import { firstRun } from "./first_run.ts";

export interface TuiOptions {
  home: string;
}

/** How long quitting waits for the engine to close before giving up on a clean goodbye. */
export const CLOSE_TIMEOUT_MS = 5000;

export async function runFirstRun(home: string): Promise<void> {
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
async function closeEngine(engine: ChatEngineApi): Promise<Error | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      engine.close(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`engine did not close within ${CLOSE_TIMEOUT_MS} ms`)),
          CLOSE_TIMEOUT_MS,
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

export async function runTui(engine: ChatEngineApi, _opts: TuiOptions): Promise<void> {
  if (!isTerminal()) {
    throw new CliError("the chat screen needs a terminal (use --headless for JSON lines)");
  }
  let requestQuit = () => {};
  const quitRequested = new Promise<void>((resolve) => (requestQuit = resolve));
  const signals: Deno.Signal[] = ["SIGTERM", "SIGHUP"];
  const onSignal = () => requestQuit();
  for (const s of signals) {
    try {
      Deno.addSignalListener(s, onSignal);
    } catch {
      // Not every platform has every signal; Ctrl+C and /quit still work.
    }
  }
  // When the terminal goes away (window closed: SIGHUP), the last frames hit a closed pipe: that is not an
  // error worth a stack trace over the user's shell.
  const onStdoutError = (e: unknown) => {
    if ((e as { code?: string }).code !== "EPIPE") throw e;
  };
  process.stdout.on("error", onStdoutError);
  const app = render(createElement(App, { engine, onQuit: () => requestQuit() }), {
    alternateScreen: true,
    exitOnCtrlC: false,
    patchConsole: true,
  });
  let uiError: unknown = null;
  try {
    await Promise.race([quitRequested, app.waitUntilExit()]);
  } catch (e) {
    uiError = e;
  }
  // The "closing" notice is on screen while the engine says goodbye to its peers and the phonebook.
  const closeError = await closeEngine(engine);
  app.unmount();
  await app.waitUntilExit().catch(() => {});
  for (const s of signals) {
    try {
      Deno.removeSignalListener(s, onSignal);
    } catch {
      // See above.
    }
  }
  process.stdout.off("error", onStdoutError);
  if (uiError) throw uiError;
  if (closeError) throw new CliError(`closing: ${closeError.message}`);
}
