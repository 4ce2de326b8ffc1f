/**
 * The wire codec: round-trip property, precise errors for each malformation, and fuzzing (random bytes and
 * structure-aware mutations of valid requests and replies) that may only ever raise RoughtimeError.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checkReport,
  parseServerSpec,
  RoughtimeError,
  type RoughtimeErrorCode,
  verifyReply,
} from "../clock/mod.ts";
import { publicKeyFromSeed, randomBytes } from "../clock/roughtime/crypto.ts";
import { buildRequest, parseRequest } from "../clock/roughtime/request.ts";
import { Responder } from "../clock/roughtime/responder.ts";
import { verifyLegacyReply } from "../clock/roughtime/legacy.ts";
import { decodeMessage, encodeMessage, u32, unwrapPacket, wrapPacket } from "../clock/roughtime/wire.ts";

function rejects(fn: () => unknown, code: RoughtimeErrorCode): void {
  assert.throws(fn, (e: unknown) => e instanceof RoughtimeError && e.code === code);
}

/** Only RoughtimeError may escape; anything else (RangeError from a DataView, TypeError...) is a bug. */
function onlyTyped(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof RoughtimeError)) throw new Error(`untyped error escaped: ${e}`);
  }
}

const entriesArb = fc.uniqueArray(
  fc.tuple(
    fc.nat({ max: 0xffffffff }),
    fc.uint8Array({ maxLength: 64 }).map((b) => b.subarray(0, b.length & ~3)),
  ),
  { selector: (e) => e[0], maxLength: 12 },
);

Deno.test("codec property: encode then decode gives back the same tags and values, and re-encodes identically", () => {
  fc.assert(
    fc.property(entriesArb, (entries) => {
      const bytes = encodeMessage(entries);
      const msg = decodeMessage(bytes);
      const sorted = [...entries].sort((a, b) => a[0] - b[0]);
      assert.deepEqual([...msg.keys()], sorted.map((e) => e[0]));
      for (const [tag, v] of sorted) assert.deepEqual(msg.get(tag), v);
      assert.deepEqual(encodeMessage(msg), bytes);
      assert.deepEqual(decodeMessage(unwrapPacket(wrapPacket(bytes))), msg);
    }),
    { numRuns: 500 },
  );
});

Deno.test("codec: each malformation has its own error", () => {
  rejects(() => decodeMessage(new Uint8Array(0)), "TRUNCATED");
  rejects(() => decodeMessage(new Uint8Array(3)), "TRUNCATED");
  rejects(() => decodeMessage(new Uint8Array(6)), "BAD_OFFSETS"); // not a multiple of 4
  rejects(() => decodeMessage(u32(0x10000)), "TRUNCATED"); // header larger than the message
  rejects(() => decodeMessage(new Uint8Array([0, 0, 0, 0, 1, 2, 3, 4])), "BAD_OFFSETS"); // N=0 with bytes
  assert.equal(decodeMessage(u32(0)).size, 0);
  const good = encodeMessage([[1, new Uint8Array(4)], [2, new Uint8Array(8)], [3, new Uint8Array(4)]]);
  const v = new DataView(good.buffer);
  const misaligned = good.slice();
  new DataView(misaligned.buffer).setUint32(4, 2, true);
  rejects(() => decodeMessage(misaligned), "BAD_OFFSETS");
  const backwards = good.slice();
  new DataView(backwards.buffer).setUint32(8, 0, true);
  rejects(() => decodeMessage(backwards), "BAD_OFFSETS");
  const past = good.slice();
  new DataView(past.buffer).setUint32(8, 400, true);
  rejects(() => decodeMessage(past), "TRUNCATED");
  const unordered = good.slice();
  new DataView(unordered.buffer).setUint32(12 + 4, 1, true); // second tag = first tag
  rejects(() => decodeMessage(unordered), "BAD_TAG_ORDER");
  assert.equal(v.getUint32(0, true), 3);
  rejects(() => encodeMessage([[1, new Uint8Array(4)], [1, new Uint8Array(4)]]), "BAD_TAG_ORDER");
  rejects(() => encodeMessage([[1, new Uint8Array(3)]]), "BAD_FIELD_LENGTH");
  const packet = wrapPacket(good);
  rejects(() => unwrapPacket(packet.subarray(0, 11)), "TRUNCATED");
  rejects(() => unwrapPacket(packet.subarray(0, packet.length - 4)), "TRUNCATED");
  const magic = packet.slice();
  magic[0] ^= 1;
  rejects(() => unwrapPacket(magic), "BAD_HEADER");
  const trailing = new Uint8Array(packet.length + 4);
  trailing.set(packet);
  rejects(() => unwrapPacket(trailing), "BAD_HEADER");
});

Deno.test("codec: requests of each family are 1024 bytes and parse back", () => {
  const key = publicKeyFromSeed(randomBytes(32));
  for (const version of ["rfc", "draft", "google", undefined] as const) {
    const r = buildRequest({ version, serverPublicKey: version === "google" ? undefined : key });
    assert.equal(r.packet.length, 1024);
    const p = parseRequest(r.packet);
    assert.deepEqual(p.nonce, r.nonce);
    assert.deepEqual(p.offered, r.offered);
    assert.deepEqual(p.srv, r.srv);
  }
  rejects(() => buildRequest({ nonce: new Uint8Array(31) }), "BAD_ARGUMENT");
  const tooMany = encodeMessage([[0x00524556, new Uint8Array(4 * 33)], [0x434e4f4e, new Uint8Array(32)]]);
  rejects(() => parseRequest(wrapPacket(tooMany)), "BAD_VALUE");
});

