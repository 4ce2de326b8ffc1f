/**
 * `securechat time ...` as a user runs it: keygen (0600, never overwrites), serve (prints its key and answers
 * queries), query (verified / unverified / uncertain with exit codes, JSON, malfeasance report) and
 * verify-report (exit 0 consistent, 3 proven lie, 1 invalid report, each with a one-line reason).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { buildReport, parseServerSpec, queryChain, verifyReply } from "../clock/mod.ts";
import { unpaddedRequest } from "./helpers/roughtime.ts";
import { CHILD_ENV, runCli, securechatArgs } from "./helpers/cli.ts";
import { hex, readVectorJson, startLocalServers, toB64 } from "./helpers/roughtime.ts";

const HOUR = 3600_000;

function spec(s: { host: string; port: number; publicKey: Uint8Array; version?: string }): string {
  return `${s.host}:${s.port}:${toB64(s.publicKey)}${s.version ? `:${s.version}` : ""}`;
}

Deno.test("time keygen: writes a 0600 key file, prints the public key, refuses to overwrite", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = `${dir}/lt.key`;
    const r = await runCli(["time", "keygen", "--out", out]);
    assert.equal(r.code, 0, r.stderr);
    const m = /^public key: ([A-Za-z0-9+/]{43}=)$/m.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.equal((await Deno.stat(out)).mode! & 0o777, 0o600);
    const text = await Deno.readTextFile(out);
    assert.ok(!r.stdout.includes(JSON.parse(text).seed), "the secret seed is never printed");
    const again = await runCli(["time", "keygen", "--out", out]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists/);
    assert.equal(await Deno.readTextFile(out), text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("time serve + time query: the standalone server answers every version; key file created 0600", async () => {
  const dir = await Deno.makeTempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: securechatArgs(
      "time",
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--key",
      `${dir}/server.key`,
    ),
    env: CHILD_ENV,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/server spec: (\S+)/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`serve exited early: ${text}`);
      text += value;
    }
    reader.releaseLock();
    const specText = /server spec: (\S+)/.exec(text)![1];
    assert.match(text, /public key: [A-Za-z0-9+/]{43}=/);
    assert.equal((await Deno.stat(`${dir}/server.key`)).mode! & 0o777, 0o600);
    const q = await runCli([
      "time",
      "query",
      "--server",
      specText,
      "--server",
      `${specText}:draft`,
      "--server",
      `${specText}:google`,
      "--json",
    ]);
    assert.equal(q.code, 0, q.stderr);
    const json = JSON.parse(q.stdout);
    assert.equal(json.state, "verified");
    assert.deepEqual(json.servers.map((s: { version: string }) => s.version), ["rfc", "draft", "google"]);
    assert.ok(Math.abs(json.time.nowMs - Date.now()) < 10_000);
    const human = await runCli(["time", "query", "--server", specText]);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /^verified time: \d{4}-\d\d-\d\dT[\d:.]+Z ± [\d.]+ s \(single source/);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

/** `securechat time serve --listen 127.0.0.1:0 ARGS...` as a child; resolves once it printed its spec. */
async function serve(
  ...args: string[]
): Promise<{ specText: string; banner: string; stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: securechatArgs("time", "serve", "--listen", "127.0.0.1:0", ...args),
    env: CHILD_ENV,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    child.kill("SIGTERM");
    await child.status;
    await child.stdout.cancel().catch(() => {});
  };
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/server spec: (\S+)/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`serve exited early: ${text}`);
      text += value;
    }
    reader.releaseLock();
    return { specText: /server spec: (\S+)/.exec(text)![1], banner: text, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Bytes of the first complete "ROUGHTIM" packet at the front of `b`, or 0 while it is incomplete. */
function packetLength(b: Uint8Array): number {
  if (b.length < 12) return 0;
  const n = 12 + new DataView(b.buffer, b.byteOffset + 8, 4).getUint32(0, true);
  return b.length >= n ? n : 0;
}

/** Writes `data` on a fresh TCP connection and resolves with the first reply packet (or rejects). */
function tcpExchange(port: number, data: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let got: Uint8Array = new Uint8Array(0);
    sock.on("connect", () => sock.write(data));
    sock.on("data", (c: Uint8Array) => {
      const next = new Uint8Array(got.length + c.length);
      next.set(got);
      next.set(c, got.length);
      got = next;
      const n = packetLength(got);
      if (n) {
        sock.destroy();
        resolve(got.subarray(0, n));
      }
    });
    sock.on("error", (e: Error) => reject(e));
    sock.on("close", () => reject(new Error(`closed after ${got.length} bytes`)));
  });
}

