/**
 * The embedded store: one SQLite file in the data folder (the default; one `serve` process, plus admin
 * commands in other processes). Writes that must be atomic run in one synchronous BEGIN IMMEDIATE ... COMMIT,
 * so other requests (same process) and admin commands (other processes) never see half a change; the async
 * methods only wrap synchronous work, so no transaction is ever open across an await.
 */
import type { Address } from "../contract/mod.ts";
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
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
import { pendingMigrations, SQLITE_MIGRATIONS } from "./migrations.ts";
import { takeFromBucket } from "./rate_limit.ts";
import { ServerSetupError } from "./errors.ts";

type Row = Record<string, SQLInputValue>;

/** Presence data is private: the file is created owner-only before SQLite does (its WAL inherits the mode),
 * and an existing file (and its WAL/SHM) that is looser is tightened. */
function prepareFile(path: string): void {
  try {
    Deno.writeFileSync(path, new Uint8Array(0), { createNew: true, mode: 0o600 });
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
  }
  if (Deno.build.os === "windows") return;
  for (const f of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      if ((Deno.statSync(f).mode! & 0o077) !== 0) Deno.chmodSync(f, 0o600);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
}

export class SqliteDirectoryStore implements DirectoryStore {
  readonly kind = "sqlite" as const;
  readonly location: string;
  readonly db: DatabaseSync;
  #statements = new Map<string, StatementSync>();

  constructor(path: string) {
    this.location = path;
    prepareFile(path);
    this.db = new DatabaseSync(path);
    this.db.exec("PRAGMA journal_mode=WAL");
    // FULL: what the phonebook acknowledges (an enrollment, a renewal, a revocation, a used invitation, a CRL
    // Number) survives a power loss; under NORMAL the last commits before one may vanish, and the CA would
    // then forget a certificate it issued, or a revocation it announced. Soft state (presence, reachability,
    // rate buckets) is written under NORMAL (#soft): losing the last second of it is harmless, and the next
    // FULL commit syncs the log with it anyway.
    this.db.exec("PRAGMA synchronous=FULL");
    this.db.exec("PRAGMA busy_timeout=5000");
    this.db.exec("PRAGMA foreign_keys=ON");
    try {
      this.#migrate();
    } catch (e) {
      this.db.close();
      throw e;
    }
  }

  #version(): number {
    return Number((this.db.prepare("PRAGMA user_version").get() as Row).user_version);
  }

  #migrate(): void {
    for (const m of pendingMigrations(SQLITE_MIGRATIONS, this.#version(), this.location)) {
      this.#tx(() => {
        // Another process may have applied it while we waited for the write lock.
        if (this.#version() >= m.version) return;
        this.db.exec(m.sql);
        this.db.exec(`PRAGMA user_version = ${m.version}`);
      });
    }
  }

  /** Prepared statements are cached: the directory runs the same few queries all day. */
  #q(sql: string): StatementSync {
    let st = this.#statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.#statements.set(sql, st);
    }
    return st;
  }

  /** One write transaction (BEGIN IMMEDIATE takes the write lock up front, so a concurrent admin command
   * waits instead of failing halfway). `fn` is synchronous. */
  #tx<T>(fn: () => T): T {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      const out = fn();
      this.db.exec("COMMIT");
      return out;
    } catch (e) {
      this.db.exec("ROLLBACK");
      throw e;
    }
  }

  /** Runs `fn` (synchronous) with commits that need not reach the disk before they return. */
  #soft<T>(fn: () => T): T {
    this.db.exec("PRAGMA synchronous=NORMAL");
    try {
      return fn();
    } finally {
      this.db.exec("PRAGMA synchronous=FULL");
    }
  }

  close(): Promise<void> {
    this.db.close();
    return Promise.resolve();
  }

  #getUser(name: string): UserRow | null {
    const r = this.#q("SELECT * FROM users WHERE name = ?").get(name) as Row | undefined;
    return r ? toUserRow(r) : null;
  }

  getUser(name: string): Promise<UserRow | null> {
    return Promise.resolve(this.#getUser(name));
  }

  listUsers(prefix: string, after: string | null, limit: number): Promise<UserRow[]> {
    const b = listBounds(prefix, after);
    const rows = this.#q(
      `SELECT * FROM users WHERE name ${b.loInclusive ? ">=" : ">"} ? AND name < ? ORDER BY name LIMIT ?`,
    ).all(b.lo, b.hi, limit) as Row[];
    return Promise.resolve(rows.map(toUserRow));
  }

  countUsers(): Promise<number> {
    return Promise.resolve(Number((this.#q("SELECT count(*) AS n FROM users").get() as Row).n));
  }

  #insertCert(c: IssuedCert, nowMs: number): void {
    this.#q(
      "INSERT INTO certs (serial, name, fingerprint, cert_pem, issued_at, not_after) VALUES (?, ?, ?, ?, ?, ?)",
    ).run(c.serial, c.name, c.fingerprint, c.certPem, nowMs, c.notAfter);
  }

  #insertUser(c: IssuedCert, nowMs: number): void {
    this.#q(
      `INSERT INTO users (name, key_id, serial, cert_pem, fingerprint, not_after, created_at, revoked)
       VALUES (?, ?, ?, ?, ?, ?, ?, 0)`,
    ).run(c.name, c.keyId, c.serial, c.certPem, c.fingerprint, c.notAfter, nowMs);
  }

  #revokeCert(serial: string, nowMs: number, reason: RevokeReason): void {
    const r = this.#q(
      "UPDATE certs SET revoked_at = ?, revoke_reason = ? WHERE serial = ? AND revoked_at IS NULL",
    ).run(nowMs, reason, serial);
    if (Number(r.changes) > 0) {
      this.#q(
        `INSERT INTO meta (key, value) VALUES ('revocations', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1`,
      ).run();
    }
  }

  #markRevoked(name: string): void {
    this.#q(
      `UPDATE users SET revoked = 1, addr_host = NULL, addr_port = NULL, addr_expires = NULL, reach = NULL,
       reach_key = NULL, reach_ok = NULL, reach_checked_at = NULL WHERE name = ?`,
    ).run(name);
  }

  #issuedSince(name: string, sinceMs: number): number {
    const r = this.#q("SELECT count(*) AS n FROM certs WHERE name = ? AND issued_at >= ?").get(
      name,
      sinceMs,
    ) as Row;
    return Number(r.n);
  }

  // async, so that a failure (a serial already used) is a rejected promise, not a throw at the call.
  // deno-lint-ignore require-await
  async enroll(issued: IssuedCert, nowMs: number, token: string | null): Promise<EnrollOutcome> {
    return this.#tx((): EnrollOutcome => {
      if (this.#getUser(issued.name)) return "name_taken";
      if (token !== null) {
        const r = this.#q(
          "UPDATE tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL AND expires_at > ?",
        ).run(nowMs, issued.name, hashToken(token), nowMs);
        if (Number(r.changes) !== 1) return "bad_token";
      }
      this.#insertCert(issued, nowMs);
      this.#insertUser(issued, nowMs);
      return "ok";
    });
  }

  renew(
    issued: IssuedCert,
    oldSerial: string,
    nowMs: number,
    sinceMs: number,
    maxIssued: number,
  ): Promise<RenewOutcome> {
    return Promise.resolve(this.#tx((): RenewOutcome => {
      const user = this.#getUser(issued.name);
      if (!user || user.revoked || user.serial !== oldSerial) return "stale";
      if (this.#issuedSince(issued.name, sinceMs) >= maxIssued) return "rate_limited";
      this.#insertCert(issued, nowMs);
      this.#q(
        "UPDATE users SET key_id = ?, serial = ?, cert_pem = ?, fingerprint = ?, not_after = ? WHERE name = ?",
      ).run(issued.keyId, issued.serial, issued.certPem, issued.fingerprint, issued.notAfter, issued.name);
      this.#revokeCert(oldSerial, nowMs, "superseded");
      return "ok";
    }));
  }

  revokeOwn(name: string, serial: string, nowMs: number): Promise<void> {
    this.#tx(() => {
      this.#revokeCert(serial, nowMs, "unspecified");
      this.#markRevoked(name);
    });
    return Promise.resolve();
  }

  adminRevoke(name: string, release: boolean, nowMs: number): Promise<{ serial: string } | null> {
    return Promise.resolve(this.#tx(() => {
      const user = this.#getUser(name);
      if (!user) return null;
      this.#revokeCert(user.serial, nowMs, "admin");
      this.#markRevoked(name);
      if (release) this.#q("DELETE FROM users WHERE name = ?").run(name);
      return { serial: user.serial };
    }));
  }

  setPresence(
    name: string,
    host: string,
    port: number,
    expiresMs: number,
    reach?: PublishedReach,
  ): Promise<void> {
    const r = reachColumns(reach);
    // SET expressions read the row as it was, so the result survives only a publication of the same key.
    this.#soft(() =>
      this.#q(
        `UPDATE users SET addr_host = ?, addr_port = ?, addr_expires = ?,
           reach_ok = CASE WHEN reach_key IS ? THEN reach_ok ELSE NULL END,
           reach_checked_at = CASE WHEN reach_key IS ? THEN reach_checked_at ELSE NULL END,
           reach = ?, reach_key = ?
         WHERE name = ?`,
      ).run(host, port, expiresMs, r.key, r.key, r.json, r.key, name)
    );
    return Promise.resolve();
  }

  setKnock(name: string, knock: string | null): Promise<void> {
    this.#q("UPDATE users SET knock_secret = ? WHERE name = ?").run(knock, name);
    return Promise.resolve();
  }

  clearPresence(name: string, reach?: PublishedReach): Promise<void> {
    const r = reachColumns(reach);
    this.#soft(() =>
      this.#q(
        `UPDATE users SET addr_host = NULL, addr_port = NULL, addr_expires = NULL,
           reach_ok = CASE WHEN reach_key IS ? THEN reach_ok ELSE NULL END,
           reach_checked_at = CASE WHEN reach_key IS ? THEN reach_checked_at ELSE NULL END,
           reach = ?, reach_key = ?
         WHERE name = ?`,
      ).run(r.key, r.key, r.json, r.key, name)
    );
    return Promise.resolve();
  }

  setReachResult(name: string, key: string, reachable: Address[], checkedAt: number): Promise<boolean> {
    const r = this.#soft(() =>
      this.#q("UPDATE users SET reach_ok = ?, reach_checked_at = ? WHERE name = ? AND reach_key = ?")
        .run(JSON.stringify(reachable), checkedAt, name, key)
    );
    return Promise.resolve(Number(r.changes) > 0);
  }

  certsIssuedSince(name: string, sinceMs: number): Promise<number> {
    return Promise.resolve(this.#issuedSince(name, sinceMs));
  }

  getCert(serial: string): Promise<{ name: string; revokedAt: number | null } | null> {
    const r = this.#q("SELECT name, revoked_at FROM certs WHERE serial = ?").get(serial) as Row | undefined;
    return Promise.resolve(
      r ? { name: String(r.name), revokedAt: r.revoked_at === null ? null : Number(r.revoked_at) } : null,
    );
  }

  revokedCerts(nowMs: number): Promise<{ serial: string; revokedAt: number }[]> {
    const rows = this.#q(
      "SELECT serial, revoked_at FROM certs WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY revoked_at, serial",
    ).all(nowMs) as Row[];
    return Promise.resolve(rows.map((r) => ({ serial: String(r.serial), revokedAt: Number(r.revoked_at) })));
  }

  crlState(): Promise<CrlState> {
    const rev = this.#q("SELECT value FROM meta WHERE key = 'revocations'").get() as Row | undefined;
    const c = this.#q("SELECT number, revision, made_at FROM crl_state WHERE id = 1").get() as
      | Row
      | undefined;
    return Promise.resolve({
      revision: rev ? Number(rev.value) : 0,
      crl: c ? { number: Number(c.number), revision: Number(c.revision), madeAt: Number(c.made_at) } : null,
    });
  }

  #storedCrl(): StoredCrl | null {
    const c = this.#q("SELECT number, revision, made_at, der FROM crl_state WHERE id = 1").get() as
      | Row
      | undefined;
    return c
      ? {
        number: Number(c.number),
        revision: Number(c.revision),
        madeAt: Number(c.made_at),
        der: new Uint8Array(c.der as Uint8Array),
      }
      : null;
  }

  storedCrl(): Promise<StoredCrl | null> {
    return Promise.resolve(this.#storedCrl());
  }

  nextCrlNumber(): Promise<number> {
    return Promise.resolve(this.#tx(() => {
      const r = this.#q(
        `INSERT INTO meta (key, value) VALUES ('crl_number', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value`,
      ).get() as Row;
      return Number(r.value);
    }));
  }

  saveCrl(crl: StoredCrl): Promise<StoredCrl> {
    return Promise.resolve(this.#tx(() => {
      this.#q(
        `INSERT INTO crl_state (id, number, revision, made_at, der) VALUES (1, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET number = excluded.number, revision = excluded.revision,
           made_at = excluded.made_at, der = excluded.der
         WHERE crl_state.number < excluded.number`,
      ).run(crl.number, crl.revision, crl.madeAt, crl.der);
      return this.#storedCrl()!;
    }));
  }

  addToken(token: string, nowMs: number, ttlMs: number): Promise<void> {
    this.#q("INSERT INTO tokens (hash, created_at, expires_at) VALUES (?, ?, ?)")
      .run(hashToken(token), nowMs, nowMs + ttlMs);
    return Promise.resolve();
  }

  tokenState(token: string, nowMs: number): Promise<TokenState> {
    const r = this.#q("SELECT expires_at, used_at FROM tokens WHERE hash = ?").get(hashToken(token)) as
      | Row
      | undefined;
    let s: TokenState = "valid";
    if (!r) s = "unknown";
    else if (r.used_at !== null) s = "used";
    else if (Number(r.expires_at) <= nowMs) s = "expired";
    return Promise.resolve(s);
  }

  takeBucket(key: string, cost: number, nowMs: number, spec: BucketSpec): Promise<number> {
    return Promise.resolve(this.#soft(() =>
      this.#tx(() => {
        const r = this.#q("SELECT tokens, last_ms FROM rate_buckets WHERE key = ?").get(key) as
          | Row
          | undefined;
        const step = takeFromBucket(
          r ? { tokens: Number(r.tokens), lastMs: Number(r.last_ms) } : null,
          cost,
          nowMs,
          spec,
        );
        this.#q(
          `INSERT INTO rate_buckets (key, tokens, last_ms) VALUES (?, ?, ?)
         ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, last_ms = excluded.last_ms`,
        ).run(key, step.bucket.tokens, step.bucket.lastMs);
        // A full, idle bucket says nothing a new one would not: forget those, so address churn cannot grow
        // the table without bound.
        this.#q("DELETE FROM rate_buckets WHERE last_ms < ?").run(nowMs - 86400_000);
        return step.wait;
      })
    ));
  }

  announceTimeServer(
    s: { host: string | null; port: number; publicKey: string },
    nowMs: number,
  ): Promise<void> {
    this.#soft(() =>
      this.#q(
        `INSERT INTO time_servers (public_key, host, port, seen_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(public_key) DO UPDATE SET host = excluded.host, port = excluded.port,
           seen_at = excluded.seen_at`,
      ).run(s.publicKey, s.host, s.port, nowMs)
    );
    return Promise.resolve();
  }

  timeServers(sinceMs: number): Promise<TimeServerRow[]> {
    const rows = this.#q(
      "SELECT public_key, host, port, seen_at FROM time_servers WHERE seen_at >= ? ORDER BY public_key",
    ).all(sinceMs) as Row[];
    return Promise.resolve(rows.map((r) => ({
      publicKey: String(r.public_key),
      host: r.host === null ? null : String(r.host),
      port: Number(r.port),
      seenAt: Number(r.seen_at),
    })));
  }

  bindCa(caFingerprint: string): Promise<void> {
    this.#tx(() => {
      const r = this.#q("SELECT value FROM meta WHERE key = 'ca_fingerprint'").get() as Row | undefined;
      if (!r) {
        this.#q("INSERT INTO meta (key, value) VALUES ('ca_fingerprint', ?)").run(caFingerprint);
      } else if (String(r.value) !== caFingerprint) {
        throw new ServerSetupError(
          "CA_KEY",
          `${this.location} belongs to the CA ${r.value}, not to this CA (${caFingerprint})`,
        );
      }
    });
    return Promise.resolve();
  }

  boundCa(): Promise<string | null> {
    const r = this.#q("SELECT value FROM meta WHERE key = 'ca_fingerprint'").get() as Row | undefined;
    return Promise.resolve(r ? String(r.value) : null);
  }

  importUsers(
    users: IssuedCert[],
    nowMs: number,
    presence?: (c: IssuedCert) => PresenceImport | null,
  ): Promise<void> {
    this.#tx(() => {
      for (const c of users) {
        this.#insertCert(c, nowMs);
        this.#insertUser(c, nowMs);
        const p = presence?.(c);
        if (p) {
          this.#q("UPDATE users SET addr_host = ?, addr_port = ?, addr_expires = ? WHERE name = ?")
            .run(p.host, p.port, p.expiresMs, c.name);
        }
      }
    });
    return Promise.resolve();
  }
}
