/**
 * Every exchange in the vectors (tests/testdata/roughtime/) verifies with our client code: captures from pyroughtime (drafts
 * 12-19), cloudflare's and Google's servers (Google-Roughtime), roughenough's files, cloudflare's batches
 * with multi-level Merkle paths, and the draft-19 malfeasance chain (which our report checker must flag).
 */
import assert from "node:assert/strict";
import { checkReport, publicKeyFromSeed, RoughtimeError, verifyReply } from "../clock/mod.ts";
import { CONTEXT_RESPONSE, TAG } from "../clock/roughtime/constants.ts";
import { verifyWithContext } from "../clock/roughtime/crypto.ts";
import { verifyLegacyReply } from "../clock/roughtime/legacy.ts";
import { parseRequest, srvValue } from "../clock/roughtime/request.ts";
import { decodeMessage, encodeMessage, unwrapPacket, wrapPacket } from "../clock/roughtime/wire.ts";
import { b64, hex, readVectorBytes, readVectorJson } from "./helpers/roughtime.ts";

interface Capture {
  server_longterm_pubkey_b64: string;
  exchanges: {
    nonce_hex: string;
    request_hex: string;
    response_hex: string;
    independent_check: { MIDP: number; RADI: number; family: string; PATH_hashes: number };
  }[];
}

for (const file of ["capture_py_draft12plus.json", "capture_py_chain.json"]) {
  Deno.test({
    name: `vectors: ${file} (0x8000000c) verify, MIDP/RADI in seconds`,
    fn() {
      const c = readVectorJson(file) as Capture;
      assert.equal(c.exchanges.length, 3);
      for (const e of c.exchanges) {
        const r = verifyReply(hex(e.request_hex), hex(e.response_hex), b64(c.server_longterm_pubkey_b64));
        assert.equal(r.version, "draft");
        assert.equal(r.versionNumber, 0x8000000c);
        assert.equal(r.midp, BigInt(e.independent_check.MIDP));
        assert.equal(r.radi, e.independent_check.RADI);
        assert.equal(r.midpointMs, e.independent_check.MIDP * 1000);
        assert.deepEqual(r.nonce, hex(e.nonce_hex));
        // The same reply under another server's key must fail.
        assert.throws(
          () => verifyReply(hex(e.request_hex), hex(e.response_hex), publicKeyFromSeed(new Uint8Array(32))),
          (err: unknown) => err instanceof RoughtimeError && err.code === "BAD_DELEGATION_SIGNATURE",
        );
      }
    },
  });
}

for (const file of ["capture_cf_google.json", "capture_google_google.json"]) {
  Deno.test({
    name: `vectors: ${file} (Google-Roughtime) verify, MIDP/RADI in microseconds`,
    fn() {
      const c = readVectorJson(file) as Capture;
      for (const e of c.exchanges) {
        const r = verifyReply(hex(e.request_hex), hex(e.response_hex), b64(c.server_longterm_pubkey_b64));
        assert.equal(r.version, "google");
        assert.equal(r.versionNumber, null);
        assert.equal(r.midp, BigInt(e.independent_check.MIDP));
        assert.equal(r.radiusMs, e.independent_check.RADI / 1000);
        assert.equal(r.midpointMs, e.independent_check.MIDP / 1000);
      }
    },
  });
}

Deno.test({
  name: "vectors: draft-19 appendix B chain verifies link by link and proves malfeasance",
  fn() {
    const d = readVectorJson("draft19_appendixB_malfeasance_chain.json") as {
      responses: { publicKey: string; rand: string | null; request_hex: string; response_hex: string }[];
    };
    for (const e of d.responses) {
      assert.equal(verifyReply(hex(e.request_hex), hex(e.response_hex), b64(e.publicKey)).version, "rfc");
    }
    const report = {
      responses: d.responses.map((e) => ({
        ...(e.rand === null ? {} : { rand: e.rand }),
        publicKey: e.publicKey,
        request: btoa(String.fromCharCode(...hex(e.request_hex))),
        response: btoa(String.fromCharCode(...hex(e.response_hex))),
      })),
    };
    const verdict = checkReport(report);
    assert.equal(verdict.kind, "malfeasance");
    if (verdict.kind !== "malfeasance") return;
    // The first reply claims a time a day after what the later ones signed.
    assert.deepEqual(verdict.inconsistencies.map((i) => [i.earlier, i.later]), [[0, 1], [0, 2]]);
    assert.equal(verdict.inconsistencies[0].gapMs, (86400 - 6) * 1000);
    // Swapping a rand breaks the chain: the report is then invalid, not a proof.
    const broken = structuredClone(report);
    broken.responses[2].rand = broken.responses[1].rand;
    assert.throws(
      () => checkReport(broken),
      (e: unknown) => e instanceof RoughtimeError && e.code === "BAD_REPORT",
    );
  },
});

