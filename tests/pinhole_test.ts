/**
 * The IPv6 pinhole (client/pinhole.ts): where the router is guessed, a real PCP exchange over IPv6 loopback
 * with a router of the test's own (the request is an IPv6 MAP for our own address, the answer must name the
 * same address and port, anything else is refused and removed again), and the keeper on a fake clock (it
 * opens at start, retries while none is held and says a failure once, follows our address, reopens after a
 * wake or a lost lease, and closes on stop). tests/reach_pinhole_test.ts runs it through a real router's
 * firewall in the network lab.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { firstOfPrefix, openPinhole, type Pinhole, PinholeError, PinholeKeeper } from "../client/pinhole.ts";
import { ipBytes, ipText, PcpError } from "../client/pcp_wire.ts";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";

Deno.test("pinhole: the router is guessed at the first address of our prefix", () => {
  assert.equal(firstOfPrefix("2001:db8:1::10", "ffff:ffff:ffff:ffff::"), "2001:db8:1::1");
  assert.equal(firstOfPrefix("2001:db8:1:2:a:b:c:d", "ffff:ffff:ffff:ffff::"), "2001:db8:1:2::1");
  assert.equal(firstOfPrefix("2001:db8:1::1", "ffff:ffff:ffff:ffff::"), null, "we are the router's address");
  assert.equal(firstOfPrefix("2001:db8:1::10", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), null, "a /128");
  assert.equal(firstOfPrefix("not an address", "ffff::"), null);
});

interface Seen {
  lifetime: number;
  client: string;
  suggestedIp: string;
  internalPort: number;
  from: string;
}

/** A PCP router on ::1 that answers each MAP with `external(request)` as the external end. */
async function router6(external: (q: Seen) => { ip: string; port: number }) {
  const sock = dgram.createSocket("udp6");
  const seen: Seen[] = [];
  sock.on("message", (msg: Uint8Array, from: dgram.RemoteInfo) => {
    const b = new Uint8Array(msg);
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const q = {
      lifetime: v.getUint32(4),
      client: ipText(b.slice(8, 24)),
      suggestedIp: ipText(b.slice(44, 60)),
      internalPort: v.getUint16(40),
      from: from.address,
    };
    seen.push(q);
    const e = external(q);
    const r = new Uint8Array(60);
    const rv = new DataView(r.buffer);
    r[0] = 2;
    r[1] = 0x81;
    rv.setUint32(4, q.lifetime === 0 ? 0 : Math.min(q.lifetime, 600));
    r.set(b.subarray(24, 44), 24); // nonce, protocol, internal port
    rv.setUint16(42, q.lifetime === 0 ? 0 : e.port);
    r.set(ipBytes(e.ip), 44);
    sock.send(r, from.port, from.address);
  });
  await new Promise<void>((r) => sock.bind(0, "::1", () => r()));
  return { port: sock.address().port, seen, close: () => sock.close() };
}

Deno.test("pinhole: an IPv6 MAP for our own address, the same address and port back, deleted on stop", async () => {
  const r = await router6((q) => ({ ip: q.client, port: q.internalPort }));
  const logs: string[] = [];
  try {
    const p = await openPinhole("::1", 10042, {
      router: "::1",
      serverPort: r.port,
      timeoutMs: 3000,
      leaseMs: 1200_000,
      log: (t) => logs.push(t),
      ways: ["pcp"],
    });
    assert.deepEqual([p.address, p.port, p.router, p.lifetime], ["::1", 10042, "::1", 600]);
    // Sent over IPv6 from our address, for our address, with IPv6's all-zeros as "no preference".
    assert.deepEqual(r.seen[0], {
      lifetime: 1200,
      client: "::1",
      suggestedIp: "::",
      internalPort: 10042,
      from: "::1",
    });
    await p.stop();
    assert.equal(r.seen.at(-1)!.lifetime, 0, "a delete");
  } finally {
    r.close();
  }
});

Deno.test("pinhole: a router that answers with another address is refused, and its mapping removed", async () => {
  const r = await router6(() => ({ ip: "2001:db8:ff::7", port: 40000 }));
  try {
    await assert.rejects(
      openPinhole("::1", 10042, {
        router: "::1",
        serverPort: r.port,
        timeoutMs: 3000,
        leaseMs: 60_000,
        log: () => {},
        ways: ["pcp"],
      }),
      (e) =>
        e instanceof PinholeError && e.code === "NOT_A_PINHOLE" && /\[2001:db8:ff::7\]:40000/.test(e.message),
    );
    assert.deepEqual(r.seen.map((q) => q.lifetime), [60, 0], "asked, then deleted");
  } finally {
    r.close();
  }
});

