/**
 * Several `serve` processes over one PostgreSQL database are interchangeable: real child processes, each
 * with its own data folder (TLS key, Roughtime key) and the one shared CA key, on a fresh database.
 * Enrollment on one is seen on the other; a revocation on one is on the other's CRL at the next request; CRL
 * Numbers never go back whichever node a client asks, and one number is never given to two different lists;
 * an invitation is used once however the redemptions are spread; presence expires at the instant stored in
 * the database; /v1/info on any node lists every node's Roughtime server, and each one answers.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  call,
  codeOf,
  enrollRaw,
  freshPostgresDatabase,
  type Identity,
  testPostgresUrl,
} from "./helpers/directory.ts";
import { type ServeNode, ServeStartError, startServeProcess } from "./helpers/serve_process.ts";
import { runCli } from "./helpers/cli.ts";
import { createCsr, exportPrivateKeyPem, generateKeyPair, verifyCrl } from "../pki/mod.ts";
import { queryServer } from "../clock/mod.ts";
import { fromBase64 } from "../pki/encoding.ts";

const inCi = () => (Deno.env.get("CI") ?? "") !== "" && Deno.env.get("CI") !== "false";
const noPg = !testPostgresUrl();
if (noPg && !inCi()) {
  console.warn("multi-node tests skipped: SECURECHAT_TEST_PG is not set (source .ci/postgres.sh)");
}

interface Cluster {
  nodes: ServeNode[];
  database: string;
  tmp: string;
  caKey: string;
  close(): Promise<void>;
}

/** `count` nodes on one fresh database; the first creates the shared CA, the others load it. */
async function startCluster(
  count: number,
  extra: string[] = [],
  extraEnv: Record<string, string> = {},
): Promise<Cluster> {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-nodes-" });
  const pg = await freshPostgresDatabase();
  const caDir = join(tmp, "ca");
  await Deno.mkdir(caDir, { mode: 0o700 });
  const caKey = join(caDir, "ca-key.pem");
  const nodes: ServeNode[] = [];
  const close = async () => {
    for (const n of nodes) await n.stop();
    await pg.drop();
    await Deno.remove(tmp, { recursive: true });
  };
  try {
    for (let i = 0; i < count; i++) {
      nodes.push(
        await startServeProcess(
          ["--data", join(tmp, `node${i}`), "--roughtime-listen", "127.0.0.1:0", ...extra],
          {
            caCertFile: join(caDir, "ca.pem"),
            // The URL and the CA key come from the environment, as in the compose file.
            env: { SECURECHAT_DATABASE: pg.url, SECURECHAT_CA_KEY_FILE: caKey, ...extraEnv },
          },
        ),
      );
    }
  } catch (e) {
    await close();
    throw e;
  }
  return { nodes, database: pg.url, tmp, caKey, close };
}

async function lookup(n: ServeNode, name: string) {
  return await call(n, "GET", `/v1/users/${name}`);
}

async function crlOf(n: ServeNode) {
  const client = Deno.createHttpClient({ caCerts: [n.caCertPem] });
  try {
    const init: RequestInit & { client: Deno.HttpClient } = { client };
    const r = await fetch(`${n.url}/v1/crl`, init);
    const der = new Uint8Array(await r.arrayBuffer());
    assert.equal(r.status, 200);
    const parsed = await verifyCrl(der, n.caCertPem);
    return { der, number: parsed.crlNumber!, revoked: parsed.revokedSerials };
  } finally {
    client.close();
  }
}

const pgTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({
    name,
    ignore: noPg && !inCi(),
    fn: async () => {
      if (noPg) throw new Error("CI must run the PostgreSQL tests, but SECURECHAT_TEST_PG is not set");
      await fn();
    },
  });

pgTest(
  "two nodes: enroll on one, found on the other; a revocation on one is on the other's CRL at once",
  async () => {
    const c = await startCluster(2);
    try {
      const [a, b] = c.nodes;
      assert.equal(a.caFingerprint, b.caFingerprint, "one CA for the phonebook");
      const before = await crlOf(b);
      const alice = await enrollRaw(a, "alice");
      const found = await lookup(b, "alice");
      assert.equal(found.status, 200);
      assert.equal(found.json!.certPem, alice.certPem);
      // Authenticated calls work on the node that did not issue the certificate.
      const pub = await call(b, "PUT", "/v1/presence", {
        body: { host: "127.0.0.1", port: 4100, ttlSeconds: 600 },
        as: alice,
      });
      assert.equal(pub.status, 200);
      assert.deepEqual((await lookup(a, "alice")).json!.address, { host: "127.0.0.1", port: 4100 });
      // Self-revocation on A: B's very next CRL lists it, with a higher number than B served before.
      assert.equal((await call(a, "POST", "/v1/revoke", { body: {}, as: alice })).status, 200);
      const after = await crlOf(b);
      assert.ok(after.revoked.has(alice.serial));
      assert.ok(after.number > before.number, `${after.number} > ${before.number}`);
      assert.equal((await call(b, "GET", "/v1/me", { as: alice })).status, 401);
      // The name is taken on every node.
      const csr = await createCsr("alice", await generateKeyPair("p256"));
      const again = await call(b, "POST", "/v1/enroll", { body: { name: "alice", csr } });
      assert.equal(again.status, 409);
    } finally {
      await c.close();
    }
  },
);