Deno.test({
  name: "vectors: roughenough request/response pair verifies (MINT 0, MAXT 2^64-1, VERS [0, 0x8000000c])",
  fn() {
    const req = readVectorBytes("roughenough-testdata/rfc-request.071039e5");
    const res = readVectorBytes("roughenough-testdata/rfc-response.071039e5");
    const r = verifyReply(req, res, b64("AW5uAoTSTDfG5NfY1bTh08GUnOqlRb+HVhbJ3ODJvsE="));
    assert.equal(r.version, "draft");
    assert.equal(r.mint, 0n);
    assert.equal(r.maxt, (1n << 64n) - 1n);
    assert.equal(r.radi, 5);
    // Hex files hold the same bytes.
    const hexText = new TextDecoder().decode(readVectorBytes("roughenough-testdata/rfc-request.071039e5.hex"))
      .trim();
    assert.deepEqual(hex(hexText), req);
  },
});

Deno.test({
  name: "vectors: roughenough SRV request parses; 8-hash PATH reply decodes and its SREP signature holds",
  fn() {
    const req = parseRequest(readVectorBytes("roughenough-testdata/rfc-request.SRV.417aa962"));
    assert.equal(req.family, "ietf");
    assert.equal(req.srv?.length, 32);
    assert.deepEqual(req.offered, [0x8000000c]);
    assert.notDeepEqual(req.srv, srvValue(b64("AW5uAoTSTDfG5NfY1bTh08GUnOqlRb+HVhbJ3ODJvsE=")));
    const res = decodeMessage(
      unwrapPacket(readVectorBytes("roughenough-testdata/rfc-response.path8.index2.4c16c619")),
    );
    assert.equal(res.get(TAG.PATH)?.length, 8 * 32);
    const dele = decodeMessage(decodeMessage(res.get(TAG.CERT)!).get(TAG.DELE)!);
    assert.ok(
      verifyWithContext(dele.get(TAG.PUBK)!, CONTEXT_RESPONSE, res.get(TAG.SREP)!, res.get(TAG.SIG)!),
    );
  },
});

Deno.test({
  name: "vectors: roughenough golden response decodes and re-encodes byte for byte",
  fn() {
    const g = readVectorBytes("roughenough-testdata/golden-response.phase8");
    const msg = decodeMessage(unwrapPacket(g));
    assert.deepEqual([...msg.keys()], [TAG.SIG, TAG.NONC, TAG.TYPE, TAG.PATH, TAG.SREP, TAG.CERT, TAG.INDX]);
    assert.deepEqual(wrapPacket(encodeMessage(msg)), g);
  },
});

for (const n of ["001", "010", "100"]) {
  Deno.test({
    name: `vectors: cloudflare Google-Roughtime batch of ${
      Number(n)
    } (multi-level PATH) verifies every reply`,
    fn() {
      const d = readVectorJson(`cloudflare-testdata/roughtime_google_${n}.json`) as {
        root_key: string;
        request: string[];
        replies: string[];
      };
      const pub = publicKeyFromSeed(hex(d.root_key));
      const depths = new Set<number>();
      const indices = new Set<number>();
      d.request.forEach((rq, i) => {
        const r = verifyReply(hex(rq), hex(d.replies[i]), pub);
        depths.add(r.pathLength);
        indices.add(r.index);
      });
      assert.equal(indices.size, d.request.length);
      assert.deepEqual([...depths], [Math.ceil(Math.log2(d.request.length))]);
      // A reply checked against another request of the batch fails the Merkle proof (wrong leaf).
      if (d.request.length > 1) {
        assert.throws(
          () => verifyReply(hex(d.request[0]), hex(d.replies[1]), pub),
          (e: unknown) =>
            e instanceof RoughtimeError && (e.code === "NONCE_MISMATCH" || e.code === "MERKLE_MISMATCH"),
        );
      }
    },
  });
}

for (const [draft, ver] of [["08", 0x80000008], ["11", 0x8000000b]] as const) {
  for (const n of ["001", "010", "100"]) {
    Deno.test({
      name: `vectors: cloudflare draft-${draft} batch of ${Number(n)} verifies with the legacy verifier`,
      fn() {
        const d = readVectorJson(`cloudflare-testdata/roughtime_ietf_draft${draft}_${n}.json`) as {
          root_key: string;
          online_key: string;
          request: string[];
          replies: string[];
        };
        const pub = publicKeyFromSeed(hex(d.root_key));
        d.request.forEach((rq, i) => {
          const r = verifyLegacyReply(hex(rq), hex(d.replies[i]), pub);
          assert.equal(r.versionNumber, ver);
        });
        // Our RFC verifier refuses them (other leaf rule and contexts), as it should.
        assert.throws(() => verifyReply(hex(d.request[0]), hex(d.replies[0]), pub), RoughtimeError);
        if (d.request.length > 1) {
          assert.throws(
            () => verifyLegacyReply(hex(d.request[0]), hex(d.replies[1]), pub),
            (e: unknown) => e instanceof RoughtimeError && e.code === "NONCE_MISMATCH",
          );
        }
        assert.throws(
          () => verifyLegacyReply(hex(d.request[0]), hex(d.replies[0]), publicKeyFromSeed(hex(d.online_key))),
          (e: unknown) => e instanceof RoughtimeError && e.code === "BAD_DELEGATION_SIGNATURE",
        );
      },
    });
  }
}
