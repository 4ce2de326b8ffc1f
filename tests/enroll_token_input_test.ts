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
import { until } from "./helpers/chat.ts";
import { createInviteToken } from "../server/mod.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** Every argv seen in /proc/PID/cmdline while the process ran. */
  argvSeen: string[];
  readErrors: string[];
}

/** Runs `securechat enroll ARGS`. The program blocks reading standard input (the token for `--token -`, the
 * answer to the CA prompt) until its argv has been read from /proc at least once; then `input` is written. */
async function enrollRun(args: string[], input: string): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: securechatArgs("enroll", ...args),
    env: CHILD_ENV,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const argvSeen: string[] = [];
  const readErrors: string[] = [];
  let running = true;
  const watch = (async () => {
    while (running) {
      try {
        // Through `cat`, as any other user's process would read it (Deno itself wants --allow-all for /proc).
        const out = await new Deno.Command("cat", { args: [`/proc/${child.pid}/cmdline`], stderr: "null" })
          .output();
        const argv = new TextDecoder().decode(out.stdout).replaceAll("\0", " ");
        if (argv !== "") argvSeen.push(argv);
      } catch (e) {
        readErrors.push(String(e));
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const output = child.output();
  let exited = false;
  output.then(() => exited = true, () => exited = true);
  await until(() => argvSeen.length > 0 || exited, 10_000, "argv read").catch(() => {});
  const w = child.stdin.getWriter();
  // A program that quit before reading (a refused flag) closes the pipe: its exit code tells the rest.
  await w.write(new TextEncoder().encode(input)).catch(() => {});
  await w.close().catch(() => {});
  const out = await output;
  running = false;
  await watch;
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    argvSeen,
    readErrors,
  };
}

/** `exitsEarly`: the program quits before it waits for input, so its argv may not have been caught. */
function assertNeverShown(r: Run, token: string, exitsEarly = false): void {
  assert.ok(
    exitsEarly || r.argvSeen.length > 0,
    `the process's argv was read while it ran (${r.readErrors.slice(0, 3)})`,
  );
  for (const argv of r.argvSeen) assert.ok(!argv.includes(token), `token in argv: ${argv}`);
  assert.ok(!r.stdout.includes(token) && !r.stderr.includes(token), "token in the program's output");
}

Deno.test({
  name: "enroll: --token - and --token-file keep the invitation token out of argv and out of every output",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const t = await startTestDirectory({ inviteOnly: true });
    try {
      // No --ca-fingerprint: the program then asks to trust the CA and waits for the answer on standard input,
      // which keeps it running until its argv has been looked at.
      const common = (name: string) => [
        "--server",
        t.dir.url,
        "--name",
        name,
        "--home",
        join(t.tmp, name),
      ];

      // Standard input.
      const t1 = await createInviteToken(t.data);
      const r1 = await enrollRun([...common("dave"), "--token", "-"], `${t1}\ny\n`);
      assert.equal(r1.code, 0, r1.stderr);
      assert.match(r1.stdout, /Enrolled as dave/);
      assertNeverShown(r1, t1);

      // A file only its owner can read.
      const t2 = await createInviteToken(t.data);
      const file = join(t.tmp, "token.txt");
      await Deno.writeTextFile(file, `${t2}\n`, { mode: 0o600 });
      await Deno.chmod(file, 0o600);
      const r2 = await enrollRun([...common("erin"), "--token-file", file], "y\n");
      assert.equal(r2.code, 0, r2.stderr);
      assertNeverShown(r2, t2);

      // Used tokens are refused without being repeated.
      const r3 = await enrollRun([...common("frank"), "--token", "-"], `${t1}\ny\n`);
      assert.equal(r3.code, 1);
      assert.match(r3.stderr, /invitation refused/);
      assertNeverShown(r3, t1);

      // A token file others can read is refused before anything is sent; so are both forms at once.
      const t4 = await createInviteToken(t.data);
      const open = join(t.tmp, "open.txt");
      await Deno.writeTextFile(open, t4);
      await Deno.chmod(open, 0o644);
      const r4 = await enrollRun([...common("gina"), "--token-file", open], "y\n");
      assert.equal(r4.code, 1);
      assert.match(r4.stderr, /can be read by other users .*chmod 600/);
      assertNeverShown(r4, t4, true);
      const r5 = await enrollRun([...common("gina"), "--token-file", file, "--token", "-"], "x\ny\n");
      assert.equal(r5.code, 1);
      assert.match(r5.stderr, /not both/);
      // The refused file's token was not consumed: it still works from a private file.
      await Deno.chmod(open, 0o600);
      const r6 = await enrollRun([...common("gina"), "--token-file", open], "y\n");
      assert.equal(r6.code, 0, r6.stderr);

      // The literal form still works, with a warning that says why the others exist.
      const t7 = await createInviteToken(t.data);
      const r7 = await enrollRun([...common("hank"), "--token", t7], "y\n");
      assert.equal(r7.code, 0, r7.stderr);
      assert.match(r7.stderr, /visible to other users/);
      assert.ok(!r7.stderr.includes(t7));
    } finally {
      await t.close();
    }
  },
});
