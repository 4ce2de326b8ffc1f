/**
 * Review findings on the directory API: a race of enrollments for one name, the connection cap per source,
 * a revocation that names its own serial in another spelling, and the trust-on-first-use prompt's default.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createCsr, generateKeyPair } from "../pki/mod.ts";
import {
  backendTest,
  call,
  codeOf,
  dumpDatabase,
  enrollRaw,
  rawConnect,
  startTestDirectory,
} from "./helpers/directory.ts";
import { runCli } from "./helpers/cli.ts";

backendTest(
  "many enrollments racing for one name: exactly one wins, one user and one certificate stored",
  async (backend) => {
    const t = await startTestDirectory({ backend, limits: { ratePerSecond: 10_000, rateBurst: 10_000 } });
    try {
      const csrs = await Promise.all(
        Array.from({ length: 12 }, async () => await createCsr("racer", await generateKeyPair("p256"))),
      );
      const results = await Promise.all(
        csrs.map((csr) => call(t.dir, "POST", "/v1/enroll", { body: { name: "racer", csr } })),
      );
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [201, ...new Array(11).fill(409)]);
      assert.ok(results.filter((r) => r.status === 409).every((r) => codeOf(r) === "NAME_TAKEN"));
      const dump = JSON.parse(await dumpDatabase(t)) as Record<string, { serial: string; name: string }[]>;
      assert.equal(dump.users.length, 1);
      assert.equal(dump.certs.length, 1);
      const winner = results.find((r) => r.status === 201)!;
      assert.equal(dump.users[0].name, "racer");
      assert.equal(dump.users[0].serial, winner.json!.serial);
    } finally {
      await t.close();
    }
  },
);

backendTest("one source cannot take every connection slot", async (backend) => {
  const t = await startTestDirectory({
    backend,
    limits: { maxConnections: 100, maxConnectionsPerSource: 3 },
  });
  const open: Awaited<ReturnType<typeof rawConnect>>[] = [];
  try {
    for (let i = 0; i < 3; i++) open.push(await rawConnect(t.dir));
    await assert.rejects(rawConnect(t.dir), Error, "a fourth connection from the same source");
    open[0].socket.destroy();
    await open[0].closed;
    let again: Awaited<ReturnType<typeof rawConnect>> | null = null;
    for (let i = 0; i < 50 && !again; i++) {
      again = await rawConnect(t.dir).catch(() => null);
      if (!again) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(again, "a freed slot is usable again");
    open[0] = again;
  } finally {
    for (const c of open) {
      c.socket.destroy();
      await c.closed;
    }
    await t.close();
  }
});

backendTest(
  "revoking names one's own serial in any spelling (case, leading zeros); another serial is 403",
  async (backend) => {
    const t = await startTestDirectory({ backend });
    try {
      const alice = await enrollRaw(t.dir, "alice");
      const bob = await enrollRaw(t.dir, "bob");
      const other = await call(t.dir, "POST", "/v1/revoke", { body: { serial: bob.serial }, as: alice });
      assert.equal(other.status, 403);
      assert.equal(codeOf(other), "FORBIDDEN");
      const r = await call(t.dir, "POST", "/v1/revoke", {
        body: { serial: "00" + alice.serial.toUpperCase() },
        as: alice,
      });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json!.revoked, alice.serial);
    } finally {
      await t.close();
    }
  },
);

backendTest(
  "trust on first use: Enter alone or a closed stdin means No, and nothing is written",
  async (backend) => {
    const t = await startTestDirectory({ backend });
    try {
      for (const [i, stdin] of ["\n", "", "maybe\n"].entries()) {
        const home = join(t.tmp, `home${i}`);
        const r = await runCli(["enroll", "--server", t.dir.url, "--name", "carol", "--home", home], {
          stdin,
        });
        assert.equal(r.code, 1, r.stdout);
        assert.match(r.stderr, /\[y\/N\]/);
        assert.match(r.stderr, /not confirmed/);
        await assert.rejects(Deno.stat(join(home, "key.pem")), Deno.errors.NotFound);
      }
    } finally {
      await t.close();
    }
  },
);

backendTest(
  "deeply nested JSON within the size limit is refused as a bad request; the server keeps serving",
  async (backend) => {
    const t = await startTestDirectory({ backend });
    try {
      const depth = 8000;
      for (
        const rawBody of [
          "[".repeat(depth) + "]".repeat(depth),
          '{"a":'.repeat(2500) + "1" + "}".repeat(2500),
        ]
      ) {
        const r = await call(t.dir, "POST", "/v1/enroll", { rawBody });
        assert.equal(r.status, 400, r.text);
        assert.ok(["BAD_REQUEST", "BAD_JSON", "BAD_USERNAME"].includes(codeOf(r)!), r.text);
      }
      assert.equal((await call(t.dir, "GET", "/v1/info")).status, 200);
    } finally {
      await t.close();
    }
  },
);

backendTest(
  "huge query strings and cursors are refused without effect; the server keeps serving",
  async (backend) => {
    const t = await startTestDirectory({ backend, limits: { ratePerSecond: 10_000, rateBurst: 10_000 } });
    try {
      await enrollRaw(t.dir, "alice");
      // Headers beyond the HTTP parser's limit: refused (an error status, or the connection is closed).
      const huge = await call(t.dir, "GET", "/v1/users?prefix=" + "a".repeat(40_000)).catch(() => null);
      assert.ok(huge === null || [400, 414, 431].includes(huge.status), `status ${huge?.status}`);
      for (
        const q of [
          "cursor=" + "a".repeat(1000),
          "prefix=" + "a".repeat(33),
          "limit=1e9",
          "limit=-1",
          "cursor=%00",
        ]
      ) {
        const r = await call(t.dir, "GET", "/v1/users?" + q);
        assert.equal(r.status, 400, q);
        assert.equal(codeOf(r), "BAD_REQUEST", q);
      }
      const ok = await call(t.dir, "GET", "/v1/users?limit=1");
      assert.equal(ok.status, 200);
      assert.deepEqual((ok.json!.users as { name: string }[]).map((u) => u.name), ["alice"]);
    } finally {
      await t.close();
    }
  },
);
