/**
 * The expiry sweeper on a fake scheduler and a fake trusted clock: it sleeps until the next deadline (no
 * poll), deletes at the deadline and not before, does nothing without time, shows hidden messages once time
 * allows, treats a NaN deadline as passed, and re-judges at least every MAX_SLEEP_MS.
 */
import assert from "node:assert/strict";
import type { TrustedTime } from "../clock/mod.ts";
import type { EngineEvent } from "../client/engine_types.ts";
import { ExpirySweeper, MAX_SLEEP_MS, type SweepStore, WAL_RETRY_MS } from "../client/expiry_sweeper.ts";
import type { ExpiringRow, StoredMessage } from "../client/store/store.ts";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";

function message(id: string, expiresAt: number | null, ttlMs: number | null = 5000): StoredMessage {
  return {
    id,
    peer: "bob",
    from: "bob",
    direction: "in",
    text: `text ${id}`,
    sentAt: 0,
    expiresAt,
    ttlMs,
    ttlMode: ttlMs === null ? null : "send",
    state: "delivered",
    readAt: null,
    proof: null,
    seq: 0,
  };
}

class MemoryStore implements SweepStore {
  readonly rows = new Map<string, StoredMessage>();
  deletions = 0;
  /** Checkpoints that will not finish (another program holding chat.db), and the ones tried. */
  heldCheckpoints = 0;
  checkpoints = 0;
  walResidue = false;
  add(m: StoredMessage) {
    this.rows.set(m.id, m);
  }
  expiring(): ExpiringRow[] {
    return [...this.rows.values()].filter((m) => m.ttlMs !== null).map((m) => ({
      peer: m.peer,
      id: m.id,
      sentAt: m.sentAt,
      expiresAt: m.expiresAt,
      ttlMs: m.ttlMs!,
      ttlMode: m.ttlMode!,
    }));
  }
  deleteMessages(keys: { peer: string; id: string }[]) {
    this.deletions++;
    for (const k of keys) this.rows.delete(k.id);
    return this.checkpoint();
  }
  checkpoint() {
    this.checkpoints++;
    this.walResidue = this.heldCheckpoints > 0;
    if (this.heldCheckpoints > 0) this.heldCheckpoints--;
    return !this.walResidue;
  }
  get(_peer: string, id: string) {
    return this.rows.get(id) ?? null;
  }
}

function rig() {
  const scheduler = new FakeScheduler();
  const store = new MemoryStore();
  const events: EngineEvent[] = [];
  const forgotten: string[] = [];
  /** Trusted time follows the fake scheduler: [now - 10, now + 10] from base, or null when unverified. */
  let verified = true;
  const base = 1_000_000;
  const now = (): TrustedTime | null => {
    if (!verified) return null;
    const t = base + scheduler.now();
    return { earliestMs: t - 10, latestMs: t + 10, nowMs: t };
  };
  const sweeper = new ExpirySweeper({
    store,
    now,
    maxUnreadMs: 7 * 24 * 3600_000,
    scheduler,
    emit: (e) => events.push(e),
    onDeleted: (_p, id) => forgotten.push(id),
    toChatMessage: (m) => ({ ...m }),
  });
  return {
    scheduler,
    store,
    events,
    forgotten,
    sweeper,
    base,
    setVerified: (v: boolean) => verified = v,
    expired: () => events.filter((e) => e.event === "expired").map((e) => (e as { id: string }).id),
  };
}

Deno.test("sweeper: sleeps until the next deadline, deletes then and not before (no polling)", async () => {
  const r = rig();
  r.store.add(message("a", r.base + 10_000));
  r.store.add(message("b", r.base + 20_000));
  r.store.add(message("plain", null, null));
  r.sweeper.sweep();
  assert.equal(r.scheduler.pending, 1, "one timer, for the next deadline");
  // latestMs is now + 10: "a" may have passed from scheduler time 9_990 on.
  await r.scheduler.tick(9_985);
  assert.deepEqual(r.expired(), []);
  await r.scheduler.tick(10);
  assert.deepEqual(r.expired(), ["a"]);
  assert.deepEqual(r.forgotten, ["a"]);
  await r.scheduler.tick(10_000);
  assert.deepEqual(r.expired(), ["a", "b"]);
  assert.ok(r.store.rows.has("plain"));
  assert.equal(r.scheduler.pending, 0, "nothing left to wait for: no timer");
  assert.equal(r.store.deletions, 2);
});

Deno.test("sweeper: a far deadline is re-judged at least every MAX_SLEEP_MS", async () => {
  const r = rig();
  r.store.add(message("far", r.base + 10 * MAX_SLEEP_MS));
  r.sweeper.sweep();
  assert.ok(r.scheduler.nextAt()! <= MAX_SLEEP_MS + 1);
  await r.scheduler.tick(MAX_SLEEP_MS + 1);
  assert.equal(r.scheduler.pending, 1);
  assert.deepEqual(r.expired(), []);
});

Deno.test("sweeper: without verified time nothing is judged; a hidden message is shown once time allows", () => {
  const r = rig();
  r.setVerified(false);
  r.store.add(message("h", r.base + 60_000));
  r.sweeper.hide("bob", "h");
  r.sweeper.sweep();
  assert.equal(r.scheduler.pending, 0);
  assert.equal(r.events.length, 0);
  r.setVerified(true);
  r.sweeper.sweep(); // the engine calls this on every clock state change
  const shown = r.events.filter((e) => e.event === "message");
  assert.equal(shown.length, 1);
  assert.equal(r.sweeper.hiddenCount, 0);
  r.sweeper.sweep();
  assert.equal(r.events.filter((e) => e.event === "message").length, 1, "shown once");
});

