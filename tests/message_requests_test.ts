/**
 * Message requests (issue 11): a stranger's messages (a peer the user never wrote to nor accepted) are held as
 * a bounded request, REQUEST_MAX_MESSAGES per stranger and REQUEST_MAX_STRANGERS strangers at once, with the
 * real limits (not the helpers' lifted ones). Accepting or replying makes it a conversation; declining deletes
 * it; both survive a restart.
 */
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { makeTestCa, makeTestLeaf, type TestLeaf } from "./helpers/pki.ts";
import { join } from "node:path";
import { filesContain, rawDial, type RawPeer, startTestEngine, until } from "./helpers/chat.ts";
import { encodeFrame, type MsgFrame } from "../client/protocol/frames.ts";
import { MAX_TEXT_BYTES, REQUEST_MAX_MESSAGES } from "../client/protocol/constants.ts";
import { EngineError } from "../client/engine.ts";
import type { EngineEvent } from "../client/engine_types.ts";
import { MessageRequests } from "../client/requests.ts";
import { REFUSED_MESSAGE } from "../client/protocol/errors.ts";
import { ChatStore } from "../client/store/store.ts";
import { runHeadless } from "../client/headless.ts";
import { parseInput } from "../client/tui/commands.ts";

/** The real limits: startTestEngine lifts them unless told. */
const REAL = {};

function msg(from: string, text: string): MsgFrame {
  return { t: "msg", id: crypto.randomBytes(16).toString("hex"), from, to: "bob", text, sentAt: Date.now() };
}

async function connect(port: number, leaf: TestLeaf): Promise<RawPeer> {
  const p = await rawDial(port, leaf);
  p.send(p.hello({ from: leaf.name, to: "bob", signKeyPem: leaf.keyPem }));
  await p.waitFrame((f) => f.t === "hello");
  return p;
}

/** Sends `n` messages in one write; resolves with the ids acknowledged and the error code, if any. */
async function burst(port: number, leaf: TestLeaf, n: number, text = "hello") {
  const p = await connect(port, leaf);
  const frames = Array.from({ length: n }, () => msg(leaf.name, text));
  for (const f of frames) {
    if (!p.socket.write(encodeFrame(f))) {
      await Promise.race([new Promise((r) => p.socket.once("drain", r)), p.closed]);
    }
    if (p.isClosed()) break;
  }
  const last = frames[frames.length - 1].id;
  const end = await p.waitFrame((f) => f.t === "error" || (f.t === "ack" && f.id === last), 30_000);
  const acked = p.frames.filter((f) => f.t === "ack").map((f) => (f as { id: string }).id);
  p.socket.destroy();
  return {
    acked,
    code: end.t === "error" ? end.code : null,
    message: end.t === "error" ? end.message : null,
  };
}

Deno.test("requests: a stranger flooding 1,500 messages of 16 KiB gets 5 stored as a request, announced once", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const mallory = await makeTestLeaf(ca, "mallory");
  const bob = await startTestEngine(ca, bobLeaf, { requestLimits: REAL });
  try {
    const r = await burst(bob.engine.address.port, mallory, 1500, "m".repeat(MAX_TEXT_BYTES));
    assert.equal(r.code, "QUOTA_EXCEEDED");
    const stored = bob.store((s) => s.history("mallory"));
    assert.equal(stored.length, REQUEST_MAX_MESSAGES);
    for (const id of r.acked) assert.ok(stored.some((m) => m.id === id), "every acknowledged one is stored");
    assert.equal(bob.log.of("request").length, 1);
    assert.equal(bob.log.of("request")[0].from, "mallory");
    assert.deepEqual(bob.engine.messageRequests(), [{ name: "mallory", messages: REQUEST_MAX_MESSAGES }]);
    const c = (await bob.engine.contacts()).find((x) => x.name === "mallory");
    assert.equal(c?.request, true);
    // Again, on a new session: nothing more until accepted.
    const again = await burst(bob.engine.address.port, mallory, 1);
    assert.equal(again.code, "QUOTA_EXCEEDED");
    assert.equal(bob.store((s) => s.history("mallory")).length, REQUEST_MAX_MESSAGES);
  } finally {
    await bob.stop();
  }
});

