/**
 * The Roughtime cases of security-tests.md that concern one reply, without a network: each bad reply is
 * rejected with its own typed error, and the untouched control reply passes.
 */
import assert from "node:assert/strict";
import { RoughtimeError, type RoughtimeErrorCode, verifyReply } from "../clock/mod.ts";
import { CONTEXT_DELEGATION_GOOGLE, TAG, VERSION_DRAFT, VERSION_RFC } from "../clock/roughtime/constants.ts";
import { publicKeyFromSeed, randomBytes } from "../clock/roughtime/crypto.ts";
import { buildRequest, type RoughtimeRequest } from "../clock/roughtime/request.ts";
import { decodeMessage, u32, unwrapPacket } from "../clock/roughtime/wire.ts";
import { type ForgeOptions, forgeReply, nowUnits } from "./helpers/roughtime.ts";
import type { RoughtimeVersion } from "../clock/types.ts";

const longTermSeed = randomBytes(32);
const longTermPub = publicKeyFromSeed(longTermSeed);

function rejects(fn: () => unknown, ...codes: RoughtimeErrorCode[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof RoughtimeError, `expected RoughtimeError, got ${e}`);
    assert.ok(codes.includes(e.code), `expected ${codes.join("|")}, got ${e.code}: ${e.message}`);
    return true;
  });
}

function setup(version: RoughtimeVersion, extra: Partial<ForgeOptions> = {}) {
  const req = buildRequest({ version, serverPublicKey: longTermPub });
  const family = req.family;
  const opts: ForgeOptions = {
    longTermSeed,
    midp: nowUnits(family),
    radi: family === "ietf" ? 3 : 1_000_000,
    ...extra,
  };
  return { req, reply: forgeReply(req, opts), opts };
}

/** Byte offset of a tag's value inside a reply packet, for flipping bits in place. */
function valueOffset(packet: Uint8Array, family: "ietf" | "google", path: number[]): number {
  let base = family === "ietf" ? 12 : 0;
  let msg = decodeMessage(family === "ietf" ? unwrapPacket(packet) : packet);
  let v: Uint8Array | undefined;
  for (const tag of path) {
    v = msg.get(tag);
    assert.ok(v, "tag present");
    base = v.byteOffset - packet.byteOffset;
    msg = v.length >= 4
      ? (() => {
        try {
          return decodeMessage(v as Uint8Array);
        } catch {
          return new Map();
        }
      })()
      : new Map();
  }
  return base;
}

function flipped(packet: Uint8Array, offset: number, bit = 0): Uint8Array {
  const p = packet.slice();
  p[offset] ^= 1 << bit;
  return p;
}