pgTest("concurrent revocations on two nodes: CRL Numbers never go back, one number is one list", async () => {
  const c = await startCluster(2);
  try {
    const [a, b] = c.nodes;
    const users: (Identity & { serial: string })[] = [];
    for (let i = 0; i < 8; i++) users.push(await enrollRaw(i % 2 ? b : a, `user${i}`));
    const seen: { number: bigint; der: Uint8Array }[] = [];
    // A client switching nodes between requests, while revocations land on both.
    let last = -1n;
    const reader = (async () => {
      for (let i = 0; i < 24; i++) {
        const crl = await crlOf(i % 2 ? a : b);
        assert.ok(crl.number >= last, `CRL Number went back: ${crl.number} after ${last}`);
        last = crl.number;
        seen.push(crl);
      }
    })();
    const revokes = users.map((u, i) =>
      call(i % 2 ? a : b, "POST", "/v1/revoke", { body: {}, as: u }).then((r) => assert.equal(r.status, 200))
    );
    // Both nodes signing at once too.
    const parallel = Array.from({ length: 6 }, (_, i) => crlOf(i % 2 ? a : b).then((x) => seen.push(x)));
    await Promise.all([reader, ...revokes, ...parallel]);
    const byNumber = new Map<bigint, string>();
    for (const s of seen) {
      const hex = Array.from(s.der, (x) => x.toString(16).padStart(2, "0")).join("");
      const prior = byNumber.get(s.number);
      assert.ok(prior === undefined || prior === hex, `CRL Number ${s.number} used for two different lists`);
      byNumber.set(s.number, hex);
    }
    const [fa, fb] = [await crlOf(a), await crlOf(b)];
    for (const u of users) {
      assert.ok(fa.revoked.has(u.serial));
      assert.ok(fb.revoked.has(u.serial));
    }
    assert.equal(fa.number, fb.number, "both nodes serve the same latest list");
    assert.ok(fa.number > last || fa.number === last);
  } finally {
    await c.close();
  }
});

pgTest("an invitation is used once across nodes, however the redemptions race", async () => {
  const c = await startCluster(2, ["--invite-only"]);
  try {
    const [a, b] = c.nodes;
    // The admin command runs against the database, from any machine.
    const inv = await runCli(["serve", "invite", "--data", join(c.tmp, "admin")], {
      env: { SECURECHAT_DATABASE: c.database },
    });
    assert.equal(inv.code, 0, inv.stderr);
    const token = inv.stdout.trim();
    const racers = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const keys = await generateKeyPair("p256");
        return { node: i % 2 ? b : a, name: `racer${i}`, keys, csr: await createCsr(`racer${i}`, keys) };
      }),
    );
    const results = await Promise.all(
      racers.map((r) => call(r.node, "POST", "/v1/enroll", { body: { name: r.name, csr: r.csr, token } })),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [201, ...new Array(7).fill(403)]);
    assert.ok(results.filter((r) => r.status === 403).every((r) => codeOf(r) === "BAD_TOKEN"));
    const w = results.findIndex((r) => r.status === 201);
    // Invite-only listings need a certificate: the winner's, on the node that did not enroll it.
    const winner: Identity = {
      certPem: String(results[w].json!.certPem),
      keyPem: await exportPrivateKeyPem(racers[w].keys),
    };
    const other = racers[w].node === a ? b : a;
    let found = 0;
    for (const r of racers) {
      const l = await call(other, "GET", `/v1/users/${r.name}`, { as: winner });
      if (l.status === 200) found++;
      else assert.equal(l.status, 404);
    }
    assert.equal(found, 1);
  } finally {
    await c.close();
  }
});

