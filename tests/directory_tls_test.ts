/**
 * The directory's TLS endpoint seen from outside: the protocol versions and cipher suites it accepts
 * (probed with `openssl s_client`, skipped when openssl is missing), a TLS handshake trickled one byte at a
 * time, which must not hold a connection slot for ever, and a client certificate presented without its key.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { enrollRaw, startTestDirectory } from "./helpers/directory.ts";
import { tls13ClientWithAnyKey } from "./helpers/tls13_liar.ts";
import { exportPrivateKeyPem, generateKeyPair, pemToDer } from "../pki/mod.ts";
import { withTools } from "./helpers/tools.ts";

/** One `openssl s_client` handshake; resolves with its combined output and whether a cipher was agreed. */
async function probe(port: number, args: string[]): Promise<{ agreed: boolean; out: string }> {
  const child = new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.close();
  const r = await child.output();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  const agreed = /Cipher is (?!\(NONE\))/.test(out);
  return { agreed, out };
}

Deno.test(withTools("openssl", {
  name: "TLS: only 1.2 and 1.3 with AEAD suites; 1.0, 1.1 and CBC suites are refused by the server",
  async fn() {
    const t = await startTestDirectory();
    try {
      // SECLEVEL=0 makes the client really offer the old protocols, so a refusal comes from the server
      // (an alert), not from the local OpenSSL declining to try.
      for (const v of ["-tls1", "-tls1_1"]) {
        const r = await probe(t.dir.port, [v, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert.equal(r.agreed, false, `${v} was accepted:\n${r.out}`);
        assert.match(r.out, /alert|wrong version|unsupported protocol/i, `${v}: no refusal seen:\n${r.out}`);
      }
      const cbc = await probe(t.dir.port, [
        "-tls1_2",
        "-cipher",
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-SHA:AES256-SHA256@SECLEVEL=0",
      ]);
      assert.equal(cbc.agreed, false, `a CBC suite was accepted:\n${cbc.out}`);
      const tls12 = await probe(t.dir.port, ["-tls1_2"]);
      assert.ok(tls12.agreed, `TLS 1.2 with an AEAD suite failed:\n${tls12.out}`);
      assert.match(tls12.out, /Cipher is ECDHE-ECDSA-(AES\d+-GCM|CHACHA20-POLY1305)/);
      const tls13 = await probe(t.dir.port, ["-tls1_3"]);
      assert.ok(tls13.agreed, `TLS 1.3 failed:\n${tls13.out}`);
    } finally {
      await t.close();
    }
  },
}));

Deno.test("a TLS handshake trickled byte by byte is cut off at the header deadline", async () => {
  const t = await startTestDirectory({
    limits: { headersTimeoutMs: 300, bodyTimeoutMs: 300, idleTimeoutMs: 60_000 },
  });
  try {
    const sock = net.connect({ host: "127.0.0.1", port: t.dir.port });
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", reject);
    });
    sock.on("error", () => {/* the server cuts us off: expected */});
    const closed = new Promise<void>((r) => sock.once("close", () => r()));
    // The start of a TLS record header and a ClientHello that never completes, one byte every 50 ms: each
    // byte resets an idle timer, so only a deadline for the whole handshake ends it.
    const bytes = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    let sent = 0;
    const limit = 200; // 10 s of trickle
    const timer = setInterval(() => {
      if (sock.destroyed || sent >= limit) return;
      sock.write(new Uint8Array([bytes[sent % bytes.length] ?? 0]));
      sent++;
      if (sent >= limit) sock.end();
    }, 50);
    await closed;
    clearInterval(timer);
    assert.ok(sent < limit, `the server held a half-done handshake for the whole trickle (${sent} bytes)`);
  } finally {
    await t.close();
  }
});

Deno.test("a stolen certificate without its key cannot authenticate: the server checks CertificateVerify", async () => {
  const t = await startTestDirectory();
  try {
    const alice = await enrollRaw(t.dir, "alice");
    const stranger = await exportPrivateKeyPem(await generateKeyPair("p256"));
    const attempt = (signingKeyPem: string) =>
      tls13ClientWithAnyKey({
        host: "127.0.0.1",
        port: t.dir.port,
        serverName: "localhost",
        certDer: pemToDer(alice.certPem, "CERTIFICATE"),
        signingKeyPem,
        request: "GET /v1/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      });
    // The hand-made client works: with the right key, alice is authenticated.
    const own = await attempt(alice.keyPem);
    assert.match(own.response, /^HTTP\/1\.1 200 /);
    assert.match(own.response, /"name":"alice"/);
    // Alice's public certificate with a signature by another key: the handshake is refused (decrypt_error).
    const stolen = await attempt(stranger);
    assert.doesNotMatch(stolen.response, /HTTP\/1\.1 200/);
    assert.equal(stolen.response, "");
    assert.equal(stolen.alert, 51, `expected a decrypt_error alert, got ${stolen.alert}`);
  } finally {
    await t.close();
  }
});
