/**
 * The "Directory and CA" cases of the security test plan: each refused input gets its specific status and
 * code, and the whole database is byte-for-byte the same afterwards.
 */
import assert from "node:assert/strict";
import {
  createCsr,
  generateKeyPair,
  normalizeSerial,
  pemToDer,
  signingAlgorithm,
  toBase64,
  x509,
} from "../pki/mod.ts";
import { createInviteToken } from "../server/mod.ts";
import { DirectoryClient, DirectoryError } from "../client/directory_client.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import {
  backendTest,
  call,
  codeOf,
  dumpDatabase,
  enrollRaw,
  rawConnect,
  startTestDirectory,
} from "./helpers/directory.ts";

const LIMITS = {
  headersTimeoutMs: 400,
  bodyTimeoutMs: 400,
  idleTimeoutMs: 5000,
  ratePerSecond: 10_000,
  rateBurst: 10_000,
};

function csrPem(der: Uint8Array): string {
  return `-----BEGIN CERTIFICATE REQUEST-----\n${toBase64(der).match(/.{1,64}/g)!.join("\n")}\n` +
    "-----END CERTIFICATE REQUEST-----\n";
}

backendTest(
  "usernames: case, look-alikes, invisible characters and other normalisations are refused",
  async (backend) => {
    const t = await startTestDirectory({ backend, limits: LIMITS });
    try {
      await enrollRaw(t.dir, "alice");
      const before = await dumpDatabase(t);
      const keys = await generateKeyPair();
      for (
        const name of [
          "Alice",
          "ALICE",
          "\u0430lice", // Cyrillic a
          "alic\u0435", // Cyrillic e
          "\uff41lice", // fullwidth
          "ali\u200bce", // zero-width space
          "alice\u200d",
          "\u00e0lice", // precomposed
          "a\u0300lice", // decomposed
          " alice",
          "alice\n",
          "al",
        ]
      ) {
        const r = await call(t.dir, "POST", "/v1/enroll", {
          body: { name, csr: await createCsr("alice", keys) },
        });
        assert.equal(r.status, 400, JSON.stringify(name));
        assert.equal(codeOf(r), "BAD_USERNAME", JSON.stringify(name));
        const l = await call(t.dir, "GET", `/v1/users/${encodeURIComponent(name)}`);
        assert.equal(l.status, 400);
      }
      // The canonical name itself with another key: taken.
      const r = await call(t.dir, "POST", "/v1/enroll", {
        body: { name: "alice", csr: await createCsr("alice", keys) },
      });
      assert.equal(r.status, 409);
      assert.equal(codeOf(r), "NAME_TAKEN");
      assert.equal(await dumpDatabase(t), before);
    } finally {
      await t.close();
    }
  },
);

backendTest(
  "oversized bodies are refused before they are read; chunked ones as soon as they cross the limit",
  async (backend) => {
    const t = await startTestDirectory({ backend, limits: LIMITS });
    try {
      const before = await dumpDatabase(t);
      // Declared 50 MB, nothing sent: the answer comes from the header alone.
      const c = await rawConnect(t.dir);
      c.socket.write(
        "POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
          "Content-Length: 52428800\r\n\r\n",
      );
      await c.closed;
      assert.match(c.received(), /^HTTP\/1\.1 413/);
      assert.match(c.received(), /BODY_TOO_LARGE/);
      // Chunked, no length: cut at the limit.
      const c2 = await rawConnect(t.dir);
      c2.socket.write(
        "POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
          "Transfer-Encoding: chunked\r\n\r\n",
      );
      const chunk = "x".repeat(4096);
      for (let i = 0; i < 8 && !c2.socket.destroyed; i++) {
        c2.socket.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
      }
      await c2.closed;
      assert.match(c2.received(), /^HTTP\/1\.1 413/);
      // Just over the limit through fetch: 413 with the JSON error.
      const big = await call(t.dir, "POST", "/v1/enroll", {
        rawBody: JSON.stringify({ pad: "x".repeat(17_000) }),
      });
      assert.equal(big.status, 413);
      assert.equal(codeOf(big), "BODY_TOO_LARGE");
      assert.equal(await dumpDatabase(t), before);
    } finally {
      await t.close();
    }
  },
);