Deno.test("time serve --tcp: listens on TCP too; our client queries it over TCP; unpadded TCP requests are answered", async () => {
  const s = await serve("--tcp");
  try {
    assert.match(s.banner, /listening on udp\+tcp 127\.0\.0\.1:\d+/);
    const spec = parseServerSpec(s.specText);
    const q = await runCli(["time", "query", "--server", `${s.specText}:tcp`, "--json"]);
    assert.equal(q.code, 0, q.stderr);
    const json = JSON.parse(q.stdout);
    assert.equal(json.state, "verified");
    assert.equal(json.servers[0].version, "rfc");
    // A client that sends no padding over TCP (RFC 10049 section 5.1 asks for 1,024 bytes on UDP only).
    const small = unpaddedRequest(spec.publicKey);
    assert.equal(small.packet.length, 116);
    const reply = await tcpExchange(spec.port, small.packet);
    assert.ok(reply.length > small.packet.length, "a TCP reply may be larger than its unpadded request");
    const v = verifyReply(small.packet, reply, spec.publicKey, { transport: "tcp" });
    assert.equal(v.version, "rfc");
  } finally {
    await s.stop();
  }
});

Deno.test("time serve without --tcp: nothing listens on TCP", async () => {
  const s = await serve();
  try {
    assert.match(s.banner, /listening on udp 127\.0\.0\.1:\d+/);
    const port = parseServerSpec(s.specText).port;
    await assert.rejects(
      tcpExchange(port, new Uint8Array(16)),
      (e: unknown) => (e as { code?: string }).code === "ECONNREFUSED",
    );
  } finally {
    await s.stop();
  }
});

