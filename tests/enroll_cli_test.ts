/**
 * The commands as a user runs them: `securechat serve` in a child process, `enroll` against it (with the
 * fingerprint, trust on first use, every refusal with a clear message), `serve invite`, `serve revoke`,
 * `enroll --renew` and `--revoke`, and a restart of the server that keeps its CA.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCli } from "./helpers/cli.ts";
import { startServeProcess } from "./helpers/serve_process.ts";
import { fingerprintOf } from "../pki/mod.ts";

/** `securechat serve` with its phonebook and Roughtime ports picked by the system. */
async function serve(
  args: string[],
): Promise<{ url: string; fingerprint: string; output: string; stop(): Promise<number> }> {
  const node = await startServeProcess(["--roughtime-listen", "127.0.0.1:0", ...args], { timeoutMs: 30_000 });
  return { url: node.url, fingerprint: node.caFingerprint, output: node.output(), stop: () => node.stop() };
}

Deno.test("securechat serve + enroll: happy paths, every refusal, admin commands, restart", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-cli-" });
  const data = join(tmp, "data");
  let srv = await serve(["--data", data]);
  try {
    assert.match(srv.output, /Created a new CA/);
    assert.match(srv.output, /Roughtime server on udp 127\.0\.0\.1:\d+, key [A-Za-z0-9+/]{43}=/);
    assert.equal(srv.fingerprint, fingerprintOf(await Deno.readTextFile(join(data, "ca.pem"))));

    const ok = await runCli([
      "enroll",
      "--server",
      srv.url,
      "--ca-fingerprint",
      srv.fingerprint,
      "--name",
      "alice",
      "--home",
      join(tmp, "alice"),
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /Enrolled as alice/);

    const refuse = async (args: string[], pattern: RegExp, stdin?: string) => {
      const r = await runCli(["enroll", ...args], { stdin });
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stdout}`);
      assert.match(r.stderr, pattern);
      return r;
    };
    const base = (
      name: string,
      home: string,
    ) => ["--server", srv.url, "--name", name, "--home", join(tmp, home)];
    // Name taken.
    await refuse(
      [...base("alice", "alice2"), "--ca-fingerprint", srv.fingerprint],
      /the name "alice" is taken on this phonebook: pick another name/,
    );
    // Wrong fingerprint: nothing is written.
    const wrong = srv.fingerprint.slice(0, 63) + (srv.fingerprint.endsWith("0") ? "1" : "0");
    await refuse(
      [...base("bob", "bob"), "--ca-fingerprint", wrong],
      /CA fingerprint is ([0-9a-f]{4} ){15}[0-9a-f]{4}, not the expected/,
    );
    await assert.rejects(Deno.stat(join(tmp, "bob", "key.pem")), Deno.errors.NotFound);
    await refuse([...base("bob", "bob"), "--ca-fingerprint", "xyz"], /64 hex characters/);
    // Trust on first use: the prompt shows the fingerprint; "n" refuses, "y" accepts.
    const no = await refuse(base("bob", "bob"), /not confirmed/, "n\n");
    assert.ok(no.stderr.includes(srv.fingerprint.match(/.{4}/g)!.join(" ")), "shown in groups of four");
    const yes = await runCli(["enroll", ...base("bob", "bob")], { stdin: "y\n" });
    assert.equal(yes.code, 0, yes.stderr);
    // Bad names and unreachable servers.
    await refuse([...base("Bob", "b2"), "--ca-fingerprint", srv.fingerprint], /bad name "Bob"/);
    await refuse(
      [
        "--server",
        "https://127.0.0.1:9",
        "--name",
        "carol",
        "--home",
        join(tmp, "c"),
        "--ca-fingerprint",
        srv.fingerprint,
      ],
      /cannot reach the directory/,
    );
    await refuse([...base("carol", "c"), "--ca-fingerprint", srv.fingerprint, "--renew"], /not enrolled/);
    // Renewal and revocation.
    const renew = await runCli(["enroll", "--renew", "--home", join(tmp, "alice")]);
    assert.equal(renew.code, 0, renew.stderr);
    assert.match(renew.stdout, /Renewed alice/);
    const revoke = await runCli(["enroll", "--revoke", "--yes", "--home", join(tmp, "bob")]);
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, /Revoked bob's certificate [0-9a-f]+/);
    await refuse(["--revoke", "--yes", "--home", join(tmp, "bob")], /current client certificate is required/);

    // Admin revocation, then free the name.
    const adm = await runCli(["serve", "revoke", "alice", "--data", data, "--release"]);
    assert.equal(adm.code, 0, adm.stderr);
    assert.match(adm.stdout, /revoked alice's certificate [0-9a-f]+; the name is free again/);
    const missing = await runCli(["serve", "revoke", "nobody", "--data", data]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no user named "nobody"/);
    const again = await runCli(["enroll", ...base("alice", "alice3"), "--ca-fingerprint", srv.fingerprint]);
    assert.equal(again.code, 0, again.stderr);

    // Restart in invite-only mode: same CA; tokens work once.
    assert.equal(await srv.stop(), 0, "SIGTERM is a clean exit");
    srv = await serve(["--data", data, "--invite-only"]);
    assert.doesNotMatch(srv.output, /Created a new CA/);
    assert.equal(srv.fingerprint, fingerprintOf(await Deno.readTextFile(join(data, "ca.pem"))));
    await refuse(
      [...base("dave", "dave"), "--ca-fingerprint", srv.fingerprint],
      /this phonebook is invite-only; ask its operator for a token .*--token TOKEN/,
    );
    const inv = await runCli(["serve", "invite", "--data", data]);
    assert.equal(inv.code, 0, inv.stderr);
    const token = inv.stdout.trim();
    assert.match(token, /^[A-Za-z0-9_-]{32}$/);
    const dave = await runCli([
      "enroll",
      ...base("dave", "dave"),
      "--ca-fingerprint",
      srv.fingerprint,
      "--token",
      token,
    ]);
    assert.equal(dave.code, 0, dave.stderr);
    await refuse(
      [...base("erin", "erin"), "--ca-fingerprint", srv.fingerprint, "--token", token],
      /invitation refused: .*ask the phonebook's operator for a new token/,
    );
  } finally {
    await srv.stop();
    await Deno.remove(tmp, { recursive: true });
  }
});