backendTest("slow headers and slow bodies time out", async (backend) => {
  const t = await startTestDirectory({ backend, limits: LIMITS });
  try {
    const before = await dumpDatabase(t);
    // Headers trickled one byte at a time never complete: the connection is closed.
    const c = await rawConnect(t.dir);
    const request = "GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Slow: " + "a".repeat(200);
    let i = 0;
    const trickle = setInterval(() => {
      if (!c.socket.destroyed && i < request.length) c.socket.write(request[i++]);
    }, 20);
    await c.closed;
    clearInterval(trickle);
    assert.ok(i < request.length, "the server waited for the whole trickle");
    assert.doesNotMatch(c.received(), /HTTP\/1\.1 200/);
    // A body trickled after complete headers: 408 and closed.
    const c2 = await rawConnect(t.dir);
    c2.socket.write(
      "POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{",
    );
    let j = 0;
    const trickle2 = setInterval(() => {
      if (!c2.socket.destroyed && j++ < 400) c2.socket.write(" ");
    }, 20);
    await c2.closed;
    clearInterval(trickle2);
    assert.ok(j < 400, "the server waited for the whole body");
    assert.match(c2.received(), /^HTTP\/1\.1 408/);
    assert.match(c2.received(), /TIMEOUT/);
    assert.equal(await dumpDatabase(t), before);
  } finally {
    await t.close();
  }
});

backendTest("malformed, truncated, non-PEM CSRs and bad signatures are refused", async (backend) => {
  const t = await startTestDirectory({ backend, limits: LIMITS });
  try {
    const before = await dumpDatabase(t);
    const keys = await generateKeyPair();
    const good = await createCsr("carol", keys);
    const der = pemToDer(good, "CERTIFICATE REQUEST");
    const cases: [unknown, string][] = [
      ["hello", "MALFORMED_CSR"],
      [good.slice(0, 120), "MALFORMED_CSR"],
      [csrPem(der.subarray(0, der.length - 20)), "MALFORMED_CSR"],
      [good.replaceAll("CERTIFICATE REQUEST", "CERTIFICATE"), "MALFORMED_CSR"],
      [good + good, "MALFORMED_CSR"],
      [toBase64(der), "MALFORMED_CSR"],
      [42, "MALFORMED_CSR"],
      [null, "MALFORMED_CSR"],
      [{ pem: good }, "MALFORMED_CSR"],
    ];
    const flipped = new Uint8Array(der);
    flipped[flipped.length - 1] ^= 0x01; // last byte of the signature's s value
    cases.push([csrPem(flipped), "BAD_CSR_SIGNATURE"]);
    // The name changed after signing: the signature no longer covers what is asked.
    const carox = pemToDer(await createCsr("carox", keys), "CERTIFICATE REQUEST");
    const at = new TextDecoder("latin1").decode(carox).indexOf("carox");
    assert.ok(at > 0);
    carox[at + 4] = "l".charCodeAt(0);
    cases.push([csrPem(carox), "BAD_CSR_SIGNATURE"]);
    for (const [csr, code] of cases) {
      const r = await call(t.dir, "POST", "/v1/enroll", { body: { name: "carol", csr } });
      assert.equal(r.status, 400, `${code} ${String(csr).slice(0, 40)}`);
      assert.equal(codeOf(r), code, String(csr).slice(0, 60));
    }
    assert.equal(await dumpDatabase(t), before);
  } finally {
    await t.close();
  }
});