Deno.test("time query: a liar among three honest servers is outvoted; its report makes verify-report exit 3", async () => {
  const local = await startLocalServers([{}, { version: "draft" }, { version: "google" }, {
    now: () => Date.now() - HOUR,
  }]);
  const dir = await Deno.makeTempDir();
  try {
    const args = local.specs.flatMap((s) => ["--server", spec(s)]);
    const r = await runCli(["time", "query", ...args, "--json", "--report", `${dir}/report.json`]);
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout);
    assert.equal(json.state, "verified");
    assert.equal(json.agreeing, 3);
    assert.deepEqual(json.servers.map((s: { agrees: boolean }) => s.agrees), [true, true, true, false]);
    const liar = `127.0.0.1:${local.specs[3].port}`;
    assert.deepEqual(json.disagreeing, [liar]);
    assert.ok(json.report && json.report.responses.length >= 2);
    assert.match(
      r.stderr,
      /malfeasance report written to .*report\.json; check it with: securechat time verify-report/,
    );
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/report.json`)), json.report);
    assert.equal((await Deno.stat(`${dir}/report.json`)).mode! & 0o777, 0o644 & ~Deno.umask());
    const v = await runCli(["time", "verify-report", `${dir}/report.json`]);
    assert.equal(v.code, 3, v.stderr);
    assert.equal(v.stderr.trim().split("\n").length, 1);
    assert.match(v.stderr, /malfeasance: response \d+ \(key .*\) claims a time .* after response \d+/);
    const human = await runCli(["time", "query", ...args]);
    assert.equal(human.code, 0);
    assert.ok(human.stdout.includes(`LIES ${liar} (${liar})`), human.stdout);
    assert.match(human.stdout, /disagrees with the majority/);
    assert.ok(human.stdout.includes(`\ndisagreeing: ${liar}\n`), human.stdout);
    assert.equal(human.stdout.match(/^ {2}LIES /gm)?.length, 1, "only the liar is accused");
  } finally {
    await local.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("time verify-report: exit 0 for a consistent chain, 1 for an invalid report", async () => {
  const local = await startLocalServers([{}, { version: "google" }]);
  const dir = await Deno.makeTempDir();
  try {
    const report = buildReport(await queryChain(local.specs, { rounds: 2, timeoutMs: 3000 }));
    await Deno.writeTextFile(`${dir}/ok.json`, JSON.stringify(report));
    const ok = await runCli(["time", "verify-report", `${dir}/ok.json`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^ok: all 4 responses verify and the chain is consistent$/m);
    const tampered = structuredClone(report);
    tampered.responses[1].response = tampered.responses[0].response;
    await Deno.writeTextFile(`${dir}/bad.json`, JSON.stringify(tampered));
    await Deno.writeTextFile(`${dir}/garbage.json`, "{not json");
    for (const f of ["bad.json", "garbage.json", "missing.json"]) {
      const r = await runCli(["time", "verify-report", `${dir}/${f}`]);
      assert.equal(r.code, 1, f);
      assert.match(r.stderr.trim(), /^securechat: invalid report: .+$/);
      assert.equal(r.stderr.trim().split("\n").length, 1);
    }
  } finally {
    await local.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "time verify-report: the draft-19 appendix B chain proves malfeasance (exit 3)",
  async fn() {
    const d = readVectorJson("draft19_appendixB_malfeasance_chain.json") as {
      responses: { publicKey: string; rand: string | null; request_hex: string; response_hex: string }[];
    };
    const dir = await Deno.makeTempDir();
    try {
      const report = {
        responses: d.responses.map((e) => ({
          ...(e.rand ? { rand: e.rand } : {}),
          publicKey: e.publicKey,
          request: toB64(hex(e.request_hex)),
          response: toB64(hex(e.response_hex)),
        })),
      };
      await Deno.writeTextFile(`${dir}/d19.json`, JSON.stringify(report));
      const r = await runCli(["time", "verify-report", `${dir}/d19.json`]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /claims a time 86394\.000 s after response 1/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("time query: unreachable servers exit 2 (unverified) within the timeout; disagreement exits 2 (uncertain)", async () => {
  const local = await startLocalServers([{}, { now: () => Date.now() + HOUR }]);
  try {
    const dead = `127.0.0.1:9:${toB64(local.specs[0].publicKey)}`;
    const r = await runCli(["time", "query", "--server", dead, "--timeout", "300", "--json"]);
    assert.equal(r.code, 2);
    assert.equal(JSON.parse(r.stdout).state, "unverified");
    assert.equal(JSON.parse(r.stdout).servers[0].error.code, "TIMEOUT");
    const two = await runCli(["time", "query", ...local.specs.flatMap((s) => ["--server", spec(s)])]);
    assert.equal(two.code, 2);
    assert.match(two.stdout, /time UNCERTAIN/);
    assert.match(two.stderr, /servers disagree/);
    const bad = await runCli(["time", "query", "--server", "nohost"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /bad server "nohost"/);
  } finally {
    await local.close();
  }
});

Deno.test("time query --report: two servers that disagree are named, no one is accused, the proof is written", async () => {
  const local = await startLocalServers([{}, { now: () => Date.now() + HOUR }]);
  const dir = await Deno.makeTempDir();
  try {
    const args = local.specs.flatMap((s) => ["--server", spec(s)]);
    const r = await runCli(["time", "query", ...args, "--report", `${dir}/r.json`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stdout, /time UNCERTAIN/);
    assert.doesNotMatch(r.stdout, /LIES/, "with no majority nobody can tell which one lies");
    const names = local.specs.map((s) => `127.0.0.1:${s.port}`);
    const diff = /^ {2}DIFF (\S+) .*\(outside the largest group; no majority\)$/m.exec(r.stdout);
    assert.ok(diff && names.includes(diff[1]), r.stdout);
    assert.ok(r.stdout.includes(`\ndisagreeing: ${diff[1]}\n`), r.stdout);
    assert.match(r.stdout, /malfeasance: a chained report proves a server lied/);
    assert.match(r.stderr, /malfeasance report written to/);
    const v = await runCli(["time", "verify-report", `${dir}/r.json`]);
    assert.equal(v.code, 3, v.stderr);
  } finally {
    await local.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("time query --report: when the servers agree nothing is written and stderr says so", async () => {
  const local = await startLocalServers([{}, { version: "draft" }]);
  const dir = await Deno.makeTempDir();
  try {
    const args = local.specs.flatMap((s) => ["--server", spec(s)]);
    const r = await runCli(["time", "query", ...args, "--json", "--report", `${dir}/r.json`]);
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout);
    assert.deepEqual(json.disagreeing, []);
    assert.equal(json.report, null);
    assert.match(r.stderr, /no report written to .*r\.json: the servers agree/);
    await assert.rejects(Deno.stat(`${dir}/r.json`), Deno.errors.NotFound);
    const bad = await runCli(["time", "query", ...args, "--report", `${dir}/no/such/dir/r.json`]);
    assert.equal(bad.code, 0, "no report to write, so no error");
  } finally {
    await local.close();
    await Deno.remove(dir, { recursive: true });
  }
});
