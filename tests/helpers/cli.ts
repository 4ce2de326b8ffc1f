/** Runs `main.ts` in a child Deno process, the way a user would, and captures its output. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** The permissions `deno task start` gives the program: tests run it with the same. */
export const PROGRAM_PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
];

/** The environment a child gets: plain output, no Rust backtraces appended to errors. */
/** SECURECHAT_NO_PORT_MAPPING: a chat run by a test outside the namespaces it made must not ask the machine's
 * real router for a port mapping. */
export const CHILD_ENV: Record<string, string> = {
  NO_COLOR: "1",
  RUST_BACKTRACE: "0",
  SECURECHAT_NO_PORT_MAPPING: "1",
};

/** Arguments for `deno` that run `securechat ARGS...` the way a user does. */
export function securechatArgs(...args: string[]): string[] {
  return ["run", ...PROGRAM_PERMISSIONS, MAIN, ...args];
}

export async function runCli(
  args: string[],
  opts: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<CliResult> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: securechatArgs(...args),
    env: { ...CHILD_ENV, ...opts.env },
    cwd: opts.cwd,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const { code, stdout, stderr } = await child.output();
  return { code, stdout: new TextDecoder().decode(stdout), stderr: new TextDecoder().decode(stderr) };
}

/** Like runCli, but throws unless the exit code is `expected` (0 by default). */
export async function assertCliRun(args: string[], expected = 0): Promise<CliResult> {
  const r = await runCli(args);
  if (r.code !== expected) {
    throw new Error(`securechat ${args.join(" ")} exited ${r.code}, expected ${expected}\n${r.stderr}`);
  }
  return r;
}

/** Reads a child's stdout one line at a time (the question-and-answer children of the hostile tests and the
 * chat bench): `next` throws `${who} exited` when the stream ends first; `close` cancels the stream. */
export function lineReader(
  stdout: ReadableStream<Uint8Array>,
  who: string,
): { next(): Promise<string>; close(): Promise<void> } {
  const reader = stdout.getReader();
  const decoder = new TextDecoder();
  let out = "";
  return {
    async next() {
      while (!out.includes("\n")) {
        const r = await reader.read();
        if (r.done) throw new Error(`${who} exited`);
        out += decoder.decode(r.value, { stream: true });
      }
      const i = out.indexOf("\n");
      const l = out.slice(0, i);
      out = out.slice(i + 1);
      return l;
    },
    close: () => reader.cancel().catch(() => {}),
  };
}
