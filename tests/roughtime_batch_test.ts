/**
 * The server's batch path, checked against references that share no code with it: cloudflare's server (its
 * Google-Roughtime batches in tests/testdata/roughtime/), and every reply of a batch is
 * the batch's template with only NONC, PATH and INDX changed, its PATH and ROOT equal a Merkle tree built here
 * with node:crypto, and it verifies with our client, also after batches of other sizes reused the same
 * buffers; the in-place request scanner agrees with a parser written here from the spec on valid, mutated
 * and random datagrams; the in-place SHA-512 helpers of the tree equal a plain SHA-512 of prefix || input.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { verifyReply } from "../clock/mod.ts";
import { MAX_VERSIONS, TAG } from "../clock/roughtime/constants.ts";
import {
  publicKeyFromSeed,
  randomBytes,
  sha512Prefixed,
  sha512PrefixedInto,
} from "../clock/roughtime/crypto.ts";
import { RoughtimeError } from "../clock/roughtime/errors.ts";
import { buildRequest, parseRequest } from "../clock/roughtime/request.ts";
import { Responder } from "../clock/roughtime/responder.ts";
import { buildResponses } from "../clock/roughtime/response.ts";
import {
  decodeMessage,
  encodeMessage,
  readU32,
  readU64,
  u32,
  u32List,
  unwrapPacket,
  wrapPacket,
} from "../clock/roughtime/wire.ts";
import { hex, readVectorJson } from "./helpers/roughtime.ts";

const VERSIONS = ["rfc", "draft", "google"] as const;

function sha512(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha512");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** The RFC 10049 section 5.3 tree, level by level with node:crypto: root and each leaf's PATH. */
function referenceTree(ietf: boolean, data: Uint8Array[]): { root: Uint8Array; paths: Uint8Array[] } {
  const size = ietf ? 32 : 64;
  const cut = (d: Uint8Array) => d.subarray(0, size);
  let level = data.map((d) => cut(sha512(new Uint8Array([0]), d)));
  while (level.length & (level.length - 1)) level.push(new Uint8Array(size));
  const paths: Uint8Array[][] = data.map(() => []);
  for (let d = 0; level.length > 1; d++) {
    data.forEach((_, i) => paths[i].push(level[(i >>> d) ^ 1]));
    const next: Uint8Array[] = [];
    for (let k = 0; k < level.length; k += 2) {
      next.push(cut(sha512(new Uint8Array([1]), level[k], level[k + 1])));
    }
    level = next;
  }
  const flat = (hs: Uint8Array[]) => {
    const out = new Uint8Array(hs.length * size);
    hs.forEach((h, i) => out.set(h, i * size));
    return out;
  };
  return { root: level[0], paths: paths.map(flat) };
}

for (const version of VERSIONS) {
  Deno.test(`batch path ${version}: each reply is the template with its own NONC, PATH (= a node:crypto tree) and INDX, and verifies, across reused buffers`, () => {
    const seed = randomBytes(32);
    const pub = publicKeyFromSeed(seed);
    const responder = new Responder({ longTermSeed: seed });
    const ietf = version !== "google";
    // Shrinking and growing sizes: a batch must not see the leaves or levels a larger one left behind.
    for (const n of [64, 3, 17, 1, 5, 33, 2, 64]) {
      const reqs = Array.from({ length: n }, () => buildRequest({ version, serverPublicKey: pub }));
      const replies = responder.respond(reqs.map((r) => r.packet));
      const ref = referenceTree(ietf, reqs.map((r) => (ietf ? r.packet : r.nonce)));
      let template: Uint8Array | null = null;
      const changing: [number, number][] = [];
      replies.forEach((reply, i) => {
        assert.ok(reply, `reply ${i} of ${n}`);
        const msg = decodeMessage(ietf ? unwrapPacket(reply) : reply);
        assert.deepEqual(msg.get(TAG.NONC), reqs[i].nonce, `NONC of ${i}/${n}`);
        assert.deepEqual(msg.get(TAG.INDX), u32(i), `INDX of ${i}/${n}`);
        assert.deepEqual(msg.get(TAG.PATH), ref.paths[i], `PATH of ${i}/${n}`);
        assert.deepEqual(decodeMessage(msg.get(TAG.SREP)!).get(TAG.ROOT), ref.root, `ROOT of ${n}`);
        assert.equal(verifyReply(reqs[i].packet, reply, pub).index, i);
        if (!template) {
          template = reply;
          for (const tag of [TAG.NONC, TAG.PATH, TAG.INDX]) {
            const v = msg.get(tag)!;
            const at = v.byteOffset - reply.byteOffset;
            changing.push([at, at + v.length]);
          }
        }
        // Outside NONC, PATH and INDX every reply of a batch has the template's bytes.
        assert.equal(reply.length, template.length);
        const t = template;
        const same = reply.every((b, j) => b === t[j] || changing.some(([s, e]) => j >= s && j < e));
        assert.ok(same, `reply ${i}/${n} differs from the template outside NONC, PATH and INDX`);
      });
    }
  });
}

