/**
 * A second session with a peer that the tie-break would refuse (the peer dials us while the session we
 * dialled is open, and its name sorts after ours): the current session is probed first. One that no longer
 * answers (the peer changed networks and lost its end of it without a word) is closed and the new one takes
 * its place at once, instead of the peer's messages waiting for our end's idle timeout; one that answers
 * keeps its place and the new one is closed as a duplicate, as before. Real engine, a raw "bob" on loopback.
 */
import assert from "node:assert/strict";
import { DirectoryClient } from "../client/directory_client.ts";
import { DUPLICATE_PROBE_MS } from "../client/session/manager.ts";
import { enrollUser, rawDial, rawListen, type RawPeer, startClient, startPhonebook } from "./helpers/chat.ts";

async function scenario(oldAnswers: boolean): Promise<void> {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = await startClient(aliceHome);
  const bobCred = { certPem: bobHome.certPem, keyPem: bobHome.keyPem };
  let first: RawPeer | null = null;
  const listener = await rawListen(bobCred, (p) => {
    first ??= p;
    (async () => {
      await p.waitFrame((f) => f.t === "hello");
      p.send(p.hello({ from: "bob", to: "alice", signKeyPem: bobHome.keyPem }));
    })().catch(() => {});
  });
  const d = new DirectoryClient({ url: bobHome.server, caPem: bobHome.caPem, ...bobCred });
  let second: RawPeer | null = null;
  try {
    await d.publish("127.0.0.1", listener.port, 300);
    // alice dials bob: the current session, dialled by "alice".
    const m1 = await alice.engine.send("bob", "before the move");
    const old = await waitFor(() => first);
    const got1 = await old.waitFrame((f) => f.t === "msg" && f.id === m1.id, 10_000);
    assert.equal(got1.t, "msg");
    old.send({ t: "ack", id: m1.id });
    await alice.log.waitFor("delivered", (e) => e.id === m1.id);
    if (oldAnswers) {
      let seen = 0;
      old.socket.on("data", () => {
        for (; seen < old.frames.length; seen++) if (old.frames[seen].t === "ping") old.send({ t: "pong" });
      });
    }
    // The probe waits for a frame older than DUPLICATE_FRESH_MS: the ack above must be that old.
    await new Promise((r) => setTimeout(r, 1200));

    // bob dials alice anew (dialer "bob" > "alice": the tie-break keeps the current session).
    const p = await rawDial(alice.engine.address.port, bobCred);
    second = p;
    p.send(p.hello({ from: "bob", to: "alice", signKeyPem: bobHome.keyPem }));
    await p.waitFrame((f) => f.t === "hello");
    // The current session is asked whether it is still there.
    await old.waitFrame((f) => f.t === "ping", DUPLICATE_PROBE_MS);
    const m2Sent = new Promise<string>((resolve) =>
      // Sent once the judgement is made (bye on one of the two).
      Promise.race([
        old.waitFrame((f) => f.t === "bye", DUPLICATE_PROBE_MS + 5000),
        p.waitFrame((f) => f.t === "bye", DUPLICATE_PROBE_MS + 5000),
      ]).then(async () => resolve((await alice.engine.send("bob", "after the move")).id))
    );
    const m2 = await m2Sent;
    const keeper = oldAnswers ? old : p;
    const loser = oldAnswers ? p : old;
    const bye = await loser.waitFrame((f) => f.t === "bye", 1000);
    assert.equal(bye.t === "bye" && bye.reason, oldAnswers ? "duplicate" : "no answer");
    await loser.closed;
    const got2 = await keeper.waitFrame((f) => f.t === "msg" && f.id === m2, 10_000);
    assert.equal(got2.t === "msg" && got2.text, "after the move");
    assert.equal(keeper.isClosed(), false);
    assert.ok(!keeper.frames.some((f) => f.t === "bye"), "the session kept was not closed");
  } finally {
    second?.socket.destroy();
    d.close();
    await alice.stop();
    await listener.close();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
}

async function waitFor<T>(f: () => T | null, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("duplicate session: a current session that no longer answers is replaced by the peer's new one", () =>
  scenario(false));

Deno.test("duplicate session: a current session that answers keeps its place (the new one is the duplicate)", () =>
  scenario(true));
