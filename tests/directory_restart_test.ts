/**
 * Restart: users, certificates, tokens and revocations survive and the CA key is the same; a passphrase-
 * protected CA key needs its passphrase; a CA key others can read is refused. Plus the rate limiter's rules.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createInviteToken, revokeUser, startDirectoryServer } from "../server/mod.ts";
import { RateLimiter } from "../server/rate_limit.ts";
import { backendTest, call, dumpDatabase, enrollRaw, freshPostgresDatabase } from "./helpers/directory.ts";
import { DirectoryClient } from "../client/directory_client.ts";
import { keyFingerprintOf, pemToDer, x509 } from "../pki/mod.ts";
import tls from "node:tls";

backendTest("restart keeps the CA key, users, certificates, tokens and revocations", async (backend) => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-restart-" });
  const data = join(tmp, "data");
  const pg = backend === "postgres" ? await freshPostgresDatabase() : null;
  const database = pg?.url;
  const opts = {
    dataDir: data,
    database,
    port: 0,
    roughtime: { hostname: "127.0.0.1", port: 0 },
    caPassphrase: "s3cret",
  };
  let dir = await startDirectoryServer(opts);
  try {
    const keyPem = await Deno.readTextFile(join(data, "ca-key.pem"));
    assert.match(keyPem, /BEGIN ENCRYPTED PRIVATE KEY/);
    const rtKey = dir.roughtime!.publicKey;
    const alice = await enrollRaw(dir, "alice");
    const bob = await enrollRaw(dir, "bob");
    await call(dir, "PUT", "/v1/presence", {
      body: { host: "127.0.0.1", port: 5000, ttlSeconds: 600 },
      as: alice,
    });
    await revokeUser(data, "bob", { database });
    const token = await createInviteToken(data, undefined, { database });
    const before = await dumpDatabase({ data, database });
    const caPem = dir.caCertPem;
    await dir.close();

    // Wrong or missing passphrase: refused, nothing started.
    for (const caPassphrase of ["wrong", undefined]) {
      await assert.rejects(
        startDirectoryServer({ ...opts, caPassphrase }),
        (e: unknown) => (e as { code: string }).code === "CA_KEY",
      );
    }
    dir = await startDirectoryServer({ ...opts, inviteOnly: true });
    assert.equal(dir.caCertPem, caPem);
    assert.equal(await Deno.readTextFile(join(data, "ca-key.pem")), keyPem);
    assert.equal(dir.roughtime!.publicKey, rtKey);
    assert.equal(await dumpDatabase({ data, database }), before);
    const c = new DirectoryClient({
      url: dir.url,
      caPem: dir.caCertPem,
      certPem: alice.certPem,
      keyPem: alice.keyPem,
    });
    try {
      const a = await c.lookup("alice");
      assert.equal(a?.online, true);
      assert.deepEqual(a?.address, { host: "127.0.0.1", port: 5000 });
      assert.equal(a?.certPem, alice.certPem);
      assert.equal((await c.lookup("bob"))?.revoked, true);
      assert.ok((await c.revokedSerials()).has(bob.serial));
    } finally {
      c.close();
    }
    // The token created before the restart still works, once.
    await enrollRaw(dir, "carol", token);
    await assert.rejects(enrollRaw(dir, "dave", token), /403/);
  } finally {
    await dir.close();
    await pg?.drop();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a CA key readable by others is refused", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-restart-" });
  try {
    const dir = await startDirectoryServer({ dataDir: tmp, port: 0, roughtime: false });
    await dir.close();
    await Deno.chmod(join(tmp, "ca-key.pem"), 0o644);
    await assert.rejects(
      startDirectoryServer({ dataDir: tmp, port: 0, roughtime: false }),
      (e: unknown) => (e as { code: string }).code === "CA_KEY" && /readable by other users/.test(String(e)),
    );
    // Half a CA (certificate without key) is never silently replaced by a new CA.
    await Deno.remove(join(tmp, "ca-key.pem"));
    await assert.rejects(
      startDirectoryServer({ dataDir: tmp, port: 0, roughtime: false }),
      (e: unknown) => (e as { code: string }).code === "CA_KEY",
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("rate limiter: burst, refill, cost, per-address isolation", () => {
  const rl = new RateLimiter(2, 4);
  const t0 = 1_000_000;
  for (let i = 0; i < 4; i++) assert.equal(rl.take("a", 1, t0), 0);
  assert.ok(rl.take("a", 1, t0) >= 1);
  assert.equal(rl.take("b", 1, t0), 0); // another address has its own bucket
  assert.equal(rl.take("a", 1, t0 + 500), 0); // 0.5 s at 2/s refills one token
  assert.ok(rl.take("a", 1, t0 + 500) >= 1);
  assert.equal(rl.take("a", 4, t0 + 10_000), 0); // refill caps at the burst
  assert.ok(rl.take("a", 1, t0 + 10_000) >= 1);
  assert.equal(rl.take("c", 5, t0), 0); // a cost above the burst empties a full bucket...
  assert.equal(rl.take("c", 5, t0), 2); // ...and then says how long to wait for a full one
});

Deno.test("an Ed25519 CA serves TLS, issues and authenticates, and stays Ed25519 across a restart", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-restart-" });
  const data = join(tmp, "data");
  let dir = await startDirectoryServer({ dataDir: data, port: 0, roughtime: false, caAlgorithm: "ed25519" });
  try {
    const alice = await enrollRaw(dir, "alice");
    await dir.close();
    dir = await startDirectoryServer({ dataDir: data, port: 0, roughtime: false });
    const ca = new x509.X509Certificate(pemToDer(dir.caCertPem, "CERTIFICATE"));
    assert.equal(ca.publicKey.algorithm.name, "Ed25519");
    const c = new DirectoryClient({
      url: dir.url,
      caPem: dir.caCertPem,
      certPem: alice.certPem,
      keyPem: alice.keyPem,
    });
    try {
      await c.publish("127.0.0.1", 4444, 60);
      assert.deepEqual((await c.lookup("alice"))?.address, { host: "127.0.0.1", port: 4444 });
    } finally {
      c.close();
    }
  } finally {
    await dir.close();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("the phonebook's own certificate renews itself at two thirds of its lifetime, same key, on new connections", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-srvcert-" });
  let offset = 0;
  const dir = await startDirectoryServer({
    dataDir: join(tmp, "data"),
    port: 0,
    roughtime: false,
    serverCertCheckMs: 50,
    now: () => Date.now() + offset,
  });
  const served = () =>
    new Promise<{ serial: string; spki: string }>((resolve, reject) => {
      const s = tls.connect({
        host: "127.0.0.1",
        port: dir.port,
        servername: "localhost",
        rejectUnauthorized: false,
      });
      s.once("secureConnect", () => {
        const c = s.getPeerX509Certificate()!;
        resolve({ serial: c.serialNumber, spki: keyFingerprintOf(new Uint8Array(c.raw)) });
        s.destroy();
      });
      s.once("error", reject);
    });
  try {
    const first = await served();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await served()).serial, first.serial, "not renewed before it is due");
    offset = 300 * 86400_000; // past two thirds of 397 days
    let now = first;
    for (let i = 0; i < 100 && now.serial === first.serial; i++) {
      await new Promise((r) => setTimeout(r, 50));
      now = await served();
    }
    assert.notEqual(now.serial, first.serial, "a new server certificate is served");
    assert.equal(now.spki, first.spki, "for the same key");
    const onDisk = await Deno.readTextFile(join(tmp, "data", "server.pem"));
    assert.equal(keyFingerprintOf(onDisk), first.spki);
    assert.equal(
      new x509.X509Certificate(pemToDer(onDisk, "CERTIFICATE")).serialNumber.toLowerCase(),
      now.serial.toLowerCase(),
      "server.pem holds the one served",
    );
  } finally {
    await dir.close();
    await Deno.remove(tmp, { recursive: true });
  }
});
