/**
 * The deployment files, checked as far as this machine can (no Docker engine here): docker-compose.yml parses
 * and wires PostgreSQL, two nodes and HAProxy as documented; HAProxy passes TCP through with the PROXY line;
 * and the image's entrypoint command lines (both Dockerfile stages, with node1's compose command appended)
 * really start a phonebook node when run here, with the container's paths mapped to temp folders.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parse } from "yaml";
import { PERMISSIONS } from "../release/compile.ts";
import { freshPostgresDatabase, testPostgresUrl } from "./helpers/directory.ts";
import { CHILD_ENV } from "./helpers/cli.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const inCi = () => (Deno.env.get("CI") ?? "") !== "" && Deno.env.get("CI") !== "false";

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  ports?: string[];
  volumes?: string[];
  secrets?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }> | string[];
}
interface Compose {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
  secrets: Record<string, { file: string }>;
}

async function compose(): Promise<Compose> {
  return parse(await Deno.readTextFile(join(ROOT, "docker-compose.yml"))) as Compose;
}

/** `--name=value` or `--name value` from a command list. */
function flag(cmd: string[], name: string): string | undefined {
  for (let i = 0; i < cmd.length; i++) {
    if (cmd[i] === name) return cmd[i + 1];
    if (cmd[i].startsWith(`${name}=`)) return cmd[i].slice(name.length + 1);
  }
  return undefined;
}

Deno.test("docker-compose.yml: PostgreSQL, two nodes on one database and CA, HAProxy on one HTTPS port", async () => {
  const c = await compose();
  assert.deepEqual(Object.keys(c.services).sort(), ["haproxy", "node1", "node2", "postgres"]);
  assert.match(c.services.postgres.image!, /^postgres:15/);
  assert.deepEqual(c.services.haproxy.ports, ["10040:10040/tcp"], "one published HTTPS port");
  const udp = new Set<string>();
  for (const name of ["node1", "node2"]) {
    const s = c.services[name];
    const cmd = s.command!;
    const db = new URL(flag(cmd, "--database")!);
    assert.equal(db.protocol, "postgres:");
    assert.equal(db.password, "", "no password in a command line");
    assert.equal(flag(cmd, "--database-password-file"), "/run/secrets/db_password");
    assert.deepEqual(s.secrets, ["db_password"]);
    assert.ok(cmd.includes("--proxy-protocol"), "nodes read HAProxy's PROXY line");
    assert.equal(flag(cmd, "--ca-key-file"), "/ca/ca-key.pem");
    assert.ok(s.volumes!.includes("ca:/ca"), "the CA folder is shared");
    assert.ok(s.volumes!.includes(`${name}-data:/data`), "each node has its own data volume");
    // The Roughtime port published for this node is the one it announces in /v1/info.
    const [published] = s.ports!.map((p) => /^(\d+):2002\/udp$/.exec(p)![1]);
    assert.equal(flag(cmd, "--roughtime-public"), `:${published}`);
    udp.add(published);
  }
  assert.equal(udp.size, 2, "each node's Roughtime port published on its own");
  assert.deepEqual(c.services.node2.depends_on, {
    postgres: { condition: "service_healthy" },
    node1: { condition: "service_healthy" },
  });
  assert.equal(c.services.postgres.environment!.POSTGRES_PASSWORD_FILE, "/run/secrets/db_password");
  assert.equal(c.secrets.db_password.file, "./db_password.txt");
  for (const v of ["pg-data", "node1-data", "node2-data", "ca"]) assert.ok(v in c.volumes, v);
});

Deno.test("deploy/haproxy.cfg: TCP mode, every compose node a backend server with send-proxy", async () => {
  const cfg = await Deno.readTextFile(join(ROOT, "deploy", "haproxy.cfg"));
  assert.match(cfg, /^\s*mode tcp$/m);
  assert.doesNotMatch(cfg, /mode http/);
  assert.match(cfg, /^\s*bind :10040$/m);
  const servers = [...cfg.matchAll(/^\s*server (\S+) (\S+):10040 (.*)$/gm)];
  assert.deepEqual(servers.map((m) => m[1]), ["node1", "node2"]);
  for (const m of servers) assert.match(m[3], /\bsend-proxy\b/);
});

