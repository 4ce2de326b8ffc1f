/**
 * The phonebook's reachability check (server/reach_probe.ts, docs/protocol.md "The check") against real
 * listeners on loopback: the user's own chat listener is listed as reachable; a closed port, another user's
 * listener at the address, a service that is not TLS, and the phonebook's own port are not. The probe sends
 * nothing before its ClientHello but the optional preamble. Limits: at most the listed candidates, rounds
 * per user, probes per destination, the concurrency cap; a refresh of the same candidates is not probed
 * again. Candidates and results are in the store: a second node on the same database and a restarted node
 * list them.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { join } from "node:path";
import {
  backendTest,
  call,
  enrollRaw,
  type Identity,
  startTestDirectory,
  type TestDirectory,
} from "./helpers/directory.ts";
import { startTestListener, type TestListener } from "./helpers/chat.ts";
import { fingerprintOf } from "../pki/mod.ts";
import { type ProbeResult, startDirectoryServer } from "../server/mod.ts";
import { probeCandidate, probeRefusal, probeScope, ReachProber } from "../server/reach_probe.ts";
import { type Address, encodeKnockSecret, KNOCK_BYTES } from "../contract/mod.ts";

/** `who`'s real peer listener (the chat engine's SessionManager) with the directory-issued certificate. */
function listenAs(t: TestDirectory, name: string, who: Identity): Promise<TestListener> {
  return startTestListener({ certPem: t.dir.caCertPem }, {
    name,
    certPem: who.certPem,
    keyPem: who.keyPem,
    fingerprint: fingerprintOf(who.certPem),
  });
}