Deno.test("requests: accept, reply and decline; the total number of strangers is bounded; all kept across a restart", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const [alice, carol, dave, erin] = await Promise.all(
    ["alice", "carol", "dave", "erin"].map((n) => makeTestLeaf(ca, n)),
  );
  const dir = await Deno.makeTempDir({ prefix: "securechat-requests-" });
  let bob = await startTestEngine(ca, bobLeaf, { dir, requestLimits: { strangers: 3 } });
  try {
    const port = () => bob.engine.address.port;
    assert.equal((await burst(port(), alice, 8)).code, "QUOTA_EXCEEDED");
    assert.equal((await burst(port(), carol, 2)).code, null);
    assert.equal((await burst(port(), dave, 1)).code, null);
    // A fourth stranger while three requests are pending is refused, nothing stored; bob is told once.
    assert.equal((await burst(port(), erin, 1)).code, "REQUESTS_FULL");
    assert.equal((await burst(port(), erin, 1)).code, "REQUESTS_FULL");
    assert.deepEqual(bob.log.of("requests-full"), [{ event: "requests-full", strangers: 3 }]);
    assert.equal(bob.engine.history("erin").length, 0);

    // Accept alice: she writes freely now.
    assert.equal(bob.engine.acceptRequest("alice"), "alice");
    assert.equal((await burst(port(), alice, 20)).code, null);
    assert.equal(bob.engine.history("alice").length, 25);
    // Replying to dave accepts him too.
    await bob.engine.send("dave", "hi dave");
    // Declining carol deletes her messages; she may ask again after the cooldown (see the test below).
    assert.equal(bob.engine.declineRequest("carol"), "carol");
    assert.equal(bob.engine.history("carol").length, 0);
    assert.equal(bob.store((s) => s.history("carol")).length, 0);
    // Asking again at once is refused with the very words a blocked peer gets: she cannot tell which.
    const back = await burst(port(), carol, 1);
    assert.deepEqual([back.code, back.message], ["REFUSED", REFUSED_MESSAGE]);
    assert.throws(
      () => bob.engine.declineRequest("alice"),
      (e: unknown) => e instanceof EngineError && e.code === "NOT_FOUND",
      "an accepted conversation is never declined away",
    );
    // There is room again for erin.
    assert.equal((await burst(port(), erin, 1)).code, null);
    assert.deepEqual(bob.engine.messageRequests(), [{ name: "erin", messages: 1 }]);

    await bob.stop();
    bob = await startTestEngine(ca, bobLeaf, { dir, requestLimits: { strangers: 3 } });
    assert.deepEqual(bob.engine.messageRequests(), [{ name: "erin", messages: 1 }]);
    assert.equal((await burst(port(), dave, 10)).code, null, "dave stays accepted");
    assert.equal((await burst(port(), erin, 10)).code, "QUOTA_EXCEEDED", "erin is still a stranger");
    assert.equal(bob.engine.history("erin").length, REQUEST_MAX_MESSAGES);
    const contacts = await bob.engine.contacts();
    assert.equal(contacts.find((c) => c.name === "erin")?.request, true);
    assert.equal(contacts.find((c) => c.name === "dave")?.request, undefined);
  } finally {
    await bob.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("requests: headless accept/decline and the TUI's /accept and /decline", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const carol = await makeTestLeaf(ca, "carol");
  const bob = await startTestEngine(ca, bobLeaf, { requestLimits: REAL });
  try {
    await burst(bob.engine.address.port, carol, 2);
    await until(() => bob.engine.history("carol").length === 2);
    const out: Record<string, unknown>[] = [];
    await runHeadless(bob.engine, {
      lines: (async function* () {
        yield JSON.stringify({ cmd: "decline", name: "carol", ref: 1 });
        yield JSON.stringify({ cmd: "decline", name: "carol", ref: 2 });
        yield JSON.stringify({ cmd: "accept", name: "carol", ref: 3 });
      })(),
      write: (l) => out.push(JSON.parse(l)),
    });
    assert.deepEqual(out.find((o) => o.ref === 1), { event: "declined", name: "carol", ref: 1 });
    assert.equal(out.find((o) => o.ref === 2)?.code, "NOT_FOUND");
    assert.deepEqual(out.find((o) => o.ref === 3), { event: "accepted", name: "carol", ref: 3 });
    assert.equal(bob.engine.history("carol").length, 0);
    assert.equal((await burst(bob.engine.address.port, carol, 10)).code, null);
  } finally {
    await bob.stop();
  }
  assert.deepEqual(parseInput("/accept carol"), { kind: "accept", name: "carol" });
  assert.deepEqual(parseInput("/decline"), { kind: "decline" });
});

Deno.test("requests: blocking a stranger frees its slot and deletes its request (from the file too); a full house is said once each time it fills", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const [alice, carol, dave, erin] = await Promise.all(
    ["alice", "carol", "dave", "erin"].map((n) => makeTestLeaf(ca, n)),
  );
  const dir = await Deno.makeTempDir({ prefix: "securechat-requests-block-" });
  const db = join(dir, "chat.db");
  const limits = { strangers: 2 };
  let bob = await startTestEngine(ca, bobLeaf, { dir, requestLimits: limits });
  try {
    const port = () => bob.engine.address.port;
    const secret = `alice-${crypto.randomBytes(8).toString("hex")}`;
    assert.equal((await burst(port(), alice, 2, secret)).code, null);
    assert.equal((await burst(port(), carol, 1)).code, null);
    assert.equal((await burst(port(), dave, 1)).code, "REQUESTS_FULL");
    assert.equal((await burst(port(), dave, 1)).code, "REQUESTS_FULL");
    assert.equal(bob.log.of("requests-full").length, 1, "said once while full");
    assert.ok(await filesContain([db, `${db}-wal`], new TextEncoder().encode(secret)), "the probe works");

    bob.engine.block("alice");
    assert.deepEqual(bob.engine.messageRequests(), [{ name: "carol", messages: 1 }]);
    assert.equal(bob.store((s) => s.history("alice")).length, 0, "her held messages are deleted");
    assert.equal(await filesContain([db, `${db}-wal`], new TextEncoder().encode(secret)), false);
    // Her slot is free for someone else.
    assert.equal((await burst(port(), dave, 1)).code, null);
    assert.deepEqual(bob.engine.messageRequests().map((r) => r.name), ["carol", "dave"]);
    // Full again after having had room: said again, once.
    assert.equal((await burst(port(), erin, 1)).code, "REQUESTS_FULL");
    assert.equal(bob.log.of("requests-full").length, 2);

    // A chat.db from before this fix: a blocked stranger whose request is still stored. The next start frees it.
    await bob.stop();
    const eve = await makeTestLeaf(ca, "eve");
    bob = await startTestEngine(ca, bobLeaf, { dir, requestLimits: { strangers: 3 } });
    assert.equal((await burst(port(), eve, 1)).code, null);
    await bob.stop();
    const ids = new ChatStore(db);
    ids.setBlocked("eve", true); // as an older version would have left it: blocked, request kept
    assert.equal(ids.requestCounts().get("eve"), 1);
    ids.close();
    bob = await startTestEngine(ca, bobLeaf, { dir, requestLimits: limits });
    assert.deepEqual(bob.engine.messageRequests().map((r) => r.name), ["carol", "dave"]);
    assert.equal(bob.store((s) => s.history("eve")).length, 0);
  } finally {
    await bob.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("requests: a request expires a week after its first message, a declined or expired stranger waits a week to ask again, and a request ended mid-commit leaves nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "securechat-requests-expiry-" });
  const db = join(dir, "chat.db");
  const DAY = 24 * 3600_000;
  const t0 = 1_800_000_000_000;
  let now = t0;
  const events: EngineEvent[] = [];
  let store = new ChatStore(db);
  let r = new MessageRequests(store, (e) => events.push(e), { strangers: 2 }, () => now);
  let n = 0;
  /** One message from `peer`, through the limits into the store, as the inbox does. */
  const receive = (peer: string) => {
    const id = (n++).toString(16).padStart(32, "0");
    r.admit(peer);
    store.addIncoming({
      id,
      peer,
      from: peer,
      text: `${peer} ${id}`,
      sentAt: now,
      expiresAt: null,
      ttlMs: null,
      ttlMode: null,
      proof: null,
    });
    return r.settle(peer, id, true);
  };
  const refusal = (peer: string) => {
    try {
      r.admit(peer);
      return null;
    } catch (e) {
      return (e as { code?: string }).code ?? "?";
    }
  };
  try {
    receive("alice");
    receive("alice");
    now = t0 + 3 * DAY;
    receive("carol");
    assert.equal(refusal("dave"), "REQUESTS_FULL");

    now = t0 + 7 * DAY - 1;
    assert.deepEqual(r.expire(), []);
    now = t0 + 7 * DAY;
    assert.deepEqual(r.expire(), ["alice"], "a week after her first message");
    assert.equal(store.history("alice").length, 0, "its messages are deleted");
    assert.deepEqual(r.pending(), [{ name: "carol", messages: 1 }]);
    assert.ok(events.some((e) => e.event === "log" && /alice \(2 messages\) was not accepted/.test(e.text)));
    assert.equal(refusal("alice"), "REFUSED", "no new request during the cooldown");
    assert.ok(receive("dave"), "the slot is free for another stranger");

    // Across a restart: the start of each request and the cooldowns are kept.
    store.close();
    store = new ChatStore(db);
    r = new MessageRequests(store, (e) => events.push(e), { strangers: 3 }, () => now);
    assert.deepEqual(r.pending().map((p) => p.name), ["carol", "dave"]);
    assert.equal(refusal("alice"), "REFUSED");
    now = t0 + 10 * DAY;
    assert.deepEqual(r.expire(), ["carol"], "carol's week began at day 3, not at the restart");
    now = t0 + 14 * DAY;
    assert.equal(refusal("alice"), null, "after the cooldown she may ask again");
    r.settle("alice", "released", false);

    // Declining starts the cooldown too; accepting lifts every limit.
    assert.equal(r.decline("dave"), 1);
    assert.equal(refusal("dave"), "REFUSED");
    r.accept("dave");
    for (let i = 0; i < 10; i++) assert.ok(receive("dave"));

    // A request declined while one of its messages is still committing: that message is deleted as it lands.
    receive("erin");
    r.admit("erin");
    assert.equal(r.decline("erin"), 1);
    const late = "f".repeat(32);
    store.addIncoming({
      id: late,
      peer: "erin",
      from: "erin",
      text: "late",
      sentAt: now,
      expiresAt: null,
      ttlMs: null,
      ttlMode: null,
      proof: null,
    });
    assert.equal(r.settle("erin", late, true), false);
    assert.equal(store.history("erin").length, 0);
    assert.deepEqual(r.pending().map((p) => p.name), []);

    // Blocked with a message in flight, unblocked, and asking again before that message lands: the old one is
    // deleted as it lands, the new one is kept (commits settle in admission order).
    r.admit("frank");
    assert.equal(r.blocked("frank"), 0);
    const stale = "e".repeat(32);
    const fresh = "d".repeat(32);
    r.admit("frank");
    for (const id of [stale, fresh]) {
      store.addIncoming({
        id,
        peer: "frank",
        from: "frank",
        text: id,
        sentAt: now,
        expiresAt: null,
        ttlMs: null,
        ttlMode: null,
        proof: null,
      });
    }
    assert.equal(r.settle("frank", stale, true), false);
    assert.equal(r.settle("frank", fresh, true), true);
    assert.deepEqual(store.history("frank").map((m) => m.id), [fresh]);
    assert.deepEqual(r.pending(), [{ name: "frank", messages: 1 }]);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("requests: a declined request whose deletion another program's read holds in the WAL asks for a later checkpoint; a free one does not", async () => {
  const dir = await Deno.makeTempDir({ prefix: "securechat-requests-wal-" });
  const db = join(dir, "chat.db");
  const store = new ChatStore(db);
  let held = 0;
  const r = new MessageRequests(store, () => {}, {}, Date.now, () => held++);
  let n = 0;
  const receive = (peer: string) => {
    const id = (n++).toString(16).padStart(32, "0");
    r.admit(peer);
    const base = { id, peer, from: peer, text: `${peer} ${id}`, sentAt: Date.now() };
    store.addIncoming({ ...base, expiresAt: null, ttlMs: null, ttlMode: null, proof: null });
    r.settle(peer, id, true);
  };
  const { DatabaseSync } = await import("node:sqlite");
  const reader = new DatabaseSync(db, { readOnly: true });
  try {
    receive("mallory");
    assert.equal(r.decline("mallory"), 1);
    assert.equal(held, 0, "nothing held: nothing asked");
    receive("trent");
    reader.exec("BEGIN");
    reader.prepare("SELECT count(*) FROM messages").get();
    assert.equal(r.decline("trent"), 1);
    assert.equal(held, 1, "the held checkpoint is handed on (the engine's sweeper retries it)");
    assert.equal(store.walResidue, true);
    assert.deepEqual(store.history("trent"), [], "deleted all the same");
    reader.exec("COMMIT");
  } finally {
    reader.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
