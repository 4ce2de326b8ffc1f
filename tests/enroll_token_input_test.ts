/**
 * `enroll --token T` put the one-time invitation token in the process list (issue 11, finding 7). The token
 * can also come from standard input (`--token -`) or from a file only its owner can read (`--token-file F`):
 * with those forms the running process's argv (read from /proc while it runs) never holds the token, and no
 * output of the program repeats it, not even when the token is refused.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CHILD_ENV, securechatArgs } from "./helpers/cli.ts";
import { startTestDirectory } from "./helpers/directory.ts";
import { createInviteToken } from "../server/mod.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** Every argv seen in /proc/PID/cmdline while the process ran. */
  argvSeen: string[];
}

async function enrollRun(args: string[], stdin: string | null): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: securechatArgs("enroll", ...args),
    env: CHILD_ENV,
    stdin: stdin === null ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const argvSeen: string[] = [];
  let running = true;
  const watch = (async () => {
    while (running) {
      try {
        argvSeen.push(Deno.readTextFileSync(`/proc/${child.pid}/cmdline`).replaceAll("\0", " "));
      } catch {
        // gone, or /proc is not there (then the test below says so)
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  if (stdin !== null) {
    // Written only once the program runs: the token must be read from the pipe, not from anywhere else.
    await new Promise((r) => setTimeout(r, 200));
    const w = child.stdin.getWriter();
    // A program that quit before reading (a refused flag) closes the pipe: its exit code tells the rest.
    await w.write(new TextEncoder().encode(stdin)).catch(() => {});
    await w.close().catch(() => {});
  }
  const out = await child.output();
  running = false;
  await watch;
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    argvSeen,
  };
}

function assertNeverShown(r: Run, token: string): void {
  assert.ok(r.argvSeen.length > 0, "the process's argv was read while it ran");
  for (const argv of r.argvSeen) assert.ok(!argv.includes(token), `token in argv: ${argv}`);
  assert.ok(!r.stdout.includes(token) && !r.stderr.includes(token), "token in the program's output");
}

Deno.test({
  name: "enroll: --token - and --token-file keep the invitation token out of argv and out of every output",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const t = await startTestDirectory({ inviteOnly: true });
    try {
      const common = (name: string) => [
        "--server",
        t.dir.url,
        "--ca-fingerprint",
        t.dir.caFingerprint,
        "--name",
        name,
        "--home",
        join(t.tmp, name),
      ];

      // Standard input.
      const t1 = await createInviteToken(t.data);
      const r1 = await enrollRun([...common("dave"), "--token", "-"], `${t1}\n`);
      assert.equal(r1.code, 0, r1.stderr);
      assert.match(r1.stdout, /Enrolled as dave/);
      assertNeverShown(r1, t1);

      // A file only its owner can read.
      const t2 = await createInviteToken(t.data);
      const file = join(t.tmp, "token.txt");
      await Deno.writeTextFile(file, `${t2}\n`, { mode: 0o600 });
      await Deno.chmod(file, 0o600);
      const r2 = await enrollRun([...common("erin"), "--token-file", file], null);
      assert.equal(r2.code, 0, r2.stderr);
      assertNeverShown(r2, t2);

      // Used tokens are refused without being repeated.
      const r3 = await enrollRun([...common("frank"), "--token", "-"], `${t1}\n`);
      assert.equal(r3.code, 1);
      assert.match(r3.stderr, /invitation refused/);
      assertNeverShown(r3, t1);

      // A token file others can read is refused before anything is sent; so are both forms at once.
      const t4 = await createInviteToken(t.data);
      const open = join(t.tmp, "open.txt");
      await Deno.writeTextFile(open, t4);
      await Deno.chmod(open, 0o644);
      const r4 = await enrollRun([...common("gina"), "--token-file", open], null);
      assert.equal(r4.code, 1);
      assert.match(r4.stderr, /can be read by other users .*chmod 600/);
      assertNeverShown(r4, t4);
      const r5 = await enrollRun([...common("gina"), "--token-file", file, "--token", "-"], "x\n");
      assert.equal(r5.code, 1);
      assert.match(r5.stderr, /not both/);
      // The refused file's token was not consumed: it still works from a private file.
      await Deno.chmod(open, 0o600);
      const r6 = await enrollRun([...common("gina"), "--token-file", open], null);
      assert.equal(r6.code, 0, r6.stderr);

      // The literal form still works, with a warning that says why the others exist.
      const t7 = await createInviteToken(t.data);
      const r7 = await enrollRun([...common("hank"), "--token", t7], null);
      assert.equal(r7.code, 0, r7.stderr);
      assert.match(r7.stderr, /visible to other users/);
      assert.ok(!r7.stderr.includes(t7));
    } finally {
      await t.close();
    }
  },
});
