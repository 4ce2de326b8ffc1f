/**
 * The CSR check's fast path (pki/csr.ts checkCommonCsr, strict DER + node:crypto) against the library path it
 * stands in for (checkCsrWithLibrary): the fast path takes our own CSRs and openssl's, hands every other
 * shape to the library, and never accepts a CSR the library refuses (property test over mutated CSRs).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checkCsr,
  createCsr,
  derToPem,
  generateKeyPair,
  pemToDer,
  signingAlgorithm,
  x509,
} from "../pki/mod.ts";
import { checkCommonCsr, checkCsrWithLibrary } from "../pki/csr.ts";
import { useTool } from "./helpers/tools.ts";

Deno.test("fast CSR path: takes our CSRs (P-256, Ed25519, names with _ and -), with the same key", async () => {
  for (const alg of ["p256", "ed25519"] as const) {
    const keys = await generateKeyPair(alg);
    for (const name of ["alice", "bob_smith", "x-1"]) {
      const der = pemToDer(await createCsr(name, keys), "CERTIFICATE REQUEST");
      const fast = await checkCommonCsr(der, name);
      assert.ok(fast, `${alg} ${name} takes the fast path`);
      const lib = await checkCsrWithLibrary(der, name);
      assert.deepEqual(fast.spki, lib.spki);
      assert.equal(fast.algorithm, lib.algorithm);
      assert.deepEqual(
        new Uint8Array(await crypto.subtle.exportKey("spki", fast.publicKey)),
        new Uint8Array(await crypto.subtle.exportKey("spki", lib.publicKey)),
      );
      assert.equal(await checkCommonCsr(der, "mallory"), null, "another name is left to the library");
    }
  }
});

Deno.test("fast CSR path: other shapes go to the library path, which still decides as before", async () => {
  const keys = await generateKeyPair("p256");
  // ecdsa-with-SHA384 over a P-256 key: valid, but not the shape the fast path knows.
  const sha384 = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: ["alice"] }],
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: { name: "ECDSA", hash: "SHA-384" } as EcdsaParams,
  });
  const der384 = new Uint8Array(sha384.rawData);
  assert.equal(await checkCommonCsr(der384, "alice"), null);
  assert.equal((await checkCsr(sha384.toString("pem"), "alice")).algorithm, "p256");
  // Two CNs: neither path takes it.
  const two = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: ["alice"] }, { CN: ["alice"] }],
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: signingAlgorithm("p256"),
  });
  assert.equal(await checkCommonCsr(new Uint8Array(two.rawData), "alice"), null);
  await assert.rejects(checkCsr(two.toString("pem"), "alice"), { code: "CSR_NAME_MISMATCH" });
  // A CN in a BMPString: left to the library.
  const bmp = await x509.Pkcs10CertificateRequestGenerator.create({
    // "#..." is the library's way to give the raw DER value: BMPString "alice".
    name: [{ CN: ["#1e0a0061006c006900630065"] }],
    keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
    signingAlgorithm: signingAlgorithm("p256"),
  });
  assert.equal(await checkCommonCsr(new Uint8Array(bmp.rawData), "alice"), null);
});

Deno.test("fast CSR path: a mutated CSR is taken only if the library path takes it too", async () => {
  const keys = await generateKeyPair("p256");
  const good = pemToDer(await createCsr("alice", keys), "CERTIFICATE REQUEST");
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), {
        minLength: 1,
        maxLength: 3,
      }),
      fc.nat(good.length),
      async (edits, cut) => {
        const der = new Uint8Array(good.subarray(0, Math.max(cut, 8)));
        for (const [at, v] of edits) if (at < der.length) der[at] = v;
        const fast = await checkCommonCsr(der, "alice");
        if (fast === null) return;
        const lib = await checkCsrWithLibrary(der, "alice");
        assert.deepEqual(fast.spki, lib.spki);
      },
    ),
    { numRuns: 300 },
  );
  // The untouched CSR goes through checkCsr whichever path it takes.
  assert.equal((await checkCsr(derToPem(good, "CERTIFICATE REQUEST"), "alice")).algorithm, "p256");
});

Deno.test("fast CSR path: takes a CSR made by openssl req (UTF8String CN)", async () => {
  if (!useTool("openssl")) return;
  const dir = await Deno.makeTempDir({ prefix: "securechat-csr-" });
  try {
    const run = async (args: string[]) => {
      const r = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" }).output();
      assert.ok(r.success, new TextDecoder().decode(r.stderr));
    };
    await run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${dir}/k.pem`]);
    await run([
      "req",
      "-new",
      "-key",
      `${dir}/k.pem`,
      "-subj",
      "/CN=carol_2",
      "-utf8",
      "-out",
      `${dir}/c.pem`,
    ]);
    const pem = await Deno.readTextFile(`${dir}/c.pem`);
    const der = pemToDer(pem, "CERTIFICATE REQUEST");
    assert.ok(await checkCommonCsr(der, "carol_2"), "openssl's CSR takes the fast path");
    assert.equal((await checkCsr(pem, "carol_2")).algorithm, "p256");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
