/**
 * A user's certificate must never pass as the directory's. User certificates come from the same CA and carry
 * serverAuth (users listen for peers), and a username can equal one of the directory's host names:
 * "localhost" is a valid username and the default --hostname. The directory client must refuse such a
 * certificate, or that user could answer for the directory (replay an old CRL to hide revocations, hand
 * out false addresses).
 */
import assert from "node:assert/strict";
import https from "node:https";
import { DirectoryClient, DirectoryError } from "../client/directory_client.ts";
import { backendTest, enrollRaw, startTestDirectory } from "./helpers/directory.ts";

backendTest("a user named like the directory's host cannot pose as the directory", async (backend) => {
  const t = await startTestDirectory({ backend });
  const mallory = await enrollRaw(t.dir, "localhost");
  const fake = https.createServer({ cert: mallory.certPem, key: mallory.keyPem }, (_req, res) => {
    res.writeHead(200, { "content-type": "application/json", connection: "close" });
    res.end(JSON.stringify({ apiVersion: 1, caCertPem: t.dir.caCertPem, caFingerprint: "forged" }));
  });
  await new Promise<void>((r) => fake.listen(0, "127.0.0.1", () => r()));
  const port = (fake.address() as { port: number }).port;
  const client = new DirectoryClient({ url: `https://localhost:${port}`, caPem: t.dir.caCertPem });
  const real = new DirectoryClient({
    url: t.dir.url.replace("127.0.0.1", "localhost"),
    caPem: t.dir.caCertPem,
  });
  try {
    await assert.rejects(
      client.info(),
      (e: unknown) => e instanceof DirectoryError && e.code === "BAD_SERVER_CERTIFICATE",
    );
    // The real directory, reached by the same name, is still accepted.
    assert.equal((await real.info()).caFingerprint, t.dir.caFingerprint);
  } finally {
    client.close();
    real.close();
    await new Promise<void>((r) => fake.close(() => r()));
    fake.closeAllConnections?.();
    await t.close();
  }
});
