/**
 * The shared store: PostgreSQL (npm `postgres`), for several `serve` nodes over one database.
 *
 * Concurrency rules, chosen so the same SQL runs on CockroachDB and YugabyteDB (which speak the PostgreSQL
 * wire protocol) without advisory locks or LOCK TABLE:
 * - every multi-statement change is one explicit transaction, retried on serialization failure (40001) and
 *   deadlock (40P01), which CockroachDB's serializable default raises where PostgreSQL would wait;
 * - one winner is decided by a primary key (a name, a token's hash, a migration's version) or by a
 *   conditional UPDATE (`... WHERE used_at IS NULL`), which under READ COMMITTED re-checks the condition after
 *   waiting for a concurrent writer of the same row;
 * - counts that must not be exceeded together (renewals a day) are taken under the user's row lock
 *   (SELECT ... FOR UPDATE).
 */
import type { Address } from "../contract/mod.ts";
import postgres from "postgres";
import { Buffer } from "node:buffer";
import {
  type BucketSpec,
  type CrlState,
  type DirectoryStore,
  type EnrollOutcome,
  hashToken,
  type IssuedCert,
  listBounds,
  type PresenceImport,
  type PublishedReach,
  reachColumns,
  type RenewOutcome,
  type RevokeReason,
  type StoredCrl,
  type TimeServerRow,
  type TokenState,
  toUserRow,
  type UserRow,
} from "./store.ts";
import { type Migration, pendingMigrations, POSTGRES_MIGRATIONS, SchemaError } from "./migrations.ts";
import { ServerSetupError } from "./errors.ts";
import { type PostgresTarget, scrubSecrets, urlPassword } from "./database_url.ts";

type Sql = postgres.Sql;
type Tx = postgres.TransactionSql;

/** SQLSTATEs after which the whole transaction is simply run again. */
const RETRYABLE = new Set(["40001", "40P01"]);
const MAX_TX_ATTEMPTS = 20;
const DEFAULT_POOL = 10;
/** Stale rate buckets are swept on about one take in this many. */
const BUCKET_SWEEP_EVERY = 256;
/** Enrollments committed together at most (group commit). */
const ENROLL_BATCH_MAX = 64;

function sqlState(e: unknown): string | undefined {
  return e instanceof postgres.PostgresError ? e.code : undefined;
}

interface PendingEnroll {
  issued: IssuedCert;
  nowMs: number;
  token: string | null;
  resolve(o: EnrollOutcome): void;
  reject(e: unknown): void;
}

interface PendingTake {
  key: string;
  cost: number;
  nowMs: number;
  spec: BucketSpec;
  resolve(wait: number): void;
  reject(e: unknown): void;
}

interface PendingRead {
  name: string;
  resolve(row: UserRow | null): void;
  reject(e: unknown): void;
}

/** User reads answered by one query at most (a round of coalesced getUser calls). */
const READ_BATCH_MAX = 256;

/** Thrown inside a transaction to roll it back with a business outcome (nothing is changed). */
class Outcome<T> {
  constructor(readonly value: T) {}
}

export interface PostgresStoreOptions {
  /** Connections this node keeps open at most (default 10). */
  poolSize?: number;
  /** Refuse (ServerSetupError BAD_DATA_DIR) a database that holds no directory yet, instead of creating the
   * schema: admin commands must not set up a database by mistake. */
  mustExist?: boolean;
}

export class PostgresDirectoryStore implements DirectoryStore {
  readonly kind = "postgres" as const;
  readonly location: string;
  readonly #sql: Sql;
  readonly #secrets: (string | undefined)[];
  #bucketTakes = 0;
  /** Enrollments waiting for the next group commit, and whether one is running. */
  #enrollQueue: PendingEnroll[] = [];
  #enrollRunning = false;
  /** Bucket takes waiting for the next round, and whether one is running (see takeBucket). */
  #takeQueue: PendingTake[] = [];
  #takeRunning = false;
  /** User reads waiting for the next round, and whether one is running (see getUser). */
  #readQueue: PendingRead[] = [];
  #readRunning = false;

