import assert from "node:assert/strict";
import crypto from "node:crypto";
import { Buffer } from "node:buffer";
import fc from "fast-check";
import {
  encodeFrame,
  encodeFrames,
  type Frame,
  frameBytes,
  FrameDecoder,
  type HelloFrame,
  helloSignedData,
  MAX_ACK_IDS,
  MAX_CAPS,
  MAX_FRAME_BYTES,
  MAX_TTL_MS,
  parseFrame,
  ProtocolError,
  signHello,
  timeProofData,
  verifyHelloSignature,
} from "../client/protocol/mod.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";

const enc = new TextEncoder();
const ID = "0123456789abcdef0123456789abcdef";
const FP = "a".repeat(64);
const PROOF = { version: "rfc", publicKey: "AAAA", rand: "AAAA", request: "AAAA", response: "AAAA" } as const;

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ProtocolError) return e.code;
    throw e;
  }
  return "NO_ERROR";
}

function body(o: unknown): Uint8Array {
  return enc.encode(typeof o === "string" ? o : JSON.stringify(o));
}

const SAMPLES: Frame[] = [
  { t: "hello", v: 1, role: "dialer", from: "alice", to: "bob", fromFp: FP, toFp: FP, sig: "AAAA" },
  { t: "msg", id: ID, from: "alice", to: "bob", text: "hi ünïcødé 🙂", sentAt: 1700000000000 },
  {
    t: "msg",
    id: ID,
    from: "alice",
    to: "bob",
    text: "x",
    sentAt: 1,
    ttlMs: 30_000,
    ttlMode: "read",
    proof: { ...PROOF },
  },
  { t: "ack", id: ID },
  { t: "acks", ids: [ID, "f".repeat(32)] },
  {
    t: "hello",
    v: 1,
    role: "listener",
    from: "bob",
    to: "alice",
    fromFp: FP,
    toFp: FP,
    sig: "",
    caps: ["acks"],
  },
  { t: "read", id: ID, readAt: 5 },
  { t: "typing" },
  { t: "ping" },
  { t: "pong" },
  { t: "error", code: "BAD_TTL", message: "no" },
  { t: "bye", reason: "quit" },
];

Deno.test("every frame type survives encode -> decode -> parse unchanged", () => {
  for (const f of SAMPLES) {
    const d = new FrameDecoder();
    const out = d.push(encodeFrame(f));
    assert.equal(out.length, 1);
    assert.deepEqual(parseFrame(out[0]), f);
    assert.equal(d.buffered, 0);
  }
});

Deno.test("encodeFrames gives the bytes of encodeFrame of each, concatenated, multi-byte text included", () => {
  const frames: Frame[] = [...SAMPLES, {
    t: "msg",
    id: ID,
    from: "alice",
    to: "bob",
    text: "é€😀 ok",
    sentAt: 1,
  }];
  const each = new Uint8Array(frames.flatMap((f) => [...encodeFrame(f)]));
  assert.deepEqual(encodeFrames(frames), each);
  assert.deepEqual(encodeFrames([]), new Uint8Array(0));
  const big: Frame = { t: "error", code: "X", message: "y".repeat(100) };
  assert.equal(codeOf(() => encodeFrames([big], 50)), "FRAME_TOO_LARGE");
});

Deno.test("decoder: frames split at any byte boundaries come out whole and in order", () => {
  const stream = new Uint8Array(SAMPLES.flatMap((f) => [...encodeFrame(f)]));
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: stream.length }), { maxLength: 20 }), (cuts) => {
      const points = [...new Set(cuts)].sort((a, b) => a - b);
      const d = new FrameDecoder();
      const got: Frame[] = [];
      let prev = 0;
      for (const p of [...points, stream.length]) {
        for (const b of d.push(stream.subarray(prev, p))) got.push(parseFrame(b));
        prev = p;
      }
      assert.deepEqual(got, SAMPLES);
      d.end();
    }),
  );
});

