import type { Command } from "commander";
import { CliError } from "../cli_error.ts";

/** `securechat serve ...`: the phonebook, Certificate Authority and Roughtime server. */
export function registerServeCommands(program: Command): void {
  program.command("serve").description("run the phonebook (directory + CA + Roughtime server)").action(() => {
    throw new CliError("not implemented yet (issue 3)");
  });
}