type Parsed = {
  family: string;
  nonce: string;
  offered: number[];
  srv: string | null;
  type: number | null;
};

const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** A request parser written from RFC 10049 sections 4 and 5.1, sharing no code with clock/roughtime. */
function referenceParse(p: Uint8Array): Parsed | string {
  const rd = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset + at, 4).getUint32(0, true);
  const decode = (m: Uint8Array): Map<number, Uint8Array> | string => {
    if (m.length < 4 || m.length > 65536 || m.length % 4) return "bad length";
    const n = rd(m, 0);
    if (n === 0) return m.length === 4 ? new Map() : "trailing";
    if (8 * n > m.length) return "header";
    const off = [0];
    for (let i = 1; i < n; i++) off.push(rd(m, 4 * i));
    if (off.some((o, i) => o % 4 || (i > 0 && o < off[i - 1]) || o > m.length - 8 * n)) return "offsets";
    const map = new Map<number, Uint8Array>();
    for (let i = 0; i < n; i++) {
      const tag = rd(m, 4 * n + 4 * i);
      if (i > 0 && tag <= rd(m, 4 * n + 4 * (i - 1))) return "tag order";
      map.set(tag, m.subarray(8 * n + off[i], i + 1 < n ? 8 * n + off[i + 1] : m.length));
    }
    return map;
  };
  const magic = [0x52, 0x4f, 0x55, 0x47, 0x48, 0x54, 0x49, 0x4d];
  if (p.length >= 8 && magic.every((b, i) => p[i] === b)) {
    if (p.length > 2944 || p.length < 12 || rd(p, 8) !== p.length - 12) return "packet header";
    const m = decode(p.subarray(12));
    if (typeof m === "string") return m;
    const ver = m.get(TAG.VER);
    const nonce = m.get(TAG.NONC);
    const srv = m.get(TAG.SRV);
    const type = m.get(TAG.TYPE);
    if (!ver || ver.length === 0 || ver.length % 4 || ver.length / 4 > MAX_VERSIONS) return "VER";
    const offered = Array.from({ length: ver.length / 4 }, (_, i) => rd(ver, 4 * i));
    if (offered.some((v, i) => i > 0 && v <= offered[i - 1])) return "VER order";
    if (!nonce || nonce.length !== 32) return "NONC";
    if (srv && srv.length !== 32) return "SRV";
    if (type && type.length !== 4) return "TYPE";
    return {
      family: "ietf",
      nonce: toHex(nonce),
      offered,
      srv: srv ? toHex(srv) : null,
      type: type ? rd(type, 0) : null,
    };
  }
  const m = decode(p);
  if (typeof m === "string") return m;
  const nonce = m.get(TAG.NONC);
  if (!nonce || nonce.length !== 64) return "NONC";
  return { family: "google", nonce: toHex(nonce), offered: [], srv: null, type: null };
}

function ours(p: Uint8Array): Parsed | string {
  try {
    const r = parseRequest(p);
    return {
      family: r.family,
      nonce: toHex(r.nonce),
      offered: r.offered,
      srv: r.srv ? toHex(r.srv) : null,
      type: r.type,
    };
  } catch (e) {
    if (!(e instanceof RoughtimeError)) throw e;
    return "refused";
  }
}

Deno.test("request scanner: agrees with a parser written from the spec on valid, mutated, truncated and random datagrams", () => {
  const pub = publicKeyFromSeed(randomBytes(32));
  const seeds: Uint8Array[] = [
    ...VERSIONS.map((version) => buildRequest({ version }).packet),
    buildRequest({ serverPublicKey: pub }).packet,
    buildRequest({ offered: [1, 2, 3], size: 1200 }).packet,
    // A drafts 12-13 request without TYPE, and one with VER out of order.
    wrapPacket(encodeMessage([[TAG.VER, u32List([0x8000000c])], [TAG.NONC, randomBytes(32)]])),
    wrapPacket(encodeMessage([[TAG.VER, u32List([2, 1])], [TAG.NONC, randomBytes(32)]])),
  ];
  let accepted = 0;
  let refused = 0;
  const check = (p: Uint8Array, what: string) => {
    const want = referenceParse(p);
    const got = ours(p);
    if (typeof want === "string") {
      assert.equal(got, "refused", `${what}: the reference refuses (${want}), we accepted`);
      refused++;
    } else {
      assert.deepEqual(got, want, what);
      accepted++;
    }
  };
  for (const [s, seed] of seeds.entries()) {
    check(seed, `seed ${s}`);
    for (let k = 0; k < 3000; k++) {
      const p = seed.slice();
      // Mostly the header and the first values, where the structure lives; sometimes anywhere.
      const span = k % 4 === 0 ? p.length : Math.min(p.length, 96);
      const flips = 1 + (k % 3);
      for (let f = 0; f < flips; f++) p[Math.floor(Math.random() * span)] = Math.floor(Math.random() * 256);
      check(p, `seed ${s} mutation ${k}`);
      check(p.subarray(0, Math.floor(Math.random() * p.length)), `seed ${s} truncation ${k}`);
    }
  }
  for (let k = 0; k < 2000; k++) check(randomBytes(Math.floor(Math.random() * 200)), `random ${k}`);
  // Both outcomes were exercised, so neither side can pass by refusing (or accepting) everything.
  assert.ok(accepted > 1000 && refused > 1000, `accepted ${accepted}, refused ${refused}`);
});