pgTest(
  "presence published on one node expires, on the other, at the instant stored in the database",
  async () => {
    const c = await startCluster(2);
    try {
      const [a, b] = c.nodes;
      const bob = await enrollRaw(a, "bob");
      const r = await call(a, "PUT", "/v1/presence", {
        body: { host: "127.0.0.1", port: 4200, ttlSeconds: 10 },
        as: bob,
      });
      const expiresAt = Number(r.json!.expiresAt);
      assert.equal((await lookup(b, "bob")).json!.online, true);
      // No timer on either node ends it: B compares its clock with the stored instant.
      await new Promise((res) => setTimeout(res, Math.max(0, expiresAt - Date.now()) + 300));
      const later = await lookup(b, "bob");
      assert.equal(later.json!.online, false);
      assert.equal(later.json!.address, null);
    } finally {
      await c.close();
    }
  },
);

pgTest("every node's /v1/info lists both Roughtime servers, and each answers with its key", async () => {
  const c = await startCluster(2);
  try {
    const keys = c.nodes.map((n) => n.roughtime!.publicKey).sort();
    assert.notEqual(keys[0], keys[1], "each node has its own Roughtime key");
    for (const n of c.nodes) {
      const info = await call(n, "GET", "/v1/info");
      const list = info.json!.roughtimeServers as { host: string | null; port: number; publicKey: string }[];
      assert.deepEqual(list.map((s) => s.publicKey).sort(), keys);
      assert.equal((info.json!.roughtime as { publicKey: string }).publicKey, n.roughtime!.publicKey);
      for (const s of list) {
        const q = await queryServer({
          name: `node ${s.port}`,
          host: s.host ?? "127.0.0.1",
          port: s.port,
          publicKey: fromBase64(s.publicKey),
        }, { timeoutMs: 5000 });
        assert.ok(Math.abs(q.reply.midpointMs - Date.now()) < 60_000);
      }
    }
  } finally {
    await c.close();
  }
});

pgTest(
  "a node with another CA key is refused by a database bound to the first CA; the URL's password is never printed",
  async () => {
    const c = await startCluster(1);
    try {
      const otherCa = join(c.tmp, "other-ca");
      await Deno.mkdir(otherCa, { mode: 0o700 });
      // A password in the URL (trust authentication ignores it): it must appear nowhere in the output.
      const u = new URL(c.database);
      u.password = "pw-never-printed-7731";
      await assert.rejects(
        startServeProcess(["--data", join(c.tmp, "intruder"), "--no-roughtime"], {
          caCertFile: join(otherCa, "ca.pem"),
          env: { SECURECHAT_DATABASE: u.toString(), SECURECHAT_CA_KEY_FILE: join(otherCa, "ca-key.pem") },
        }),
        (e: unknown) => {
          assert.ok(e instanceof ServeStartError);
          assert.notEqual(e.code, 0);
          assert.match(e.output, /belongs to the CA [0-9a-f]{64}, not to this CA/);
          assert.ok(!e.output.includes("pw-never-printed-7731"), e.output);
          return true;
        },
      );
      // Started with the right CA and a password in the URL: the banner shows the URL without it.
      const ok = await startServeProcess(["--data", join(c.tmp, "node-pw"), "--no-roughtime"], {
        caCertFile: join(c.tmp, "ca", "ca.pem"),
        env: { SECURECHAT_DATABASE: u.toString(), SECURECHAT_CA_KEY_FILE: c.caKey },
      });
      await ok.stop();
      assert.match(ok.output(), /Directory data: postgres:\/\/postgres:\*\*\*@/);
      assert.ok(!ok.output().includes("pw-never-printed-7731"), ok.output());
    } finally {
      await c.close();
    }
  },
);

pgTest(
  "an encrypted shared CA key: every node needs the passphrase, and one without it does not start",
  async () => {
    const c = await startCluster(2, [], { SECURECHAT_CA_PASSPHRASE: "shared-ca-passphrase" });
    try {
      assert.match(await Deno.readTextFile(c.caKey), /BEGIN ENCRYPTED PRIVATE KEY/);
      assert.equal(c.nodes[0].caFingerprint, c.nodes[1].caFingerprint);
      const alice = await enrollRaw(c.nodes[1], "alice");
      assert.equal((await lookup(c.nodes[0], "alice")).json!.certPem, alice.certPem);
      await assert.rejects(
        startServeProcess(["--data", join(c.tmp, "no-pass"), "--no-roughtime"], {
          caCertFile: join(c.tmp, "ca", "ca.pem"),
          env: { SECURECHAT_DATABASE: c.database, SECURECHAT_CA_KEY_FILE: c.caKey },
        }),
        (e: unknown) =>
          e instanceof ServeStartError && /CA key/i.test(e.output) &&
          !e.output.includes("shared-ca-passphrase"),
      );
    } finally {
      await c.close();
    }
  },
);
