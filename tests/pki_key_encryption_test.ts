/**
 * A passphrase-protected CA key must resist offline guessing once the file is copied: PBES2 with PBKDF2-
 * HMAC-SHA256 at a current work factor (OWASP 2023: 600,000 iterations), a random salt and IV per file, and
 * still readable by `openssl pkey` (skipped without openssl) and by importPrivateKeyPem.
 */
import assert from "node:assert/strict";
import { exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem, pemToDer, PkiError } from "../pki/mod.ts";
import { PBKDF2_ITERATIONS } from "../pki/keys.ts";
import { withTools } from "./helpers/tools.ts";

/** The PBKDF2 iteration count and salt of an encrypted PKCS#8 DER, read by walking its fixed structure. */
function pbkdf2Params(der: Uint8Array): { iterations: number; salt: string } {
  let p = 0;
  const next = (): { tag: number; start: number; len: number } => {
    const tag = der[p++];
    let len = der[p++];
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + der[p++];
    }
    return { tag, start: p, len };
  };
  const enter = (tag: number) => assert.equal(next().tag, tag);
  const skip = (tag: number) => {
    const h = next();
    assert.equal(h.tag, tag);
    p = h.start + h.len;
  };
  enter(0x30); // EncryptedPrivateKeyInfo
  enter(0x30); // AlgorithmIdentifier
  skip(0x06); // PBES2
  enter(0x30); // PBES2-params
  enter(0x30); // keyDerivationFunc
  skip(0x06); // PBKDF2
  enter(0x30); // PBKDF2-params
  const s = next();
  assert.equal(s.tag, 0x04);
  const salt = Array.from(der.subarray(s.start, s.start + s.len), (b) => b.toString(16).padStart(2, "0"))
    .join("");
  p = s.start + s.len;
  const it = next();
  assert.equal(it.tag, 0x02);
  let iterations = 0;
  for (const b of der.subarray(it.start, it.start + it.len)) iterations = iterations * 256 + b;
  return { iterations, salt };
}

Deno.test("an encrypted key uses PBKDF2 with >= 600,000 iterations and a fresh salt; it round-trips", async () => {
  assert.ok(PBKDF2_ITERATIONS >= 600_000);
  for (const alg of ["p256", "ed25519"] as const) {
    const kp = await generateKeyPair(alg);
    const a = await exportPrivateKeyPem(kp, "correct horse");
    const b = await exportPrivateKeyPem(kp, "correct horse");
    assert.match(a, /-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    const pa = pbkdf2Params(pemToDer(a, "ENCRYPTED PRIVATE KEY"));
    const pb = pbkdf2Params(pemToDer(b, "ENCRYPTED PRIVATE KEY"));
    assert.ok(pa.iterations >= 600_000, `only ${pa.iterations} PBKDF2 iterations`);
    assert.notEqual(pa.salt, pb.salt);
    const back = await importPrivateKeyPem(a, "correct horse");
    assert.equal(back.algorithm, alg);
    const spki = async (k: CryptoKey) => new Uint8Array(await crypto.subtle.exportKey("spki", k));
    assert.deepEqual(await spki(back.publicKey), await spki(kp.publicKey));
    await assert.rejects(
      importPrivateKeyPem(a, "wrong"),
      (e: unknown) => e instanceof PkiError && e.code === "BAD_PASSPHRASE",
    );
    await assert.rejects(
      importPrivateKeyPem(a),
      (e: unknown) => e instanceof PkiError && e.code === "BAD_PASSPHRASE",
    );
  }
});

Deno.test(withTools("openssl", {
  name: "openssl pkey reads the encrypted key with its passphrase",
  async fn() {
    const kp = await generateKeyPair("p256");
    const tmp = await Deno.makeTempFile({ suffix: ".pem" });
    try {
      await Deno.writeTextFile(tmp, await exportPrivateKeyPem(kp, "pw-123"));
      const r = await new Deno.Command("openssl", {
        args: ["pkey", "-in", tmp, "-passin", "pass:pw-123", "-noout", "-text"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(r.success, new TextDecoder().decode(r.stderr));
      assert.match(new TextDecoder().decode(r.stdout), /prime256v1|P-256/);
    } finally {
      await Deno.remove(tmp);
    }
  },
}));