backendTest(
  "a CSR naming someone else than the requested or authenticated user is refused",
  async (backend) => {
    const t = await startTestDirectory({ backend, limits: LIMITS });
    try {
      const alice = await enrollRaw(t.dir, "alice");
      await enrollRaw(t.dir, "bob");
      const before = await dumpDatabase(t);
      const keys = await generateKeyPair();
      const r1 = await call(t.dir, "POST", "/v1/enroll", {
        body: { name: "carol", csr: await createCsr("dave", keys) },
      });
      assert.equal(r1.status, 400);
      assert.equal(codeOf(r1), "CSR_NAME_MISMATCH");
      // Alice, authenticated, asks to renew with a CSR for bob.
      const r2 = await call(t.dir, "POST", "/v1/renew", {
        body: { csr: await createCsr("bob", keys) },
        as: alice,
      });
      assert.equal(r2.status, 400);
      assert.equal(codeOf(r2), "CSR_NAME_MISMATCH");
      const r3 = await call(t.dir, "POST", "/v1/renew", {
        body: { name: "bob", csr: await createCsr("bob", keys) },
        as: alice,
      });
      assert.equal(r3.status, 403);
      assert.equal(codeOf(r3), "FORBIDDEN");
      assert.equal(await dumpDatabase(t), before);
    } finally {
      await t.close();
    }
  },
);

backendTest("a certificate for a taken name needs the current key", async (backend) => {
  const t = await startTestDirectory({ backend, limits: LIMITS });
  try {
    const alice = await enrollRaw(t.dir, "alice");
    const before = await dumpDatabase(t);
    const keys = await generateKeyPair();
    const csr = await createCsr("alice", keys);
    // Unauthenticated enrollment of a taken name, even with the owner's own key in the CSR.
    for (const c of [csr, await createCsr("alice", alice.keys)]) {
      const r = await call(t.dir, "POST", "/v1/enroll", { body: { name: "alice", csr: c } });
      assert.equal(r.status, 409);
      assert.equal(codeOf(r), "NAME_TAKEN");
    }
    // Renewal without a certificate, with a self-signed one, with another CA's (same CA name), with ours
    // but from a different enrollment of the same name: all 401.
    const ca = await makeTestCa({ name: "securechat CA" });
    const impostors = [
      undefined,
      await makeTestLeaf(ca, "alice", { defect: "self-signed" }),
      await makeTestLeaf(ca, "alice"),
    ];
    for (const as of impostors) {
      const r = await call(t.dir, "POST", "/v1/renew", { body: { csr }, as });
      assert.equal(r.status, 401);
      assert.equal(codeOf(r), "UNAUTHENTICATED");
    }
    assert.equal(await dumpDatabase(t), before);
    // With the current key it works (and is the only way).
    const ok = await call(t.dir, "POST", "/v1/renew", { body: { csr }, as: alice });
    assert.equal(ok.status, 201);
  } finally {
    await t.close();
  }
});