for (const version of ["rfc", "draft", "google"] as const) {
  const family = version === "google" ? "google" : "ietf";

  Deno.test(`verify ${version}: the control reply passes and reports the signed time`, () => {
    const { req, reply, opts } = setup(version);
    const r = verifyReply(req.packet, reply, longTermPub);
    assert.equal(r.version, version);
    assert.equal(r.midp, opts.midp);
    assert.ok(Math.abs(r.midpointMs - Date.now()) < 5000);
  });

  Deno.test(`verify ${version}: flipped bits in SIG, SREP, MIDP, DELE and MINT are refused`, () => {
    const { req, reply } = setup(version);
    const cases: [number[], RoughtimeErrorCode][] = [
      [[TAG.SIG], "BAD_SIGNATURE"],
      [[TAG.SREP], "BAD_SIGNATURE"],
      [[TAG.SREP, TAG.MIDP], "BAD_SIGNATURE"],
      [[TAG.SREP, TAG.ROOT], "BAD_SIGNATURE"],
      [[TAG.CERT, TAG.DELE], "BAD_DELEGATION_SIGNATURE"],
      [[TAG.CERT, TAG.DELE, TAG.MINT], "BAD_DELEGATION_SIGNATURE"],
      [[TAG.CERT, TAG.DELE, TAG.PUBK], "BAD_DELEGATION_SIGNATURE"],
      [[TAG.CERT, TAG.SIG], "BAD_DELEGATION_SIGNATURE"],
    ];
    for (const [path, code] of cases) {
      const off = valueOffset(reply, family, path);
      for (const bit of [0, 7]) {
        rejects(() => verifyReply(req.packet, flipped(reply, off + 1, bit), longTermPub), code);
      }
    }
  });

  Deno.test(`verify ${version}: a reply signed by another long-term key is refused`, () => {
    const { req, reply } = setup(version, { deleSignerSeed: randomBytes(32) });
    rejects(() => verifyReply(req.packet, reply, longTermPub), "BAD_DELEGATION_SIGNATURE");
    // And a genuine reply checked against a key we trust for someone else.
    const good = setup(version);
    rejects(
      () => verifyReply(good.req.packet, good.reply, publicKeyFromSeed(randomBytes(32))),
      "BAD_DELEGATION_SIGNATURE",
    );
  });

  Deno.test(`verify ${version}: signatures made without the context prefix are refused`, () => {
    const noDeleCtx = setup(version, { deleContext: new Uint8Array() });
    rejects(
      () => verifyReply(noDeleCtx.req.packet, noDeleCtx.reply, longTermPub),
      "BAD_DELEGATION_SIGNATURE",
    );
    const noSrepCtx = setup(version, { srepContext: new Uint8Array() });
    rejects(() => verifyReply(noSrepCtx.req.packet, noSrepCtx.reply, longTermPub), "BAD_SIGNATURE");
  });

  Deno.test(`verify ${version}: an old reply replayed for a new nonce, and a wrong NONC, are refused`, () => {
    const old = setup(version);
    const fresh = buildRequest({ version, serverPublicKey: longTermPub });
    rejects(() => verifyReply(fresh.packet, old.reply, longTermPub), "NONCE_MISMATCH");
    const wrong = setup(version, {
      override: (m) => m.set(TAG.NONC, randomBytes(family === "ietf" ? 32 : 64)),
    });
    rejects(() => verifyReply(wrong.req.packet, wrong.reply, longTermPub), "NONCE_MISMATCH");
    // Without a NONC echo, the Merkle proof still ties the reply to our request.
    const noEcho = setup(version, { override: (m) => m.delete(TAG.NONC) });
    const replay = forgeReply(noEcho.req, { ...noEcho.opts, override: (m) => m.delete(TAG.NONC) });
    if (family === "google") {
      rejects(() => verifyReply(fresh.packet, replay, longTermPub), "MERKLE_MISMATCH");
    } else {
      rejects(() => verifyReply(noEcho.req.packet, noEcho.reply, longTermPub), "MISSING_TAG");
    }
  });

  Deno.test(`verify ${version}: INDX out of range and PATH of wrong length, too long or corrupted`, () => {
    const batch: RoughtimeRequest[] = [];
    for (let i = 0; i < 5; i++) batch.push(buildRequest({ version, serverPublicKey: longTermPub }));
    const mine = batch[2];
    const base = { batch, position: 2 };
    const good = setup(version, base);
    const goodReply = forgeReply(mine, good.opts);
    assert.equal(verifyReply(mine.packet, goodReply, longTermPub).pathLength, 3);
    const hashSize = family === "ietf" ? 32 : 64;
    const variants: [Partial<ForgeOptions>, RoughtimeErrorCode][] = [
      [{ override: (m) => m.set(TAG.INDX, u32(2 + 8)) }, "BAD_INDEX"],
      [{ override: (m) => m.set(TAG.INDX, u32(0xffffffff)) }, "BAD_INDEX"],
      [{ override: (m) => m.set(TAG.INDX, u32(3)) }, "MERKLE_MISMATCH"],
      [{ override: (m) => m.set(TAG.PATH, m.get(TAG.PATH)!.subarray(0, 2 * hashSize + 4)) }, "BAD_PATH"],
      [{ override: (m) => m.set(TAG.PATH, m.get(TAG.PATH)!.subarray(0, 2 * hashSize)) }, "MERKLE_MISMATCH"],
      [{
        override: (m) => {
          const p = m.get(TAG.PATH)!.slice();
          p[hashSize + 5] ^= 0x10;
          m.set(TAG.PATH, p);
        },
      }, "MERKLE_MISMATCH"],
    ];
    for (const [extra, code] of variants) {
      const r = forgeReply(mine, { ...good.opts, ...extra });
      rejects(() => verifyReply(mine.packet, r, longTermPub), code);
    }
    // 33 hashes only fit in a reply to a big request (the size rule is checked first).
    const big = buildRequest({ version, serverPublicKey: longTermPub, size: 2900 });
    const tooLong = forgeReply(big, {
      ...good.opts,
      batch: undefined,
      position: undefined,
      override: (m) => m.set(TAG.PATH, new Uint8Array(33 * hashSize)),
    });
    rejects(() => verifyReply(big.packet, tooLong, longTermPub), "PATH_TOO_LONG");
    const thirtyTwo = forgeReply(big, {
      ...good.opts,
      batch: undefined,
      position: undefined,
      override: (m) => m.set(TAG.PATH, new Uint8Array(32 * hashSize)),
    });
    rejects(() => verifyReply(big.packet, thirtyTwo, longTermPub), "MERKLE_MISMATCH");
  });

  Deno.test(`verify ${version}: MIDP outside [MINT, MAXT] is refused, the bounds themselves pass`, () => {
    const midp = nowUnits(family);
    const below = setup(version, { midp, mint: midp + 1n, maxt: midp + 100n });
    rejects(() => verifyReply(below.req.packet, below.reply, longTermPub), "MIDP_OUT_OF_RANGE");
    const above = setup(version, { midp, mint: 0n, maxt: midp - 1n });
    rejects(() => verifyReply(above.req.packet, above.reply, longTermPub), "MIDP_OUT_OF_RANGE");
    const edge = setup(version, { midp, mint: midp, maxt: midp });
    assert.equal(verifyReply(edge.req.packet, edge.reply, longTermPub).midp, midp);
  });

  Deno.test(`verify ${version}: RADI of 0 or absurdly large is refused`, () => {
    const unit = family === "ietf" ? 1 : 1_000_000;
    const zero = setup(version, { radi: 0 });
    rejects(() => verifyReply(zero.req.packet, zero.reply, longTermPub), "BAD_RADIUS");
    const huge = setup(version, { radi: 0xffffffff });
    rejects(() => verifyReply(huge.req.packet, huge.reply, longTermPub), "RADIUS_TOO_LARGE");
    const eleven = setup(version, { radi: 11 * unit });
    rejects(() => verifyReply(eleven.req.packet, eleven.reply, longTermPub), "RADIUS_TOO_LARGE");
    const ten = setup(version, { radi: 10 * unit });
    assert.equal(verifyReply(ten.req.packet, ten.reply, longTermPub).radiusMs, 10_000);
  });

  Deno.test(`verify ${version}: truncated and oversized replies are refused`, () => {
    const { req, reply } = setup(version);
    for (const cut of [0, 3, 4, 11, 12, 40, reply.length - 4, reply.length - 1]) {
      assert.throws(() => verifyReply(req.packet, reply.subarray(0, cut), longTermPub), RoughtimeError);
    }
    const padded = new Uint8Array(req.packet.length + 4);
    padded.set(reply);
    rejects(() => verifyReply(req.packet, padded, longTermPub), "RESPONSE_TOO_LARGE");
    // A reply larger than a (smaller) request is refused before anything else is looked at.
    rejects(
      () => verifyReply(req.packet.subarray(0, reply.length - 4), reply, longTermPub),
      "RESPONSE_TOO_LARGE",
    );
  });
}

