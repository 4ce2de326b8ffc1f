/**
 * End to end: serve on a temporary folder, enroll two users, list them, publish addresses, revoke one, and
 * restart; the issued certificates are checked by openssl, not only by our own code.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createInviteToken, startDirectoryServer } from "../server/mod.ts";
import { backendTest, freshPostgresDatabase } from "./helpers/directory.ts";
import { enroll, renewEnrollment, revokeEnrollment } from "../client/enroll.ts";
import { DirectoryClient, DirectoryError } from "../client/directory_client.ts";
import { loadHome } from "../client/home.ts";
import { fingerprintOf, normalizeSerial, pemToDer, x509 } from "../pki/mod.ts";
import { useTool } from "./helpers/tools.ts";

async function openssl(args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

function serialOfPem(pem: string): string {
  return normalizeSerial(new x509.X509Certificate(pemToDer(pem, "CERTIFICATE")).serialNumber);
}

backendTest("directory end to end: enroll, list, publish, revoke, restart", async (backend) => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-e2e-" });
  const pg = backend === "postgres" ? await freshPostgresDatabase() : null;
  const database = pg?.url;
  const data = join(tmp, "data");
  const rt = { hostname: "127.0.0.1", port: 0 };
  let dir = await startDirectoryServer({ dataDir: data, port: 0, roughtime: rt, database });
  const clients: DirectoryClient[] = [];
  try {
    assert.equal(dir.caFingerprint, fingerprintOf(dir.caCertPem));
    assert.ok(dir.roughtime && dir.roughtime.port > 0);
    const caKeyMode = (await Deno.stat(join(data, "ca-key.pem"))).mode! & 0o777;
    assert.equal(caKeyMode, 0o600);

    const alice = await enroll({
      server: dir.url,
      caFingerprint: dir.caFingerprint.toUpperCase().match(/../g)!.join(":"),
      name: "alice",
      home: join(tmp, "alice"),
    });
    const bob = await enroll({
      server: dir.url,
      caFingerprint: dir.caFingerprint,
      name: "bob",
      home: join(tmp, "bob"),
    });
    assert.equal(alice.name, "alice");
    assert.equal(alice.caFingerprint, dir.caFingerprint);
    assert.equal((await Deno.stat(join(tmp, "alice", "key.pem"))).mode! & 0o777, 0o600);
    // The directory's Roughtime server is recorded for the chat client, with its published key.
    assert.equal(alice.roughtime.length, 1);
    assert.equal(alice.roughtime[0].port, dir.roughtime!.port);
    assert.equal(btoa(String.fromCharCode(...alice.roughtime[0].publicKey)), dir.roughtime!.publicKey);

    if (useTool("openssl")) {
      for (const who of ["alice", "bob"]) {
        const v = await openssl(["verify", "-CAfile", join(tmp, who, "ca.pem"), join(tmp, who, "cert.pem")]);
        assert.equal(v.code, 0, v.out);
        assert.match(v.out, /: OK/);
        const t = await openssl(["x509", "-in", join(tmp, who, "cert.pem"), "-noout", "-text"]);
        assert.equal(t.code, 0);
        assert.match(t.out, new RegExp(`Subject: CN ?= ?${who}\\n`));
        assert.match(t.out, /Basic Constraints: critical\s+CA:FALSE/);
        assert.match(t.out, /Key Usage: critical\s+Digital Signature\n/);
        assert.match(
          t.out,
          /Extended Key Usage:\s+TLS Web Client Authentication, TLS Web Server Authentication/,
        );
        assert.match(t.out, new RegExp(`Subject Alternative Name:\\s+DNS:${who}\\n`));
        const days =
          (new x509.X509Certificate(pemToDer(who === "alice" ? alice.certPem : bob.certPem, "CERTIFICATE"))
            .notAfter.getTime() - Date.now()) / 86400_000;
        assert.ok(days > 29 && days <= 30.01, `validity ${days} days`);
      }
    }

    const ac = new DirectoryClient({
      url: dir.url,
      caPem: alice.caPem,
      certPem: alice.certPem,
      keyPem: alice.keyPem,
    });
    const bc = new DirectoryClient({
      url: dir.url,
      caPem: bob.caPem,
      certPem: bob.certPem,
      keyPem: bob.keyPem,
    });
    const anon = new DirectoryClient({ url: dir.url, caPem: dir.caCertPem });
    clients.push(ac, bc, anon);

    const info = await anon.info();
    assert.equal(info.apiVersion, 1);
    assert.equal(info.caFingerprint, dir.caFingerprint);
    assert.deepEqual(info.roughtime, {
      port: dir.roughtime!.port,
      publicKey: dir.roughtime!.publicKey,
      version: "rfc",
    });

    await ac.publish("127.0.0.1", 40001, 60);
    await bc.publish("192.0.2.7", 40002, 60);
    const all = await anon.list();
    assert.deepEqual(all.users.map((u) => u.name), ["alice", "bob"]);
    assert.equal(all.next, null);
    assert.deepEqual(all.users[0].address, { host: "127.0.0.1", port: 40001 });
    assert.equal(all.users[0].online, true);
    assert.equal(all.users[0].fingerprint, fingerprintOf(alice.certPem));
    assert.equal(all.users[0].certPem, alice.certPem);

    // Search by prefix and pagination.
    assert.deepEqual((await anon.list({ prefix: "bo" })).users.map((u) => u.name), ["bob"]);
    const p1 = await anon.list({ limit: 1 });
    assert.deepEqual(p1.users.map((u) => u.name), ["alice"]);
    assert.equal(p1.next, "alice");
    const p2 = await anon.list({ limit: 1, cursor: p1.next! });
    assert.deepEqual(p2.users.map((u) => u.name), ["bob"]);
    assert.equal(p2.next, null);

    await bc.withdraw();
    const bobEntry = await anon.lookup("bob");
    assert.equal(bobEntry?.online, false);
    assert.equal(bobEntry?.address, null);
    assert.equal(await anon.lookup("carol"), null);

    // Renewal with the current key: new certificate, old one superseded (on the CRL).
    const oldSerial = serialOfPem(alice.certPem);
    const renewed = await renewEnrollment(join(tmp, "alice"));
    assert.notEqual(serialOfPem(renewed.certPem), oldSerial);
    assert.equal(renewed.keyPem, alice.keyPem);
    assert.ok((await anon.revokedSerials()).has(oldSerial));
    // The old certificate no longer authenticates.
    await assert.rejects(
      ac.publish("127.0.0.1", 40001, 60),
      (e: unknown) => (e as DirectoryError).code === "UNAUTHENTICATED",
    );

    // Bob revokes his certificate: it is on the signed CRL, his entry says so, and it no longer authenticates.
    const bobSerial = serialOfPem(bob.certPem);
    const rv = await revokeEnrollment(join(tmp, "bob"));
    assert.equal(rv.serial, bobSerial);
    const revoked = await anon.revokedSerials();
    assert.ok(revoked.has(bobSerial));
    assert.ok(!revoked.has(serialOfPem(renewed.certPem)));
    assert.equal((await anon.lookup("bob"))?.revoked, true);
    await assert.rejects(
      bc.publish("127.0.0.1", 1234, 60),
      (e: unknown) => (e as DirectoryError).code === "UNAUTHENTICATED",
    );
    if (useTool("openssl")) {
      const crlPath = join(tmp, "crl.der");
      const http = Deno.createHttpClient({ caCerts: [dir.caCertPem] });
      try {
        const init: RequestInit & { client: Deno.HttpClient } = { client: http };
        const res = await fetch(dir.url + "/v1/crl", init);
        await Deno.writeFile(crlPath, new Uint8Array(await res.arrayBuffer()));
      } finally {
        http.close();
      }
      const v = await openssl([
        "crl",
        "-inform",
        "DER",
        "-in",
        crlPath,
        "-CAfile",
        join(data, "ca.pem"),
        "-noout",
      ]);
      assert.match(v.out, /verify OK/);
      const bobPath = join(tmp, "bob", "cert.pem");
      const crlPem = join(tmp, "crl.pem");
      await openssl(["crl", "-inform", "DER", "-in", crlPath, "-out", crlPem]);
      const vc = await openssl([
        "verify",
        "-crl_check",
        "-CAfile",
        join(data, "ca.pem"),
        "-CRLfile",
        crlPem,
        bobPath,
      ]);
      assert.notEqual(vc.code, 0);
      assert.match(vc.out, /revoked/);
    }

    for (const c of clients) c.close();
    clients.length = 0;
    // Restart: the same CA, users, certificates and revocations; an unused invitation survives too.
    const token = await createInviteToken(data, undefined, { database });
    const caBefore = dir.caCertPem;
    await dir.close();
    dir = await startDirectoryServer({ dataDir: data, port: 0, roughtime: rt, inviteOnly: true, database });
    assert.equal(dir.caCertPem, caBefore);
    assert.equal(dir.createdCa, false);
    const a2 = await loadHome(join(tmp, "alice"));
    const ac2 = new DirectoryClient({
      url: dir.url,
      caPem: a2.caPem,
      certPem: a2.certPem,
      keyPem: a2.keyPem,
    });
    clients.push(ac2);
    const after = await ac2.list();
    assert.deepEqual(after.users.map((u) => [u.name, u.revoked]), [["alice", false], ["bob", true]]);
    assert.equal(after.users[0].certPem, a2.certPem);
    assert.ok((await ac2.revokedSerials()).has(bobSerial));
    await ac2.publish("127.0.0.1", 40001, 60);
    const carol = await enroll({
      server: dir.url,
      caFingerprint: dir.caFingerprint,
      name: "carol",
      token,
      home: join(tmp, "carol"),
    });
    assert.equal(carol.name, "carol");
  } finally {
    for (const c of clients) c.close();
    await dir.close();
    await pg?.drop();
    await Deno.remove(tmp, { recursive: true });
  }
});