/** A TCP service that is not TLS (an SSH-like banner, then close); keeps every byte it was sent. */
async function plainService(): Promise<{ address: Address; received: () => Uint8Array; close(): void }> {
  const chunks: Uint8Array[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("data", (c: Uint8Array) => chunks.push(new Uint8Array(c)));
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    s.write("SSH-2.0-OpenSSH_9.2\r\n");
    setTimeout(() => s.end(), 200);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: { host: "127.0.0.1", port },
    received: () => {
      const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let o = 0;
      for (const c of chunks) out.set(c, (o += c.length) - c.length);
      return out;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** A TCP service that accepts and never answers; `onAccept` runs at each connection. */
async function silentService(onAccept = () => {}): Promise<{ address: Address; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    onAccept();
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    address: { host: "127.0.0.1", port: (server.address() as net.AddressInfo).port },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** A port nothing listens on (bound, then released). */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Publishes `candidates` as `who`, with the knock secret of `listener` (as chat publishes its own). */
function publish(t: TestDirectory, who: Identity, candidates: Address[], listener?: TestListener) {
  const knock = listener ? { knock: encodeKnockSecret(listener.sessions.knockSecret) } : {};
  return call(t.dir, "PUT", "/v1/presence", {
    body: { host: candidates[0].host, port: candidates[0].port, ttlSeconds: 60, candidates, ...knock },
    as: who,
  });
}

async function entryOf(t: { dir: { url: string; caCertPem: string } }, name: string) {
  const r = await call(t.dir, "GET", `/v1/users/${name}`);
  assert.equal(r.status, 200, r.text);
  return r.json as { candidates: Address[]; reachable: Address[]; reachCheckedAt: number | null };
}

const key = (a: Address) => `${a.host}:${a.port}`;

backendTest(
  "reach check: only the user's own listener is reachable; closed, other user, not TLS, own port are not",
  async (backend) => {
    const seen: (ProbeResult & { name: string })[] = [];
    const t = await startTestDirectory({ backend, reachCheck: { onProbe: (r) => seen.push(r) } });
    const alice = await enrollRaw(t.dir, "alice");
    const bob = await enrollRaw(t.dir, "bob");
    const mine = await listenAs(t, "alice", alice);
    const bobs = await listenAs(t, "bob", bob);
    const plain = await plainService();
    try {
      const closed = { host: "127.0.0.1", port: closedPort() };
      const own = { host: "127.0.0.1", port: t.dir.port };
      const candidates = [mine.address, bobs.address, closed, plain.address, own];
      const r = await publish(t, alice, candidates, mine);
      assert.equal(r.status, 200, r.text);
      await t.dir.reachChecksSettled();
      const e = await entryOf(t, "alice");
      assert.deepEqual(e.candidates.map(key), candidates.map(key), "every candidate is still listed");
      assert.deepEqual(e.reachable, [mine.address]);
      assert.equal(typeof e.reachCheckedAt, "number");
      const outcome = new Map(seen.map((s) => [key(s.address), s.outcome]));
      assert.equal(outcome.get(key(mine.address)), "REACHABLE");
      // Knocked with alice's secret, bob's listener does not answer at all (closed before TLS).
      assert.equal(outcome.get(key(bobs.address)), "NOT_TLS", "bob's listener refuses alice's knock");
      assert.equal(bobs.sessions.stats.knockRefused, 1);
      assert.equal(outcome.get(key(closed)), "CONNECT_FAILED");
      assert.equal(outcome.get(key(plain.address)), "NOT_TLS");
      assert.equal(outcome.get(key(own)), "SKIPPED_OWN_PORT");
      // What the probe sent the foreign service: the knock of alice's publication (any peer dialling alice
      // there would send it too), then one TLS handshake record (0x16), TLS 1.x framing, nothing of an
      // application protocol.
      const got = plain.received();
      assert.equal(new TextDecoder().decode(got.subarray(0, 4)), "SCK1", "the knock first");
      assert.equal(got[KNOCK_BYTES], 0x16, "then a TLS handshake record");
      assert.equal(got[KNOCK_BYTES + 1], 0x03);
      assert.equal(new TextDecoder().decode(got).includes("GET "), false);
      assert.equal(seen.every((s) => s.name === "alice"), true);
      // Bob's listener never opened a session for the probe: it was a stranger without a certificate.
      assert.equal(bobs.sessions.active("alice"), null);

      // Another publication of the same candidates (a refresh) is not probed again, and keeps the result.
      const before = seen.length;
      assert.equal((await publish(t, alice, candidates, mine)).status, 200);
      await t.dir.reachChecksSettled();
      assert.equal(seen.length, before, "a refresh of the same set is not probed");
      assert.equal((await publish(t, alice, [...candidates].reverse(), mine)).status, 200);
      await t.dir.reachChecksSettled();
      assert.equal(seen.length, before, "nor the same set in another order");
      assert.deepEqual((await entryOf(t, "alice")).reachable, [mine.address]);

      // A changed set drops the old result at once and is checked again.
      const next = [closed, mine.address];
      assert.equal((await publish(t, alice, next, mine)).status, 200);
      await t.dir.reachChecksSettled();
      assert.ok(seen.length > before, "a changed set is probed");
      assert.deepEqual((await entryOf(t, "alice")).reachable, [mine.address]);

      // A publication without the listener's secret: the probe cannot knock, alice's own listener answers
      // nothing, and the candidate is not listed as reachable.
      const refusedBefore = mine.sessions.stats.knockRefused;
      assert.equal((await publish(t, alice, [mine.address])).status, 200);
      await t.dir.reachChecksSettled();
      assert.deepEqual((await entryOf(t, "alice")).reachable, []);
      assert.equal(mine.sessions.stats.knockRefused, refusedBefore + 1);

      // Withdrawn: nothing listed, no result left behind.
      await call(t.dir, "DELETE", "/v1/presence", { as: alice });
      const gone = await entryOf(t, "alice");
      assert.deepEqual([gone.candidates, gone.reachable, gone.reachCheckedAt], [[], [], null]);
    } finally {
      await mine.stop();
      await bobs.stop();
      plain.close();
      await t.close();
    }
  },
);

backendTest(
  "reach check: limits hold: listed candidates only, rounds per user, probes per destination",
  async (backend) => {
    const seen: (ProbeResult & { name: string })[] = [];
    const t = await startTestDirectory({
      backend,
      reachCheck: {
        onProbe: (r) => seen.push(r),
        rounds: { perSecond: 1e-6, burst: 2 },
        perHost: { perSecond: 1e-6, burst: 6 },
        timeoutMs: 400,
      },
    });
    const alice = await enrollRaw(t.dir, "alice");
    const carol = await enrollRaw(t.dir, "carol");
    const silent = await Promise.all([...Array(4)].map(() => silentService()));
    try {
      // Nine of the user's own: refused before anything is probed.
      const nine = [...Array(9).keys()].map((i) => ({ host: "127.0.0.1", port: 20000 + i }));
      const tooMany = await publish(t, alice, nine);
      assert.equal(tooMany.status, 400);
      await t.dir.reachChecksSettled();
      assert.equal(seen.length, 0, "a refused publication probes nothing");

      // Four silent listeners: every probe times out (the concurrency cap is pinned by the test below).
      const round1 = silent.map((s) => s.address);
      assert.equal((await publish(t, alice, round1)).status, 200);
      await t.dir.reachChecksSettled();
      assert.deepEqual(seen.map((s) => s.outcome), ["TIMEOUT", "TIMEOUT", "TIMEOUT", "TIMEOUT"]);

      // Second round for alice (a changed set): allowed, the per-destination budget (6 on 127.0.0.1) runs out.
      const round2 = [silent[0].address, silent[1].address, silent[2].address];
      assert.equal((await publish(t, alice, round2)).status, 200);
      await t.dir.reachChecksSettled();
      const r2 = seen.slice(4);
      assert.deepEqual(r2.map((s) => s.outcome).sort(), ["SKIPPED_HOST_RATE", "TIMEOUT", "TIMEOUT"]);

      // Third round for alice: over her round budget, nothing probed, nothing stored as checked.
      assert.equal((await publish(t, alice, [silent[3].address])).status, 200);
      await t.dir.reachChecksSettled();
      assert.equal(seen.length, 7, "no probe beyond the user's round budget");
      assert.equal(
        (await entryOf(t, "alice")).reachCheckedAt,
        null,
        "unchecked, asked again at the next refresh",
      );

      // Carol has rounds of her own, but the destination's budget is spent: a crowd cannot reflect off it.
      assert.equal((await publish(t, carol, [silent[3].address])).status, 200);
      await t.dir.reachChecksSettled();
      assert.deepEqual(seen.slice(7).map((s) => [s.name, s.outcome]), [["carol", "SKIPPED_HOST_RATE"]]);
    } finally {
      for (const s of silent) s.close();
      await t.close();
    }
  },
);

backendTest(
  "reach check: candidates and results are in the store: a second node and a restarted node list them",
  async (backend) => {
    // One round per user: the second node must find it spent.
    const rounds = { perSecond: 1e-6, burst: 1 };
    const t = await startTestDirectory({ backend, reachCheck: { rounds } });
    const alice = await enrollRaw(t.dir, "alice");
    const mine = await listenAs(t, "alice", alice);
    const tmp = await Deno.makeTempDir({ prefix: "securechat-node2-" });
    try {
      const closed = { host: "127.0.0.1", port: closedPort() };
      assert.equal((await publish(t, alice, [closed, mine.address], mine)).status, 200);
      await t.dir.reachChecksSettled();
      const want = await entryOf(t, "alice");
      assert.deepEqual(want.reachable, [mine.address]);
      if (backend === "postgres") {
        const probedThere: ProbeResult[] = [];
        // A second node on the same database and CA key: it took no publication, yet lists the same.
        const other = await startDirectoryServer({
          dataDir: join(tmp, "data"),
          port: 0,
          roughtime: false,
          database: t.database,
          caKeyFile: join(t.data, "ca-key.pem"),
          caCertFile: join(t.data, "ca.pem"),
          onError: () => {},
          reachCheck: { rounds, onProbe: (r) => probedThere.push(r) },
        });
        try {
          const there = await entryOf({ dir: other }, "alice");
          assert.deepEqual(there, want);
          // The user's round budget is in the database: spent on the first node, spent on this one.
          const moved = [mine.address];
          const r = await call(other, "PUT", "/v1/presence", {
            body: { host: moved[0].host, port: moved[0].port, ttlSeconds: 60, candidates: moved },
            as: alice,
          });
          assert.equal(r.status, 200, r.text);
          await other.reachChecksSettled();
          assert.deepEqual(probedThere, [], "no round left for alice on any node");
          assert.equal((await entryOf(t, "alice")).reachCheckedAt, null, "the new set is unchecked");
        } finally {
          await other.close();
        }
      } else {
        // The same data folder after a restart.
        await t.dir.close();
        const again = await startDirectoryServer({
          dataDir: t.data,
          port: 0,
          roughtime: false,
          onError: () => {},
        });
        try {
          assert.deepEqual(await entryOf({ dir: again }, "alice"), want);
        } finally {
          await again.close();
        }
      }
    } finally {
      await mine.stop();
      await t.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test("reach prober: never more probes at once than the cap; a full queue is not waited for", async () => {
  let max = 0;
  let prober: ReachProber | null = null;
  const sample = () => (max = Math.max(max, prober?.running ?? 0));
  const silent = await Promise.all([...Array(5)].map(() => silentService(sample)));
  prober = new ReachProber({
    caCertPem: "unused: nothing answers",
    ownPorts: () => [],
    concurrency: 2,
    queueMax: 2,
    timeoutMs: 300,
  });
  try {
    const report = await prober.check({
      name: "alice",
      fingerprint: "00",
      candidates: silent.map((s) => s.address),
      observed: "127.0.0.1",
    }, 8);
    assert.ok(report);
    assert.deepEqual(report.results.map((r) => r.outcome), [
      "TIMEOUT",
      "TIMEOUT",
      "TIMEOUT",
      "TIMEOUT",
      "SKIPPED_BUSY",
    ]);
    assert.equal(max, 2, "two at once, never three");
    assert.equal(prober.started, 4);
    // At most `maxCandidates` of a round are looked at.
    const capped = await prober.check({
      name: "bob",
      fingerprint: "00",
      candidates: silent.map((s) => ({ host: "chat.example.org", port: s.address.port })),
      observed: "127.0.0.1",
    }, 3);
    assert.equal(capped?.results.length, 3);
  } finally {
    await prober.close();
    for (const s of silent) s.close();
  }
});

Deno.test("reach check: the preamble hook's bytes go first, before the ClientHello", async () => {
  const t = await startTestDirectory({
    reachCheck: { preamble: (c) => new TextEncoder().encode(`knock:${c.port};`) },
  });
  const alice = await enrollRaw(t.dir, "alice");
  const plain = await plainService();
  try {
    assert.equal((await publish(t, alice, [plain.address])).status, 200);
    await t.dir.reachChecksSettled();
    const got = plain.received();
    const pre = new TextEncoder().encode(`knock:${plain.address.port};`);
    assert.deepEqual(got.slice(0, pre.length), pre);
    assert.equal(got[pre.length], 0x16, "then the TLS handshake");
    // A hook that cannot say what to send: the candidate is not tried at all.
    const none = await probeCandidate(plain.address, { name: "alice", fingerprint: "00" }, {
      caCertPem: t.dir.caCertPem,
      preamble: () => {
        throw new Error("no knock secret for alice");
      },
    });
    assert.equal(none, "SKIPPED_PREAMBLE");
    assert.equal(plain.received().length, got.length, "nothing more reached the service");
  } finally {
    plain.close();
    await t.close();
  }
});

Deno.test("reach check off (serve --no-reach-check): nothing probed, candidates listed unchecked", async () => {
  const t = await startTestDirectory({ reachCheck: false });
  const alice = await enrollRaw(t.dir, "alice");
  const plain = await plainService();
  try {
    assert.equal((await publish(t, alice, [plain.address])).status, 200);
    await t.dir.reachChecksSettled();
    assert.equal(plain.received().length, 0);
    const e = await entryOf(t, "alice");
    assert.deepEqual([e.candidates, e.reachable, e.reachCheckedAt], [[plain.address], [], null]);
  } finally {
    plain.close();
    await t.close();
  }
});

Deno.test("reach check rules: names, scopes and the phonebook's own ports", () => {
  const ctx = (observed: string) => ({ observed, ownPorts: [10040, 10041], ownHosts: ["198.18.0.1"] });
  const pub = ctx("198.18.0.9");
  assert.equal(probeScope("::ffff:10.1.2.3"), "private");
  assert.equal(probeScope("fe80::1"), "link-local");
  assert.equal(probeScope("2001:db8::1"), "public");
  assert.equal(probeRefusal({ host: "198.18.0.5", port: 4000 }, pub), null);
  assert.equal(probeRefusal({ host: "2001:db8::5", port: 4000 }, pub), null);
  assert.equal(probeRefusal({ host: "chat.example.org", port: 4000 }, pub), "SKIPPED_NAME");
  // A user on the internet cannot point the phonebook at its own machine or the network it sits in.
  for (
    const host of ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.0.0.5", "192.168.1.1", "100.64.0.1", "fd00::1"]
  ) {
    assert.equal(probeRefusal({ host, port: 4000 }, pub), "SKIPPED_SCOPE", host);
  }
  for (const host of ["169.254.169.254", "fe80::1"]) {
    assert.equal(probeRefusal({ host, port: 80 }, ctx("10.0.0.9")), "SKIPPED_SCOPE", host);
  }
  // From its own LAN (or host), a LAN (or loopback) candidate is the user's own network: probed.
  assert.equal(probeRefusal({ host: "10.0.0.5", port: 4000 }, ctx("10.0.0.9")), null);
  assert.equal(probeRefusal({ host: "127.0.0.1", port: 4000 }, ctx("127.0.0.1")), null);
  assert.equal(probeRefusal({ host: "127.0.0.1", port: 4000 }, ctx("10.0.0.9")), "SKIPPED_SCOPE");
  // The phonebook's own ports on its own addresses, never; the same port elsewhere is someone else's.
  assert.equal(probeRefusal({ host: "198.18.0.1", port: 10041 }, pub), "SKIPPED_OWN_PORT");
  assert.equal(probeRefusal({ host: "127.0.0.1", port: 10040 }, ctx("127.0.0.1")), "SKIPPED_OWN_PORT");
  assert.equal(probeRefusal({ host: "198.18.0.7", port: 10041 }, pub), null);
  assert.equal(probeRefusal({ host: "198.18.0.5", port: 4000 }, ctx("")), null);
  // Interfaces unreadable: any address may be ours, so the own ports are refused on all of them.
  const blind = { observed: "198.18.0.9", ownPorts: [10040], ownHosts: null };
  assert.equal(probeRefusal({ host: "198.18.0.7", port: 10040 }, blind), "SKIPPED_OWN_PORT");
  assert.equal(probeRefusal({ host: "198.18.0.7", port: 4000 }, blind), null);
});
