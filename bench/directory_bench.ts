/**
 * Directory benchmark: enrollments/s and look-ups/s over keep-alive HTTPS, each against a trivial handler
 * on the same HTTPS stack (node:https in this runtime, same certificate) as the in-run baseline; and memory
 * with 10,000 users.
 */
import https from "node:https";
import { join } from "node:path";
import type { BenchFigure } from "./harness.ts";
import { startDirectoryServer } from "../server/mod.ts";
import { SqliteDirectoryStore } from "../server/store_sqlite.ts";
import type { IssuedCert } from "../server/store.ts";
import { createCsr, generateKeyPair } from "../pki/mod.ts";

const CONCURRENCY = 4;
const RUN_MS = 2000;
const SLICES = 4;
const USERS_FOR_MEMORY = 10_000;
const NO_LIMITS = { ratePerSecond: 1e9, rateBurst: 1e9, enrollPerHour: 1e12, enrollBurst: 1e9 };

type Init = RequestInit & { client: Deno.HttpClient };

/** Runs `op` from CONCURRENCY workers for `ms` (or until `op` says there is no more work); returns the
 * operations done and the time taken. */
async function timed(op: () => Promise<boolean>, ms: number): Promise<{ n: number; s: number }> {
  let n = 0;
  const start = performance.now();
  const worker = async () => {
    while (performance.now() - start < ms) {
      if (!(await op())) return;
      n++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { n, s: (performance.now() - start) / 1000 };
}

/** ops/s of `measured` and `baseline`, run in alternating slices so that load from other processes on the
 * shared machine falls on both alike. */
async function interleaved(
  measured: () => Promise<boolean>,
  baseline: () => Promise<boolean>,
): Promise<{ measured: number; baseline: number }> {
  const m = { n: 0, s: 0 };
  const b = { n: 0, s: 0 };
  for (let i = 0; i < SLICES; i++) {
    for (const [op, acc] of [[baseline, b], [measured, m]] as const) {
      const r = await timed(op, RUN_MS / SLICES);
      acc.n += r.n;
      acc.s += r.s;
    }
  }
  return { measured: m.n / m.s, baseline: b.n / b.s };
}

async function trivialServer(
  certPem: string,
  keyPem: string,
): Promise<{ url: string; close(): Promise<void> }> {
  const server = https.createServer({ cert: certPem, key: keyPem }, (req, res) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (c: Uint8Array) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.stringify({ ok: true, got: chunks.reduce((a, c) => a + c.length, 0) });
      res.writeHead(200, { "content-type": "application/json", "content-length": body.length });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `https://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** Starts a directory in a child process with `users` users, walks the listing and looks users up, and
 * returns the child's RSS as it reports it. */
async function serverRss(
  tmp: string,
  users: number,
): Promise<{ rssMb: number; listMs: number; dbMb: number } | null> {
  const data = join(tmp, `mem-${users}`);
  // Create the CA and one real certificate, then fill the store directly.
  const dir = await startDirectoryServer({ dataDir: data, port: 0, roughtime: false, limits: NO_LIMITS });
  const client = Deno.createHttpClient({ caCerts: [dir.caCertPem] });
  let certPem: string;
  try {
    const kp = await generateKeyPair("p256");
    const res = await fetch(dir.url + "/v1/enroll", {
      method: "POST",
      client,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "template", csr: await createCsr("template", kp) }),
    } as Init);
    certPem = String((await res.json() as { certPem: string }).certPem);
  } finally {
    await dir.close();
  }
  const store = new SqliteDirectoryStore(join(data, "directory.db"));
  const now = Date.now();
  if (users === 0) store.db.prepare("DELETE FROM users WHERE name = 'template'").run();
  const rows: IssuedCert[] = [];
  for (let i = 0; i < users; i++) {
    const serial = (0x4000000000n + BigInt(i)).toString(16);
    rows.push({
      serial,
      name: `m${String(i).padStart(6, "0")}`,
      keyId: serial,
      certPem,
      fingerprint: serial.padStart(64, "0"),
      notAfter: now + 86400_000,
    });
  }
  let i = 0;
  await store.importUsers(
    rows,
    now,
    () =>
      i++ % 2 === 0 ? { host: "127.0.0.1", port: 20000 + ((i - 1) % 1000), expiresMs: now + 600_000 } : null,
  );
  await store.close();
  const dbMb = (await Deno.stat(join(data, "directory.db"))).size / 1024 / 1024;

  const script = join(tmp, "serve_child.ts");
  await Deno.writeTextFile(
    script,
    `import { startDirectoryServer } from ${
      JSON.stringify(new URL("../server/mod.ts", import.meta.url).href)
    };
const d = await startDirectoryServer({ dataDir: Deno.args[0], port: 0, roughtime: false,
  limits: { ratePerSecond: 1e9, rateBurst: 1e9, enrollPerHour: 1e12, enrollBurst: 1e9 } });
console.log(d.url);
// Each line on stdin asks for the resident set size; end of stdin stops the server.
for await (const _line of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  console.log(String(Deno.memoryUsage().rss));
}
await d.close();
Deno.exit(0);
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--config",
      new URL("../deno.json", import.meta.url).pathname,
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      script,
      data,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const stdin = child.stdin.getWriter();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const url = out.trim();
  let listMs = 0;
  try {
    let cursor = "";
    const listStart = performance.now();
    for (;;) {
      const init: Init = { client };
      const res = await fetch(`${url}/v1/users?limit=200${cursor ? `&cursor=${cursor}` : ""}`, init);
      const page = await res.json() as { users: unknown[]; next: string | null };
      if (!page.next) break;
      cursor = page.next;
    }
    listMs = performance.now() - listStart;
    for (let i = 0; i < 1000; i++) {
      const init: Init = { client };
      const res = await fetch(`${url}/v1/users/m${String(i * 10).padStart(6, "0")}`, init);
      await res.arrayBuffer();
    }
    await stdin.write(new TextEncoder().encode("rss\n"));
    let answer = "";
    while (!answer.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      answer += value;
    }
    const rss = Number(answer.trim());
    return Number.isFinite(rss) && rss > 0 ? { rssMb: rss / 1024 / 1024, listMs, dbMb } : null;
  } finally {
    client.close();
    await stdin.close();
    await reader.cancel();
    await child.status;
  }
}

export async function run(): Promise<BenchFigure[]> {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-bench-" });
  const figures: BenchFigure[] = [];
  const data = join(tmp, "data");
  const dir = await startDirectoryServer({ dataDir: data, port: 0, roughtime: false, limits: NO_LIMITS });
  const serverCert = await Deno.readTextFile(join(data, "server.pem"));
  const serverKey = await Deno.readTextFile(join(data, "server-key.pem"));
  const trivial = await trivialServer(serverCert, serverKey);
  const client = Deno.createHttpClient({ caCerts: [dir.caCertPem] });
  try {
    // CSRs are made before timing: key generation is the client's cost, not the directory's.
    const csrs: { name: string; csr: string }[] = [];
    const keys = await Promise.all(Array.from({ length: 16 }, () => generateKeyPair("p256")));
    for (let i = 0; i < 1500; i++) {
      const name = `user${String(i).padStart(5, "0")}`;
      csrs.push({ name, csr: await createCsr(name, keys[i % keys.length]) });
    }
    const sampleBody = JSON.stringify(csrs[0]);
    const post = async (url: string, body: string) => {
      const init: Init = { method: "POST", client, body, headers: { "content-type": "application/json" } };
      const res = await fetch(url, init);
      await res.arrayBuffer();
      return res.status;
    };
    const get = async (url: string) => {
      const init: Init = { client };
      const res = await fetch(url, init);
      await res.arrayBuffer();
      return res.status;
    };

    let failures = 0;
    let nextCsr = 0;
    const enroll = await interleaved(async () => {
      if (nextCsr >= csrs.length) return false;
      const s = await post(dir.url + "/v1/enroll", JSON.stringify(csrs[nextCsr++]));
      if (s !== 201) failures++;
      return true;
    }, async () => (await post(trivial.url + "/", sampleBody)) === 200);
    figures.push({
      name: "directory enrollments/s (CSR check + issue + store, keep-alive HTTPS)",
      value: enroll.measured,
      unit: "req/s",
      baseline: { name: "trivial HTTPS POST handler", value: enroll.baseline },
      notes: `${CONCURRENCY} concurrent requests, ${nextCsr} enrollments, ${failures} failed`,
    });

    const enrolled = Math.max(1, nextCsr - failures);
    let misses = 0;
    let k = 0;
    const lookup = await interleaved(async () => {
      const s = await get(`${dir.url}/v1/users/${csrs[k++ % enrolled].name}`);
      if (s !== 200) misses++;
      return true;
    }, async () => (await get(trivial.url + "/v1/users/user00001")) === 200);
    figures.push({
      name: "directory look-ups/s (GET /v1/users/NAME, keep-alive HTTPS)",
      value: lookup.measured,
      unit: "req/s",
      baseline: { name: "trivial HTTPS GET handler", value: lookup.baseline },
      notes: `${CONCURRENCY} concurrent requests, ${misses} not found`,
    });
  } finally {
    client.close();
    await trivial.close();
    await dir.close();
  }

  // Memory with 10,000 users, measured as the resident set of a separate server process (so the benchmark's
  // own allocations do not count), against the same process serving an empty directory. The store is filled
  // directly: issuing 10,000 real certificates would take most of the time budget; every row carries a real
  // certificate PEM of the usual size.
  try {
    const full = await serverRss(tmp, USERS_FOR_MEMORY);
    const empty = await serverRss(tmp, 0);
    if (full && empty) {
      figures.push({
        name: `directory server RSS with ${USERS_FOR_MEMORY} users`,
        value: full.rssMb,
        unit: "MB",
        baseline: { name: "same server, empty directory", value: empty.rssMb },
        notes: `after listing every user (200 per page, ${full.listMs.toFixed(0)} ms) and 1000 look-ups; ` +
          `database ${full.dbMb.toFixed(1)} MB`,
      });
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  return figures;
}
