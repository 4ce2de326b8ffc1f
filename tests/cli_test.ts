import { assertCliRun } from "./helpers/cli.ts";

Deno.test("securechat --help lists every job", async () => {
  const out = await assertCliRun(["--help"]);
  for (const cmd of ["serve", "enroll", "chat", "time"]) {
    if (!out.stdout.includes(cmd)) throw new Error(`--help does not mention ${cmd}: ${out.stdout}`);
  }
});
