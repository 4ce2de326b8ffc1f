/**
 * The UDP client against misbehaving fake servers: replies from an unexpected address are ignored,
 * duplicates are harmless, truncated/oversized/replayed/downgraded replies are refused with their typed
 * error (reported when nothing valid arrives), a forged datagram cannot block a valid reply behind it,
 * lost requests are resent, and an unreachable server costs at most the configured timeout.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { queryServer, RoughtimeError, type RoughtimeErrorCode, type ServerSpec } from "../clock/mod.ts";
import { VERSION_DRAFT } from "../clock/roughtime/constants.ts";
import { publicKeyFromSeed, randomBytes } from "../clock/roughtime/crypto.ts";
import { parseRequest, type RoughtimeRequest } from "../clock/roughtime/request.ts";
import { forgeReply, nowUnits } from "./helpers/roughtime.ts";

type Send = (data: Uint8Array, via?: "same" | "other") => void;

interface FakeServer {
  spec: ServerSpec;
  received: number;
  close(): Promise<void>;
}

/** A UDP server whose behaviour per request is scripted by `handle`. */
async function fakeServer(
  version: ServerSpec["version"],
  handle: (req: RoughtimeRequest, send: Send, seed: Uint8Array, n: number) => void,
): Promise<FakeServer> {
  const seed = randomBytes(32);
  const main = dgram.createSocket("udp4");
  const other = dgram.createSocket("udp4");
  await new Promise<void>((r) => main.bind(0, "127.0.0.1", () => r()));
  await new Promise<void>((r) => other.bind(0, "127.0.0.1", () => r()));
  const fake: FakeServer = {
    spec: {
      name: "fake",
      host: "127.0.0.1",
      port: main.address().port,
      publicKey: publicKeyFromSeed(seed),
      version,
    },
    received: 0,
    close: async () => {
      await new Promise<void>((r) => main.close(() => r()));
      await new Promise<void>((r) => other.close(() => r()));
    },
  };
  main.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
    fake.received++;
    const send: Send = (data, via = "same") =>
      (via === "same" ? main : other).send(data, rinfo.port, rinfo.address);
    handle(parseRequest(new Uint8Array(msg)), send, seed, fake.received);
  });
  return fake;
}

function honest(req: RoughtimeRequest, seed: Uint8Array): Uint8Array {
  return forgeReply(req, {
    longTermSeed: seed,
    midp: nowUnits(req.family),
    radi: req.family === "ietf" ? 3 : 1_000_000,
  });
}

async function expectError(p: Promise<unknown>, code: RoughtimeErrorCode): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RoughtimeError, String(e));
    assert.equal(e.code, code, e.message);
    return true;
  });
}

Deno.test("client: a reply from an unexpected address is ignored (TIMEOUT), the same bytes from the server are accepted", async () => {
  const fake = await fakeServer("rfc", (req, send, seed) => send(honest(req, seed), "other"));
  try {
    await expectError(queryServer(fake.spec, { timeoutMs: 400 }), "TIMEOUT");
  } finally {
    await fake.close();
  }
  const ok = await fakeServer("rfc", (req, send, seed) => send(honest(req, seed), "same"));
  try {
    assert.equal((await queryServer(ok.spec, { timeoutMs: 2000 })).reply.version, "rfc");
  } finally {
    await ok.close();
  }
});

Deno.test("client: duplicate datagrams are harmless", async () => {
  const fake = await fakeServer("google", (req, send, seed) => {
    const r = honest(req, seed);
    for (let i = 0; i < 5; i++) send(r);
  });
  try {
    const res = await queryServer(fake.spec, { timeoutMs: 2000 });
    assert.equal(res.reply.version, "google");
    assert.ok(res.rttMs >= 0);
  } finally {
    await fake.close();
  }
});

const badReplies: [
  string,
  RoughtimeErrorCode,
  ServerSpec["version"],
  (req: RoughtimeRequest, seed: Uint8Array) => Uint8Array,
][] = [
  ["truncated", "TRUNCATED", "rfc", (req, seed) => honest(req, seed).subarray(0, 200)],
  ["oversized", "RESPONSE_TOO_LARGE", "rfc", (req, seed) => {
    const big = new Uint8Array(req.packet.length + 8);
    big.set(honest(req, seed));
    return big;
  }],
  ["replayed for an older nonce", "NONCE_MISMATCH", "draft", (req, seed) => {
    const old = parseRequest(req.packet.slice());
    old.nonce = randomBytes(32);
    return forgeReply(old, { longTermSeed: seed, midp: nowUnits("ietf"), radi: 3 });
  }],
  [
    "downgraded to a version not offered",
    "VERSION_NOT_OFFERED",
    "rfc",
    (req, seed) =>
      forgeReply(req, { longTermSeed: seed, midp: nowUnits("ietf"), radi: 3, version: VERSION_DRAFT }),
  ],
  ["signed by another key", "BAD_DELEGATION_SIGNATURE", "google", (req) => honest(req, randomBytes(32))],
];

for (const [what, code, version, make] of badReplies) {
  Deno.test(`client: a reply ${what} is refused with ${code}`, async () => {
    const fake = await fakeServer(version, (req, send, seed) => send(make(req, seed)));
    try {
      await expectError(queryServer(fake.spec, { timeoutMs: 400, initialRetryMs: 100 }), code);
      assert.ok(fake.received >= 2, "the client resent while waiting for a valid reply");
    } finally {
      await fake.close();
    }
  });
}

Deno.test("client: a forged datagram ahead of the genuine reply does not block it", async () => {
  const fake = await fakeServer("rfc", (req, send, seed) => {
    send(honest(req, randomBytes(32)));
    send(honest(req, seed).subarray(0, 100));
    send(honest(req, seed));
  });
  try {
    assert.equal((await queryServer(fake.spec, { timeoutMs: 2000 })).reply.version, "rfc");
  } finally {
    await fake.close();
  }
});

Deno.test("client: lost requests are resent with backoff until answered", async () => {
  const fake = await fakeServer("draft", (req, send, seed, n) => {
    if (n >= 3) send(honest(req, seed));
  });
  try {
    const res = await queryServer(fake.spec, { timeoutMs: 3000, initialRetryMs: 30 });
    assert.equal(res.reply.version, "draft");
    assert.ok(fake.received >= 3);
  } finally {
    await fake.close();
  }
});

Deno.test("client: an unreachable server fails with TIMEOUT within the configured bound", async () => {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  const port = sock.address().port;
  await new Promise<void>((r) => sock.close(() => r()));
  const spec: ServerSpec = {
    name: "gone",
    host: "127.0.0.1",
    port,
    publicKey: publicKeyFromSeed(randomBytes(32)),
  };
  const t0 = performance.now();
  await expectError(queryServer(spec, { timeoutMs: 300 }), "TIMEOUT");
  // Bounded, with generous slack for a loaded machine: this checks the bound, not speed.
  assert.ok(performance.now() - t0 < 300 + 1500);
});