Deno.test("decoder: length prefix 0 or 2^32-1 fails on the prefix alone, nothing buffered", () => {
  for (
    const [prefix, code] of [[[0, 0, 0, 0], "EMPTY_FRAME"], [
      [255, 255, 255, 255],
      "FRAME_TOO_LARGE",
    ]] as const
  ) {
    const d = new FrameDecoder();
    assert.equal(codeOf(() => d.push(new Uint8Array(prefix))), code);
    assert.equal(d.buffered, 0);
    // The stream cannot be resynchronised: later bytes keep failing.
    assert.equal(codeOf(() => d.push(new Uint8Array([1, 2, 3]))), code);
  }
  const d = new FrameDecoder();
  const over = new Uint8Array(4);
  new DataView(over.buffer).setUint32(0, MAX_FRAME_BYTES + 1);
  assert.equal(codeOf(() => d.push(over)), "FRAME_TOO_LARGE");
  assert.equal(codeOf(() => frameBytes(new Uint8Array(MAX_FRAME_BYTES + 1))), "FRAME_TOO_LARGE");
});

Deno.test("decoder: a stream that ends inside a frame is TRUNCATED and yields nothing of it", () => {
  const full = encodeFrame(SAMPLES[1]);
  const d = new FrameDecoder();
  assert.deepEqual(d.push(full.subarray(0, full.length - 1)), []);
  assert.equal(codeOf(() => d.end()), "TRUNCATED");
  const d2 = new FrameDecoder();
  d2.push(full.subarray(0, 2));
  assert.equal(codeOf(() => d2.end()), "TRUNCATED");
});

Deno.test("parser refuses hostile bodies with the documented codes", () => {
  const msg = { t: "msg", id: ID, from: "alice", to: "bob", text: "hi", sentAt: 1 };
  const cases: [Uint8Array, string][] = [
    [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "BAD_UTF8"],
    [new Uint8Array([0xc0, 0x80]), "BAD_UTF8"],
    [body("{not json"), "BAD_JSON"],
    [body("[1,2]"), "BAD_JSON"],
    [body("null"), "BAD_JSON"],
    [body({ t: "launch-missiles" }), "UNKNOWN_TYPE"],
    [body({ type: "msg" }), "UNKNOWN_TYPE"],
    [body('{"t":"ping","__proto__":{"admin":true}}'), "FORBIDDEN_KEY"],
    [body('{"t":"msg","x":{"constructor":{"prototype":1}}}'), "FORBIDDEN_KEY"],
    [body({ ...msg, id: "../etc" }), "BAD_FIELD"],
    [body({ ...msg, from: "Alice" }), "BAD_FIELD"],
    [body({ ...msg, text: 5 }), "BAD_FIELD"],
    [body({ ...msg, sentAt: -1 }), "BAD_FIELD"],
    [body({ ...msg, text: "é".repeat(9000) }), "BAD_FIELD"],
    [body({ ...msg, ttlMs: 0, proof: PROOF }), "BAD_TTL"],
    [body({ ...msg, ttlMs: -5000, proof: PROOF }), "BAD_TTL"],
    [body({ ...msg, ttlMs: "NaN", proof: PROOF }), "BAD_TTL"],
    [body({ ...msg, ttlMs: null, proof: PROOF }), "BAD_TTL"],
    [body({ ...msg, ttlMs: 1500.5, proof: PROOF }), "BAD_TTL"],
    [body({ ...msg, ttlMs: MAX_TTL_MS + 1, proof: PROOF }), "BAD_TTL"],
    [body({ ...msg, ttlMode: "read" }), "BAD_TTL"],
    [body({ ...msg, ttlMs: 5000 }), "BAD_TIME_PROOF"],
    [body({ ...msg, ttlMs: 5000, ttlMode: "forever", proof: PROOF }), "BAD_FIELD"],
    [
      body({ t: "hello", v: 1, role: "boss", from: "a1", to: "b1", fromFp: FP, toFp: FP, sig: "" }),
      "BAD_FIELD",
    ],
    [body({ t: "acks", ids: [] }), "BAD_FIELD"],
    [body({ t: "acks", ids: ID }), "BAD_FIELD"],
    [body({ t: "acks", ids: [ID, "../etc"] }), "BAD_FIELD"],
    [body({ t: "acks", ids: [ID, 5] }), "BAD_FIELD"],
    [body({ t: "acks", ids: new Array(MAX_ACK_IDS + 1).fill(ID) }), "BAD_FIELD"],
    [body({ t: "acks" }), "BAD_FIELD"],
    [body({ ...SAMPLES[0], caps: "acks" }), "BAD_FIELD"],
    [body({ ...SAMPLES[0], caps: ["ACKS"] }), "BAD_FIELD"],
    [body({ ...SAMPLES[0], caps: [{}] }), "BAD_FIELD"],
    [body({ ...SAMPLES[0], caps: new Array(MAX_CAPS + 1).fill("x") }), "BAD_FIELD"],
  ];
  // Unknown capabilities are kept (and ignored by the session): a newer peer may list more.
  assert.deepEqual((parseFrame(body({ ...SAMPLES[0], caps: ["acks", "later-thing"] })) as HelloFrame).caps, [
    "acks",
    "later-thing",
  ]);
  assert.equal(
    "caps" in parseFrame(body(SAMPLES[0])),
    false,
    "a hello without caps (an older peer) has none",
  );
  for (const [b, code] of cases) assert.equal(codeOf(() => parseFrame(b)), code, new TextDecoder().decode(b));
  // NaN cannot travel in JSON at all: JSON.stringify turns it into null, which is refused above.
  assert.equal(JSON.stringify({ ttlMs: NaN }), '{"ttlMs":null}');
});

