/**
 * Hostile peers and strangers against one listener (issue 11): connection caps counted from accept, before
 * TLS; the TLS handshake deadline; the per-peer session cap under concurrency; per-frame-type rates with
 * bounded output. Each test drives the session part (a real TLS listener with real peer trust) over loopback
 * with raw sockets.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { makeTestCa, makeTestLeaf, type TestCa, type TestLeaf } from "./helpers/pki.ts";
import { rawDial, type RawPeer, startTestListener, type TestListener, until } from "./helpers/chat.ts";
import { encodeFrame, type Frame } from "../client/protocol/mod.ts";
import type { SessionLimits } from "../client/session/limits.ts";
import { FRAME_RATES, FrameRateLimiter } from "../client/session/rates.ts";

async function setup(limits: Partial<SessionLimits> = {}) {
  const ca: TestCa = await makeTestCa();
  const bobLeaf = await makeTestLeaf(ca, "bob");
  const alice: TestLeaf = await makeTestLeaf(ca, "alice");
  const bob: TestListener = await startTestListener(ca, bobLeaf, { limits });
  const port = bob.address.port;
  /** An authenticated session as alice, hello exchanged. */
  const connect = async (): Promise<RawPeer> => {
    const p = await rawDial(port, { certPem: alice.certPem, keyPem: alice.keyPem });
    p.send(p.hello({ from: "alice", to: "bob", signKeyPem: alice.keyPem }));
    await p.waitFrame((f) => f.t === "hello");
    return p;
  };
  return { ca, alice, bob, port, connect };
}

/** A raw TCP connection that never starts TLS; `closedByPeer` turns true when the listener drops it. */
interface RawTcp {
  sock: net.Socket;
  closed(): boolean;
}

function rawTcp(port: number, localAddress = "127.0.0.1"): Promise<RawTcp> {
  return new Promise((resolve, reject) => {
    let closed = false;
    const sock = net.connect({ host: "127.0.0.1", port, localAddress });
    sock.on("error", () => {});
    sock.on("close", () => closed = true);
    sock.once("connect", () => resolve({ sock, closed: () => closed }));
    sock.once("error", reject);
  });
}

Deno.test("listener: a connection that never starts TLS is closed at the handshake deadline", async () => {
  const { bob, port } = await setup({ handshakeTimeoutMs: 300 });
  try {
    const c = await rawTcp(port);
    // Node's own default would keep it for 120 s; the bound here is generous against a slow machine.
    await until(c.closed, 5_000, "silent connection closed");
    assert.equal(bob.sessions.stats.handshakeTimeouts, 1);
  } finally {
    await bob.stop();
  }
});

Deno.test("listener: a full address drops its own oldest pending connection, so an honest client still gets in", async () => {
  const { bob, port, connect } = await setup({ maxPendingPerAddress: 4, handshakeTimeoutMs: 30_000 });
  try {
    // One host behind the household's NAT holds every pending slot of the shared address with silent sockets.
    const idle: RawTcp[] = [];
    for (let i = 0; i < 4; i++) idle.push(await rawTcp(port));
    // The listener accepts in arrival order, so the honest connection comes after all four.
    const honest = await connect();
    assert.equal(honest.isClosed(), false);
    // The honest connection took the slot of the oldest idle one.
    await until(() => idle[0].closed(), 5_000, "oldest idle connection evicted");
    assert.ok(bob.sessions.stats.evicted >= 1);
    honest.socket.destroy();
    for (const c of idle) c.sock.destroy();
  } finally {
    await bob.stop();
  }
});

Deno.test("listener: past the total cap a connection is closed at accept, before TLS; room comes back", async () => {
  const { bob, port, connect } = await setup({
    maxConnections: 6,
    maxPendingPerAddress: 100,
    maxPending: 100,
    handshakeTimeoutMs: 30_000,
  });
  try {
    // From six loopback addresses, so the per-address rule is not what closes them.
    const held: RawTcp[] = [];
    for (let i = 0; i < 6; i++) held.push(await rawTcp(port, `127.0.0.${i + 2}`));
    const extra = await rawTcp(port, "127.0.0.9");
    await until(extra.closed, 5_000, "seventh connection closed");
    assert.equal(bob.sessions.stats.overCapacity, 1);
    assert.ok(held.every((c) => !c.closed()), "the held connections are untouched");
    for (const c of held) c.sock.destroy();
    await until(
      () => bob.sessions.stats.accepted >= 7 && held.every((c) => c.closed()),
      5_000,
      "freed",
    );
    const honest = await connect();
    assert.equal(honest.isClosed(), false);
    honest.socket.destroy();
  } finally {
    await bob.stop();
  }
});

Deno.test("per-peer cap: 12 simultaneous authenticated connections from one peer, at most 4 get a session", async () => {
  const { alice, bob, port } = await setup({ helloTimeoutMs: 5_000 });
  try {
    // All at once: each is judged while the others are still being judged.
    const peers = await Promise.all(
      Array.from({ length: 12 }, () => rawDial(port, { certPem: alice.certPem, keyPem: alice.keyPem })),
    );
    const refused = () =>
      peers.filter((p) => p.frames.some((f) => f.t === "error" && f.code === "TOO_MANY_CONNECTIONS"));
    await until(() => refused().length >= 8, 10_000, "eight refused");
    // The four that hold a slot stay open (no hello yet, so none replaced another as a duplicate).
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(refused().length, 8);
    assert.equal(peers.filter((p) => !p.isClosed()).length, 4);
    for (const p of peers) p.socket.destroy();
  } finally {
    await bob.stop();
  }
});

