/**
 * The terminal UI of `securechat chat` (issue 5). Contract used by client/cli.ts:
 * - `runFirstRun(home)`: interactive enrollment when the home folder has no identity yet.
 * - `runTui(engine, opts)`: full-screen UI on top of the chat engine; resolves when the user quits.
 */
import type { ChatEngineApi } from "../engine_types.ts";
import { CliError } from "../../cli_error.ts";

export interface TuiOptions {
  home: string;
}

export function runFirstRun(_home: string): Promise<void> {
  return Promise.reject(new CliError("first-run enrollment is not implemented yet (issue 5)"));
}

export function runTui(_engine: ChatEngineApi, _opts: TuiOptions): Promise<void> {
  return Promise.reject(new CliError("the terminal UI is not implemented yet (issue 5); use --headless"));
}
