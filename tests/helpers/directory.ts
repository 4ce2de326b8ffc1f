/** Helpers for directory tests: a server in a temp folder (on SQLite or on a fresh PostgreSQL database),
 * HTTP calls with or without a client certificate, raw TLS connections for malformed traffic, and a dump of
 * the whole database to prove nothing changed.
 *
 * PostgreSQL: the tests read the server's URL from SECURECHAT_TEST_PG (`.ci/postgres.sh` starts a cluster and
 * sets it). Without it, the PostgreSQL half of each test is skipped with a message, except under CI, where it
 * fails: CI must run both. */
import tls from "node:tls";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import postgres from "postgres";
import {
  type DirectoryServerOptions,
  type RunningDirectory,
  startDirectoryServer,
} from "../../server/mod.ts";
import { createCsr, exportPrivateKeyPem, generateKeyPair, type KeyPair } from "../../pki/mod.ts";

export type Backend = "sqlite" | "postgres";
export const BACKENDS: readonly Backend[] = ["sqlite", "postgres"];

function envOf(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** The PostgreSQL server tests may create databases on, or undefined. */
export function testPostgresUrl(): string | undefined {
  return envOf("SECURECHAT_TEST_PG");
}

const inCi = () => envOf("CI") !== undefined && envOf("CI") !== "false";
let skipNoted = false;

/** Registers `name` once per backend ("... [sqlite]", "... [postgres]"). The PostgreSQL run is skipped with
 * a message when no server is configured, and fails instead under CI. */
export function backendTest(
  name: string,
  fn: (backend: Backend) => Promise<void>,
  opts: { sanitizeOps?: boolean; sanitizeResources?: boolean } = {},
): void {
  for (const backend of BACKENDS) {
    const missing = backend === "postgres" && !testPostgresUrl();
    if (missing && !inCi()) {
      if (!skipNoted) {
        skipNoted = true;
        console.warn(
          "PostgreSQL tests skipped: SECURECHAT_TEST_PG is not set (source .ci/postgres.sh to start a cluster)",
        );
      }
    }
    Deno.test({
      name: `${name} [${backend}]`,
      ignore: missing && !inCi(),
      ...opts,
      fn: async () => {
        if (missing) throw new Error("CI must run the PostgreSQL tests, but SECURECHAT_TEST_PG is not set");
        await fn(backend);
      },
    });
  }
}

/** A fresh, empty PostgreSQL database for one test, dropped by `drop`. */
export async function freshPostgresDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const base = testPostgresUrl();
  if (!base) throw new Error("SECURECHAT_TEST_PG is not set");
  const name = `securechat_t_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(base, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(base);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      const a = postgres(base, { max: 1, onnotice: () => {} });
      try {
        await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

export interface TestDirectory {
  dir: RunningDirectory;
  data: string;
  tmp: string;
  backend: Backend;
  /** The PostgreSQL URL of this directory's own database (postgres backend only). */
  database?: string;
  close(): Promise<void>;
}

export async function startTestDirectory(
  opts: Partial<DirectoryServerOptions> & { backend?: Backend } = {},
): Promise<TestDirectory> {
  const { backend = "sqlite", ...serverOpts } = opts;
  const tmp = await Deno.makeTempDir({ prefix: "securechat-dir-" });
  const data = join(tmp, "data");
  const pg = backend === "postgres" && !serverOpts.database ? await freshPostgresDatabase() : null;
  const database = serverOpts.database ?? pg?.url;
  let dir: RunningDirectory;
  try {
    dir = await startDirectoryServer({ dataDir: data, port: 0, roughtime: false, database, ...serverOpts });
  } catch (e) {
    await pg?.drop();
    await Deno.remove(tmp, { recursive: true });
    throw e;
  }
  return {
    dir,
    data,
    tmp,
    backend,
    database,
    close: async () => {
      await dir.close();
      await pg?.drop();
      await Deno.remove(tmp, { recursive: true });
    },
  };
}

export interface Identity {
  certPem: string;
  keyPem: string;
}

export interface CallResult {
  status: number;
  json: Record<string, unknown> | null;
  text: string;
  headers: Headers;
}

/** One HTTP call over a fresh client (closed afterwards), optionally presenting a client certificate. */
/** What a test needs to reach a directory: an in-process one or a `serve` child process. */
export type Reachable = Pick<RunningDirectory, "url" | "caCertPem">;

export async function call(
  d: Reachable,
  method: string,
  path: string,
  opts: { body?: unknown; rawBody?: string; contentType?: string; as?: Identity } = {},
): Promise<CallResult> {
  const client = opts.as
    ? Deno.createHttpClient({ caCerts: [d.caCertPem], cert: opts.as.certPem, key: opts.as.keyPem })
    : Deno.createHttpClient({ caCerts: [d.caCertPem] });
  try {
    const body = opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    const init: RequestInit & { client: Deno.HttpClient } = {
      method,
      client,
      body,
      headers: body === undefined ? {} : { "content-type": opts.contentType ?? "application/json" },
    };
    const res = await fetch(d.url + path, init);
    const text = await res.text();
    let json: Record<string, unknown> | null = null;
    try {
      json = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: res.status, json, text, headers: res.headers };
  } finally {
    client.close();
  }
}

/** The error code of a JSON error answer. */
export function codeOf(r: CallResult): string | undefined {
  const e = r.json?.error as { code?: string } | undefined;
  return e?.code;
}

/** Enrolls `name` directly over the API; returns its identity and key pair. */
export async function enrollRaw(
  d: Reachable,
  name: string,
  token?: string,
): Promise<Identity & { keys: KeyPair; serial: string }> {
  const keys = await generateKeyPair("p256");
  const r = await call(d, "POST", "/v1/enroll", { body: { name, csr: await createCsr(name, keys), token } });
  if (r.status !== 201) throw new Error(`enroll ${name} failed: ${r.status} ${r.text}`);
  return {
    certPem: String(r.json!.certPem),
    keyPem: await exportPrivateKeyPem(keys),
    keys,
    serial: String(r.json!.serial),
  };
}

const DUMPED: Record<string, string> = { users: "name", certs: "serial", tokens: "hash", meta: "key" };

/** Every row of the directory's tables (users, certificates, tokens, meta), as JSON: equal before and after
 * means a refused request changed nothing. Rate buckets, the stored CRL and the Roughtime list are left out:
 * they are bookkeeping that a refused request may legitimately move. So is a reachability check's result
 * (users.reach_ok, reach_checked_at): the phonebook writes it in the background, after an earlier accepted
 * publication, whenever its probes end. */
export async function dumpDatabase(t: { data: string; database?: string }): Promise<string> {
  const out: Record<string, unknown[]> = {};
  const json = () =>
    JSON.stringify(out, (k, v) => (k === "reach_ok" || k === "reach_checked_at") ? undefined : v);
  if (t.database) {
    const sql = postgres(t.database, { max: 1, onnotice: () => {} });
    try {
      for (const [table, key] of Object.entries(DUMPED)) {
        out[table] = [...await sql.unsafe(`SELECT * FROM ${table} ORDER BY ${key} COLLATE "C"`)];
      }
    } finally {
      await sql.end();
    }
    return json();
  }
  const db = new DatabaseSync(join(t.data, "directory.db"), { readOnly: true });
  try {
    for (const [table, key] of Object.entries(DUMPED)) {
      out[table] = db.prepare(`SELECT * FROM ${table} ORDER BY ${key}`).all();
    }
    return json();
  } finally {
    db.close();
  }
}

/** A raw TLS connection to the directory (no client certificate). Collects everything it receives. */
export function rawConnect(d: RunningDirectory): Promise<{
  socket: tls.TLSSocket;
  received: () => string;
  closed: Promise<void>;
}> {
  return new Promise((resolve, reject) => {
    let data = "";
    let onClose!: () => void;
    const closed = new Promise<void>((r) => (onClose = r));
    const socket = tls.connect(
      { host: "127.0.0.1", port: d.port, ca: d.caCertPem, servername: "localhost" },
      () => resolve({ socket, received: () => data, closed }),
    );
    socket.setEncoding("utf8");
    socket.on("data", (c: string) => (data += c));
    socket.on("error", () => {/* the server may cut us off: that is what some tests expect */});
    socket.on("close", () => onClose());
    socket.once("error", reject);
  });
}