Deno.test("sweeper: a hidden message whose deadline passed while time was unknown is deleted unseen", async () => {
  const r = rig();
  r.setVerified(false);
  r.store.add(message("late", r.base + 1000));
  r.sweeper.hide("bob", "late");
  await r.scheduler.tick(5000);
  r.setVerified(true);
  r.sweeper.sweep();
  assert.deepEqual(r.expired(), ["late"]);
  assert.equal(r.events.filter((e) => e.event === "message").length, 0);
});

Deno.test("sweeper: a NaN deadline counts as passed (deleted at once); stopped after close()", async () => {
  const r = rig();
  r.store.add(message("bad", NaN));
  r.store.add(message("later", r.base + 5000));
  r.sweeper.sweep();
  assert.deepEqual(r.expired(), ["bad"]);
  r.sweeper.close();
  assert.equal(r.scheduler.pending, 0);
  await r.scheduler.tick(10_000);
  assert.deepEqual(r.expired(), ["bad"]);
});

Deno.test("sweeper: a monotonic cap taken at receipt deletes a message when trusted time is lost meanwhile", async () => {
  const r = rig();
  // Its trusted deadline is far away; the cap (lifetime + proof uncertainty from arrival) is 5 s.
  r.store.add(message("a", r.base + 3600_000));
  r.store.add(message("b", r.base + 3600_000));
  r.sweeper.cap("bob", "a", 5000);
  r.setVerified(false); // time lost (its server blocked): the trusted rule can judge nothing
  r.sweeper.sweep();
  await r.scheduler.tick(4999);
  assert.ok(r.store.rows.has("a"), "not before its cap");
  await r.scheduler.tick(2);
  assert.equal(r.store.rows.has("a"), false, "deleted at its cap, without trusted time");
  assert.ok(r.store.rows.has("b"), "an uncapped message waits for trusted time");
  assert.deepEqual(r.events.filter((e) => e.event === "expired").map((e) => (e as { id: string }).id), ["a"]);
  assert.deepEqual(r.forgotten, ["a"]);
  r.sweeper.close();
});

Deno.test("sweeper: the trusted deadline still wins when it comes before the cap; a cap on a gone message does nothing", async () => {
  const r = rig();
  r.store.add(message("a", r.base + 1000));
  r.sweeper.cap("bob", "a", 60_000);
  r.sweeper.cap("bob", "gone", 10);
  r.sweeper.sweep();
  await r.scheduler.tick(1100);
  assert.equal(r.store.rows.has("a"), false);
  await r.scheduler.tick(60_000);
  assert.deepEqual(r.events.filter((e) => e.event === "expired").map((e) => (e as { id: string }).id), ["a"]);
  r.sweeper.close();
});

Deno.test("sweeper: a checkpoint held off by another program is said once and tried again, doubling, until it works", async () => {
  const r = rig();
  const logs = () => r.events.filter((e) => e.event === "log") as { level: string; text: string }[];
  r.store.add(message("a", r.base - 100));
  r.store.heldCheckpoints = 3; // the deletion's own and the next two tries
  r.sweeper.sweep(); // at scheduler time 0: "a" is past its deadline
  assert.deepEqual(r.expired(), ["a"], "deleted (and announced) all the same");
  assert.equal(r.store.checkpoints, 1);
  assert.deepEqual(logs().map((l) => l.level), ["warn"]);
  assert.match(logs()[0].text, /chat\.db-wal/);
  await r.scheduler.tick(WAL_RETRY_MS - 1);
  assert.equal(r.store.checkpoints, 1, "not before the wait");
  await r.scheduler.tick(1);
  assert.equal(r.store.checkpoints, 2);
  await r.scheduler.tick(2 * WAL_RETRY_MS);
  assert.equal(r.store.checkpoints, 3, "the wait doubles");
  assert.equal(logs().length, 1, "said once, not at every try");
  await r.scheduler.tick(4 * WAL_RETRY_MS);
  assert.equal(r.store.checkpoints, 4);
  assert.deepEqual(logs().map((l) => l.level), ["warn", "info"]);
  assert.equal(r.store.walResidue, false);
  assert.equal(r.scheduler.pending, 0, "nothing left to retry");
});

Deno.test("sweeper: a checkpoint left unfinished by another deletion (a declined request) is retried at the next sweep", async () => {
  const r = rig();
  r.store.walResidue = true;
  r.sweeper.sweep();
  assert.equal(r.scheduler.pending, 1);
  await r.scheduler.tick(WAL_RETRY_MS);
  assert.equal(r.store.checkpoints, 1);
  assert.equal(r.store.walResidue, false);
  r.sweeper.close();
  assert.equal(r.scheduler.pending, 0);
});

Deno.test("sweeper: checkpointLater (a deletion elsewhere left the WAL held) retries without waiting for a sweep", async () => {
  const r = rig();
  r.store.heldCheckpoints = 1;
  r.sweeper.checkpointLater();
  assert.equal(r.scheduler.pending, 1);
  await r.scheduler.tick(WAL_RETRY_MS);
  assert.equal(r.store.checkpoints, 1, "tried, still held");
  assert.equal(r.store.walResidue, true);
  await r.scheduler.tick(2 * WAL_RETRY_MS);
  assert.equal(r.store.checkpoints, 2);
  assert.equal(r.store.walResidue, false);
  assert.equal(r.scheduler.pending, 0);
});