backendTest("whatever the CSR asks for, the issued certificate follows the template", async (backend) => {
  const t = await startTestDirectory({ backend, limits: LIMITS });
  try {
    const keys = await generateKeyPair();
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=mallory, O=Evil Corp",
      keys: { privateKey: keys.privateKey, publicKey: keys.publicKey },
      signingAlgorithm: signingAlgorithm("p256"),
      extensions: [
        new x509.BasicConstraintsExtension(true, 5, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
          true,
        ),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.codeSigning,
          x509.ExtendedKeyUsage.ocspSigning,
        ]),
        new x509.SubjectAlternativeNameExtension([
          { type: "dns", value: "mallory" },
          { type: "dns", value: "alice" },
          { type: "dns", value: "*.example.com" },
          { type: "ip", value: "10.0.0.1" },
        ]),
      ],
    });
    const r = await call(t.dir, "POST", "/v1/enroll", {
      body: { name: "mallory", csr: csr.toString("pem") },
    });
    assert.equal(r.status, 201, r.text);
    const cert = new x509.X509Certificate(pemToDer(String(r.json!.certPem), "CERTIFICATE"));
    assert.equal(cert.subject, "CN=mallory");
    const bc = cert.getExtension<x509.BasicConstraintsExtension>("2.5.29.19")!;
    assert.equal(bc.ca, false);
    assert.equal(bc.critical, true);
    const ku = cert.getExtension<x509.KeyUsagesExtension>("2.5.29.15")!;
    assert.equal(ku.usages, x509.KeyUsageFlags.digitalSignature);
    const eku = cert.getExtension<x509.ExtendedKeyUsageExtension>("2.5.29.37")!;
    assert.deepEqual(
      Array.from(eku.usages, String).sort(),
      [
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ].sort(),
    );
    const san = cert.getExtension<x509.SubjectAlternativeNameExtension>("2.5.29.17")!;
    assert.deepEqual(san.names.items.map((n) => [n.type, n.value]), [["dns", "mallory"]]);
    assert.equal(normalizeSerial(cert.serialNumber), r.json!.serial);
    assert.ok(cert.notAfter.getTime() - Date.now() <= 30 * 86400_000 + 1000);
  } finally {
    await t.close();
  }
});

backendTest(
  "invite-only: tokens are one-time, expire, and do not reveal which names exist",
  async (backend) => {
    const t = await startTestDirectory({ backend, limits: LIMITS, inviteOnly: true });
    try {
      const token = await createInviteToken(t.data, undefined, { database: t.database });
      await enrollRaw(t.dir, "alice", token);
      const before = await dumpDatabase(t);
      const keys = await generateKeyPair();
      // Replayed.
      const replay = await call(t.dir, "POST", "/v1/enroll", {
        body: { name: "bob", csr: await createCsr("bob", keys), token },
      });
      assert.equal(replay.status, 403);
      assert.equal(codeOf(replay), "BAD_TOKEN");
      assert.equal(await dumpDatabase(t), before);
      // Expired.
      const shortLived = await createInviteToken(t.data, 1, { database: t.database });
      await new Promise((r) => setTimeout(r, 10));
      const afterExpiredToken = await dumpDatabase(t);
      const expired = await call(t.dir, "POST", "/v1/enroll", {
        body: { name: "bob", csr: await createCsr("bob", keys), token: shortLived },
      });
      assert.equal(expired.status, 403);
      assert.equal(codeOf(expired), "BAD_TOKEN");
      assert.equal(await dumpDatabase(t), afterExpiredToken);
      // No token / unknown token: same answer for a taken name and a free one.
      const a = await call(t.dir, "POST", "/v1/enroll", {
        body: { name: "alice", csr: await createCsr("alice", keys) },
      });
      const b = await call(t.dir, "POST", "/v1/enroll", {
        body: { name: "zed", csr: await createCsr("zed", keys) },
      });
      assert.equal(a.status, 403);
      assert.equal(a.text, b.text);
      const a2 = await call(t.dir, "POST", "/v1/enroll", {
        body: { name: "alice", csr: await createCsr("alice", keys), token: "nope" },
      });
      const b2 = await call(t.dir, "POST", "/v1/enroll", {
        body: { name: "zed", csr: await createCsr("zed", keys), token: "nope" },
      });
      assert.equal(a2.status, 403);
      assert.equal(a2.text, b2.text);
      // Look-ups need a certificate in a closed directory: same 401 whether the user exists or not.
      const l1 = await call(t.dir, "GET", "/v1/users/alice");
      const l2 = await call(t.dir, "GET", "/v1/users/zed");
      assert.equal(l1.status, 401);
      assert.equal(l1.text, l2.text);
      assert.equal((await call(t.dir, "GET", "/v1/users")).status, 401);
      assert.equal(await dumpDatabase(t), afterExpiredToken);
    } finally {
      await t.close();
    }
  },
);