/** A fake `open`: resolves or fails as the test says, and records what it was asked and what was closed. */
function fakeOpener() {
  const asked: string[] = [];
  const closed: string[] = [];
  let fail: Error | null = null;
  let lost: ((why: string) => void) | null = null;
  const open = (address: string, port: number, o: { onLost?: (why: string) => void }): Promise<Pinhole> => {
    asked.push(address);
    if (fail) return Promise.reject(fail);
    lost = o.onLost ?? null;
    return Promise.resolve({
      address,
      port,
      router: "2001:db8:1::1",
      via: "PCP",
      lifetime: 600,
      stop: () => {
        closed.push(address);
        return Promise.resolve();
      },
    });
  };
  return {
    open,
    asked,
    closed,
    failWith(e: Error | null) {
      fail = e;
    },
    loseLease: () => lost?.("PCP: no renewal answered before the lease ended"),
  };
}

function keeper(f: ReturnType<typeof fakeOpener>, address: { now: string | null }, s: FakeScheduler) {
  const logs: string[] = [];
  let opened = 0;
  const k = new PinholeKeeper({
    port: 10042,
    address: () => address.now,
    scheduler: s,
    log: (t) => logs.push(t),
    retryMs: 60_000,
    timeoutMs: 3000,
    leaseMs: 1200_000,
    onOpen: () => opened++,
    open: f.open,
  });
  return { k, logs, opened: () => opened };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

Deno.test("pinhole keeper: retries while none is held, says a failure once, opens and publishes", async () => {
  const s = new FakeScheduler();
  const f = fakeOpener();
  f.failWith(new PcpError("PCP_TIMEOUT", "no PCP answer"));
  const { k, logs, opened } = keeper(f, { now: "2001:db8:1::10" }, s);
  k.start();
  await settle();
  await s.tick(60_000);
  await settle();
  await s.tick(60_000);
  await settle();
  assert.equal(f.asked.length, 3, "asked at start and at each retry");
  assert.deepEqual(logs, ["no IPv6 pinhole for [2001:db8:1::10]:10042 (no answer)"], "said once");
  f.failWith(null);
  await s.tick(60_000);
  await settle();
  assert.equal(k.held?.address, "2001:db8:1::10");
  assert.equal(opened(), 1);
  assert.match(
    logs.at(-1)!,
    /^IPv6 pinhole: \[2001:db8:1::10\]:10042 open for inbound \(PCP at 2001:db8:1::1/,
  );
  // Held: no more retries.
  await s.tick(600_000);
  await settle();
  assert.equal(f.asked.length, 4);
  await k.stop();
  assert.deepEqual(f.closed, ["2001:db8:1::10"]);
});

Deno.test("pinhole keeper: follows our address, reopens after a wake or a lost lease, closes on stop", async () => {
  const s = new FakeScheduler();
  const f = fakeOpener();
  const address = { now: "2001:db8:1::10" as string | null };
  const { k } = keeper(f, address, s);
  k.start();
  await settle();
  // Nothing of ours changed: kept.
  k.refresh(false);
  await settle();
  assert.deepEqual(f.asked, ["2001:db8:1::10"]);
  // Another network: the old one is closed, one for the new address opened.
  address.now = "2001:db8:2::10";
  k.refresh(false);
  await settle();
  assert.deepEqual(f.closed, ["2001:db8:1::10"]);
  assert.equal(k.held?.address, "2001:db8:2::10");
  // A wake: asked again for the same address (the router may have forgotten it while we slept).
  k.refresh(true);
  await settle();
  assert.deepEqual(f.asked, ["2001:db8:1::10", "2001:db8:2::10", "2001:db8:2::10"]);
  // Its lease ran out unrenewed: asked anew.
  f.loseLease();
  await settle();
  assert.equal(f.asked.length, 4);
  // No IPv6 any more: closed, nothing asked.
  address.now = null;
  k.refresh(false);
  await settle();
  assert.equal(k.held, null);
  assert.equal(f.asked.length, 4);
  await k.stop();
  k.refresh(true);
  await s.tick(600_000);
  await settle();
  assert.equal(f.asked.length, 4, "nothing after stop");
  assert.equal(f.closed.length, 4);
});
