/**
 * The directory's schema as numbered migrations, one list per backend (the SQL differs in types only).
 * A store applies, at open, every migration above the database's version, each in its own transaction, and
 * refuses a database whose version is above the newest one here (it was written by a newer securechat, whose
 * data this code could misread or damage).
 *
 * SQLite keeps the version in PRAGMA user_version. A directory.db made before versioning (user_version 0,
 * tables present) passes migration 1 unchanged, because migration 1 is exactly the schema of that time.
 * PostgreSQL keeps it in schema_migrations, one row per applied migration; nodes starting together claim a
 * migration by inserting its row first, so the loser waits on the row and then sees it applied. The SQL stays
 * within what CockroachDB and YugabyteDB accept (no advisory locks, no LOCK TABLE). User names are
 * COLLATE "C" in PostgreSQL: listings compare and sort them byte by byte, as SQLite does, whatever the
 * database's default collation (a linguistic one ignores "-" and "_"), and the primary key index serves them.
 */

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Raised when the database is newer than this code, or a migration cannot be applied. */
export class SchemaError extends Error {
  constructor(readonly code: "SCHEMA_TOO_NEW" | "MIGRATION_FAILED", message: string) {
    super(message);
    this.name = "SchemaError";
  }
}

export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "users, certificates, tokens, meta",
    sql: `
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
);`,
  },
  {
    version: 2,
    name: "shared CRL, issuance buckets, Roughtime servers, renewal index",
    sql: `
CREATE TABLE crl_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  number INTEGER NOT NULL,
  revision INTEGER NOT NULL,
  made_at INTEGER NOT NULL,
  der BLOB NOT NULL
);
CREATE TABLE rate_buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, last_ms INTEGER NOT NULL);
CREATE TABLE time_servers (
  public_key TEXT PRIMARY KEY,
  host TEXT,
  port INTEGER NOT NULL,
  seen_at INTEGER NOT NULL
);
CREATE INDEX certs_name_issued ON certs (name, issued_at);`,
  },
  {
    version: 3,
    name: "publications (candidates, relay) and their reachability check, shared by every node",
    sql: `
ALTER TABLE users ADD COLUMN reach TEXT;
ALTER TABLE users ADD COLUMN reach_key TEXT;
ALTER TABLE users ADD COLUMN reach_ok TEXT;
ALTER TABLE users ADD COLUMN reach_checked_at INTEGER;`,
  },
  {
    version: 4,
    name: "knock secrets",
    // The secret each user's listener wants knocked with (contract/knock.ts), published with its presence:
    // kept in the database so that every node hands out the same one.
    sql: `ALTER TABLE users ADD COLUMN knock_secret TEXT;`,
  },
];

export const POSTGRES_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "users, certificates, tokens, meta",
    sql: `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
  name TEXT COLLATE "C" PRIMARY KEY,
  key_id TEXT NOT NULL,
  serial TEXT NOT NULL,
  cert_pem TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  not_after BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  revoked BOOLEAN NOT NULL DEFAULT FALSE,
  addr_host TEXT,
  addr_port INTEGER,
  addr_expires BIGINT
);
CREATE TABLE certs (
  serial TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  cert_pem TEXT NOT NULL,
  issued_at BIGINT NOT NULL,
  not_after BIGINT NOT NULL,
  revoked_at BIGINT,
  revoke_reason TEXT
);
CREATE INDEX certs_revoked ON certs (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE tokens (
  hash TEXT PRIMARY KEY,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at BIGINT,
  used_by TEXT
);`,
  },
  {
    version: 2,
    name: "shared CRL, issuance buckets, Roughtime servers, renewal index",
    sql: `
CREATE TABLE crl_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  number BIGINT NOT NULL,
  revision BIGINT NOT NULL,
  made_at BIGINT NOT NULL,
  der BYTEA NOT NULL
);
CREATE TABLE rate_buckets (
  key TEXT PRIMARY KEY,
  tokens DOUBLE PRECISION NOT NULL,
  last_ms BIGINT NOT NULL,
  granted BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE TABLE time_servers (
  public_key TEXT PRIMARY KEY,
  host TEXT,
  port INTEGER NOT NULL,
  seen_at BIGINT NOT NULL
);
CREATE INDEX certs_name_issued ON certs (name, issued_at);`,
  },
  {
    version: 3,
    name: "publications (candidates, relay) and their reachability check, shared by every node",
    sql: `
ALTER TABLE users ADD COLUMN reach TEXT;
ALTER TABLE users ADD COLUMN reach_key TEXT;
ALTER TABLE users ADD COLUMN reach_ok TEXT;
ALTER TABLE users ADD COLUMN reach_checked_at BIGINT;`,
  },
  {
    version: 4,
    name: "knock secrets",
    // The secret each user's listener wants knocked with (contract/knock.ts), published with its presence:
    // kept in the database so that every node hands out the same one.
    sql: `ALTER TABLE users ADD COLUMN knock_secret TEXT;`,
  },
];

/** The newest schema version this code knows (both lists end at the same number). */
export const SCHEMA_VERSION = SQLITE_MIGRATIONS[SQLITE_MIGRATIONS.length - 1].version;

/** The migrations to apply to a database at `current`; throws SCHEMA_TOO_NEW when it is beyond this code. */
export function pendingMigrations(
  all: readonly Migration[],
  current: number,
  where: string,
): readonly Migration[] {
  const newest = all[all.length - 1].version;
  if (current > newest) {
    throw new SchemaError(
      "SCHEMA_TOO_NEW",
      `the database at ${where} has schema version ${current}, newer than this securechat knows (${newest}); ` +
        "run the securechat version that wrote it, or a newer one",
    );
  }
  return all.filter((m) => m.version > current);
}
