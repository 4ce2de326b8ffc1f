/** Presence on a fake scheduler: published at start, refreshed at a third of its lifetime, failures said
 * and retried by the next refresh, withdrawal bounded when the phonebook hangs. */
import assert from "node:assert/strict";
import { Presence, WITHDRAW_TIMEOUT_MS } from "../client/presence.ts";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";

function rig(publish: () => Promise<void>, withdraw: () => Promise<void> = () => Promise.resolve()) {
  const scheduler = new FakeScheduler();
  const calls: string[] = [];
  const logs: string[] = [];
  const presence = new Presence({
    publish: (host, port, ttl) => (calls.push(`${host}:${port}/${ttl}`), publish()),
    withdraw: () => (calls.push("withdraw"), withdraw()),
    address: () => ({ host: "127.0.0.1", port: 4000 }),
    log: (_l, t) => logs.push(t),
    scheduler,
    ttlSeconds: 90,
  });
  return { scheduler, presence, calls, logs };
}

Deno.test("presence: published at start and refreshed every ttl/3; withdrawn at the end, refreshing stops", async () => {
  const r = rig(() => Promise.resolve());
  await r.presence.start();
  assert.deepEqual(r.calls, ["127.0.0.1:4000/90"]);
  await r.scheduler.tick(29_999);
  assert.equal(r.calls.length, 1);
  await r.scheduler.tick(1);
  await r.scheduler.tick(30_000);
  assert.equal(r.calls.length, 3);
  await r.presence.withdraw();
  assert.equal(r.calls.at(-1), "withdraw");
  await r.scheduler.tick(120_000);
  assert.equal(r.calls.length, 4, "no refresh after withdrawal");
});

Deno.test("presence: a failed publication is logged, not thrown, and the next refresh tries again", async () => {
  let fail = true;
  const r = rig(() => fail ? Promise.reject(new Error("phonebook down")) : Promise.resolve());
  await r.presence.start();
  assert.match(r.logs[0], /cannot publish our address: phonebook down/);
  assert.deepEqual(r.presence.status(), { reachable: false, reason: "phonebook down" });
  fail = false;
  await r.scheduler.tick(30_000);
  assert.equal(r.calls.length, 2);
  assert.equal(r.logs.length, 1);
  assert.deepEqual(r.presence.status(), { reachable: true, reason: null });
});

Deno.test("presence: withdrawal from a phonebook that never answers ends after WITHDRAW_TIMEOUT_MS", async () => {
  const r = rig(() => Promise.resolve(), () => new Promise<void>(() => {}));
  await r.presence.start();
  let done = false;
  const w = r.presence.withdraw().then(() => done = true);
  await r.scheduler.tick(WITHDRAW_TIMEOUT_MS - 1);
  assert.equal(done, false);
  await r.scheduler.tick(1);
  await w;
  assert.equal(done, true);
});
