import type { Command } from "commander";
import { CliError } from "../cli_error.ts";

/** `securechat chat`: the terminal UI, or JSON lines with --headless. */
export function registerChatCommand(program: Command): void {
  program.command("chat").description("chat with a contact over mutually authenticated TLS 1.3").action(
    () => {
      throw new CliError("not implemented yet (issue 4)");
    },
  );
}
