/**
 * Events emitted while the engine starts reach the front end: the buffer hands them over in order after
 * attach, with nothing lost or doubled, and a real `chat --headless` reports, after `ready`, the expiry it
 * deleted at start (a message whose deadline passed while it was not running) and its certificate's state.
 */
import assert from "node:assert/strict";
import { EarlyEvents } from "../client/early_events.ts";
import type { EngineEvent } from "../client/engine_types.ts";
import { enrollUser, spawnHeadless, startClient, startPhonebook } from "./helpers/chat.ts";

const log = (text: string): EngineEvent => ({ event: "log", level: "info", text });

Deno.test("early events: held until attach, then delivered in order, then forwarded; never twice", () => {
  const early = new EarlyEvents();
  early.push(log("a"));
  early.push(log("b"));
  const seen: string[] = [];
  const off = early.attach((e) => seen.push(e.event === "log" ? e.text : e.event));
  early.push(log("c"));
  assert.deepEqual(seen, ["a", "b", "c"]);
  assert.throws(() => early.attach(() => {}), /already attached/);
  off();
  early.push(log("d"));
  assert.deepEqual(seen, ["a", "b", "c"], "nothing after unsubscribe");
});

Deno.test("headless: the expiry deleted at start and the certificate's state follow ready", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = await startClient(aliceHome);
  let bobEngine = await startClient(bobHome);
  try {
    const m = await alice.engine.send("bob", "short-lived", { ttlMs: 4000 });
    await bobEngine.log.waitFor("message", (e) => e.message.id === m.id);
    await bobEngine.stop();
    // Bob is away past the deadline: the message is deleted when he next starts.
    const deadline = m.expiresAt!;
    while (Date.now() <= deadline + 500) await new Promise((r) => setTimeout(r, 100));
    const bob = spawnHeadless(bobHome.dir);
    try {
      const ready = await bob.waitEvent((e) => e.event === "ready", 60_000, "ready");
      assert.equal((ready.certificate as { state: string }).state, "valid");
      const expired = await bob.waitEvent((e) => e.event === "expired" && e.id === m.id, 30_000, "expired");
      assert.ok(bob.events.indexOf(ready) < bob.events.indexOf(expired), "after ready");
      assert.equal(bob.events.filter((e) => e.event === "expired" && e.id === m.id).length, 1);
      assert.ok(
        bob.events.some((e) => e.event === "certificate" && e.state === "valid"),
        "certificate event",
      );
      assert.ok(bob.events.some((e) => e.event === "time"), "the start-up time sync");
    } finally {
      await bob.kill();
    }
    bobEngine = { ...bobEngine, stop: () => Promise.resolve() };
  } finally {
    await bobEngine.stop();
    await alice.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});