/** The JSON-array ENTRYPOINT of each stage of the Dockerfile, by stage name. */
async function entrypoints(): Promise<Record<string, string[]>> {
  const text = (await Deno.readTextFile(join(ROOT, "Dockerfile"))).replace(/\\\n/g, " ");
  const out: Record<string, string[]> = {};
  let stage = "";
  for (const line of text.split("\n")) {
    const from = /^FROM \S+ AS (\S+)/i.exec(line);
    if (from) stage = from[1];
    const ep = /^ENTRYPOINT (\[.*\])\s*$/.exec(line);
    if (ep) out[stage] = JSON.parse(ep[1]);
  }
  return out;
}

Deno.test("Dockerfile: the default stage runs the compiled binary, the deno-run stage main.ts", async () => {
  const eps = await entrypoints();
  assert.deepEqual(Object.keys(eps).sort(), ["compiled", "deno-run"]);
  assert.equal(eps.compiled[0], "securechat");
  assert.equal(eps["deno-run"][0], "deno");
  const text = await Deno.readTextFile(join(ROOT, "Dockerfile"));
  const stages = [...text.matchAll(/^FROM \S+ AS (\S+)/gim)].map((m) => m[1]);
  assert.equal(stages[stages.length - 1], "compiled", "docker build without --target gives the binary");
});

Deno.test({
  name: "the image's entrypoint command lines, with node1's compose command, start a node here",
  ignore: !testPostgresUrl() && !inCi(),
  async fn() {
    if (!testPostgresUrl()) {
      throw new Error("CI must run the PostgreSQL tests, but SECURECHAT_TEST_PG is not set");
    }
    const eps = await entrypoints();
    const node1 = (await compose()).services.node1.command!;
    for (const [stage, ep] of Object.entries(eps)) {
      const tmp = await Deno.makeTempDir({ prefix: "securechat-image-" });
      const pg = await freshPostgresDatabase();
      try {
        for (const d of ["data", "ca", "secrets"]) await Deno.mkdir(join(tmp, d), { mode: 0o700 });
        await Deno.writeTextFile(join(tmp, "secrets", "db_password"), "unused-with-trust-auth\n", {
          mode: 0o600,
        });
        // The container's paths and fixed ports, mapped to this machine.
        const paths: [string, string][] = [
          ["/run/secrets", join(tmp, "secrets")],
          ["/app", ROOT],
          ["/data", join(tmp, "data")],
          ["/ca", join(tmp, "ca")],
        ];
        const map = (a: string) => {
          let out = a;
          // Only whole leading path parts: "/ca/ca-key.pem" maps, the "/ca" inside "ca-key" does not.
          for (const [from, to] of paths) {
            out = out.replace(new RegExp(`(^|[=,])${from}(?=[/,]|$)`, "g"), `$1${to}`);
          }
          return out.replace("0.0.0.0:10040", "127.0.0.1:0")
            .replace("0.0.0.0:2002", "127.0.0.1:0")
            .replace("postgres://securechat@postgres:5432/securechat", pg.url);
        };
        // The compiled binary is `deno run` with the compiled-in permissions here (no denort to build it).
        const argv = ep[0] === "securechat"
          ? ["run", ...PERMISSIONS, join(ROOT, "main.ts"), ...ep.slice(1)]
          : ep.slice(1);
        const child = new Deno.Command(Deno.execPath(), {
          args: [...argv, ...node1].map(map),
          cwd: ROOT,
          env: CHILD_ENV,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        let out = "";
        const dec = new TextDecoder();
        const pump = (s: ReadableStream<Uint8Array>) =>
          (async () => {
            for await (const b of s) out += dec.decode(b, { stream: true });
          })();
        const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
        let code: number | null = null;
        const status = child.status.then((s) => (code = s.code));
        const deadline = Date.now() + 60_000;
        while (!/Users enroll with/.test(out) && code === null && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 50));
        }
        if (code === null) child.kill("SIGTERM");
        await status;
        await pumps;
        assert.match(out, /Users enroll with/, `${stage}: ${out}`);
        assert.match(out, /Directory data: postgres:\/\//, stage);
        assert.ok(
          (await Deno.stat(join(tmp, "ca", "ca-key.pem"))).isFile,
          `${stage}: the CA key went to /ca`,
        );
      } finally {
        await pg.drop();
        await Deno.remove(tmp, { recursive: true });
      }
    }
  },
});
