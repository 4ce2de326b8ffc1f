/**
 * Chained queries and malfeasance reports: a server an hour off (behind or ahead) among three honest ones
 * is caught by a two-round chain, the report is in the draft's JSON format and proves the lie; honest
 * chains are consistent; Google chains work in Google's own "links" format; a tampered report is invalid
 * (signature failures are never malfeasance).
 */
import assert from "node:assert/strict";
import { buildReport, checkReport, queryChain, RoughtimeError, type ServerOutcome } from "../clock/mod.ts";
import { chainedNonce } from "../clock/roughtime/chain.ts";
import { b64, startLocalServers, toB64 } from "./helpers/roughtime.ts";

const HOUR = 3600_000;

function badReport(report: unknown): string {
  try {
    checkReport(report);
  } catch (e) {
    assert.ok(e instanceof RoughtimeError && e.code === "BAD_REPORT", String(e));
    return e.message;
  }
  throw new Error("report accepted");
}

for (const [how, offset] of [["behind", -HOUR], ["ahead", HOUR]] as const) {
  Deno.test(`malfeasance: a server an hour ${how} among three honest ones is proven by the chained report`, async () => {
    const local = await startLocalServers([
      { version: "rfc" },
      { now: () => Date.now() + offset, version: "rfc" },
      { version: "draft" },
      { version: "google" },
    ]);
    try {
      const chain = await queryChain(local.specs, { rounds: 2, timeoutMs: 4000 });
      assert.equal(chain.length, 8);
      assert.ok(chain.every((o) => o.ok));
      const report = JSON.parse(JSON.stringify(buildReport(chain)));
      assert.equal(report.responses.length, 8);
      assert.equal(report.responses[0].rand, undefined, "the first response needs no rand");
      for (const r of report.responses.slice(1)) assert.equal(typeof r.rand, "string");
      for (const r of report.responses) {
        assert.deepEqual(
          Object.keys(r).sort(),
          ["publicKey", "rand", "request", "response"].filter((k) => k in r),
        );
      }
      const verdict = checkReport(report);
      assert.equal(verdict.kind, "malfeasance");
      if (verdict.kind !== "malfeasance") return;
      // Every proven inconsistency involves the liar (chain positions 1 and 5).
      for (const i of verdict.inconsistencies) {
        assert.ok([1, 5].includes(i.earlier) || [1, 5].includes(i.later), JSON.stringify(i));
        assert.ok(i.gapMs > HOUR - 20_000);
      }
      // The liar's key is the one named in every inconsistent pair.
      const liarKey = toB64(local.specs[1].publicKey);
      for (const i of verdict.inconsistencies) {
        assert.ok(
          report.responses[i.earlier].publicKey === liarKey ||
            report.responses[i.later].publicKey === liarKey,
        );
      }
      // Each nonce really is chained to the previous response.
      for (let i = 1; i < chain.length; i++) {
        const cur: ServerOutcome = chain[i];
        const prev: ServerOutcome = chain[i - 1];
        if (!cur.ok || !prev.ok || !cur.rand) throw new Error("chain link missing");
        const family: "google" | "ietf" = cur.server.version === "google" ? "google" : "ietf";
        assert.deepEqual(chainedNonce(family, prev.result.response, cur.rand), cur.result.reply.nonce);
      }
    } finally {
      await local.close();
    }
  });
}

Deno.test("malfeasance: an honest chain is consistent; tampering makes the report invalid, not a proof", async () => {
  const local = await startLocalServers([{}, { version: "draft" }, { version: "google" }]);
  try {
    const report = buildReport(await queryChain(local.specs, { rounds: 2, timeoutMs: 4000 }));
    assert.equal(checkReport(report).kind, "consistent");
    const flipped = structuredClone(report);
    const resp = b64(flipped.responses[2].response);
    resp[resp.length - 50] ^= 4;
    flipped.responses[2].response = toB64(resp);
    assert.match(badReport(flipped), /response 2 does not verify/);
    const noRand = structuredClone(report);
    delete noRand.responses[3].rand;
    assert.match(badReport(noRand), /rand/);
    const reordered = structuredClone(report);
    [reordered.responses[1], reordered.responses[2]] = [reordered.responses[2], reordered.responses[1]];
    assert.match(badReport(reordered), /chain broken|rand is not/);
    const wrongKey = structuredClone(report);
    wrongKey.responses[0].publicKey = report.responses[1].publicKey;
    assert.match(badReport(wrongKey), /BAD_DELEGATION_SIGNATURE/);
    for (
      const bad of [null, [], {}, { responses: [] }, { responses: "x" }, { responses: [{ publicKey: 1 }] }]
    ) badReport(bad);
  } finally {
    await local.close();
  }
});

Deno.test("malfeasance: Google-Roughtime chains in Google's links format are checked too", async () => {
  const local = await startLocalServers([{ version: "google" }, {
    version: "google",
    now: () => Date.now() - HOUR,
  }, {
    version: "google",
  }]);
  try {
    const chain = await queryChain(local.specs, { rounds: 2, timeoutMs: 4000 });
    const links = chain.map((o, i) => {
      if (!o.ok) throw new Error("query failed");
      return {
        publicKeyType: "ed25519",
        serverPublicKey: toB64(o.server.publicKey),
        nonceOrBlind: toB64(i === 0 ? o.result.reply.nonce : o.rand!),
        reply: toB64(o.result.response),
      };
    });
    const verdict = checkReport({ links });
    assert.equal(verdict.kind, "malfeasance");
    assert.equal(checkReport({ links: links.slice(0, 1) }).kind, "consistent");
    const broken = structuredClone(links);
    broken[2].nonceOrBlind = broken[1].nonceOrBlind;
    assert.match(badReport({ links: broken }), /chain broken|does not verify/);
  } finally {
    await local.close();
  }
});
