import type { Command } from "commander";
import { CliError } from "../cli_error.ts";

/** `securechat time ...`: Roughtime query, standalone server, key generation, report verification. */
export function registerTimeCommands(program: Command): void {
  const time = program.command("time").description(
    "Roughtime: query verified time, run a server, check reports",
  );
  time.command("query").description("query Roughtime servers and print the verified time").action(() => {
    throw new CliError("not implemented yet (issue 2)");
  });
}
