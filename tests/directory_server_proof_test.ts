/**
 * The directory client judges the phonebook's certificate itself, on trusted time, with the TLS stack told
 * not to (`rejectUnauthorized: false`, which would otherwise use the local clock). That is only sound if the
 * TLS client still checks the server's CertificateVerify in that mode: a server that presents the real
 * phonebook certificate (public: anyone can copy it) without holding its key must be refused. A hand-made
 * TLS 1.3 server (tests/helpers/tls13_liar.ts) plays that impostor, and the same server signing with the
 * certificate's own key is the control that shows the refusal comes from the signature check.
 */
import assert from "node:assert/strict";
import tls from "node:tls";
import { tls13ServerWithAnyKey } from "./helpers/tls13_liar.ts";
import { makeTestCa } from "./helpers/pki.ts";
import { exportPrivateKeyPem, generateKeyPair, issueServerCertificate, pemToDer } from "../pki/mod.ts";
import { DirectoryClient, DirectoryError } from "../client/directory_client.ts";
import { startTestDirectory } from "./helpers/directory.ts";
import { codeOf, messageOf } from "../coded_error.ts";

const ca = await makeTestCa();
const serverKeys = await generateKeyPair("p256");
const serverCert = await issueServerCertificate(ca.material, ["localhost"], serverKeys);
const serverCertDer = pemToDer(serverCert.toString("pem"), "CERTIFICATE");
const ownKeyPem = await exportPrivateKeyPem(serverKeys);
const otherKeyPem = await exportPrivateKeyPem(await generateKeyPair("p256"));

/** One node:tls client connection as the directory client makes it; resolves with what happened. */
function connect(port: number): Promise<{ secure: boolean; code: string | null }> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: [ca.certPem],
      rejectUnauthorized: false,
      minVersion: "TLSv1.3",
    });
    let done = false;
    const finish = (r: { secure: boolean; code: string | null }) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve(r);
    };
    s.on("secureConnect", () => {
      // The write proves the handshake is finished from the client's side (its Finished goes first).
      s.write("GET /v1/info HTTP/1.1\r\nhost: localhost\r\n\r\n", () => finish({ secure: true, code: null }));
    });
    s.on("error", (e: Error & { code?: string }) => finish({ secure: false, code: e.code ?? e.message }));
    s.on("close", () => finish({ secure: false, code: "CLOSED" }));
  });
}

Deno.test("TLS client, rejectUnauthorized false: the control server signing with the certificate's key is accepted", async () => {
  const srv = await tls13ServerWithAnyKey({ certDer: serverCertDer, signingKeyPem: ownKeyPem });
  try {
    const r = await connect(srv.port);
    assert.equal(r.secure, true, `the honest hand-made server was refused (${r.code}): the helper is wrong`);
    const seen = await srv.result;
    assert.equal(seen.clientFinished, true);
    assert.match(seen.request, /^GET \/v1\/info/);
  } finally {
    await srv.close();
  }
});

Deno.test("TLS client, rejectUnauthorized false: the phonebook's certificate without its key is refused", async () => {
  const srv = await tls13ServerWithAnyKey({ certDer: serverCertDer, signingKeyPem: otherKeyPem });
  try {
    const r = await connect(srv.port);
    assert.equal(r.secure, false, "a server without the certificate's key completed a handshake");
    const seen = await srv.result;
    assert.equal(seen.clientFinished, false, "the client sent its Finished to an impostor");
    assert.equal(seen.request, "", "the client sent a request to an impostor");
    // RFC 8446 6.2: a bad CertificateVerify is decrypt_error (51); rustls may just close.
    if (seen.alert !== null) assert.equal(seen.alert, 51, `unexpected alert ${seen.alert}`);
  } finally {
    await srv.close();
  }
});

Deno.test("directory client: an impostor holding only the phonebook's certificate gets no request", async () => {
  const srv = await tls13ServerWithAnyKey({ certDer: serverCertDer, signingKeyPem: otherKeyPem });
  const c = new DirectoryClient({ url: `https://localhost:${srv.port}`, caPem: ca.certPem });
  try {
    await assert.rejects(c.info(), (e: unknown) => e instanceof DirectoryError);
    const seen = await srv.result;
    assert.equal(seen.clientFinished, false);
    assert.equal(seen.request, "", "no request bytes to an impostor");
  } finally {
    c.close();
    await srv.close();
  }
});

Deno.test("directory client: the phonebook's certificate is judged on the clock it is given, not the local one", async () => {
  const t = await startTestDirectory();
  // Further than the server certificate lasts (SERVER_CERT_VALIDITY_DAYS), both ways.
  const year = 400 * 24 * 3600_000;
  const at = (offset: number) => () => ({ earliestMs: Date.now() + offset, latestMs: Date.now() + offset });
  try {
    // Judged a year ahead, the (valid now) server certificate has expired: refused before any request.
    const ahead = new DirectoryClient({ url: t.dir.url, caPem: t.dir.caCertPem, certTime: at(year) });
    await assert.rejects(
      ahead.info(),
      (e: unknown) => codeOf(e) === "BAD_SERVER_CERTIFICATE" && /expired/.test(messageOf(e)),
    );
    ahead.close();
    const behind = new DirectoryClient({ url: t.dir.url, caPem: t.dir.caCertPem, certTime: at(-year) });
    await assert.rejects(
      behind.info(),
      (e: unknown) => codeOf(e) === "BAD_SERVER_CERTIFICATE" && /not valid before/.test(messageOf(e)),
    );
    // The same client, once told the right time, connects (a new connection is judged again).
    behind.setCertTime(at(0));
    assert.equal(typeof (await behind.info()).caCertPem, "string");
    behind.close();
  } finally {
    await t.close();
  }
});
