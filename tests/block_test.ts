/**
 * Blocking (issue 11): a blocked peer is refused at the hello (the generic REFUSED on the wire, BLOCKED in our
 * log), as listener and as dialer; nothing
 * it sends is stored; the block survives a restart; sends to it are refused; the contact list shows it; and
 * the headless `block`/`unblock` commands and the TUI's `/block`/`/unblock` parse and act.
 */
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import { FakeDirectory, rawDial, type RawPeer, startTestEngine, until } from "./helpers/chat.ts";
import { EngineError } from "../client/engine.ts";
import { REFUSED_MESSAGE } from "../client/protocol/errors.ts";
import { runHeadless } from "../client/headless.ts";
import { parseInput } from "../client/tui/commands.ts";
import { type Frame, MsgFrame } from "../client/protocol/frames.ts";

function msg(from: string, to: string, text: string): MsgFrame {
  return { t: "msg", id: crypto.randomBytes(16).toString("hex"), from, to, text, sentAt: Date.now() };
}

/** Dials as alice and says hello; resolves with the peer and the first hello or error frame it got. */
async function helloAs(
  port: number,
  alice: { certPem: string; keyPem: string },
): Promise<{ p: RawPeer; answer: Frame }> {
  const p = await rawDial(port, alice);
  p.send(p.hello({ from: "alice", to: "bob", signKeyPem: alice.keyPem }));
  const answer = await p.waitFrame((f) => f.t === "hello" || f.t === "error");
  return { p, answer };
}