Deno.test("parser never throws anything but ProtocolError on random bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
      try {
        parseFrame(b);
      } catch (e) {
        assert.ok(e instanceof ProtocolError);
      }
    }),
  );
});

Deno.test("hello signature: verifies with the signer's certificate only, and only for this binding", async () => {
  const ca = await makeTestCa();
  const alice = await makeTestLeaf(ca, "alice");
  const mallory = await makeTestLeaf(ca, "mallory");
  const edAlice = await makeTestLeaf(ca, "alice", { algorithm: "ed25519" });
  const binding = {
    role: "dialer" as const,
    from: "alice",
    to: "bob",
    fromFp: alice.fingerprint,
    toFp: FP,
    serverFinished: new Uint8Array(32).fill(1),
    clientFinished: new Uint8Array(32).fill(2),
  };
  const data = helloSignedData(binding);
  for (const leaf of [alice, edAlice]) {
    const sig = signHello(crypto.createPrivateKey(leaf.keyPem), data);
    assert.equal(verifyHelloSignature(leaf.certDer, data, sig), true);
    // Another connection (other Finished), another role, or another peer: the signature does not carry over.
    const other = helloSignedData({ ...binding, serverFinished: new Uint8Array(32).fill(9) });
    assert.equal(verifyHelloSignature(leaf.certDer, other, sig), false);
    assert.equal(
      verifyHelloSignature(leaf.certDer, helloSignedData({ ...binding, role: "listener" }), sig),
      false,
    );
  }
  // Alice's certificate with Mallory's key: refused.
  const forged = signHello(crypto.createPrivateKey(mallory.keyPem), data);
  assert.equal(verifyHelloSignature(alice.certDer, data, forged), false);
  assert.equal(verifyHelloSignature(alice.certDer, data, "not base64 at all"), false);
});

Deno.test("time proof data changes with every field that decides content or lifetime", () => {
  const base = {
    id: ID,
    from: "alice",
    to: "bob",
    text: "hi",
    sentAt: 1,
    ttlMs: 5000,
    ttlMode: "send" as "send" | "read",
  };
  const h = (m: typeof base) => Buffer.from(timeProofData(m)).toString("hex");
  const seen = new Set([h(base)]);
  for (
    const m of [
      { ...base, id: "f".repeat(32) },
      { ...base, from: "bob" },
      { ...base, to: "carol" },
      { ...base, text: "hi!" },
      { ...base, sentAt: 2 },
      { ...base, ttlMs: 5001 },
      { ...base, ttlMode: "read" as const },
    ]
  ) {
    assert.ok(!seen.has(h(m)));
    seen.add(h(m));
  }
});