backendTest("floods from one address get 429 with Retry-After, and nothing changes", async (backend) => {
  const t = await startTestDirectory({ backend, limits: { ...LIMITS, ratePerSecond: 0.05, rateBurst: 20 } });
  try {
    const before = await dumpDatabase(t);
    const client = Deno.createHttpClient({ caCerts: [t.dir.caCertPem] });
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    try {
      for (let i = 0; i < 40; i++) {
        const init: RequestInit & { client: Deno.HttpClient } = { client };
        const res = await fetch(t.dir.url + "/v1/info", init);
        await res.body?.cancel();
        statuses.push(res.status);
        if (res.status === 429) retryAfter = res.headers.get("retry-after");
      }
    } finally {
      client.close();
    }
    // A burst of 20, then one token every 20 s: the 21st request onwards is refused.
    assert.ok(statuses.slice(0, 20).every((s) => s === 200), statuses.join(","));
    assert.ok(statuses.slice(20).every((s) => s === 429), statuses.join(","));
    assert.ok(Number(retryAfter) >= 1);
    // Enrollment costs more: with the bucket empty it is refused before any CSR work.
    const keys = await generateKeyPair();
    const r = await call(t.dir, "POST", "/v1/enroll", {
      body: { name: "carol", csr: await createCsr("carol", keys) },
    });
    assert.equal(r.status, 429);
    assert.equal(codeOf(r), "RATE_LIMITED");
    assert.equal(await dumpDatabase(t), before);
  } finally {
    await t.close();
  }
});

backendTest(
  "nobody changes another user's address or revokes another user's certificate",
  async (backend) => {
    const t = await startTestDirectory({ backend, limits: LIMITS });
    try {
      const alice = await enrollRaw(t.dir, "alice");
      const bob = await enrollRaw(t.dir, "bob");
      assert.equal(
        (await call(t.dir, "PUT", "/v1/presence", {
          body: { host: "192.0.2.1", port: 1000, ttlSeconds: 60 },
          as: bob,
        })).status,
        200,
      );
      const before = await dumpDatabase(t);
      const cases: [string, string, unknown, typeof alice | undefined, number, string][] = [
        [
          "PUT",
          "/v1/presence",
          { name: "bob", host: "203.0.113.9", port: 666, ttlSeconds: 60 },
          alice,
          403,
          "FORBIDDEN",
        ],
        [
          "PUT",
          "/v1/presence",
          { host: "203.0.113.9", port: 666, ttlSeconds: 60 },
          undefined,
          401,
          "UNAUTHENTICATED",
        ],
        ["DELETE", "/v1/presence", undefined, undefined, 401, "UNAUTHENTICATED"],
        ["POST", "/v1/revoke", { name: "bob" }, alice, 403, "FORBIDDEN"],
        ["POST", "/v1/revoke", { serial: bob.serial }, alice, 403, "FORBIDDEN"],
        ["POST", "/v1/revoke", {}, undefined, 401, "UNAUTHENTICATED"],
        ["PUT", "/v1/users/bob", { host: "203.0.113.9", port: 666 }, alice, 405, "METHOD_NOT_ALLOWED"],
      ];
      for (const [method, path, body, as, status, code] of cases) {
        const r = await call(t.dir, method, path, { body, as });
        assert.equal(r.status, status, `${method} ${path} ${JSON.stringify(body)}`);
        assert.equal(codeOf(r), code);
      }
      // A certificate from another CA with the same CA name, carrying bob's name, is nobody.
      const ca = await makeTestCa({ name: "securechat CA" });
      const fake = await makeTestLeaf(ca, "bob");
      for (const as of [fake, await makeTestLeaf(ca, "bob", { defect: "self-signed" })]) {
        const r = await call(t.dir, "POST", "/v1/revoke", { body: {}, as });
        assert.equal(r.status, 401);
      }
      assert.equal(await dumpDatabase(t), before);
      const bobNow = await call(t.dir, "GET", "/v1/users/bob");
      assert.deepEqual(bobNow.json!.address, { host: "192.0.2.1", port: 1000 });
      assert.equal(bobNow.json!.revoked, false);
    } finally {
      await t.close();
    }
  },
);