  private constructor(target: PostgresTarget, sql: Sql) {
    this.location = target.redacted;
    this.#sql = sql;
    this.#secrets = [target.password, urlPassword(target.url)];
  }

  /** Connects, applies pending migrations; throws ServerSetupError("DATABASE") or SchemaError, with no
   * password in the message. */
  static async open(
    target: PostgresTarget,
    opts: PostgresStoreOptions = {},
  ): Promise<PostgresDirectoryStore> {
    const sql = postgres(target.url, {
      max: opts.poolSize ?? DEFAULT_POOL,
      ...(target.password !== undefined ? { password: target.password } : {}),
      onnotice: () => {/* NOTICEs (e.g. "relation already exists, skipping") are not for the operator */},
      connection: { application_name: "securechat" },
      connect_timeout: 10,
      idle_timeout: 60,
    });
    const store = new PostgresDirectoryStore(target, sql);
    try {
      await sql`SELECT 1`;
    } catch (e) {
      await sql.end({ timeout: 1 }).catch(() => {});
      throw new ServerSetupError(
        "DATABASE",
        `cannot connect to ${target.redacted}: ${store.#scrub(e instanceof Error ? e.message : String(e))}`,
      );
    }
    try {
      if (opts.mustExist && !(await store.#hasSchema())) {
        throw new ServerSetupError(
          "BAD_DATA_DIR",
          `${target.redacted} holds no directory (start \`securechat serve\` on it first)`,
        );
      }
      await store.#migrate();
    } catch (e) {
      await sql.end({ timeout: 1 }).catch(() => {});
      if (e instanceof SchemaError || e instanceof ServerSetupError) throw e;
      throw new SchemaError(
        "MIGRATION_FAILED",
        `cannot migrate ${target.redacted}: ${store.#scrub(e instanceof Error ? e.message : String(e))}`,
      );
    }
    return store;
  }

  #scrub(text: string): string {
    return scrubSecrets(text, this.#secrets);
  }

  async #hasSchema(): Promise<boolean> {
    const rows = await this.#sql`SELECT 1 FROM information_schema.tables
      WHERE table_name = 'schema_migrations' AND table_schema = current_schema()`;
    return rows.length > 0;
  }

  async #version(): Promise<number> {
    const [r] = await this.#sql`SELECT coalesce(max(version), 0) AS v FROM schema_migrations`;
    return Number(r.v);
  }

  async #migrate(): Promise<void> {
    // Two nodes creating the table at once: one may fail on the catalog's unique index; it then exists.
    for (let i = 0;; i++) {
      try {
        await this.#sql.unsafe(
          `CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`,
        );
        break;
      } catch (e) {
        if (i < 40 && ["23505", "42P07", "42710", ...RETRYABLE].includes(sqlState(e) ?? "")) {
          // Another node created it at the same moment: the loser gets 42P07, 23505 (the catalog's unique
          // index) or 42710 ("type schema_migrations already exists", seen in CI). Once the table is
          // visible it is there for us too; until the other creator commits, wait (growing, about 8 s in all).
          if (await this.#hasSchema().catch(() => false)) break;
          await new Promise((r) => setTimeout(r, Math.min(400, 20 * (i + 1))));
          continue;
        }
        throw e;
      }
    }
    for (const m of pendingMigrations(POSTGRES_MIGRATIONS, await this.#version(), this.location)) {
      await this.#apply(m);
    }
  }

  async #apply(m: Migration): Promise<void> {
    try {
      await this.#tx(async (t) => {
        // The claim comes first: a node starting at the same moment blocks on this row, then finds it taken.
        await t`INSERT INTO schema_migrations (version, name, applied_at) VALUES (${m.version}, ${m.name}, ${Date.now()})`;
        await t.unsafe(m.sql);
      });
    } catch (e) {
      if (sqlState(e) === "23505") return; // another node applied it
      throw e;
    }
  }

  /** One transaction, run again from the start on a serialization failure or deadlock. */
  async #tx<T>(fn: (t: Tx) => Promise<T>): Promise<T> {
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#sql.begin(fn) as T;
      } catch (e) {
        if (e instanceof Outcome) return e.value as T;
        if (attempt < MAX_TX_ATTEMPTS && RETRYABLE.has(sqlState(e) ?? "")) {
          // A little random backoff so the contenders do not collide again in lockstep.
          await new Promise((r) => setTimeout(r, Math.random() * 5 * attempt));
          continue;
        }
        throw e;
      }
    }
  }

  async close(): Promise<void> {
    await this.#sql.end({ timeout: 5 });
  }

  /** Reads arriving while others are under way are answered by one query for all their names: a busy node
   * (look-ups, authentication, the enrollment pre-check) then pays one round trip per round instead of one
   * per request, and an idle one answers at once as before. Each read still sees a committed state at least
   * as new as when it was asked. */
  getUser(name: string): Promise<UserRow | null> {
    return new Promise((resolve, reject) => {
      this.#readQueue.push({ name, resolve, reject });
      if (!this.#readRunning) this.#drainReads();
    });
  }

  async #drainReads(): Promise<void> {
    this.#readRunning = true;
    try {
      while (this.#readQueue.length > 0) {
        const batch = this.#readQueue.splice(0, READ_BATCH_MAX);
        try {
          const rows = batch.length === 1
            ? await this.#sql`SELECT * FROM users WHERE name = ${batch[0].name}`
            : await this.#sql`SELECT * FROM users WHERE name = ANY(${[
              ...new Set(batch.map((r) => r.name)),
            ]}::TEXT[])`;
          const byName = new Map(rows.map((r) => [String(r.name), r]));
          for (const r of batch) {
            const row = byName.get(r.name);
            r.resolve(row ? toUserRow(row) : null);
          }
        } catch (e) {
          if (batch.length === 1) {
            batch[0].reject(e);
            continue;
          }
          // The round failed as a whole (a lost connection...): each read again on its own, so a failure
          // reaches only the reads it really hits, as before the rounds.
          await Promise.all(batch.map((r) =>
            this.#sql`SELECT * FROM users WHERE name = ${r.name}`.then(
              (rows) => r.resolve(rows.length ? toUserRow(rows[0]) : null),
              r.reject,
            )
          ));
        }
      }
    } finally {
      this.#readRunning = false;
    }
  }

  async listUsers(prefix: string, after: string | null, limit: number): Promise<UserRow[]> {
    const b = listBounds(prefix, after);
    // users.name is COLLATE "C" (migrations.ts): byte order, as in SQLite, straight from the primary key.
    const rows = b.loInclusive
      ? await this.#sql`SELECT * FROM users WHERE name >= ${b.lo} AND name < ${b.hi}
          ORDER BY name LIMIT ${limit}`
      : await this.#sql`SELECT * FROM users WHERE name > ${b.lo} AND name < ${b.hi}
          ORDER BY name LIMIT ${limit}`;
    return rows.map(toUserRow);
  }

  async countUsers(): Promise<number> {
    const [r] = await this.#sql`SELECT count(*) AS n FROM users`;
    return Number(r.n);
  }

  async #insertCert(t: Tx, c: IssuedCert, nowMs: number): Promise<void> {
    await t`INSERT INTO certs (serial, name, fingerprint, cert_pem, issued_at, not_after)
      VALUES (${c.serial}, ${c.name}, ${c.fingerprint}, ${c.certPem}, ${nowMs}, ${c.notAfter})`;
  }

  async #revokeCert(t: Tx, serial: string, nowMs: number, reason: RevokeReason): Promise<void> {
    const r = await t`UPDATE certs SET revoked_at = ${nowMs}, revoke_reason = ${reason}
      WHERE serial = ${serial} AND revoked_at IS NULL RETURNING serial`;
    if (r.length > 0) {
      await t`INSERT INTO meta (key, value) VALUES ('revocations', '1')
        ON CONFLICT (key) DO UPDATE SET value = (meta.value::BIGINT + 1)::TEXT`;
    }
  }

  async #markRevoked(t: Tx, name: string): Promise<void> {
    await t`UPDATE users SET revoked = TRUE, addr_host = NULL, addr_port = NULL, addr_expires = NULL,
      reach = NULL, reach_key = NULL, reach_ok = NULL, reach_checked_at = NULL WHERE name = ${name}`;
  }

  /** Enrollments arriving while a commit is under way are committed together: one WAL flush for the group
   * instead of one each, as concurrent enrollments would otherwise queue behind each other's commits. A
   * refused enrollment (name taken, token used) changes nothing and does not fail the others. */
  enroll(issued: IssuedCert, nowMs: number, token: string | null): Promise<EnrollOutcome> {
    return new Promise((resolve, reject) => {
      this.#enrollQueue.push({ issued, nowMs, token, resolve, reject });
      if (!this.#enrollRunning) this.#drainEnrolls();
    });
  }

  async #drainEnrolls(): Promise<void> {
    this.#enrollRunning = true;
    try {
      while (this.#enrollQueue.length > 0) {
        const batch = this.#enrollQueue.splice(0, ENROLL_BATCH_MAX);
        // Open enrollments (no token) of the group go in one statement; those with a token each need their
        // own savepoint (a used token must roll its user row back).
        const open = batch.filter((p) => p.token === null);
        const invited = batch.filter((p) => p.token !== null);
        await Promise.all([this.#enrollOpen(open), this.#enrollInvited(invited)]);
      }
    } finally {
      this.#enrollRunning = false;
    }
  }

  /** Open enrollments in one statement (one round trip, one commit, for the whole group): every user row
   * that does not exist yet is inserted, and the certificate rows of exactly those; a name already taken (by
   * another node, or twice in the group) inserts nothing. The user rows that went in are told apart by
   * serial (each request's certificate has its own). */
  async #enrollOpen(batch: PendingEnroll[]): Promise<void> {
    if (batch.length === 0) return;
    const col = <K extends keyof IssuedCert>(k: K) => batch.map((p) => String(p.issued[k]));
    let inserted: Set<string>;
    try {
      const rows = await this.#sql`WITH input AS (
          SELECT * FROM unnest(${col("name")}::TEXT[], ${col("keyId")}::TEXT[], ${col("serial")}::TEXT[],
            ${col("certPem")}::TEXT[], ${col("fingerprint")}::TEXT[], ${col("notAfter")}::BIGINT[],
            ${batch.map((p) => String(p.nowMs))}::BIGINT[])
            AS i (name, key_id, serial, cert_pem, fingerprint, not_after, created_at)
        ), u AS (
          INSERT INTO users (name, key_id, serial, cert_pem, fingerprint, not_after, created_at)
          SELECT name, key_id, serial, cert_pem, fingerprint, not_after, created_at FROM input
          ON CONFLICT (name) DO NOTHING RETURNING serial
        ), c AS (
          INSERT INTO certs (serial, name, fingerprint, cert_pem, issued_at, not_after)
          SELECT i.serial, i.name, i.fingerprint, i.cert_pem, i.created_at, i.not_after
          FROM input i JOIN u ON u.serial = i.serial
          RETURNING serial
        )
        SELECT serial FROM c`;
      inserted = new Set(rows.map((r) => String(r.serial)));
    } catch {
      // The group failed as a whole (a serial already used, a lost connection...): each runs again on its
      // own, so one bad enrollment cannot fail the others.
      await Promise.all(batch.map((p) => this.#enrollAlone(p)));
      return;
    }
    for (const p of batch) p.resolve(inserted.has(p.issued.serial) ? "ok" : "name_taken");
  }

  #enrollAlone(p: PendingEnroll): Promise<void> {
    return this.#tx((t) => this.#enrollIn(t, p.issued, p.nowMs, p.token)).then(p.resolve, p.reject);
  }

  /** Enrollments with a token, in one transaction, each inside its own savepoint. */
  async #enrollInvited(batch: PendingEnroll[]): Promise<void> {
    if (batch.length === 0) return;
    // Alone: no savepoint round trips.
    if (batch.length === 1) return await this.#enrollAlone(batch[0]);
    let outcomes: EnrollOutcome[] | null = null;
    try {
      outcomes = await this.#tx(async (t) => {
        const out: EnrollOutcome[] = [];
        for (const p of batch) {
          try {
            out.push(await t.savepoint((sp) => this.#enrollIn(sp, p.issued, p.nowMs, p.token)));
          } catch (e) {
            if (e instanceof Outcome) out.push(e.value as EnrollOutcome);
            else throw e;
          }
        }
        return out;
      });
    } catch {
      // As above: each on its own.
      await Promise.all(batch.map((p) => this.#enrollAlone(p)));
      return;
    }
    batch.forEach((p, i) => p.resolve(outcomes![i]));
  }

  /** One enrollment inside a transaction or savepoint; a refusal throws Outcome so that it rolls back. */
  async #enrollIn(t: Tx, c: IssuedCert, nowMs: number, token: string | null): Promise<EnrollOutcome> {
    // The primary key decides between two nodes enrolling the same name: the second waits, then inserts
    // nothing.
    const ins = await t`INSERT INTO users (name, key_id, serial, cert_pem, fingerprint, not_after, created_at)
      VALUES (${c.name}, ${c.keyId}, ${c.serial}, ${c.certPem}, ${c.fingerprint}, ${c.notAfter}, ${nowMs})
      ON CONFLICT (name) DO NOTHING RETURNING name`;
    if (ins.length === 0) throw new Outcome<EnrollOutcome>("name_taken");
    if (token !== null) {
      const used = await t`UPDATE tokens SET used_at = ${nowMs}, used_by = ${c.name}
        WHERE hash = ${hashToken(token)} AND used_at IS NULL AND expires_at > ${nowMs} RETURNING hash`;
      // Rolls back the user row too.
      if (used.length !== 1) throw new Outcome<EnrollOutcome>("bad_token");
    }
    await this.#insertCert(t, c, nowMs);
    return "ok";
  }

  renew(
    issued: IssuedCert,
    oldSerial: string,
    nowMs: number,
    sinceMs: number,
    maxIssued: number,
  ): Promise<RenewOutcome> {
    return this.#tx(async (t): Promise<RenewOutcome> => {
      const c = issued;
      const [user] = await t`SELECT serial, revoked FROM users WHERE name = ${c.name} FOR UPDATE`;
      if (!user || user.revoked === true || String(user.serial) !== oldSerial) return "stale";
      const [n] = await t`SELECT count(*) AS n FROM certs WHERE name = ${c.name} AND issued_at >= ${sinceMs}`;
      if (Number(n.n) >= maxIssued) return "rate_limited";
      await this.#insertCert(t, c, nowMs);
      await t`UPDATE users SET key_id = ${c.keyId}, serial = ${c.serial}, cert_pem = ${c.certPem},
        fingerprint = ${c.fingerprint}, not_after = ${c.notAfter} WHERE name = ${c.name}`;
      await this.#revokeCert(t, oldSerial, nowMs, "superseded");
      return "ok";
    });
  }

  revokeOwn(name: string, serial: string, nowMs: number): Promise<void> {
    return this.#tx(async (t) => {
      await this.#revokeCert(t, serial, nowMs, "unspecified");
      await this.#markRevoked(t, name);
    });
  }

  adminRevoke(name: string, release: boolean, nowMs: number): Promise<{ serial: string } | null> {
    return this.#tx(async (t) => {
      const [user] = await t`SELECT serial FROM users WHERE name = ${name} FOR UPDATE`;
      if (!user) return null;
      const serial = String(user.serial);
      await this.#revokeCert(t, serial, nowMs, "admin");
      await this.#markRevoked(t, name);
      if (release) await t`DELETE FROM users WHERE name = ${name}`;
      return { serial };
    });
  }

  async setPresence(
    name: string,
    host: string,
    port: number,
    expiresMs: number,
    reach?: PublishedReach,
  ): Promise<void> {
    const r = reachColumns(reach);
    // SET expressions read the row as it was, so the result survives only a publication of the same key.
    await this.#sql`UPDATE users SET addr_host = ${host}, addr_port = ${port}, addr_expires = ${expiresMs},
      reach_ok = CASE WHEN reach_key IS NOT DISTINCT FROM ${r.key}::TEXT THEN reach_ok ELSE NULL END,
      reach_checked_at = CASE WHEN reach_key IS NOT DISTINCT FROM ${r.key}::TEXT THEN reach_checked_at END,
      reach = ${r.json}, reach_key = ${r.key}
      WHERE name = ${name}`;
  }

  async setKnock(name: string, knock: string | null): Promise<void> {
    await this.#sql`UPDATE users SET knock_secret = ${knock} WHERE name = ${name}`;
  }

  async clearPresence(name: string, reach?: PublishedReach): Promise<void> {
    const r = reachColumns(reach);
    await this.#sql`UPDATE users SET addr_host = NULL, addr_port = NULL, addr_expires = NULL,
      reach_ok = CASE WHEN reach_key IS NOT DISTINCT FROM ${r.key}::TEXT THEN reach_ok ELSE NULL END,
      reach_checked_at = CASE WHEN reach_key IS NOT DISTINCT FROM ${r.key}::TEXT THEN reach_checked_at END,
      reach = ${r.json}, reach_key = ${r.key}
      WHERE name = ${name}`;
  }

  async setReachResult(name: string, key: string, reachable: Address[], checkedAt: number): Promise<boolean> {
    const r = await this.#sql`UPDATE users SET reach_ok = ${JSON.stringify(reachable)},
      reach_checked_at = ${checkedAt} WHERE name = ${name} AND reach_key = ${key} RETURNING name`;
    return r.length > 0;
  }

  async certsIssuedSince(name: string, sinceMs: number): Promise<number> {
    const [r] = await this
      .#sql`SELECT count(*) AS n FROM certs WHERE name = ${name} AND issued_at >= ${sinceMs}`;
    return Number(r.n);
  }

  async getCert(serial: string): Promise<{ name: string; revokedAt: number | null } | null> {
    const [r] = await this.#sql`SELECT name, revoked_at FROM certs WHERE serial = ${serial}`;
    return r
      ? { name: String(r.name), revokedAt: r.revoked_at === null ? null : Number(r.revoked_at) }
      : null;
  }

  async revokedCerts(nowMs: number): Promise<{ serial: string; revokedAt: number }[]> {
    const rows = await this.#sql`SELECT serial, revoked_at FROM certs
      WHERE revoked_at IS NOT NULL AND not_after > ${nowMs} ORDER BY revoked_at, serial COLLATE "C"`;
    return rows.map((r) => ({ serial: String(r.serial), revokedAt: Number(r.revoked_at) }));
  }

  async crlState(): Promise<CrlState> {
    // One round trip: this runs on every CRL request, on every node.
    const [r] = await this.#sql`SELECT
        (SELECT value FROM meta WHERE key = 'revocations') AS revision,
        c.number, c.revision AS crl_revision, c.made_at
      FROM (SELECT 1) AS one LEFT JOIN crl_state c ON c.id = 1`;
    return {
      revision: r.revision === null ? 0 : Number(r.revision),
      crl: r.number === null
        ? null
        : { number: Number(r.number), revision: Number(r.crl_revision), madeAt: Number(r.made_at) },
    };
  }

  async storedCrl(): Promise<StoredCrl | null> {
    const [c] = await this.#sql`SELECT number, revision, made_at, der FROM crl_state WHERE id = 1`;
    return c
      ? {
        number: Number(c.number),
        revision: Number(c.revision),
        madeAt: Number(c.made_at),
        der: new Uint8Array(c.der as Uint8Array),
      }
      : null;
  }

  async nextCrlNumber(): Promise<number> {
    const [r] = await this.#sql`INSERT INTO meta (key, value) VALUES ('crl_number', '1')
      ON CONFLICT (key) DO UPDATE SET value = (meta.value::BIGINT + 1)::TEXT RETURNING value`;
    return Number(r.value);
  }

  async saveCrl(crl: StoredCrl): Promise<StoredCrl> {
    await this.#sql`INSERT INTO crl_state (id, number, revision, made_at, der)
      VALUES (1, ${crl.number}, ${crl.revision}, ${crl.madeAt}, ${Buffer.from(crl.der)})
      ON CONFLICT (id) DO UPDATE SET number = excluded.number, revision = excluded.revision,
        made_at = excluded.made_at, der = excluded.der
      WHERE crl_state.number < excluded.number`;
    return (await this.storedCrl())!;
  }

  async addToken(token: string, nowMs: number, ttlMs: number): Promise<void> {
    await this.#sql`INSERT INTO tokens (hash, created_at, expires_at)
      VALUES (${hashToken(token)}, ${nowMs}, ${nowMs + ttlMs})`;
  }

  async tokenState(token: string, nowMs: number): Promise<TokenState> {
    const [r] = await this.#sql`SELECT expires_at, used_at FROM tokens WHERE hash = ${hashToken(token)}`;
    if (!r) return "unknown";
    if (r.used_at !== null) return "used";
    if (Number(r.expires_at) <= nowMs) return "expired";
    return "valid";
  }

  /** Takes arriving while others are under way are answered together: the takes of one key (same cost and
   * bucket) first try as one take of their summed cost, which, when it is granted, is exactly what taking them
   * one after another would have done (each would have found enough). When it is refused, nothing was
   * taken, and they are taken one by one as before. So a busy source costs one statement per group, and the
   * arithmetic and its exactness across nodes stay those of takeOne. */
  takeBucket(key: string, costIn: number, nowMs: number, spec: BucketSpec): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#takeQueue.push({ key, cost: Math.min(costIn, spec.burst), nowMs, spec, resolve, reject });
      if (!this.#takeRunning) this.#drainTakes();
    });
  }

  async #drainTakes(): Promise<void> {
    this.#takeRunning = true;
    try {
      while (this.#takeQueue.length > 0) {
        const groups = new Map<string, PendingTake[]>();
        for (const t of this.#takeQueue.splice(0)) {
          const g = JSON.stringify([t.key, t.cost, t.spec.perSecond, t.spec.burst]);
          const list = groups.get(g);
          if (list) list.push(t);
          else groups.set(g, [t]);
        }
        await Promise.all([...groups.values()].map((g) => this.#takeGroup(g)));
      }
    } finally {
      this.#takeRunning = false;
    }
  }

  async #takeGroup(group: PendingTake[]): Promise<void> {
    const [first] = group;
    const total = first.cost * group.length;
    if (group.length > 1 && total <= first.spec.burst) {
      // The earliest time of the group: refill counted up to it only, so the sum is never granted where one
      // of them, taken at its own time, would not have been. (Like any take that reaches the database after
      // a later one, it sets the bucket's time back by those milliseconds, as the one-by-one takes could.)
      const nowMs = group.reduce((m, t) => Math.min(m, t.nowMs), Infinity);
      try {
        if (await this.#takeOne(first.key, total, nowMs, first.spec, group.length) === 0) {
          for (const t of group) t.resolve(0);
          return;
        }
      } catch {
        // Taken one by one below, each with its own error if any.
      }
    }
    for (const t of group) {
      await this.#takeOne(t.key, t.cost, t.nowMs, t.spec, 1).then(t.resolve, t.reject);
    }
  }

  /** One take of `cost` (at most the burst) from the shared bucket: 0 when granted, else seconds to wait.
   * One statement, so one round trip and one commit: the upsert's row lock serializes concurrent takes, and
   * `granted` records whether this take was paid (the same arithmetic as rate_limit.ts). `takes` is how many
   * requests it stands for (the periodic sweep counts requests). */
  async #takeOne(key: string, cost: number, nowMs: number, spec: BucketSpec, takes: number): Promise<number> {
    const [r] = await this.#sql`INSERT INTO rate_buckets AS b (key, tokens, last_ms, granted)
      VALUES (${key}, ${spec.burst - cost}, ${nowMs}, TRUE)
      ON CONFLICT (key) DO UPDATE SET
        granted = LEAST(${spec.burst}::DOUBLE PRECISION,
          b.tokens + GREATEST(0, ${nowMs}::BIGINT - b.last_ms) / 1000.0 * ${spec.perSecond}) >= ${cost},
        tokens = LEAST(${spec.burst}::DOUBLE PRECISION,
            b.tokens + GREATEST(0, ${nowMs}::BIGINT - b.last_ms) / 1000.0 * ${spec.perSecond})
          - CASE WHEN LEAST(${spec.burst}::DOUBLE PRECISION,
              b.tokens + GREATEST(0, ${nowMs}::BIGINT - b.last_ms) / 1000.0 * ${spec.perSecond}) >= ${cost}
            THEN ${cost} ELSE 0 END,
        last_ms = ${nowMs}
      RETURNING granted, tokens`;
    const swept = Math.floor(this.#bucketTakes / BUCKET_SWEEP_EVERY);
    this.#bucketTakes += takes;
    if (Math.floor(this.#bucketTakes / BUCKET_SWEEP_EVERY) !== swept) {
      await this.#sql`DELETE FROM rate_buckets WHERE last_ms < ${nowMs - 86400_000}`;
    }
    if (r.granted === true) return 0;
    return Math.max(1, Math.ceil((cost - Number(r.tokens)) / spec.perSecond));
  }

  async announceTimeServer(
    s: { host: string | null; port: number; publicKey: string },
    nowMs: number,
  ): Promise<void> {
    await this.#sql`INSERT INTO time_servers (public_key, host, port, seen_at)
      VALUES (${s.publicKey}, ${s.host}, ${s.port}, ${nowMs})
      ON CONFLICT (public_key) DO UPDATE SET host = excluded.host, port = excluded.port,
        seen_at = excluded.seen_at`;
  }

  async timeServers(sinceMs: number): Promise<TimeServerRow[]> {
    const rows = await this.#sql`SELECT public_key, host, port, seen_at FROM time_servers
      WHERE seen_at >= ${sinceMs} ORDER BY public_key COLLATE "C"`;
    return rows.map((r) => ({
      publicKey: String(r.public_key),
      host: r.host === null ? null : String(r.host),
      port: Number(r.port),
      seenAt: Number(r.seen_at),
    }));
  }

  async bindCa(caFingerprint: string): Promise<void> {
    await this.#sql`INSERT INTO meta (key, value) VALUES ('ca_fingerprint', ${caFingerprint})
      ON CONFLICT (key) DO NOTHING`;
    const bound = await this.boundCa();
    if (bound !== caFingerprint) {
      throw new ServerSetupError(
        "CA_KEY",
        `${this.location} belongs to the CA ${bound}, not to this CA (${caFingerprint}); every node must ` +
          "use the same CA key (--ca-key-file)",
      );
    }
  }

  async boundCa(): Promise<string | null> {
    const [r] = await this.#sql`SELECT value FROM meta WHERE key = 'ca_fingerprint'`;
    return r ? String(r.value) : null;
  }

  importUsers(
    users: IssuedCert[],
    nowMs: number,
    presence?: (c: IssuedCert) => PresenceImport | null,
  ): Promise<void> {
    return this.#tx(async (t) => {
      // Rows per INSERT: well under the protocol's 65535 parameters.
      const CHUNK = 4000;
      for (let i = 0; i < users.length; i += CHUNK) {
        const part = users.slice(i, i + CHUNK);
        const certRows = part.map((c) => ({
          serial: c.serial,
          name: c.name,
          fingerprint: c.fingerprint,
          cert_pem: c.certPem,
          issued_at: nowMs,
          not_after: c.notAfter,
        }));
        await t`INSERT INTO certs ${
          t(certRows, "serial", "name", "fingerprint", "cert_pem", "issued_at", "not_after")
        }`;
        const userRows = part.map((c) => {
          const p = presence?.(c) ?? null;
          return {
            name: c.name,
            key_id: c.keyId,
            serial: c.serial,
            cert_pem: c.certPem,
            fingerprint: c.fingerprint,
            not_after: c.notAfter,
            created_at: nowMs,
            addr_host: p?.host ?? null,
            addr_port: p?.port ?? null,
            addr_expires: p?.expiresMs ?? null,
          };
        });
        await t`INSERT INTO users ${
          t(
            userRows,
            "name",
            "key_id",
            "serial",
            "cert_pem",
            "fingerprint",
            "not_after",
            "created_at",
            "addr_host",
            "addr_port",
            "addr_expires",
          )
        }`;
      }
    });
  }
}