Deno.test("verify: a downgrade to a version we did not offer, or below the best common one, is refused", () => {
  const onlyRfc = buildRequest({ version: "rfc", serverPublicKey: longTermPub });
  const base = { longTermSeed, midp: nowUnits("ietf"), radi: 3 };
  const toDraft = forgeReply(onlyRfc, { ...base, version: VERSION_DRAFT });
  rejects(() => verifyReply(onlyRfc.packet, toDraft, longTermPub), "VERSION_NOT_OFFERED");
  const both = buildRequest({ serverPublicKey: longTermPub });
  assert.deepEqual(both.offered, [VERSION_RFC, VERSION_DRAFT]);
  rejects(
    () => verifyReply(both.packet, forgeReply(both, { ...base, version: VERSION_DRAFT }), longTermPub),
    "DOWNGRADE",
  );
  // A server that only speaks the draft may answer with it.
  const draftOnly = forgeReply(both, { ...base, version: VERSION_DRAFT, vers: [VERSION_DRAFT] });
  assert.equal(verifyReply(both.packet, draftOnly, longTermPub).version, "draft");
  // VER outside the signed VERS list is inconsistent.
  rejects(
    () =>
      verifyReply(
        both.packet,
        forgeReply(both, { ...base, version: VERSION_RFC, vers: [VERSION_DRAFT] }),
        longTermPub,
      ),
    "BAD_VALUE",
  );
  // The Google delegation context on an IETF reply is refused (contexts are per version).
  const ctx = forgeReply(both, { ...base, deleContext: CONTEXT_DELEGATION_GOOGLE });
  rejects(() => verifyReply(both.packet, ctx, longTermPub), "BAD_DELEGATION_SIGNATURE");
});

Deno.test("verify: a reply whose TYPE is not 1 is refused", () => {
  const req = buildRequest({ serverPublicKey: longTermPub });
  const r = forgeReply(req, {
    longTermSeed,
    midp: nowUnits("ietf"),
    radi: 3,
    override: (m) => m.set(TAG.TYPE, u32(0)),
  });
  rejects(() => verifyReply(req.packet, r, longTermPub), "BAD_TYPE");
});

Deno.test("verify: a reply in a version we offered but cannot name is refused (BAD_VALUE), before other checks", () => {
  // A request offering an experimental version we do not speak, answered in it with a wrong nonce too:
  // the unnamed version is reported first.
  const odd = 0x80000099;
  const req = buildRequest({ offered: [VERSION_RFC, odd], serverPublicKey: longTermPub });
  const base = { longTermSeed, midp: nowUnits("ietf"), radi: 3, version: odd, vers: [odd] };
  rejects(() => verifyReply(req.packet, forgeReply(req, base), longTermPub), "BAD_VALUE");
  const wrongNonce = forgeReply(req, { ...base, override: (m) => m.set(TAG.NONC, randomBytes(32)) });
  rejects(() => verifyReply(req.packet, wrongNonce, longTermPub), "BAD_VALUE");
});
