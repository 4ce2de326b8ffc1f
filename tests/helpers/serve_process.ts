/** `securechat serve` as a real child process (a phonebook node), started the way an operator does, with its
 * banner parsed for the addresses it bound. Used by the multi-node tests and the scale benchmark. */
import { CHILD_ENV, securechatArgs } from "./cli.ts";
import { faketimeEnv, removeFaketimeLeftovers } from "./faketime.ts";

export interface ServeNode {
  pid: number;
  /** https://127.0.0.1:PORT */
  url: string;
  port: number;
  caCertPem: string;
  caFingerprint: string;
  roughtime: { port: number; publicKey: string } | null;
  /** Everything the process printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM, then waits for the exit; returns the exit code. */
  stop(): Promise<number>;
}

export class ServeStartError extends Error {
  constructor(readonly code: number | null, readonly output: string) {
    super(`securechat serve did not start (exit ${code}):\n${output}`);
    this.name = "ServeStartError";
  }
}

/** Starts `securechat serve ARGS` (listening on 127.0.0.1:0 unless ARGS say otherwise) and resolves once
 * its banner is complete; rejects with ServeStartError when it exits first or within `timeoutMs`.
 * `caCertFile` defaults to `ca.pem` in the `--data` folder. With `faketime` (a libfaketime spec such as
 * "+31d") the process runs under libfaketime with its wall clock moved and its monotonic clock left alone. */
export async function startServeProcess(
  args: string[],
  opts: {
    env?: Record<string, string>;
    caCertFile?: string;
    timeoutMs?: number;
    denoArgs?: string[];
    faketime?: string;
  } = {},
): Promise<ServeNode> {
  const hasListen = args.includes("--listen");
  const data = args.indexOf("--data");
  const caCertFile = opts.caCertFile ?? (data >= 0 ? `${args[data + 1]}/ca.pem` : undefined);
  if (caCertFile === undefined) {
    throw new Error("startServeProcess: no --data folder, so caCertFile is needed");
  }
  const argv = [
    ...(opts.denoArgs ?? []),
    ...securechatArgs("serve", ...(hasListen ? [] : ["--listen", "127.0.0.1:0"]), ...args),
  ];
  const env: Record<string, string> = { ...CHILD_ENV, ...opts.env };
  if (opts.faketime) Object.assign(env, faketimeEnv(opts.faketime));
  const child = new Deno.Command(Deno.execPath(), {
    args: argv,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const kill = (signal: Deno.Signal) => {
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  let out = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of s) out += dec.decode(chunk, { stream: true });
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited: number | null = null;
  const status = child.status.then((s) => {
    if (opts.faketime) removeFaketimeLeftovers(child.pid);
    return exited = s.code;
  });
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  while (!/Users enroll with:.*\n/.test(out)) {
    if (exited !== null || Date.now() > deadline) {
      if (exited === null) await kill("SIGKILL");
      await status;
      await pumps;
      throw new ServeStartError(exited, out);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const port = Number(/listening on https:\/\/[^\s]*:(\d+)/.exec(out)![1]);
  const fp = /CA fingerprint \(SHA-256\): ([0-9a-f ]{79})/.exec(out)![1].replaceAll(" ", "");
  const rt = /Roughtime server on udp \S+:(\d+), key (\S+)/.exec(out);
  return {
    pid: child.pid,
    url: `https://127.0.0.1:${port}`,
    port,
    caCertPem: await Deno.readTextFile(caCertFile),
    caFingerprint: fp,
    roughtime: rt ? { port: Number(rt[1]), publicKey: rt[2] } : null,
    output: () => out,
    stop: async () => {
      if (exited === null) await kill("SIGTERM");
      await status;
      await pumps;
      return exited!;
    },
  };
}
