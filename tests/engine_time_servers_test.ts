/**
 * Extra Roughtime servers (`chat --time-server`, `--public-time-servers`) cross-check the phonebook's time, while
 * the time proofs attached to expiring messages still come from the phonebook's server, the one the receiver
 * trusts: adding servers must never make a peer refuse our messages.
 */
import assert from "node:assert/strict";
import { enrollUser, startClient, startPhonebook, until } from "./helpers/chat.ts";
import { startLocalServers } from "./helpers/roughtime.ts";
import { runCli } from "./helpers/cli.ts";
import { extraTimeServers } from "../client/cli.ts";
import { PUBLIC_SERVERS } from "../clock/mod.ts";

Deno.test("extra time servers vote on the time; the receiver still accepts the sender's time proofs", async () => {
  const pb = await startPhonebook();
  const extra = await startLocalServers([{}]);
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = await startClient(aliceHome, { extraTimeServers: extra.specs });
  const bob = await startClient(bobHome);
  try {
    await until(() => alice.engine.timeStatus().answered === 2, 10_000, "alice's two time servers answered");
    const status = alice.engine.timeStatus();
    assert.equal(status.configured, 2);
    assert.equal(status.singleSource, false);
    assert.equal(bob.engine.timeStatus().configured, 1);

    const sent = await alice.engine.send("bob", "cross-checked", { ttlMs: 20_000 });
    const got = await bob.log.waitFor("message", (e) => e.message.id === sent.id, 10_000);
    assert.equal(got.message.text, "cross-checked");
    assert.ok(got.message.expiresAt !== null && got.message.expiresAt <= sent.sentAt + 20_000);
  } finally {
    await alice.stop();
    await bob.stop();
    await extra.close();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("--time-server specs are parsed, --public-time-servers appends the public list, bad specs refused", async () => {
  const key = "AW5uAoTSTDfG5NfY1bTh08GUnOqlRb+HVhbJ3ODJvsE=";
  const one = extraTimeServers([`127.0.0.1:2002:${key}:draft`], false);
  assert.equal(one.length, 1);
  assert.equal(one[0].port, 2002);
  assert.equal(one[0].version, "draft");
  assert.equal(extraTimeServers([], true).length, PUBLIC_SERVERS.length);

  const dir = await Deno.makeTempDir();
  try {
    const r = await runCli([
      "chat",
      "--headless",
      "--home",
      dir,
      "--time-server",
      "127.0.0.1:2002:not-a-key",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad --time-server "127\.0\.0\.1:2002:not-a-key"/);
    // Refused before anything was written to the home folder.
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