Deno.test("block: a blocked peer is refused at the hello, nothing it sends is stored, and the block survives a restart", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const alice = await makeTestLeaf(ca, "alice");
  const dir = await Deno.makeTempDir({ prefix: "securechat-block-" });
  let bob = await startTestEngine(ca, bobLeaf, { dir });
  try {
    // Before the block, alice gets in and her message is stored.
    const first = await helloAs(bob.engine.address.port, alice);
    assert.equal(first.answer.t, "hello");
    const m0 = msg("alice", "bob", "before the block");
    first.p.send(m0);
    await first.p.waitFrame((f) => f.t === "ack");
    // A conversation, not a stranger's request (blocking a stranger deletes its request: message_requests_test).
    bob.engine.acceptRequest("alice");

    assert.equal(bob.engine.block("Alice"), "alice");
    // Her open session is ended, with the generic refusal: nothing says she was blocked.
    const ended = await first.p.waitFrame((f) => f.t === "error");
    assert.deepEqual(ended, { t: "error", code: "REFUSED", message: REFUSED_MESSAGE });

    // A new connection is refused at the hello; frames sent anyway are not stored.
    const { p, answer } = await helloAs(bob.engine.address.port, alice);
    assert.equal(answer.t, "error");
    assert.deepEqual(answer, { t: "error", code: "REFUSED", message: REFUSED_MESSAGE });
    const sneaky = msg("alice", "bob", "after the block");
    p.send(sneaky);
    await p.closed;
    assert.deepEqual(bob.engine.history("alice").map((m) => m.id), [m0.id]);
    await until(() => bob.log.of("log").some((e) => /alice.*refused: BLOCKED/.test(e.text)), 5_000, "logged");

    // The contact list shows it, never online; sending to alice is refused, nothing queued.
    const c = (await bob.engine.contacts()).find((x) => x.name === "alice");
    assert.equal(c?.blocked, true);
    assert.equal(c?.online, false);
    await assert.rejects(
      bob.engine.send("alice", "hi"),
      (e: unknown) => e instanceof EngineError && e.code === "BLOCKED",
    );
    assert.equal(bob.engine.history("alice").length, 1);

    // Restart: still blocked (chat.db).
    await bob.stop();
    bob = await startTestEngine(ca, bobLeaf, { dir });
    assert.deepEqual(bob.engine.blocked(), ["alice"]);
    const again = await helloAs(bob.engine.address.port, alice);
    assert.equal(again.answer.t === "error" && again.answer.code, "REFUSED");
    await again.p.closed;

    // Unblock: alice gets in again. Unblocking twice is a clear error.
    bob.engine.unblock("alice");
    assert.throws(
      () => bob.engine.unblock("alice"),
      (e: unknown) => e instanceof EngineError && e.code === "NOT_FOUND",
    );
    assert.throws(
      () => bob.engine.block("bob"),
      (e: unknown) => e instanceof EngineError && e.code === "SELF",
    );
    assert.throws(
      () => bob.engine.block("no such!"),
      (e: unknown) => e instanceof EngineError && e.code === "BAD_NAME",
    );
    const back = await helloAs(bob.engine.address.port, alice);
    assert.equal(back.answer.t, "hello");
    back.p.socket.destroy();
  } finally {
    await bob.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("block: as dialer, a blocked peer is refused too, and its queued messages are kept until unblocked", async () => {
  const ca = await makeTestCa();
  const aliceLeaf = await makeTestLeaf(ca, "alice");
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const entries = new Map();
  const alice = await startTestEngine(ca, aliceLeaf, {
    directory: new FakeDirectory({ name: "alice", fingerprint: aliceLeaf.fingerprint }, entries),
  });
  const bob = await startTestEngine(ca, bobLeaf, {
    directory: new FakeDirectory({ name: "bob", fingerprint: bobLeaf.fingerprint }, entries),
  });
  try {
    const queued = await bob.engine.send("alice", "queued before the block");
    bob.engine.block("alice");
    await bob.engine.send("alice", "x").then(
      () => assert.fail("sent to a blocked peer"),
      (e: EngineError) => assert.equal(e.code, "BLOCKED"),
    );
    // bob dialling alice himself is refused at the hello, by bob's side.
    const a = alice.engine.address;
    await assert.rejects(bob.engine.connectTo("alice", a.host, a.port, alice.knockSecret), /BLOCKED/);
    // alice dialling bob (her message) is refused by bob; nothing reaches his store.
    await alice.engine.send("bob", "let me in");
    // alice hears the generic refusal only.
    await until(
      () => alice.log.of("log").some((e) => /bob.*refused: REFUSED/.test(e.text)),
      10_000,
      "refused",
    );
    assert.ok(
      !alice.log.events.some((e) => JSON.stringify(e).includes("BLOCKED")),
      "alice never reads BLOCKED",
    );
    await until(() => alice.log.of("error").some((e) => e.code === "PEER_REFUSED"), 5_000, "PEER_REFUSED");
    assert.equal(bob.engine.history("alice").filter((m) => m.direction === "in").length, 0);
    assert.equal(bob.engine.history("alice").find((m) => m.id === queued.id)?.state, "sending");

    bob.engine.unblock("alice");
    await bob.log.waitFor("delivered", (e) => e.id === queued.id);
    await bob.log.waitFor("message", (e) => e.message.text === "let me in");
  } finally {
    await alice.stop();
    await bob.stop();
  }
});

Deno.test("block: headless block/unblock and the TUI's /block and /unblock", async () => {
  const ca = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const bob = await startTestEngine(ca, bobLeaf);
  try {
    const lines = [
      JSON.stringify({ cmd: "block", name: "alice", ref: 1 }),
      JSON.stringify({ cmd: "send", to: "alice", text: "hi", ref: 2 }),
      JSON.stringify({ cmd: "contacts", ref: 3 }),
      JSON.stringify({ cmd: "unblock", name: "alice", ref: 4 }),
      JSON.stringify({ cmd: "unblock", name: "alice", ref: 5 }),
    ];
    bob.directory.entries.set("alice", {
      name: "alice",
      online: false,
      address: null,
      fingerprint: "0".repeat(64),
      revoked: false,
    });
    const out: Record<string, unknown>[] = [];
    await runHeadless(bob.engine, {
      lines: (async function* () {
        yield* lines;
      })(),
      write: (l) => out.push(JSON.parse(l)),
    });
    const byRef = (r: number) => out.find((o) => o.ref === r);
    assert.deepEqual(byRef(1), { event: "blocked", name: "alice", ref: 1 });
    assert.equal(byRef(2)?.event, "error");
    assert.equal(byRef(2)?.code, "BLOCKED");
    const contacts = byRef(3)?.contacts as { name: string; blocked?: boolean }[];
    assert.equal(contacts.find((c) => c.name === "alice")?.blocked, true);
    assert.deepEqual(byRef(4), { event: "unblocked", name: "alice", ref: 4 });
    assert.equal(byRef(5)?.code, "NOT_FOUND");
    assert.deepEqual(bob.engine.blocked(), []);
  } finally {
    await bob.stop();
  }
  assert.deepEqual(parseInput("/block @carol"), { kind: "block", name: "carol" });
  assert.deepEqual(parseInput("/block"), { kind: "block" });
  assert.deepEqual(parseInput("/unblock carol"), { kind: "unblock", name: "carol" });
  assert.equal(parseInput("/block two names").kind, "error");
});