Deno.test("codec: server specs parse HOST:PORT:KEY[:VERSION] and refuse the rest", () => {
  const key = "AW5uAoTSTDfG5NfY1bTh08GUnOqlRb+HVhbJ3ODJvsE=";
  const s = parseServerSpec(`roughtime.int08h.com:2002:${key}`);
  assert.equal(s.host, "roughtime.int08h.com");
  assert.equal(s.port, 2002);
  assert.equal(s.publicKey.length, 32);
  assert.equal(s.version, undefined);
  assert.equal(parseServerSpec(`127.0.0.1:1:${key}:google`).version, "google");
  assert.equal(parseServerSpec(`[::1]:2002:${key}:draft`).host, "::1");
  for (
    const bad of [
      "",
      "host",
      `host:0:${key}`,
      `host:70000:${key}`,
      "host:2002:notbase64!",
      "host:2002:AAAA",
      `host:2002:${key}:v9`,
      `:2002:${key}`,
      `host:2002:${key}:rfc:x`,
    ]
  ) {
    rejects(() => parseServerSpec(bad), "BAD_SERVER_SPEC");
  }
});

const longTermSeed = randomBytes(32);
const responder = new Responder({ longTermSeed });
const pub = publicKeyFromSeed(longTermSeed);
const samples = (["rfc", "draft", "google"] as const).map((version) => {
  const req = buildRequest({ version, serverPublicKey: version === "google" ? undefined : pub });
  const reply = responder.respond([req.packet])[0];
  assert.ok(reply);
  return { req: req.packet, reply };
});

Deno.test("fuzz: random bytes only ever raise RoughtimeError (codec, request parser, reply verifier, reports)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 1500 }), fc.boolean(), (bytes, header) => {
      const input = header ? wrapPacket(bytes.subarray(0, bytes.length & ~3)) : bytes;
      onlyTyped(() => decodeMessage(input));
      onlyTyped(() => unwrapPacket(input));
      onlyTyped(() => parseRequest(input));
      for (const s of samples) {
        onlyTyped(() => verifyLegacyReply(s.req, input, pub));
        onlyTyped(() => verifyReply(s.req, input, pub));
        onlyTyped(() => verifyReply(input, s.reply, pub));
      }
      // The server drops anything it cannot serve: no exception, no reply.
      assert.equal(responder.respond([input])[0], null);
    }),
    { numRuns: 400 },
  );
});

/** Structure-aware mutations: flip bits, overwrite uint32 fields (counts, offsets, tags) with edge values,
 * truncate, extend, splice bytes from another valid message. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
  fc.record({
    kind: fc.constant("u32" as const),
    at: fc.nat(),
    value: fc.constantFrom(0, 1, 3, 4, 0x7fffffff, 0x80000000, 0xfffffffc, 0xffffffff, 0x0c000080, 1024),
  }),
  fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("grow" as const), n: fc.integer({ min: 1, max: 64 }) }),
  fc.record({
    kind: fc.constant("splice" as const),
    at: fc.nat(),
    from: fc.nat(),
    len: fc.integer({ min: 1, max: 96 }),
  }),
);

type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(base: Uint8Array, other: Uint8Array, ms: Mutation[]): Uint8Array {
  let b = base.slice();
  for (const m of ms) {
    if (b.length === 0) break;
    if (m.kind === "flip") b[m.at % b.length] ^= 1 << m.bit;
    else if (m.kind === "u32") {
      const at = (m.at % Math.max(1, b.length >> 2)) * 4;
      if (at + 4 <= b.length) new DataView(b.buffer).setUint32(at, m.value, true);
    } else if (m.kind === "cut") b = b.slice(0, m.at % b.length);
    else if (m.kind === "grow") {
      const g = new Uint8Array(b.length + m.n);
      g.set(b);
      b = g;
    } else {
      const from = m.from % other.length;
      const piece = other.subarray(from, from + m.len);
      const at = m.at % b.length;
      b.set(piece.subarray(0, b.length - at), at);
    }
  }
  return b;
}

Deno.test("fuzz: structure-aware mutations of valid replies and requests only raise RoughtimeError", () => {
  fc.assert(
    fc.property(fc.nat({ max: 2 }), fc.array(mutation, { minLength: 1, maxLength: 4 }), (which, ms) => {
      const s = samples[which];
      const other = samples[(which + 1) % 3].reply;
      const badReply = mutate(s.reply, other, ms);
      onlyTyped(() => verifyReply(s.req, badReply, pub));
      onlyTyped(() => verifyLegacyReply(s.req, badReply, pub));
      const badReq = mutate(s.req, s.reply, ms);
      onlyTyped(() => parseRequest(badReq));
      const out = responder.respond([badReq])[0];
      // Whatever the server makes of a mutated request, it never answers with more bytes than it got.
      if (out) assert.ok(out.length <= badReq.length);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("fuzz: arbitrary JSON as a malfeasance report is refused with BAD_REPORT, never a crash", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      try {
        checkReport({ responses: [v] });
        assert.fail("accepted a random report");
      } catch (e) {
        assert.ok(e instanceof RoughtimeError && e.code === "BAD_REPORT", String(e));
      }
      onlyTyped(() => checkReport(v));
    }),
    { numRuns: 300 },
  );
});
