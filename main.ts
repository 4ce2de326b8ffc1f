#!/usr/bin/env -S deno run --allow-net --allow-read --allow-write --allow-env --allow-sys
/**
 * securechat: one program, three jobs (serve, enroll, chat) plus the `time` toolbox.
 * Each job registers its own subcommand from the folder that owns it, so this file stays a map.
 */
import { Command, CommanderError } from "commander";
import { registerTimeCommands } from "./clock/cli.ts";
import { registerRelayCommand, registerServeCommands } from "./server/cli.ts";
import { registerEnrollCommand } from "./client/enroll_cli.ts";
import { registerChatCommand } from "./client/cli.ts";
import { CliError } from "./cli_error.ts";

/** The program's version (also in every release asset's name on the repository host). */
export const VERSION = "0.1.0";

export function buildProgram(): Command {
  const program = new Command()
    .name("securechat")
    .description("Private messenger with mutually authenticated TLS and self-destructing messages")
    // The version line also names the runtime: a compiled binary carries its own Deno, and a bug report
    // needs to know which.
    .version(
      `securechat ${VERSION} (Deno ${Deno.version.deno}, V8 ${Deno.version.v8}, TypeScript ${Deno.version.typescript})`,
      "-V, --version",
    )
    .exitOverride()
    .showHelpAfterError(false);
  registerServeCommands(program);
  registerRelayCommand(program);
  registerEnrollCommand(program);
  registerChatCommand(program);
  registerTimeCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end through here with exit code 0.
      return err.exitCode;
    }
    if (err instanceof CliError) {
      console.error(`securechat: ${err.message}`);
      return err.exitCode;
    }
    console.error(`securechat: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