Deno.test("rates: a ping flood from a peer that never reads is cut off with RATE_LIMITED; output stays bounded", async () => {
  const { bob, connect } = await setup();
  try {
    const p = await connect();
    await until(() => bob.sessions.active("alice") !== null, 5_000, "session open");
    const victim = bob.sessions.active("alice")!;
    // Stop reading: every pong the victim writes now stays in its buffers.
    p.socket.pause();
    const ping = encodeFrame({ t: "ping" });
    const burst = new Uint8Array(ping.length * 20_000);
    for (let i = 0; i < 20_000; i++) burst.set(ping, i * ping.length);
    for (let i = 0; i < 10 && !p.isClosed(); i++) p.raw(burst);
    await until(() => victim.state === "closed", 10_000, "flooder cut off");
    assert.equal(victim.closeInfo?.code, "RATE_LIMITED");
    assert.ok(victim.maxWritable < 64 * 1024, `victim buffered ${victim.maxWritable} bytes of output`);
    p.socket.resume();
    const err = await p.waitFrame((f) => f.t === "error", 5_000).catch(() => null);
    if (err) assert.equal(err.t === "error" ? err.code : "", "RATE_LIMITED");
  } finally {
    await bob.stop();
  }
});

const FLOODS: { type: keyof typeof FRAME_RATES; frame: () => Frame }[] = [
  { type: "pong", frame: () => ({ t: "pong" }) },
  { type: "typing", frame: () => ({ t: "typing" }) },
  { type: "read", frame: () => ({ t: "read", id: "ab".repeat(16), readAt: Date.now() }) },
  { type: "ack", frame: () => ({ t: "ack", id: "cd".repeat(16) }) },
];

for (const { type, frame } of FLOODS) {
  Deno.test(`rates: a flood of "${type}" frames is cut off with RATE_LIMITED, within the documented burst`, async () => {
    const { bob, connect } = await setup();
    try {
      const p = await connect();
      await until(() => bob.sessions.active("alice") !== null, 5_000, "session open");
      const victim = bob.sessions.active("alice")!;
      const typingBefore = bob.log.events.filter((e) => e.event === "typing").length;
      const n = FRAME_RATES[type].burst * 4;
      const one = encodeFrame(frame());
      const all = new Uint8Array(one.length * n);
      for (let i = 0; i < n; i++) all.set(one, i * one.length);
      p.raw(all);
      const err = await p.waitFrame((f) => f.t === "error", 10_000);
      assert.equal(err.t === "error" ? err.code : "", "RATE_LIMITED");
      assert.equal(victim.closeInfo?.code, "RATE_LIMITED");
      // What reached the layer above is bounded by the burst (plus what refilled meanwhile).
      const typing = bob.log.events.filter((e) => e.event === "typing").length - typingBefore;
      assert.ok(typing <= FRAME_RATES.typing.burst + 5, `${typing} typing events`);
    } finally {
      await bob.stop();
    }
  });
}

Deno.test("rates: an honest pace of every frame type is never cut off", async () => {
  const { bob, connect } = await setup();
  try {
    const p = await connect();
    await until(() => bob.sessions.active("alice") !== null, 5_000, "session open");
    // The whole burst allowance of each type at once, as a client catching up after a while offline would.
    for (const { type, frame } of FLOODS) {
      for (let i = 0; i < FRAME_RATES[type].burst; i++) p.send(frame());
    }
    for (let i = 0; i < FRAME_RATES.ping.burst; i++) p.send({ t: "ping" });
    await until(
      () => p.frames.filter((f) => f.t === "pong").length >= FRAME_RATES.ping.burst,
      5_000,
      "pongs",
    );
    assert.equal(p.isClosed(), false);
    assert.equal(bob.sessions.active("alice")?.state, "open");
    p.socket.destroy();
  } finally {
    await bob.stop();
  }
});

Deno.test("rates: receipts that answer our own messages are owed, not rated; unsolicited ones still are", () => {
  const r = new FrameRateLimiter();
  r.grant("ack", 10_000);
  for (let i = 0; i < 10_000; i++) assert.ok(r.take("ack", 0), `ack ${i} for a message we sent`);
  // Then the ordinary bucket (full), and no more.
  for (let i = 0; i < FRAME_RATES.ack.burst; i++) assert.ok(r.take("ack", 0));
  assert.equal(r.take("ack", 0), false);
});

Deno.test("rates: an `acks` frame takes one token per receipt, owed ones first, all or nothing", () => {
  const r = new FrameRateLimiter();
  r.grant("ack", 1000);
  assert.ok(r.take("ack", 0, 1000), "1,000 receipts for 1,000 messages we sent");
  // Owed 10, bucket full: 10 + burst fit, one more does not (and takes nothing).
  r.grant("ack", 10);
  assert.equal(r.take("ack", 0, 10 + FRAME_RATES.ack.burst + 1), false);
  assert.ok(r.take("ack", 0, 10 + FRAME_RATES.ack.burst));
  assert.equal(r.take("ack", 0), false);
});
