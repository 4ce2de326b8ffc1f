/**
 * A device whose wall clock is a year off (faketime with FAKETIME_DONT_FAKE_MONOTONIC=1: a user who set the
 * system clock wrong; the monotonic clock is untouched) and whose Roughtime is verified works as if it were
 * right: `chat --headless` publishes itself (the phonebook's certificate judged on trusted time), is reached,
 * looks a contact up and writes to it, and a 4 s message dies on time with its row, key and text gone from
 * chat.db. Nothing is done for it from an unfaked process, and it never ran on a correct clock before.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { enrollUser, type Phonebook, spawnHeadless, startClient, startPhonebook } from "./helpers/chat.ts";
import { withTools } from "./helpers/tools.ts";
import { CHAT_DB_FILE } from "../client/engine.ts";

const TTL = 4000;

async function wrongClockDevice(spec: string): Promise<void> {
  const pb: Phonebook = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const bob = spawnHeadless(bobHome.dir, { faketime: spec });
  const alice = await startClient(aliceHome);
  try {
    const ready = await bob.waitEvent((e) => e.event === "ready", 60_000, "bob ready");
    assert.equal(ready.time, "verified", "the device's Roughtime must be verified");
    assert.equal(
      bob.events.some((e) =>
        e.event === "log" && /phonebook unreachable|refusing the directory/.test(String(e.text))
      ),
      false,
      `the phonebook was refused: ${JSON.stringify(bob.events)}`,
    );
    // Reached: alice finds bob's address (published by bob itself) and delivers.
    const hello = await alice.engine.send("bob", "hello");
    await bob.waitEvent((e) => e.event === "message" && e.id === hello.id, 30_000, "hello at bob");
    // Looks up and writes: bob dials alice from the phonebook's listing.
    await alice.engine.close();
    const alice2 = await startClient(aliceHome);
    try {
      await bob.cmd({ cmd: "send", to: "alice", text: "from a clock a year off", ref: "s1" });
      await alice2.log.waitFor("message", (e) => e.message.text === "from a clock a year off", 30_000);

      const secret = `self-destruct-${crypto.randomUUID()}`;
      const sentPerf = performance.now();
      const m = await alice2.engine.send("bob", secret, { ttlMs: TTL });
      const got = await bob.waitEvent(
        (e) => e.event === "message" && e.id === m.id,
        30_000,
        "message at bob",
      );
      assert.ok((got.expiresAt as number) <= m.expiresAt!, "the receiver never extends the deadline");
      assert.ok(Math.abs((got.sentAt as number) - m.sentAt) < 10_000, "send time on trusted time");
      await bob.waitEvent((e) => e.event === "expired" && e.id === m.id, TTL + 10_000, "expired at bob");
      const elapsed = performance.now() - sentPerf;
      assert.ok(elapsed <= TTL + 3000, `died ${elapsed} ms after sending (lifetime ${TTL} ms)`);
      await bob.kill();
      const path = join(bobHome.dir, CHAT_DB_FILE);
      const db = new DatabaseSync(path, { readOnly: true });
      try {
        const rows = db.prepare("SELECT count(*) AS n FROM messages WHERE id = ?").get(m.id) as { n: number };
        const keys = db.prepare("SELECT count(*) AS n FROM message_keys WHERE id = ?").get(m.id) as {
          n: number;
        };
        assert.deepEqual([Number(rows.n), Number(keys.n)], [0, 0], "row and key deleted");
      } finally {
        db.close();
      }
      for (const f of [path, `${path}-wal`]) {
        let bytes: Uint8Array;
        try {
          bytes = await Deno.readFile(f);
        } catch {
          continue;
        }
        assert.equal(new TextDecoder("latin1").decode(bytes).includes(secret), false, `text found in ${f}`);
      }
    } finally {
      await alice2.stop();
    }
  } finally {
    await bob.kill();
    await alice.stop().catch(() => {});
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
}

Deno.test(withTools("faketime", {
  name:
    "trusted time: a device with its wall clock a year back publishes, is reached, writes, self-destructs",
  fn: () => wrongClockDevice("-365d"),
}));

Deno.test(withTools("faketime", {
  name:
    "trusted time: a device with its wall clock 400 days ahead publishes, is reached, writes, self-destructs",
  // Past the 397 days the phonebook's own certificate lasts (SERVER_CERT_VALIDITY_DAYS), so the local clock
  // alone would find it expired.
  fn: () => wrongClockDevice("+400d"),
}));
