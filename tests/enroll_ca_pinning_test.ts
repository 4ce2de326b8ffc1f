/**
 * The pinned CA is exactly the certificate whose fingerprint was checked, nothing more. A man in the middle
 * of the first enrollment can add text to GET /v1/ca.pem: a second certificate block that the fingerprint
 * check does not see (trailing spaces on its lines) but TLS and node:crypto read first. That extra CA must
 * never be stored in the home folder, nor trusted by the directory client.
 */
import assert from "node:assert/strict";
import https from "node:https";
import { join } from "node:path";
import { derToPem, pemBlocks, pemToDer } from "../pki/mod.ts";
import { enroll } from "../client/enroll.ts";
import { loadHome } from "../client/home.ts";
import { DirectoryClient, DirectoryError } from "../client/directory_client.ts";
import { startTestDirectory, type TestDirectory } from "./helpers/directory.ts";

/** The impostor's CA hidden in front of the real one: every line ends with a space. */
function smuggle(realCaPem: string, impostorCaPem: string): string {
  return impostorCaPem.replace(/\n/g, " \n") + "\n" + realCaPem;
}

/** A TLS-terminating proxy with the real directory's own certificate (a compromised network path) that
 * rewrites GET /v1/ca.pem and forwards everything else. */
async function startTamperingProxy(
  real: TestDirectory,
  caPemAnswer: string,
  rewriteEnrollAnswer: (json: Record<string, unknown>) => void = () => {},
) {
  const cert = await Deno.readTextFile(join(real.data, "server.pem"));
  const key = await Deno.readTextFile(join(real.data, "server-key.pem"));
  const client = Deno.createHttpClient({ caCerts: [real.dir.caCertPem] });
  const server = https.createServer({ cert, key }, async (req, res) => {
    if (req.url === "/v1/ca.pem") {
      res.writeHead(200, { "content-type": "application/x-pem-file", connection: "close" });
      res.end(caPemAnswer);
      return;
    }
    let text = "";
    for await (const c of req) text += new TextDecoder().decode(c as Uint8Array, { stream: true });
    const init: RequestInit & { client: Deno.HttpClient } = {
      method: req.method,
      body: text === "" ? undefined : text,
      headers: text === "" ? {} : { "content-type": "application/json" },
      client,
    };
    const r = await fetch(real.dir.url + req.url, init);
    let out = new Uint8Array(await r.arrayBuffer());
    if (req.url === "/v1/enroll" && r.status === 201) {
      const json = JSON.parse(new TextDecoder().decode(out));
      rewriteEnrollAnswer(json);
      out = new TextEncoder().encode(JSON.stringify(json));
    }
    res.writeHead(r.status, { "content-type": r.headers.get("content-type") ?? "", connection: "close" });
    res.end(out);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        client.close();
        server.close(() => r());
        server.closeAllConnections?.();
      }),
  };
}

Deno.test("enroll stores only the fingerprinted CA, never text smuggled around it", async () => {
  const real = await startTestDirectory();
  const impostor = await startTestDirectory();
  const proxy = await startTamperingProxy(real, smuggle(real.dir.caCertPem, impostor.dir.caCertPem));
  const home = join(real.tmp, "home");
  try {
    await enroll({ server: proxy.url, caFingerprint: real.dir.caFingerprint, name: "alice", home });
    const stored = await Deno.readTextFile(join(home, "ca.pem"));
    const canonical = derToPem(pemToDer(real.dir.caCertPem, "CERTIFICATE"), "CERTIFICATE");
    assert.equal(stored, canonical, "ca.pem must be exactly the pinned certificate");
    const state = await loadHome(home);
    assert.equal(state.caPem, canonical);
    // The client made from this home refuses the impostor directory.
    const c = new DirectoryClient({ url: impostor.dir.url, caPem: state.caPem });
    try {
      await assert.rejects(
        c.info(),
        (e: unknown) => e instanceof DirectoryError && e.code === "BAD_SERVER_CERTIFICATE",
      );
    } finally {
      c.close();
    }
  } finally {
    await proxy.close();
    await impostor.close();
    await real.close();
  }
});

Deno.test("a home whose ca.pem carries a smuggled extra CA pins only the fingerprinted one", async () => {
  const real = await startTestDirectory();
  const impostor = await startTestDirectory();
  const home = join(real.tmp, "home");
  try {
    await enroll({ server: real.dir.url, caFingerprint: real.dir.caFingerprint, name: "bob", home });
    // Written by an older version that stored the server's text as it came.
    const tampered = smuggle(real.dir.caCertPem, impostor.dir.caCertPem);
    assert.equal(pemBlocks(tampered, "CERTIFICATE").length, 1, "the fingerprint check sees one block");
    await Deno.writeTextFile(join(home, "ca.pem"), tampered);
    const state = await loadHome(home);
    assert.equal(state.caPem, derToPem(pemToDer(real.dir.caCertPem, "CERTIFICATE"), "CERTIFICATE"));
    // And a client given the raw text directly still trusts only the fingerprinted block.
    for (const caPem of [state.caPem, tampered]) {
      const c = new DirectoryClient({ url: impostor.dir.url, caPem });
      try {
        await assert.rejects(
          c.info(),
          (e: unknown) => e instanceof DirectoryError && e.code === "BAD_SERVER_CERTIFICATE",
        );
      } finally {
        c.close();
      }
    }
    const good = new DirectoryClient({ url: real.dir.url, caPem: tampered });
    try {
      assert.equal((await good.info()).caFingerprint, real.dir.caFingerprint);
    } finally {
      good.close();
    }
  } finally {
    await impostor.close();
    await real.close();
  }
});

Deno.test("enroll stores only the checked certificate, never text smuggled around it in the answer", async () => {
  const real = await startTestDirectory();
  const impostor = await startTestDirectory();
  const proxy = await startTamperingProxy(real, real.dir.caCertPem, (json) => {
    json.certPem = smuggle(String(json.certPem), impostor.dir.caCertPem) + "trailing text\n";
  });
  const home = join(real.tmp, "home");
  try {
    const state = await enroll({
      server: proxy.url,
      caFingerprint: real.dir.caFingerprint,
      name: "dave",
      home,
    });
    const stored = await Deno.readTextFile(join(home, "cert.pem"));
    assert.equal(stored, derToPem(pemToDer(stored, "CERTIFICATE"), "CERTIFICATE"));
    assert.doesNotMatch(stored, /trailing| \n/);
    assert.equal(state.certPem, stored);
  } finally {
    await proxy.close();
    await impostor.close();
    await real.close();
  }
});
