/** Helpers for directory tests: a server in a temp folder, HTTP calls with or without a client certificate,
 * raw TLS connections for malformed traffic, and a dump of the whole database to prove nothing changed. */
import tls from "node:tls";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  type DirectoryServerOptions,
  type RunningDirectory,
  startDirectoryServer,
} from "../../server/mod.ts";
import { createCsr, exportPrivateKeyPem, generateKeyPair, type KeyPair } from "../../pki/mod.ts";

export interface TestDirectory {
  dir: RunningDirectory;
  data: string;
  tmp: string;
  close(): Promise<void>;
}

export async function startTestDirectory(opts: Partial<DirectoryServerOptions> = {}): Promise<TestDirectory> {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-dir-" });
  const data = join(tmp, "data");
  const dir = await startDirectoryServer({ dataDir: data, port: 0, roughtime: false, ...opts });
  return {
    dir,
    data,
    tmp,
    close: async () => {
      await dir.close();
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
export async function call(
  d: RunningDirectory,
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
  d: RunningDirectory,
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

/** Every row of every table, as JSON: equal before and after means a refused request changed nothing. */
export function dumpDatabase(data: string): string {
  const db = new DatabaseSync(join(data, "directory.db"), { readOnly: true });
  try {
    const out: Record<string, unknown[]> = {};
    for (const t of ["users", "certs", "tokens", "meta"]) {
      out[t] = db.prepare(`SELECT * FROM ${t} ORDER BY rowid`).all();
    }
    return JSON.stringify(out);
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