backendTest("injection-shaped and malformed input is refused without effect", async (backend) => {
  const t = await startTestDirectory({ backend, limits: LIMITS });
  try {
    const alice = await enrollRaw(t.dir, "alice");
    const before = await dumpDatabase(t);
    const keys = await generateKeyPair();
    const csr = await createCsr("alice", keys);
    const checks: [
      string,
      string,
      { body?: unknown; rawBody?: string; contentType?: string; as?: typeof alice },
      number,
      string,
    ][] = [
      ["POST", "/v1/enroll", { body: { name: "alice' OR '1'='1", csr } }, 400, "BAD_USERNAME"],
      ["POST", "/v1/enroll", { body: { name: 'a"; DROP TABLE users; --', csr } }, 400, "BAD_USERNAME"],
      ["POST", "/v1/enroll", { body: { name: ["alice"], csr } }, 400, "BAD_USERNAME"],
      ["POST", "/v1/enroll", { body: ["alice", csr] }, 400, "BAD_REQUEST"],
      [
        "POST",
        "/v1/enroll",
        { rawBody: '{"__proto__": {"inviteOnly": false}, "name": "alice"' },
        400,
        "BAD_JSON",
      ],
      ["POST", "/v1/enroll", { rawBody: '{"name": "\\ud800zed"}' }, 400, "BAD_USERNAME"],
      [
        "POST",
        "/v1/enroll",
        { rawBody: "name=alice", contentType: "application/x-www-form-urlencoded" },
        415,
        "UNSUPPORTED_MEDIA_TYPE",
      ],
      ["POST", "/v1/enroll", { rawBody: "\xff\xfe" }, 400, "BAD_JSON"],
      ["GET", "/v1/users?prefix=%25'%20OR%201=1%20--", {}, 400, "BAD_REQUEST"],
      ["GET", "/v1/users?limit=1e9", {}, 400, "BAD_REQUEST"],
      ["GET", "/v1/users?cursor=')--", {}, 400, "BAD_REQUEST"],
      ["GET", "/v1/users/..%2f..%2fetc%2fpasswd", {}, 400, "BAD_USERNAME"],
      ["GET", "/v1/users/%E0%A4%A", {}, 400, "BAD_USERNAME"],
      [
        "PUT",
        "/v1/presence",
        { body: { host: "evil.com; rm -rf /", port: 80, ttlSeconds: 60 }, as: alice },
        400,
        "BAD_ADDRESS",
      ],
      [
        "PUT",
        "/v1/presence",
        { body: { host: "127.0.0.1", port: "80", ttlSeconds: 60 }, as: alice },
        400,
        "BAD_ADDRESS",
      ],
      [
        "PUT",
        "/v1/presence",
        { body: { host: "127.0.0.1", port: 80, ttlSeconds: 1e12 }, as: alice },
        400,
        "BAD_ADDRESS",
      ],
      [
        "PUT",
        "/v1/presence",
        { body: { host: "127.0.0.1", port: 70000, ttlSeconds: 60 }, as: alice },
        400,
        "BAD_ADDRESS",
      ],
      ["GET", "/v1/nothing", {}, 404, "NOT_FOUND"],
      ["DELETE", "/v1/info", {}, 405, "METHOD_NOT_ALLOWED"],
    ];
    for (const [method, path, opts, status, code] of checks) {
      const r = await call(t.dir, method, path, opts);
      assert.equal(
        r.status,
        status,
        `${method} ${path} ${JSON.stringify(opts.body ?? opts.rawBody)}: ${r.text}`,
      );
      assert.equal(codeOf(r), code, `${method} ${path}`);
    }
    // A __proto__ key in valid JSON is just an ignored field.
    const proto = await call(t.dir, "POST", "/v1/enroll", {
      rawBody: `{"__proto__": {"name": "alice"}, "name": "zed", "csr": ${
        JSON.stringify(await createCsr("zed", keys))
      }}`,
    });
    assert.equal(proto.status, 201);
    assert.equal(proto.json!.name, "zed");
    const after = JSON.parse(await dumpDatabase(t));
    const beforeJ = JSON.parse(before);
    assert.deepEqual(after.users.filter((u: { name: string }) => u.name !== "zed"), beforeJ.users);
  } finally {
    await t.close();
  }
});

