/**
 * Our server: replies verify with our client for every version and batch sizes 1-17 and 64; SRV key
 * selection; delegation window and rotation; it drops what it cannot serve, never answers with more bytes
 * than it received, and keeps serving after any input (also over real UDP, on either datagram API).
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { queryServer, type ServerSpec, startRoughtimeServer, verifyReply } from "../clock/mod.ts";
import { TAG, VERSION_DRAFT, VERSION_RFC } from "../clock/roughtime/constants.ts";
import { publicKeyFromSeed, randomBytes } from "../clock/roughtime/crypto.ts";
import { buildRequest } from "../clock/roughtime/request.ts";
import { Responder } from "../clock/roughtime/responder.ts";
import { defaultUdpApi } from "../clock/roughtime/udp.ts";
import {
  decodeMessage,
  encodeMessage,
  u32,
  u32List,
  unwrapPacket,
  wrapPacket,
} from "../clock/roughtime/wire.ts";

const VERSIONS = ["rfc", "draft", "google"] as const;

for (const version of VERSIONS) {
  Deno.test(`server ${version}: batches of 1-17 and 64 are signed once and every reply verifies`, () => {
    const seed = randomBytes(32);
    const pub = publicKeyFromSeed(seed);
    const responder = new Responder({ longTermSeed: seed });
    const sizes = [...Array.from({ length: 17 }, (_, i) => i + 1), 64];
    for (const n of sizes) {
      const reqs = Array.from({ length: n }, () => buildRequest({ version, serverPublicKey: pub }));
      const before = responder.stats.batches;
      const replies = responder.respond(reqs.map((r) => r.packet));
      assert.equal(responder.stats.batches, before + 1, `one signature for a batch of ${n}`);
      const sreps = new Set<string>();
      replies.forEach((reply, i) => {
        assert.ok(reply, `reply ${i} of ${n}`);
        assert.ok(reply.length <= reqs[i].packet.length);
        const v = verifyReply(reqs[i].packet, reply, pub);
        assert.equal(v.version, version);
        assert.equal(v.index, i);
        assert.equal(v.pathLength, Math.ceil(Math.log2(n)));
        const msg = decodeMessage(version === "google" ? reply : unwrapPacket(reply));
        sreps.add(Buffer.from(msg.get(TAG.SREP)!).toString("hex"));
      });
      assert.equal(sreps.size, 1);
      // A reply is bound to its own request: the neighbour's request fails.
      if (n > 1) assert.throws(() => verifyReply(reqs[1].packet, replies[0]!, pub));
    }
    assert.equal(responder.stats.largestBatch, 64);
  });
}

Deno.test("server: a mixed batch is split by version, and more than 64 requests by size", () => {
  const seed = randomBytes(32);
  const pub = publicKeyFromSeed(seed);
  const responder = new Responder({ longTermSeed: seed });
  const reqs = Array.from(
    { length: 150 },
    (_, i) => buildRequest({ version: VERSIONS[i % 3], serverPublicKey: pub }),
  );
  const replies = responder.respond(reqs.map((r) => r.packet));
  replies.forEach((r, i) => assert.equal(verifyReply(reqs[i].packet, r!, pub).version, VERSIONS[i % 3]));
  // 50 of each version: 3 batches of 50.
  assert.equal(responder.stats.batches, 3);
  assert.deepEqual({ ...responder.stats.batchSizes }, { 50: 3 });
  const many = Array.from({ length: 130 }, () => buildRequest({ version: "rfc", serverPublicKey: pub }));
  responder.respond(many.map((r) => r.packet)).forEach((r, i) => verifyReply(many[i].packet, r!, pub));
  assert.equal(responder.stats.batchSizes[64], 2);
  assert.equal(responder.stats.batchSizes[2], 1);
});

Deno.test("server: both IETF versions are answered as asked, the RFC preferred when both are offered", () => {
  const seed = randomBytes(32);
  const pub = publicKeyFromSeed(seed);
  const responder = new Responder({ longTermSeed: seed });
  for (
    const [offered, expected] of [[[VERSION_RFC], "rfc"], [[VERSION_DRAFT], "draft"], [[
      VERSION_RFC,
      VERSION_DRAFT,
    ], "rfc"], [
      [VERSION_RFC, VERSION_DRAFT, 0x80000010],
      "rfc",
    ]] as const
  ) {
    const req = buildRequest({ offered: [...offered], serverPublicKey: pub });
    assert.equal(verifyReply(req.packet, responder.respond([req.packet])[0]!, pub).version, expected);
  }
});

Deno.test("server: SRV selects among several long-term keys; unknown SRV, or none with several keys, is dropped", () => {
  const a = randomBytes(32);
  const b = randomBytes(32);
  const multi = new Responder({ longTermSeed: a, extraLongTermSeeds: [b] });
  for (const seed of [a, b]) {
    const pub = publicKeyFromSeed(seed);
    const req = buildRequest({ serverPublicKey: pub });
    verifyReply(req.packet, multi.respond([req.packet])[0]!, pub);
  }
  const stranger = buildRequest({ serverPublicKey: publicKeyFromSeed(randomBytes(32)) });
  assert.equal(multi.respond([stranger.packet])[0], null);
  assert.equal(multi.respond([buildRequest({}).packet])[0], null);
  assert.equal(multi.respond([buildRequest({ version: "google" }).packet])[0], null);
  // With a single key, a request without SRV is served.
  const single = new Responder({ longTermSeed: a });
  const plain = buildRequest({});
  assert.equal(plain.srv, null);
  verifyReply(plain.packet, single.respond([plain.packet])[0] ?? new Uint8Array(), publicKeyFromSeed(a));
});

Deno.test("server: undersized, oversized and malformed requests are dropped, never answered", () => {
  const seed = randomBytes(32);
  const pub = publicKeyFromSeed(seed);
  const responder = new Responder({ longTermSeed: seed });
  const nonce = randomBytes(32);
  const ietf = (entries: [number, Uint8Array][], size = 1024) => {
    const used = 8 * (entries.length + 1) + entries.reduce((s, [, v]) => s + v.length, 0);
    return wrapPacket(encodeMessage([...entries, [TAG.ZZZZ, new Uint8Array(size - 12 - used)]]));
  };
  const dropped: [string, Uint8Array][] = [
    ["undersized IETF", buildRequest({ serverPublicKey: pub, size: 1020 }).packet],
    ["undersized Google", buildRequest({ version: "google", size: 1020 }).packet],
    ["oversized", buildRequest({ serverPublicKey: pub, size: 1476 }).packet],
    ["empty", new Uint8Array()],
    ["zeros", new Uint8Array(1024)],
    ["TYPE 1", ietf([[TAG.VER, u32(VERSION_RFC)], [TAG.NONC, nonce], [TAG.TYPE, u32(1)]])],
    ["RFC without TYPE", ietf([[TAG.VER, u32(VERSION_RFC)], [TAG.NONC, nonce]])],
    [
      "unknown versions only",
      ietf([[TAG.VER, u32List([2, 0x80000008])], [TAG.NONC, nonce], [TAG.TYPE, u32(0)]]),
    ],
    ["no NONC", ietf([[TAG.VER, u32(VERSION_RFC)], [TAG.TYPE, u32(0)]])],
    [
      "short NONC",
      ietf([[TAG.VER, u32(VERSION_RFC)], [TAG.NONC, nonce.subarray(0, 28)], [TAG.TYPE, u32(0)]]),
    ],
    [
      "VER not ascending",
      ietf([[TAG.VER, u32List([VERSION_DRAFT, VERSION_RFC].sort().reverse())], [TAG.NONC, nonce], [
        TAG.TYPE,
        u32(0),
      ]]),
    ],
  ];
  for (const [what, packet] of dropped) assert.equal(responder.respond([packet])[0], null, what);
  // Largest accepted: 1472 bytes. A draft client that sends no TYPE is still served.
  const big = buildRequest({ serverPublicKey: pub, size: 1472 });
  assert.ok(responder.respond([big.packet])[0]);
  const draftNoType = ietf([[TAG.VER, u32(VERSION_DRAFT)], [TAG.NONC, nonce]]);
  const r = responder.respond([draftNoType])[0];
  assert.ok(r && r.length <= draftNoType.length);
  assert.equal(verifyReply(draftNoType, r, pub).version, "draft");
  // A bad request in a batch does not spoil the good ones next to it.
  const good = buildRequest({ serverPublicKey: pub });
  const out = responder.respond([dropped[0][1], good.packet, dropped[4][1]]);
  assert.deepEqual(out.map((x) => x !== null), [false, true, false]);
  verifyReply(good.packet, out[1]!, pub);
});

Deno.test("server: the online key is delegated for a window around now and rotated; replies stay valid", () => {
  const seed = randomBytes(32);
  const pub = publicKeyFromSeed(seed);
  let now = Date.UTC(2026, 10, 28);
  const responder = new Responder({ longTermSeed: seed, now: () => now, delegationValidityMs: 3600_000 });
  const ask = (version: "rfc" | "google") => {
    const req = buildRequest({ version, serverPublicKey: pub });
    return verifyReply(req.packet, responder.respond([req.packet])[0]!, pub);
  };
  const first = ask("rfc");
  assert.ok(first.mint <= first.midp && first.midp <= first.maxt);
  assert.equal(first.midp, BigInt(now / 1000));
  assert.equal(ask("google").midp, BigInt(now) * 1000n);
  now += 1000_000; // before rotateAt (validity / 2)
  assert.deepEqual(ask("rfc").onlineKey, first.onlineKey);
  now += 1000_000; // past rotateAt
  const rotated = ask("rfc");
  assert.notDeepEqual(rotated.onlineKey, first.onlineKey);
  assert.equal(responder.stats.rotations, 1);
  now -= 86400_000; // a clock stepped back out of the window: a fresh delegation covers it
  const back = ask("rfc");
  assert.ok(back.mint <= back.midp);
  assert.equal(responder.stats.rotations, 2);
});

function udpClient(): Promise<dgram.Socket> {
  const s = dgram.createSocket("udp4");
  return new Promise((resolve) => s.bind(0, "127.0.0.1", () => resolve(s)));
}

function nextMessage(s: dgram.Socket): Promise<Uint8Array> {
  return new Promise((resolve) => s.once("message", (m: Uint8Array) => resolve(new Uint8Array(m))));
}

// Both datagram APIs the server can run on: Deno.listenDatagram (the default) and node:dgram (the fallback
// for a runtime without the "net" unstable flag).
for (const api of ["deno", "node"] as const) {
  Deno.test(`server over UDP (${api}): garbage is dropped (the next reply on the socket is to the good request) and serving goes on`, async () => {
    const seed = randomBytes(32);
    const server = await startRoughtimeServer({ longTermSeed: seed, port: 0, udpApi: api });
    const client = await udpClient();
    try {
      const spec: ServerSpec = {
        name: "local",
        host: "127.0.0.1",
        port: server.port,
        publicKey: server.publicKey,
      };
      const junk = [
        new Uint8Array(0),
        new Uint8Array(1),
        buildRequest({ serverPublicKey: server.publicKey, size: 1020 }).packet,
        randomBytes(1024),
        randomBytes(1472),
        randomBytes(2000),
        wrapPacket(new Uint8Array(1012).fill(0xff)),
      ];
      for (let round = 0; round < 3; round++) {
        for (const j of junk) client.send(j, server.port, "127.0.0.1");
        const good = buildRequest({ version: VERSIONS[round], serverPublicKey: server.publicKey });
        const reply = nextMessage(client);
        client.send(good.packet, server.port, "127.0.0.1");
        const r = await reply;
        assert.ok(r.length <= good.packet.length);
        assert.equal(verifyReply(good.packet, r, server.publicKey).version, VERSIONS[round]);
      }
      const res = await queryServer(spec, { timeoutMs: 2000 });
      assert.equal(res.reply.version, "rfc");
      const st = server.stats();
      assert.equal(st.dropped, 3 * junk.length);
      assert.equal(st.answered, 4);
    } finally {
      client.close();
      await server.close();
    }
  });

  Deno.test(`server over UDP (${api}): concurrent queries of every version all verify; batch sizes add up`, async () => {
    const server = await startRoughtimeServer({
      longTermSeed: randomBytes(32),
      port: 0,
      batchWindowMs: 5,
      udpApi: api,
    });
    try {
      const specs = VERSIONS.map((version): ServerSpec => ({
        name: version,
        host: "127.0.0.1",
        port: server.port,
        publicKey: server.publicKey,
        version,
      }));
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, i) => queryServer(specs[i % 3], { timeoutMs: 3000 })),
      );
      results.forEach((r, i) => assert.equal(r.reply.version, VERSIONS[i % 3]));
      const st = server.stats();
      const total = Object.entries(st.batchSizes).reduce((s, [size, count]) => s + Number(size) * count, 0);
      assert.equal(total, st.answered);
      assert.ok(st.answered >= 30);
    } finally {
      await server.close();
    }
  });
}

Deno.test("server: a clock returning nonsense (NaN, negative) makes the server drop, not sign garbage", () => {
  const seed = randomBytes(32);
  const pub = publicKeyFromSeed(seed);
  for (const bad of [NaN, -1, Infinity]) {
    const responder = new Responder({ longTermSeed: seed, now: () => bad });
    const req = buildRequest({ serverPublicKey: pub });
    assert.deepEqual(responder.respond([req.packet]), [null]);
  }
});

Deno.test("server: a program run without the net unstable flag falls back to node:dgram, which serves", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/serve.ts`;
    const udp = JSON.stringify(new URL("../clock/roughtime/udp.ts", import.meta.url).href);
    // The socket layer on its own (the server's other modules need deno.json's import map): it picks its
    // API, binds, and answers one datagram through it.
    await Deno.writeTextFile(
      script,
      `import dgram from "node:dgram";
import { bindUdp, defaultUdpApi } from ${udp};
const api = defaultUdpApi();
const ep = await bindUdp(api, "127.0.0.1", 0, (packet, from) => ep.send(packet.subarray(0, 4), from));
const c = dgram.createSocket("udp4");
const got = new Promise<number>((r) => c.on("message", (m: Uint8Array) => r(m.length)));
c.send(new Uint8Array(100), ep.port, "127.0.0.1");
console.log(JSON.stringify({ api, replyBytes: await got }));
c.close();
await ep.close();
`,
    );
    // --no-config: no deno.json, so no "unstable": ["net"] and no Deno.listenDatagram.
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-config", "--allow-net", "--allow-read", script],
      env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.ok(out.success, dec.decode(out.stderr));
    assert.deepEqual(JSON.parse(dec.decode(out.stdout)), { api: "node", replyBytes: 4 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server: with the net unstable flag (deno.json) the default datagram API is Deno.listenDatagram", () => {
  assert.equal(typeof Deno.listenDatagram, "function");
  assert.equal(defaultUdpApi(), "deno");
});

Deno.test("server over UDP: datagrams already queued on the socket are answered as one batch", async () => {
  const server = await startRoughtimeServer({ longTermSeed: randomBytes(32), port: 0 });
  const client = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: server.port };
    const reqs = Array.from({ length: 20 }, () => buildRequest({ serverPublicKey: server.publicKey }));
    // All sent before this test yields to the event loop, so the server finds all 20 waiting at once.
    const sent = reqs.map((r) => client.send(r.packet, to));
    await Promise.all(sent);
    const byNonce = new Map(reqs.map((r) => [Buffer.from(r.nonce).toString("hex"), r]));
    for (let i = 0; i < reqs.length; i++) {
      const [reply] = await client.receive();
      const nonce = decodeMessage(unwrapPacket(reply)).get(TAG.NONC)!;
      const req = byNonce.get(Buffer.from(nonce).toString("hex"))!;
      assert.equal(verifyReply(req.packet, reply, server.publicKey).pathLength, 5, "a path in a tree of 20");
    }
    assert.deepEqual(server.stats().batchSizes, { 20: 1 });
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("server over UDP: listens on IPv6 loopback and answers there", async () => {
  const server = await startRoughtimeServer({ longTermSeed: randomBytes(32), hostname: "::1", port: 0 });
  try {
    const spec: ServerSpec = { name: "v6", host: "::1", port: server.port, publicKey: server.publicKey };
    assert.equal((await queryServer(spec, { timeoutMs: 2000 })).reply.version, "rfc");
  } finally {
    await server.close();
  }
});
