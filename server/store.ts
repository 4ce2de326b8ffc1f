/**
 * The directory's SQLite store: users (a name bound to its key and current certificate, presence), every
 * certificate ever issued (for the CRL), and invite tokens (only their SHA-256 is stored, so a copy of the
 * database does not hand out unused invitations). All writes that must be atomic run in one synchronous
 * BEGIN IMMEDIATE ... COMMIT, so other requests (same process) and admin commands (other processes) never
 * see half a change.
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { createHash } from "node:crypto";

export interface UserRow {
  name: string;
  keyId: string;
  serial: string;
  certPem: string;
  fingerprint: string;
  notAfter: number;
  createdAt: number;
  revoked: boolean;
  addrHost: string | null;
  addrPort: number | null;
  addrExpires: number | null;
}

export interface IssuedCert {
  serial: string;
  name: string;
  keyId: string;
  certPem: string;
  fingerprint: string;
  notAfter: number;
}

export type TokenState = "valid" | "unknown" | "used" | "expired";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
  name TEXT PRIMARY KEY,
  key_id TEXT NOT NULL,
  serial TEXT NOT NULL,
  cert_pem TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  not_after INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0,
  addr_host TEXT,
  addr_port INTEGER,
  addr_expires INTEGER
);
CREATE TABLE IF NOT EXISTS certs (
  serial TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  cert_pem TEXT NOT NULL,
  issued_at INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  revoked_at INTEGER,
  revoke_reason TEXT
);
CREATE INDEX IF NOT EXISTS certs_revoked ON certs (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tokens (
  hash TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER,
  used_by TEXT
);
`;

type Row = Record<string, SQLInputValue>;

function toUser(r: Row): UserRow {
  return {
    name: String(r.name),
    keyId: String(r.key_id),
    serial: String(r.serial),
    certPem: String(r.cert_pem),
    fingerprint: String(r.fingerprint),
    notAfter: Number(r.not_after),
    createdAt: Number(r.created_at),
    revoked: Number(r.revoked) !== 0,
    addrHost: r.addr_host === null ? null : String(r.addr_host),
    addrPort: r.addr_port === null ? null : Number(r.addr_port),
    addrExpires: r.addr_expires === null ? null : Number(r.addr_expires),
  };
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

export class DirectoryStore {
  readonly db: DatabaseSync;
  #statements = new Map<string, StatementSync>();

  constructor(path: string) {
    // Presence data is private: create the file owner-only before SQLite does (its WAL inherits the mode).
    try {
      Deno.writeFileSync(path, new Uint8Array(0), { createNew: true, mode: 0o600 });
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    // An existing file (and its WAL/SHM, which SQLite creates with the main file's mode) may be looser.
    if (Deno.build.os !== "windows") {
      for (const f of [path, `${path}-wal`, `${path}-shm`]) {
        try {
          if ((Deno.statSync(f).mode! & 0o077) !== 0) Deno.chmodSync(f, 0o600);
        } catch (e) {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        }
      }
    }
    this.db = new DatabaseSync(path);
    this.db.exec("PRAGMA journal_mode=WAL");
    this.db.exec("PRAGMA synchronous=NORMAL");
    this.db.exec("PRAGMA busy_timeout=5000");
    this.db.exec("PRAGMA foreign_keys=ON");
    this.db.exec(SCHEMA);
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

  close(): void {
    this.db.close();
  }

  /** Runs `fn` in one write transaction (BEGIN IMMEDIATE takes the write lock up front, so a concurrent admin
   * command waits instead of failing halfway). `fn` must be synchronous. */
  tx<T>(fn: () => T): T {
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

  getUser(name: string): UserRow | null {
    const r = this.#q("SELECT * FROM users WHERE name = ?").get(name) as Row | undefined;
    return r ? toUser(r) : null;
  }

  /** Users in name order, after `after` (exclusive), whose name starts with `prefix`. */
  listUsers(prefix: string, after: string | null, limit: number): UserRow[] {
    // Names are ASCII below 0x7f, so [prefix, prefix + "\x7f") is exactly "starts with prefix", with no LIKE
    // wildcards to escape.
    const lo = after !== null && after >= prefix ? after : null;
    const rows = lo === null
      ? this.#q(
        "SELECT * FROM users WHERE name >= ? AND name < ? ORDER BY name LIMIT ?",
      ).all(prefix, prefix + "\x7f", limit)
      : this.#q(
        "SELECT * FROM users WHERE name > ? AND name < ? ORDER BY name LIMIT ?",
      ).all(lo, prefix + "\x7f", limit);
    return (rows as Row[]).map(toUser);
  }

  countUsers(): number {
    const r = this.#q("SELECT count(*) AS n FROM users").get() as Row;
    return Number(r.n);
  }

  insertCert(c: IssuedCert, nowMs: number): void {
    this.#q(
      "INSERT INTO certs (serial, name, fingerprint, cert_pem, issued_at, not_after) VALUES (?, ?, ?, ?, ?, ?)",
    ).run(c.serial, c.name, c.fingerprint, c.certPem, nowMs, c.notAfter);
  }

  insertUser(c: IssuedCert, nowMs: number): void {
    this.#q(
      `INSERT INTO users (name, key_id, serial, cert_pem, fingerprint, not_after, created_at, revoked)
       VALUES (?, ?, ?, ?, ?, ?, ?, 0)`,
    ).run(c.name, c.keyId, c.serial, c.certPem, c.fingerprint, c.notAfter, nowMs);
  }

  /** Replaces the user's current certificate (renewal); the caller revokes the old one as superseded. */
  replaceUserCert(c: IssuedCert): void {
    this.#q(
      "UPDATE users SET key_id = ?, serial = ?, cert_pem = ?, fingerprint = ?, not_after = ? WHERE name = ?",
    ).run(c.keyId, c.serial, c.certPem, c.fingerprint, c.notAfter, c.name);
  }

  revokeCert(serial: string, nowMs: number, reason: "unspecified" | "superseded" | "admin"): boolean {
    const r = this.#q(
      "UPDATE certs SET revoked_at = ?, revoke_reason = ? WHERE serial = ? AND revoked_at IS NULL",
    ).run(nowMs, reason, serial);
    if (Number(r.changes) > 0) this.#bumpRevision();
    return Number(r.changes) > 0;
  }

  markUserRevoked(name: string): void {
    this.#q(
      "UPDATE users SET revoked = 1, addr_host = NULL, addr_port = NULL, addr_expires = NULL WHERE name = ?",
    ).run(name);
  }

  /** Frees a name (admin only): its certificates stay revoked in the CRL. */
  deleteUser(name: string): void {
    this.#q("DELETE FROM users WHERE name = ?").run(name);
  }

  setPresence(name: string, host: string, port: number, expiresMs: number): void {
    this.#q("UPDATE users SET addr_host = ?, addr_port = ?, addr_expires = ? WHERE name = ?")
      .run(host, port, expiresMs, name);
  }

  clearPresence(name: string): void {
    this.#q("UPDATE users SET addr_host = NULL, addr_port = NULL, addr_expires = NULL WHERE name = ?")
      .run(name);
  }

  /** Revoked certificates that have not expired by `nowMs` (an expired certificate is refused anyway, so
   * RFC 5280 lets the CRL drop it; the list stays as small as the set of live revocations). */
  revokedCerts(nowMs: number): { serial: string; revokedAt: number }[] {
    const rows = this.#q(
      "SELECT serial, revoked_at FROM certs WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY revoked_at, serial",
    ).all(nowMs) as Row[];
    return rows.map((r) => ({ serial: String(r.serial), revokedAt: Number(r.revoked_at) }));
  }

  /** Certificates issued for `name` at or after `sinceMs` (renewal limit). */
  certsIssuedSince(name: string, sinceMs: number): number {
    const r = this.#q("SELECT count(*) AS n FROM certs WHERE name = ? AND issued_at >= ?").get(
      name,
      sinceMs,
    ) as Row;
    return Number(r.n);
  }

  getCert(serial: string): { name: string; revokedAt: number | null } | null {
    const r = this.#q("SELECT name, revoked_at FROM certs WHERE serial = ?").get(serial) as
      | Row
      | undefined;
    return r
      ? { name: String(r.name), revokedAt: r.revoked_at === null ? null : Number(r.revoked_at) }
      : null;
  }

  /** A counter bumped by every revocation, also by other processes (admin commands): the CRL cache key. */
  revocationRevision(): number {
    const r = this.#q("SELECT value FROM meta WHERE key = 'revocations'").get() as Row | undefined;
    return r ? Number(r.value) : 0;
  }

  #bumpRevision(): void {
    this.#q(
      `INSERT INTO meta (key, value) VALUES ('revocations', '1')
       ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1`,
    ).run();
  }

  /** The next CRL Number (RFC 5280 5.2.3): a persistent counter, so numbers keep growing across restarts
   * and clock changes. */
  nextCrlNumber(): number {
    return this.tx(() => {
      this.#q(
        `INSERT INTO meta (key, value) VALUES ('crl_number', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1`,
      ).run();
      return Number(this.getMeta("crl_number"));
    });
  }

  addToken(token: string, nowMs: number, ttlMs: number): void {
    this.#q("INSERT INTO tokens (hash, created_at, expires_at) VALUES (?, ?, ?)")
      .run(hashToken(token), nowMs, nowMs + ttlMs);
  }

  tokenState(token: string, nowMs: number): TokenState {
    const r = this.#q("SELECT expires_at, used_at FROM tokens WHERE hash = ?").get(hashToken(token)) as
      | Row
      | undefined;
    if (!r) return "unknown";
    if (r.used_at !== null) return "used";
    if (Number(r.expires_at) <= nowMs) return "expired";
    return "valid";
  }

  /** Marks the token used; false when it was not valid any more (used meanwhile, expired, unknown). */
  consumeToken(token: string, name: string, nowMs: number): boolean {
    const r = this.#q(
      "UPDATE tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL AND expires_at > ?",
    ).run(nowMs, name, hashToken(token), nowMs);
    return Number(r.changes) === 1;
  }

  getMeta(key: string): string | null {
    const r = this.#q("SELECT value FROM meta WHERE key = ?").get(key) as Row | undefined;
    return r ? String(r.value) : null;
  }

  setMeta(key: string, value: string): void {
    this.#q(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    ).run(key, value);
  }
}