backendTest(
  "the directory client waits once for a short Retry-After and reports a long one",
  async (backend) => {
    const short = await startTestDirectory({
      backend,
      limits: { ...LIMITS, ratePerSecond: 1, rateBurst: 1 },
    });
    const long = await startTestDirectory({
      backend,
      limits: { ...LIMITS, ratePerSecond: 0.05, rateBurst: 1 },
    });
    const a = new DirectoryClient({ url: short.dir.url, caPem: short.dir.caCertPem });
    const b = new DirectoryClient({ url: long.dir.url, caPem: long.dir.caCertPem });
    try {
      await a.info();
      assert.equal((await a.info()).apiVersion, 1); // 429 with Retry-After: 1, then served
      await b.info();
      await assert.rejects(
        b.info(),
        (e: unknown) => e instanceof DirectoryError && e.code === "RATE_LIMITED",
      );
    } finally {
      a.close();
      b.close();
      await short.close();
      await long.close();
    }
  },
);

backendTest(
  "the directory client accepts only a server certificate from its pinned CA, for the dialled name",
  async (backend) => {
    const a = await startTestDirectory({ backend });
    // Same CA name ("securechat CA"), another key: an impostor directory.
    const b = await startTestDirectory({ backend });
    const c = await startTestDirectory({ backend, hostnames: ["phonebook.invalid"] });
    const clients = [
      new DirectoryClient({ url: b.dir.url, caPem: a.dir.caCertPem }),
      new DirectoryClient({ url: c.dir.url, caPem: c.dir.caCertPem }),
      new DirectoryClient({ url: a.dir.url, caPem: a.dir.caCertPem }),
    ];
    try {
      assert.notEqual(a.dir.caFingerprint, b.dir.caFingerprint);
      for (const client of clients.slice(0, 2)) {
        await assert.rejects(
          client.info(),
          (e: unknown) => e instanceof DirectoryError && e.code === "BAD_SERVER_CERTIFICATE",
        );
      }
      assert.equal((await clients[2].info()).caFingerprint, a.dir.caFingerprint);
    } finally {
      for (const client of clients) client.close();
      await a.close();
      await b.close();
      await c.close();
    }
  },
);

backendTest(
  "connections beyond the cap are closed on arrival; a freed slot is usable again",
  async (backend) => {
    const t = await startTestDirectory({ backend, limits: { ...LIMITS, maxConnections: 2 } });
    try {
      const c1 = await rawConnect(t.dir);
      const c2 = await rawConnect(t.dir);
      await assert.rejects(rawConnect(t.dir));
      c1.socket.destroy();
      await c1.closed;
      // The server sees the close a moment later; retry briefly rather than guess how long.
      let c3: Awaited<ReturnType<typeof rawConnect>> | null = null;
      for (let i = 0; i < 50 && !c3; i++) {
        c3 = await rawConnect(t.dir).catch(() => null);
        if (!c3) await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(c3, "a slot freed by a closed connection is reused");
      c3.socket.write("GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      await c3.closed;
      assert.match(c3.received(), /^HTTP\/1\.1 200/);
      c2.socket.destroy();
      await c2.closed;
    } finally {
      await t.close();
    }
  },
);
