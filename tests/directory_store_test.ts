/**
 * The store's schema and connection rules on both backends: migrations bring an old database to the current
 * version without touching its data; a database newer than the code is refused with a clear error and left
 * as it was; nodes starting together on an empty PostgreSQL database migrate it once; a bad --database value
 * and an unreachable server give clear errors that never contain the password; the CRL Number counter and
 * the shared issuance bucket stay exact under concurrent stores.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import postgres from "postgres";
import { SqliteDirectoryStore } from "../server/store_sqlite.ts";
import { PostgresDirectoryStore } from "../server/store_postgres.ts";
import { openDirectoryStore } from "../server/store_open.ts";
import { parseDatabaseTarget, redactDatabaseUrl, scrubSecrets } from "../server/database_url.ts";
import { SCHEMA_VERSION, SchemaError, SQLITE_MIGRATIONS } from "../server/migrations.ts";
import { ServerSetupError } from "../server/errors.ts";
import { type Bucket, takeFromBucket } from "../server/rate_limit.ts";
import { backendTest, freshPostgresDatabase, testPostgresUrl } from "./helpers/directory.ts";
import { runCli } from "./helpers/cli.ts";

const inCi = () => (Deno.env.get("CI") ?? "") !== "" && Deno.env.get("CI") !== "false";

function pgTest(name: string, fn: (base: string) => Promise<void>) {
  const base = testPostgresUrl();
  Deno.test({
    name,
    ignore: !base && !inCi(),
    fn: async () => {
      if (!base) throw new Error("CI must run the PostgreSQL tests, but SECURECHAT_TEST_PG is not set");
      await fn(base);
    },
  });
}

// npm:postgres 3.4.9, after a connection the server refused, can still run a queued write on the socket it
// already dropped (connection.js nextWrite: "Cannot read properties of null (reading 'write')"), after our
// assertion has passed; that uncaught error of the library's would fail the whole file at random.
globalThis.addEventListener("error", (e) => {
  const err = (e as ErrorEvent).error as Error | undefined;
  if (/reading 'write'/.test(String(err?.message)) && /postgres.*connection\.js/.test(String(err?.stack))) {
    e.preventDefault();
  }
});

Deno.test("SQLite: a directory.db from before versioning is migrated in place, its rows kept", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-mig-" });
  try {
    const path = join(tmp, "directory.db");
    // The schema of that time (migration 1) with a user in it, and user_version 0.
    const old = new DatabaseSync(path);
    old.exec(SQLITE_MIGRATIONS[0].sql);
    old.prepare(
      `INSERT INTO users (name, key_id, serial, cert_pem, fingerprint, not_after, created_at)
       VALUES ('olduser', 'k', '01', 'pem', 'fp', 9999999999999, 1)`,
    ).run();
    old.close();
    const store = new SqliteDirectoryStore(path);
    try {
      assert.equal((await store.getUser("olduser"))?.serial, "01");
      assert.equal(await store.nextCrlNumber(), 1);
      assert.deepEqual(await store.timeServers(0), []);
    } finally {
      await store.close();
    }
    const db = new DatabaseSync(path, { readOnly: true });
    assert.equal(
      Number((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version),
      SCHEMA_VERSION,
    );
    db.close();
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("SQLite: a database newer than the code is refused and left unchanged", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-mig-" });
  try {
    const path = join(tmp, "directory.db");
    await (new SqliteDirectoryStore(path)).close();
    const db = new DatabaseSync(path);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    const before = await Deno.readFile(path);
    assert.throws(
      () => new SqliteDirectoryStore(path),
      (e: unknown) =>
        e instanceof SchemaError && e.code === "SCHEMA_TOO_NEW" &&
        e.message.includes(`schema version ${SCHEMA_VERSION + 1}`),
    );
    assert.deepEqual(await Deno.readFile(path), before);
    // Through the CLI: a clear message, exit code 1.
    const r = await runCli(["serve", "--data", tmp, "--listen", "127.0.0.1:0", "--no-roughtime"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /newer than this securechat knows/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

pgTest(
  "PostgreSQL: migrations recorded one row each; a newer schema is refused with a clear error",
  async () => {
    const pg = await freshPostgresDatabase();
    try {
      const store = await PostgresDirectoryStore.open(parseDatabaseTarget(pg.url));
      await store.close();
      const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
      try {
        const rows = await sql`SELECT version FROM schema_migrations ORDER BY version`;
        assert.deepEqual(rows.map((r) => r.version), SQLITE_MIGRATIONS.map((m) => m.version));
        await sql`INSERT INTO schema_migrations (version, name, applied_at) VALUES (${
          SCHEMA_VERSION + 1
        }, 'future', 0)`;
      } finally {
        await sql.end();
      }
      await assert.rejects(
        PostgresDirectoryStore.open(parseDatabaseTarget(pg.url)),
        (e: unknown) => e instanceof SchemaError && e.code === "SCHEMA_TOO_NEW",
      );
    } finally {
      await pg.drop();
    }
  },
);

pgTest("PostgreSQL: four nodes opening an empty database at once migrate it exactly once", async () => {
  const pg = await freshPostgresDatabase();
  try {
    const stores = await Promise.all(
      Array.from(
        { length: 4 },
        () => PostgresDirectoryStore.open(parseDatabaseTarget(pg.url), { poolSize: 2 }),
      ),
    );
    for (const s of stores) assert.equal(await s.countUsers(), 0);
    await Promise.all(stores.map((s) => s.close()));
    const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
    try {
      const [r] = await sql`SELECT count(*) AS n FROM schema_migrations`;
      assert.equal(Number(r.n), SCHEMA_VERSION);
    } finally {
      await sql.end();
    }
  } finally {
    await pg.drop();
  }
});

pgTest(
  "PostgreSQL: an unreachable server or a refused login is a clear error without the password",
  async (base) => {
    const secret = "s3cr3t-pw-0042";
    // Nothing listens on port 1.
    const u = new URL(base);
    u.password = secret;
    u.port = "1";
    await assert.rejects(
      openDirectoryStore("/nonexistent", { database: u.toString() }),
      (e: unknown) =>
        e instanceof ServerSetupError && e.code === "DATABASE" && e.message.startsWith("cannot connect to") &&
        !e.message.includes(secret) && e.message.includes("***"),
    );
    // A database that does not exist: the server answers, with an error that must not echo the password.
    const v = new URL(base);
    v.password = secret;
    v.pathname = "/securechat_no_such_db";
    await assert.rejects(
      openDirectoryStore("/nonexistent", { database: v.toString(), databasePassword: secret }),
      (e: unknown) =>
        e instanceof ServerSetupError && /does not exist/.test(e.message) && !e.message.includes(secret),
    );
  },
);

Deno.test("--database: other schemes and non-URLs are refused by name, never echoing a password", () => {
  for (const bad of ["mysql://u:pw-x@h/db", "sqlite:///tmp/x.db", "not a url", "postgres://u:pw-x@/db"]) {
    assert.throws(
      () => parseDatabaseTarget(bad),
      (e: unknown) => e instanceof ServerSetupError && e.code === "DATABASE" && !e.message.includes("pw-x"),
      bad,
    );
  }
  assert.equal(redactDatabaseUrl("postgres://me:hunter2@db:5432/x"), "postgres://me:***@db:5432/x");
  assert.equal(redactDatabaseUrl("postgres://me@db/x"), "postgres://me@db/x");
  assert.equal(scrubSecrets("auth failed for p@ss/1 (p%40ss%2F1)", ["p@ss/1"]), "auth failed for *** (***)");
});

backendTest(
  "the CRL Number counter and the issuance bucket are exact under concurrent stores",
  async (backend) => {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-conc-" });
    const pg = backend === "postgres" ? await freshPostgresDatabase() : null;
    try {
      const stores = await Promise.all(
        Array.from({ length: 3 }, () => openDirectoryStore(tmp, { database: pg?.url, poolSize: 4 })),
      );
      try {
        const numbers = (await Promise.all(
          Array.from({ length: 30 }, (_, i) => stores[i % 3].nextCrlNumber()),
        )).sort((x, y) => x - y);
        assert.deepEqual(numbers, Array.from({ length: 30 }, (_, i) => i + 1));
        // A bucket of 10 with no refill: exactly 10 of 25 concurrent takes succeed, whichever store serves.
        const spec = { perSecond: 1e-9, burst: 10 };
        const now = Date.now();
        const waits = await Promise.all(
          Array.from({ length: 25 }, (_, i) => stores[i % 3].takeBucket("issue:198.51.100.7", 1, now, spec)),
        );
        assert.equal(waits.filter((w) => w === 0).length, 10);
      } finally {
        for (const s of stores) await s.close();
      }
    } finally {
      await pg?.drop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

backendTest(
  "enrollments committed together: each is judged alone, a refused one leaves nothing behind",
  async (backend) => {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-group-" });
    const pg = backend === "postgres" ? await freshPostgresDatabase() : null;
    const store = await openDirectoryStore(tmp, { database: pg?.url });
    try {
      const now = Date.now();
      for (const t of ["t1", "t2", "t3"]) await store.addToken(t, now, 60_000);
      let serial = 0x100;
      const cert = (name: string) => ({
        serial: (serial++).toString(16),
        name,
        keyId: "k",
        certPem: "pem",
        fingerprint: "f".repeat(64),
        notAfter: now + 86400_000,
      });
      // Issued at once, so the PostgreSQL store commits them as one group.
      const outcomes = await Promise.all([
        store.enroll(cert("alice"), now, "t1"),
        store.enroll(cert("alice"), now, "t2"),
        store.enroll(cert("bob"), now, "nope"),
        store.enroll(cert("carol"), now, "t1"),
        store.enroll(cert("dave"), now, "t3"),
      ]);
      assert.deepEqual(outcomes, ["ok", "name_taken", "bad_token", "bad_token", "ok"]);
      assert.equal(await store.tokenState("t2", now), "valid", "a refused enrollment did not use its token");
      assert.equal(await store.tokenState("t3", now), "used");
      assert.equal(await store.countUsers(), 2);
      assert.equal(await store.getUser("bob"), null);
      assert.equal(await store.certsIssuedSince("alice", 0), 1);
      assert.equal(await store.certsIssuedSince("carol", 0), 0);
    } finally {
      await store.close();
      await pg?.drop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

backendTest(
  "open enrollments committed together: a name taken before or twice in the group goes to one of them",
  async (backend) => {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-group-open-" });
    const pg = backend === "postgres" ? await freshPostgresDatabase() : null;
    const store = await openDirectoryStore(tmp, { database: pg?.url });
    try {
      const now = Date.now();
      let serial = 0x200;
      const cert = (name: string) => ({
        serial: (serial++).toString(16),
        name,
        keyId: `k${serial}`,
        certPem: "pem",
        fingerprint: "f".repeat(64),
        notAfter: now + 86400_000,
      });
      assert.equal(await store.enroll(cert("erin"), now, null), "ok");
      // Issued at once, so the PostgreSQL store commits them as one group (one statement).
      const batch = ["frank", "erin", "grace", "frank", "heidi"].map(cert);
      const outcomes = await Promise.all(batch.map((c) => store.enroll(c, now, null)));
      assert.deepEqual(outcomes, ["ok", "name_taken", "ok", "name_taken", "ok"]);
      assert.equal(await store.countUsers(), 4);
      assert.equal((await store.getUser("frank"))?.serial, batch[0].serial, "the first frank holds the name");
      assert.equal((await store.getUser("erin"))?.serial, "200", "erin keeps her first certificate");
      for (const [i, c] of batch.entries()) {
        const row = await store.getCert(c.serial);
        assert.equal(row === null, outcomes[i] !== "ok", `certificate row of ${c.name} (${c.serial})`);
      }
      // A serial used twice in one group: one enrollment fails, the others of the group still commit.
      const dup = cert("ivan");
      const outcomes2 = await Promise.allSettled([
        store.enroll(cert("judy"), now, null),
        store.enroll(dup, now, null),
        store.enroll({ ...dup, name: "karl" }, now, null),
      ]);
      assert.deepEqual(outcomes2.map((o) => o.status), ["fulfilled", "fulfilled", "rejected"]);
      assert.equal(await store.getUser("karl"), null, "nothing of the failed one is left");
      assert.ok(await store.getUser("judy"));
      assert.ok(await store.getUser("ivan"));
    } finally {
      await store.close();
      await pg?.drop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

backendTest(
  "concurrent takes and reads answered together: each gets exactly its own answer",
  async (backend) => {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-rounds-" });
    const pg = backend === "postgres" ? await freshPostgresDatabase() : null;
    const store = await openDirectoryStore(tmp, { database: pg?.url });
    try {
      const now = Date.now();
      const spec = { perSecond: 0, burst: 20 };
      // 8 at once fit (the PostgreSQL store takes them as one of 8), then 12 more one by one, then none.
      const first = await Promise.all(Array.from({ length: 8 }, () => store.takeBucket("k", 1, now, spec)));
      assert.deepEqual(first, Array(8).fill(0));
      for (let i = 0; i < 12; i++) {
        assert.equal(await store.takeBucket("k", 1, now, spec), 0, `take ${9 + i}`);
      }
      assert.ok(await store.takeBucket("k", 1, now, spec) > 0, "the 21st is refused");
      // 6 at once where 3 are left: exactly 3 granted, whichever.
      const other = await Promise.all(
        Array.from({ length: 6 }, () => store.takeBucket("j", 1, now, { ...spec, burst: 3 })),
      );
      assert.equal(other.filter((w) => w === 0).length, 3);
      // Reads of several names at once, some twice, some missing.
      const cert = (name: string, serial: string) => ({
        serial,
        name,
        keyId: `k${serial}`,
        certPem: "pem",
        fingerprint: "f".repeat(64),
        notAfter: now + 86400_000,
      });
      for (const [n, sr] of [["amy", "a1"], ["ben", "b2"], ["cat", "c3"]]) {
        assert.equal(await store.enroll(cert(n, sr), now, null), "ok");
      }
      const names = ["amy", "nobody", "ben", "amy", "cat", "zed"];
      const rows = await Promise.all(names.map((n) => store.getUser(n)));
      assert.deepEqual(rows.map((r) => r?.serial ?? null), ["a1", null, "b2", "a1", "c3", null]);
      assert.deepEqual(rows.map((r) => r?.name ?? null), ["amy", null, "ben", "amy", "cat", null]);
    } finally {
      await store.close();
      await pg?.drop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

backendTest(
  "the shared bucket follows the same arithmetic as the in-memory token bucket",
  async (backend) => {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-bucket-" });
    const pg = backend === "postgres" ? await freshPostgresDatabase() : null;
    const store = await openDirectoryStore(tmp, { database: pg?.url });
    try {
      const spec = { perSecond: 2, burst: 5 };
      let mem: Bucket | null = null;
      let t = 1_000_000;
      // Costs and pauses that exercise refill, the burst cap, refusals and a cost above the burst.
      const steps: [number, number][] = [
        [1, 0],
        [3, 0],
        [2, 0],
        [1, 250],
        [1, 500],
        [4, 1000],
        [9, 0],
        [1, 10_000],
        [5, 0],
        [1, 499],
      ];
      for (const [cost, pause] of steps) {
        t += pause;
        const step = takeFromBucket(mem, cost, t, spec);
        mem = step.bucket;
        assert.equal(await store.takeBucket("k", cost, t, spec), step.wait, `cost ${cost} at +${pause} ms`);
      }
    } finally {
      await store.close();
      await pg?.drop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

pgTest(
  "PostgreSQL: listings are in byte order even in a database with a linguistic (ICU) collation",
  async (base) => {
    const name = `securechat_t_icu_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    const admin = postgres(base, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(
        `CREATE DATABASE ${name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C'`,
      );
      const u = new URL(base);
      u.pathname = `/${name}`;
      const store = await PostgresDirectoryStore.open(parseDatabaseTarget(u.toString()));
      try {
        const names = ["ab_c", "a-bc", "abc", "a_bc", "a-b", "abd", "b-a", "a9z"];
        let serial = 0x500;
        for (const n of names) {
          const c = {
            serial: (serial++).toString(16),
            name: n,
            keyId: "k",
            certPem: "p",
            fingerprint: "f",
            notAfter: 1e13,
          };
          assert.equal(await store.enroll(c, Date.now(), null), "ok");
        }
        const byteOrder = [...names].sort();
        assert.deepEqual((await store.listUsers("", null, 100)).map((r) => r.name), byteOrder);
        assert.deepEqual((await store.listUsers("a-", null, 100)).map((r) => r.name), ["a-b", "a-bc"]);
        assert.deepEqual(
          (await store.listUsers("a", "a9z", 100)).map((r) => r.name),
          byteOrder.filter((n) => n.startsWith("a") && n > "a9z"),
        );
      } finally {
        await store.close();
      }
    } finally {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  },
);

pgTest(
  "PostgreSQL: an admin command on a database no node has used refuses, and creates nothing",
  async () => {
    const pg = await freshPostgresDatabase();
    try {
      for (const args of [["serve", "invite"], ["serve", "revoke", "alice"]]) {
        const r = await runCli([...args, "--data", "/nonexistent-securechat"], {
          env: { SECURECHAT_DATABASE: pg.url },
        });
        assert.equal(r.code, 1);
        assert.match(r.stderr, /holds no directory/);
      }
      const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
      try {
        const [r] =
          await sql`SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = current_schema()`;
        assert.equal(Number(r.n), 0);
      } finally {
        await sql.end();
      }
    } finally {
      await pg.drop();
    }
  },
);