Deno.test("sha512 in place: equals SHA-512(prefix || input) for lengths across block edges, writes only [at, at + size)", () => {
  const lengths = [...Array.from({ length: 260 }, (_, i) => i), 1023, 1024, 1471, 1472, 4095];
  for (const len of lengths) {
    const src = randomBytes(len + 8);
    const out = new Uint8Array(70);
    sha512PrefixedInto(len & 0xff, src, 3, 3 + len, out, 6, 32);
    const want = sha512(new Uint8Array([len & 0xff]), src.subarray(3, 3 + len));
    assert.deepEqual(out.subarray(6, 38), want.subarray(0, 32), `length ${len}`);
    assert.deepEqual(out.subarray(0, 6), new Uint8Array(6), "nothing written before `at`");
    assert.deepEqual(out.subarray(38), new Uint8Array(32), "nothing written after `at + size`");
  }
});

Deno.test("sha512 in place: hashes in place (out = src), two-part form, and refuses ranges outside the buffers", () => {
  const buf = randomBytes(200);
  const want = sha512(new Uint8Array([1]), buf.subarray(0, 64)).subarray(0, 32);
  sha512PrefixedInto(1, buf, 0, 64, buf, 32, 32);
  assert.deepEqual(buf.subarray(32, 64), want);
  assert.throws(() => sha512PrefixedInto(0, buf, 0, 201, buf, 0, 64), RangeError);
  assert.throws(() => sha512PrefixedInto(0, buf, 0, 10, buf, 190, 64), RangeError);
  assert.deepEqual(
    sha512Prefixed(1, buf.subarray(0, 10), buf.subarray(10, 30)),
    sha512(new Uint8Array([1]), buf.subarray(0, 30)),
  );
});

Deno.test("batch path: cloudflare's Google-Roughtime batch of 1 is reproduced byte for byte; in its batches of 10 and 100 every PATH hash over real requests equals ours", () => {
  for (const n of ["001", "010", "100"]) {
    const d = readVectorJson(`cloudflare-testdata/roughtime_google_${n}.json`) as {
      root_key: string;
      online_key: string;
      request: string[];
      replies: string[];
    };
    const theirs = d.replies.map((r) => decodeMessage(hex(r)));
    const srep = decodeMessage(theirs[0].get(TAG.SREP)!);
    // Their online key, CERT, MIDP and RADI: Ed25519 is deterministic, so equal inputs give equal bytes.
    const { replies } = buildResponses(d.request.map((r) => parseRequest(hex(r))), {
      family: "google",
      version: null,
      supported: [],
      midp: readU64(srep.get(TAG.MIDP)!),
      radi: readU32(srep.get(TAG.RADI)!),
      onlineSeed: hex(d.online_key),
      cert: theirs[0].get(TAG.CERT)!,
    });
    const pub = publicKeyFromSeed(hex(d.root_key));
    const count = d.request.length;
    replies.forEach((reply, i) => {
      assert.equal(verifyReply(hex(d.request[i]), reply, pub).index, i);
      if (count === 1) assert.deepEqual(reply, hex(d.replies[0]), "the single reply, byte for byte");
      // The two servers fill the padding of a tree differently (both verify): compare the siblings that
      // cover real requests only.
      const ours = decodeMessage(reply).get(TAG.PATH)!;
      const their = theirs[i].get(TAG.PATH)!;
      assert.equal(ours.length, their.length);
      let compared = 0;
      for (let depth = 0; depth < ours.length / 64; depth++) {
        const sibling = (i >>> depth) ^ 1;
        if ((sibling + 1) << depth > count) continue;
        assert.deepEqual(
          ours.subarray(64 * depth, 64 * depth + 64),
          their.subarray(64 * depth, 64 * depth + 64),
        );
        compared++;
      }
      if (count > 1 && i < 8) assert.ok(compared >= 3, `leaf ${i} of ${count}: ${compared} hashes compared`);
    });
  }
});
