/**
 * Directory benchmark: enrollments/s and look-ups/s over keep-alive HTTPS, each against a trivial handler
 * on the same HTTPS stack (node:https in this runtime, same certificate) as the in-run baseline; and memory
 * with 10,000 users.
 */
import https from "node:https";
import { join } from "node:path";
import type { BenchFigure } from "./harness.ts";
import { startDirectoryServer } from "../server/mod.ts";
import { DirectoryStore } from "../server/store.ts";
import { createCsr, generateKeyPair } from "../pki/mod.ts";

const CONCURRENCY = 4;
const RUN_MS = 2000;
const USERS_FOR_MEMORY = 10_000;
const NO_LIMITS = { ratePerSecond: 1e9, rateBurst: 1e9 };

type Init = RequestInit & { client: Deno.HttpClient };

/** Runs `op` from CONCURRENCY workers for `ms` (or until `op` says there is no more work); returns ops/s. */
async function throughput(op: (i: number) => Promise<boolean>, ms = RUN_MS): Promise<number> {
  let n = 0;
  let next = 0;
  const start = performance.now();
  const worker = async () => {
    while (performance.now() - start < ms) {
      if (!(await op(next++))) return;
      n++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return n / ((performance.now() - start) / 1000);
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

function rssMb(): number {
  return Deno.memoryUsage().rss / 1024 / 1024;
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

    const base = await throughput(async () => (await post(trivial.url + "/", sampleBody)) === 200);
    let failures = 0;
    const enrolls = await throughput(async (i) => {
      if (i >= csrs.length) return false;
      const s = await post(dir.url + "/v1/enroll", JSON.stringify(csrs[i]));
      if (s !== 201) failures++;
      return true;
    });
    figures.push({
      name: "directory enrollments/s (CSR check + issue + store, keep-alive HTTPS)",
      value: enrolls,
      unit: "req/s",
      baseline: { name: "trivial HTTPS POST handler", value: base },
      notes: `${CONCURRENCY} concurrent requests, ${failures} failed`,
    });

    const enrolled = Math.min(csrs.length, Math.max(1, Math.floor(enrolls * RUN_MS / 1000)));
    const baseGet = await throughput(async () => (await get(trivial.url + "/v1/users/user00001")) === 200);
    let misses = 0;
    const lookups = await throughput(async (i) => {
      const s = await get(`${dir.url}/v1/users/${csrs[i % enrolled].name}`);
      if (s !== 200) misses++;
      return true;
    });
    figures.push({
      name: "directory look-ups/s (GET /v1/users/NAME, keep-alive HTTPS)",
      value: lookups,
      unit: "req/s",
      baseline: { name: "trivial HTTPS GET handler", value: baseGet },
      notes: `${CONCURRENCY} concurrent requests, ${misses} not found`,
    });
  } finally {
    client.close();
    await trivial.close();
    await dir.close();
  }

  // Memory with 10,000 users: the store is filled directly (issuing 10,000 real certificates would take most
  // of the time budget; every row carries a real certificate PEM of the usual size).
  const memData = join(tmp, "mem");
  const before = rssMb();
  const memDir = await startDirectoryServer({
    dataDir: memData,
    port: 0,
    roughtime: false,
    limits: NO_LIMITS,
  });
  const memClient = Deno.createHttpClient({ caCerts: [memDir.caCertPem] });
  try {
    const empty = rssMb();
    const kp = await generateKeyPair("p256");
    const first = await fetch(memDir.url + "/v1/enroll", {
      method: "POST",
      client: memClient,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "template", csr: await createCsr("template", kp) }),
    } as Init);
    const certPem = String((await first.json() as { certPem: string }).certPem);
    const store = new DirectoryStore(join(memData, "directory.db"));
    const now = Date.now();
    store.tx(() => {
      for (let i = 0; i < USERS_FOR_MEMORY; i++) {
        const serial = (0x4000000000n + BigInt(i)).toString(16);
        const c = {
          serial,
          name: `m${String(i).padStart(6, "0")}`,
          keyId: serial,
          certPem,
          fingerprint: serial.padStart(64, "0"),
          notAfter: now + 86400_000,
        };
        store.insertCert(c, now);
        store.insertUser(c, now);
        if (i % 2 === 0) store.setPresence(c.name, "127.0.0.1", 20000 + (i % 1000), now + 600_000);
      }
    });
    store.close();
    // Walk the whole listing and look every user up once, so caches and buffers are at their working size.
    let cursor = "";
    let listed = 0;
    const listStart = performance.now();
    for (;;) {
      const res = await fetch(`${memDir.url}/v1/users?limit=200${cursor ? `&cursor=${cursor}` : ""}`, {
        client: memClient,
      } as Init);
      const page = await res.json() as { users: unknown[]; next: string | null };
      listed += page.users.length;
      if (!page.next) break;
      cursor = page.next;
    }
    const listMs = performance.now() - listStart;
    for (let i = 0; i < USERS_FOR_MEMORY; i += 10) {
      const res = await fetch(
        `${memDir.url}/v1/users/m${String(i).padStart(6, "0")}`,
        { client: memClient } as Init,
      );
      await res.arrayBuffer();
    }
    const full = rssMb();
    const dbBytes = (await Deno.stat(join(memData, "directory.db"))).size +
      await Deno.stat(join(memData, "directory.db-wal")).then((s) => s.size, () => 0);
    figures.push({
      name: `process RSS with ${USERS_FOR_MEMORY} users (server + bench client)`,
      value: full,
      unit: "MB",
      baseline: { name: "RSS with the directory empty", value: empty },
      notes: `RSS before the server started ${before.toFixed(0)} MB; database ${
        (dbBytes / 1024 / 1024).toFixed(1)
      } MB; listed ${listed} users in ${listMs.toFixed(0)} ms (200 per page)`,
    });
  } finally {
    memClient.close();
    await memDir.close();
    await Deno.remove(tmp, { recursive: true });
  }
  return figures;
}
