import type { Command } from "commander";
import { CliError } from "../cli_error.ts";

/** `securechat enroll`: make a key pair on this device and get a certificate from the phonebook's CA. */
export function registerEnrollCommand(program: Command): void {
  program.command("enroll").description("make a key pair and get a certificate from the phonebook").action(
    () => {
      throw new CliError("not implemented yet (issue 3)");
    },
  );
}
