import assert from "node:assert/strict";
import fc from "fast-check";
import { canonicalUsername, fingerprintOf, normalizeFingerprint, UsernameError } from "../pki/mod.ts";
import { makeTestCa } from "./helpers/pki.ts";

Deno.test("canonicalUsername accepts the canonical form unchanged", () => {
  for (const n of ["alice", "bob", "a-b", "x_1", "0day", "abc", "a".repeat(32)]) {
    assert.equal(canonicalUsername(n), n);
  }
});

Deno.test("canonicalUsername refuses other forms, look-alikes and invisible characters", () => {
  const bad = [
    "Alice", // case
    "ALICE",
    "\u0430lice", // Cyrillic a
    "alic\u0435", // Cyrillic e
    "\uff41lice", // fullwidth a
    "ali\u200bce", // zero-width space
    "alice\u200d", // zero-width joiner
    "\ufeffalice", // BOM
    "alice ", // trailing space
    " alice",
    "al ice",
    "caf\u00e9", // precomposed e-acute (NFC)
    "cafe\u0301", // e + combining acute (NFD)
    "al", // too short
    "a".repeat(33), // too long
    "-alice", // looks like a flag
    "_alice",
    "alice.bob",
    "alice@x",
    "alice'--",
    "al\u0000ice",
    "\u212blice", // Kelvin/Angstrom-style compatibility letters
    "",
  ];
  for (const n of bad) {
    assert.throws(() => canonicalUsername(n), (e: unknown) => {
      assert.ok(e instanceof UsernameError, `${JSON.stringify(n)} threw ${e}`);
      assert.equal(e.code, "BAD_USERNAME");
      return true;
    }, JSON.stringify(n));
  }
});

Deno.test("canonicalUsername: anything accepted is in the canonical alphabet and returned unchanged", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 40 }), (s) => {
      let out: string;
      try {
        out = canonicalUsername(s);
      } catch (e) {
        assert.ok(e instanceof UsernameError);
        return;
      }
      assert.equal(out, s);
      assert.match(out, /^[a-z0-9][a-z0-9_-]{2,31}$/);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("fingerprintOf: PEM and DER agree and match an independent SHA-256", async () => {
  const ca = await makeTestCa();
  const fp = fingerprintOf(ca.certPem);
  assert.match(fp, /^[0-9a-f]{64}$/);
  const der = ca.material.cert.rawData;
  assert.equal(fingerprintOf(new Uint8Array(der)), fp);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", der));
  assert.equal(Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join(""), fp);
});

Deno.test("normalizeFingerprint accepts colons and any case, refuses bad input", () => {
  const hex = "ab".repeat(32);
  assert.equal(normalizeFingerprint(hex), hex);
  assert.equal(normalizeFingerprint(hex.toUpperCase()), hex);
  assert.equal(normalizeFingerprint(hex.match(/../g)!.join(":").toUpperCase()), hex);
  assert.equal(normalizeFingerprint(`SHA256:${hex}`), hex);
  for (const bad of ["", "ab", "zz".repeat(32), "ab".repeat(33), "ab".repeat(31) + "a"]) {
    assert.throws(
      () => normalizeFingerprint(bad),
      (e: unknown) => (e as { code: string }).code === "BAD_FINGERPRINT",
    );
  }
});
