/**
 * Issue 12, defect 8: errors that say what to do. `serve --hostname localhost` still serves the address its
 * banner prints; a busy Roughtime port is refused before any CA file is written, naming the flag to use.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { join } from "node:path";
import { CHILD_ENV, runCli, securechatArgs } from "./helpers/cli.ts";

Deno.test("serve --hostname localhost: the banner's own address is in the certificate (enroll against it works)", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-msg-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: securechatArgs(
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--roughtime-listen",
      "127.0.0.1:0",
      "--hostname",
      "localhost",
      "--data",
      join(tmp, "data"),
    ),
    env: CHILD_ENV,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let out = "";
    while (!out.includes("Users enroll with")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    const url = /listening on (https:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
    const fp = /CA fingerprint \(SHA-256\): ([0-9a-f ]{79})\n/.exec(out)?.[1];
    assert.ok(url && fp, out);
    assert.match(out, new RegExp(`--ca-fingerprint "${fp}"`), "the same format in the command to copy");
    const r = await runCli([
      "enroll",
      "--server",
      url,
      "--ca-fingerprint",
      fp,
      "--name",
      "alice",
      "--home",
      join(tmp, "alice"),
    ]);
    assert.equal(r.code, 0, r.stderr);
  } finally {
    child.kill("SIGTERM");
    await reader.cancel().catch(() => {});
    await child.status;
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("serve: a busy Roughtime port is refused with the flag to use, and nothing is written", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-msg-" });
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((r) => socket.bind(0, "127.0.0.1", () => r()));
  const port = socket.address().port;
  try {
    const data = join(tmp, "data");
    const r = await runCli([
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--roughtime-listen",
      `127.0.0.1:${port}`,
      "--data",
      data,
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `Roughtime port ${port} \\(UDP\\) on 127\\.0\\.0\\.1 is in use: .*--roughtime-listen HOST:PORT`,
      ),
    );
    const written: string[] = [];
    try {
      for await (const e of Deno.readDir(data)) written.push(e.name);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    assert.deepEqual(written, [], "no CA file written");
  } finally {
    await new Promise<void>((r) => socket.close(() => r()));
    await Deno.remove(tmp, { recursive: true });
  }
});
