/**
 * `securechat time ...`: query verified time, run a standalone Roughtime server, make a long-term key,
 * check a malfeasance report. Output for humans by default; `query --json` for scripts.
 */
import type { Command } from "commander";
import { CliError } from "../cli_error.ts";
import {
  buildReport,
  checkReport,
  combineSamples,
  loadOrCreateLongTermKey,
  type MalfeasanceReport,
  parseServerSpec,
  proofOrder,
  PUBLIC_SERVERS,
  queryChain,
  queryParallel,
  RoughtimeError,
  type ServerOutcome,
  type ServerSpec,
  startRoughtimeServer,
  writeNewLongTermKey,
} from "./mod.ts";
import { generateLongTermSeed } from "./keys.ts";
import { toBase64 } from "./roughtime/encoding.ts";
import { DEFAULT_PORT } from "./roughtime/constants.ts";
import { findInconsistencies } from "./roughtime/malfeasance.ts";

/** Exit codes of `time query`: 0 verified, 2 no trustworthy answer (unreachable or disagreeing servers). */
const EXIT_UNVERIFIED = 2;
/** Exit codes of `time verify-report`: 0 consistent, 3 proves a lie, 1 invalid report. */
const EXIT_MALFEASANCE = 3;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function iso(ms: number): string {
  const d = new Date(Math.round(ms));
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(3)} s`;
}

interface QueryJson {
  state: "verified" | "uncertain" | "unverified";
  singleSource: boolean;
  time: { earliestMs: number; latestMs: number; nowMs: number; iso: string } | null;
  uncertaintyMs: number | null;
  configured: number;
  answered: number;
  agreeing: number;
  /** Names of the answering servers outside the agreeing group (when there is no majority, outside the
   * largest group: then no one can tell which side lies). */
  disagreeing: string[];
  servers: {
    name: string;
    host: string;
    port: number;
    ok: boolean;
    version?: string;
    midpointMs?: number;
    radiusMs?: number;
    rttMs?: number;
    agrees?: boolean;
    error?: { code: string; message: string };
  }[];
  report: MalfeasanceReport | null;
}

async function runQuery(specs: ServerSpec[], timeoutMs: number): Promise<QueryJson> {
  const outcomes = await queryParallel(specs, { timeoutMs });
  const ok = outcomes.filter((o): o is Extract<ServerOutcome, { ok: true }> => o.ok);
  const at = performance.now();
  const c = combineSamples(
    ok.map((o) => ({
      midpointMs: o.result.reply.midpointMs,
      radiusMs: o.result.reply.radiusMs,
      rttMs: o.result.rttMs,
      receivedAtMono: o.result.receivedAtMono,
    })),
    at,
  );
  const agreeingSet = new Set(c ? c.agreeing.map((i) => ok[i]) : []);
  let report: MalfeasanceReport | null = null;
  const order = c ? proofOrder(ok.length, c.agreeing) : [];
  if (order.length) {
    // Disagreement: ask again in a chain with each outlier between agreeing servers (a server that is behind
    // is caught by the one before it, one that is ahead by the one after) and keep it if it proves the lie.
    const chain = await queryChain(order.map((i) => ok[i].server), { timeoutMs });
    const candidate = buildReport(chain);
    try {
      if (checkReport(candidate).kind === "malfeasance") report = candidate;
    } catch {
      // A chain that does not check (a server stopped answering mid-way) proves nothing.
    }
  }
  // Re-evaluate at print time: the chained pass may have taken a while, and the interval must carry the
  // drift allowance for that time too.
  const final = combineSamples(
    ok.map((o) => ({
      midpointMs: o.result.reply.midpointMs,
      radiusMs: o.result.reply.radiusMs,
      rttMs: o.result.rttMs,
      receivedAtMono: o.result.receivedAtMono,
    })),
    performance.now(),
  );
  const verified = final !== null && final.majority;
  return {
    state: verified ? "verified" : ok.length ? "uncertain" : "unverified",
    singleSource: verified && final.agreeing.length === 1,
    time: verified
      ? {
        earliestMs: final.earliestMs,
        latestMs: final.latestMs,
        nowMs: (final.earliestMs + final.latestMs) / 2,
        iso: iso((final.earliestMs + final.latestMs) / 2),
      }
      : null,
    uncertaintyMs: verified ? (final.latestMs - final.earliestMs) / 2 : null,
    configured: specs.length,
    answered: ok.length,
    agreeing: c ? c.agreeing.length : 0,
    disagreeing: ok.filter((o) => !agreeingSet.has(o)).map((o) => o.server.name),
    servers: outcomes.map((o) =>
      o.ok
        ? {
          name: o.server.name,
          host: o.server.host,
          port: o.server.port,
          ok: true,
          version: o.result.reply.version,
          midpointMs: o.result.reply.midpointMs,
          radiusMs: o.result.reply.radiusMs,
          rttMs: Math.round(o.result.rttMs * 1000) / 1000,
          agrees: agreeingSet.has(o),
        }
        : {
          name: o.server.name,
          host: o.server.host,
          port: o.server.port,
          ok: false,
          error: { code: o.error.code, message: o.error.message },
        }
    ),
    report,
  };
}

function printQuery(q: QueryJson): void {
  if (q.state === "verified" && q.time) {
    const how = q.singleSource
      ? "single source, not cross-checked"
      : `${q.agreeing} of ${q.answered} servers agree`;
    console.log(`verified time: ${q.time.iso} ± ${seconds(q.uncertaintyMs ?? 0)} (${how})`);
  } else if (q.state === "uncertain") {
    console.log(`time UNCERTAIN: ${q.answered} servers answered but no majority agrees`);
  } else {
    console.log(`time UNVERIFIED: none of ${q.configured} servers gave a valid answer`);
  }
  // Without a majority nobody can tell which side lies: outliers are only "different".
  const [mark, why] = q.state === "verified"
    ? ["LIES", "disagrees with the majority"]
    : ["DIFF", "outside the largest group; no majority"];
  for (const s of q.servers) {
    const where = `${s.name} (${s.host}:${s.port})`;
    if (s.ok) {
      console.log(
        `  ${s.agrees ? "ok  " : mark} ${where} ${s.version} ${iso(s.midpointMs ?? 0)} ± ${
          seconds(s.radiusMs ?? 0)
        } ` +
          `rtt ${(s.rttMs ?? 0).toFixed(1)} ms${s.agrees ? "" : ` (${why})`}`,
      );
    } else {
      console.log(`  FAIL ${where} ${s.error?.code}: ${s.error?.message}`);
    }
  }
  if (q.disagreeing.length) {
    console.log(`disagreeing: ${q.disagreeing.join(", ")}`);
  }
  if (q.report) {
    console.log(
      `malfeasance: a chained report proves a server lied (${q.report.responses.length} responses)`,
    );
  } else if (q.disagreeing.length) {
    console.log("no proof: the chained query did not show the disagreement (a server stopped answering?)");
  }
}

/** `--report FILE`: the proof is public (signed replies only), so 0644. Without a proof nothing is written, and
 * stderr says why: a report file left from an earlier run must not be mistaken for this run's. */
async function writeReport(file: string, q: QueryJson): Promise<void> {
  if (!q.report) {
    console.error(
      q.disagreeing.length
        ? `no report written to ${file}: the chained query did not prove a lie`
        : `no report written to ${file}: the servers agree`,
    );
    return;
  }
  try {
    await Deno.writeTextFile(file, JSON.stringify(q.report, null, 2) + "\n", { mode: 0o644 });
  } catch (e) {
    throw new CliError(`cannot write ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  console.error(
    `malfeasance report written to ${file}; check it with: securechat time verify-report ${file}`,
  );
}

function parseListen(s: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  if (!m || Number(m[3]) > 65535) throw new CliError(`--listen must be HOST:PORT, got "${s}"`);
  return { hostname: m[1] ?? m[2], port: Number(m[3]) };
}

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(sig, done);
      resolve();
    };
    for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, done);
  });
}

/** `securechat time ...`: Roughtime query, standalone server, key generation, report verification. */
export function registerTimeCommands(program: Command): void {
  const time = program.command("time").description(
    "Roughtime: query verified time, run a server, check reports",
  );

  time.command("query")
    .description("query Roughtime servers and print the verified time (exit 2 when it cannot be verified)")
    .option(
      "--server <HOST:PORT:PUBKEY_BASE64[:VERSION]>",
      "a server to ask (repeatable; VERSION rfc|draft|google; append :tcp for TCP)",
      collect,
      [],
    )
    .option("--json", "print the result as JSON")
    .option("--timeout <ms>", "bound on the whole query", "1500")
    .option("--report <file>", "write the malfeasance report here when servers disagree")
    .action(async (opts: { server: string[]; json?: boolean; timeout: string; report?: string }) => {
      let specs: ServerSpec[];
      try {
        specs = opts.server.length ? opts.server.map(parseServerSpec) : PUBLIC_SERVERS;
      } catch (e) {
        throw new CliError(e instanceof Error ? e.message : String(e));
      }
      const timeoutMs = Number(opts.timeout);
      if (!Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > 60_000) {
        throw new CliError("--timeout must be 1-60000 ms");
      }
      const q = await runQuery(specs, timeoutMs);
      if (opts.json) console.log(JSON.stringify(q, null, 2));
      else printQuery(q);
      if (opts.report) await writeReport(opts.report, q);
      if (q.state !== "verified") {
        throw new CliError(
          q.state === "uncertain" ? "servers disagree: time uncertain" : "time unverified",
          EXIT_UNVERIFIED,
        );
      }
    });

  time.command("serve")
    .description("run a standalone Roughtime server (UDP; RFC 10049, drafts 12-19, Google) until Ctrl-C")
    .option("--listen <HOST:PORT>", "address to listen on", `127.0.0.1:${DEFAULT_PORT}`)
    .option(
      "--key <file>",
      "long-term key file (created with mode 0600 when missing); ephemeral key when absent",
    )
    .option("--radius <seconds>", "RADI to announce", "3")
    .option("--tcp", "also serve RFC 10049 framing over TCP on the same port")
    .action(async (opts: { listen: string; key?: string; radius: string; tcp?: boolean }) => {
      const { hostname, port } = parseListen(opts.listen);
      let seed: Uint8Array;
      if (opts.key) {
        try {
          seed = (await loadOrCreateLongTermKey(opts.key)).seed;
        } catch (e) {
          throw new CliError(e instanceof Error ? e.message : String(e));
        }
      } else {
        seed = generateLongTermSeed();
        console.error("note: no --key given, using an ephemeral long-term key");
      }
      let server;
      try {
        server = await startRoughtimeServer({
          hostname,
          port,
          longTermSeed: seed,
          radiusSeconds: Number(opts.radius),
          tcp: opts.tcp === true,
        });
      } catch (e) {
        throw new CliError(`cannot start the server: ${e instanceof Error ? e.message : String(e)}`);
      }
      const pub = toBase64(server.publicKey);
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      console.log(`roughtime server listening on udp${opts.tcp ? "+tcp" : ""} ${host}:${server.port}`);
      console.log(`public key: ${pub}`);
      console.log(`server spec: ${host}:${server.port}:${pub}`);
      await waitForSignal();
      await server.close();
    });

  time.command("keygen")
    .description("make a long-term Roughtime key (Ed25519 seed, file mode 0600) and print its public key")
    .requiredOption("--out <file>", "where to write the key (must not exist)")
    .action(async (opts: { out: string }) => {
      try {
        const { publicKey } = await writeNewLongTermKey(opts.out);
        console.log(`public key: ${toBase64(publicKey)}`);
      } catch (e) {
        if (e instanceof Deno.errors.AlreadyExists) {
          throw new CliError(`${opts.out} exists; not overwriting a key`);
        }
        throw new CliError(`cannot write ${opts.out}: ${e instanceof Error ? e.message : String(e)}`);
      }
    });

  time.command("verify-report")
    .description("check a malfeasance report: exit 0 consistent, 3 proves a server lied, 1 invalid report")
    .argument("<file>", 'the report (draft JSON with "responses", or a Google chain with "links")')
    .action(async (file: string) => {
      let data: unknown;
      try {
        data = JSON.parse(await Deno.readTextFile(file));
      } catch (e) {
        throw new CliError(`invalid report: ${e instanceof Error ? e.message : String(e)}`);
      }
      let verdict;
      try {
        verdict = checkReport(data);
      } catch (e) {
        throw new CliError(`invalid report: ${e instanceof RoughtimeError ? e.message : String(e)}`);
      }
      const n = verdict.replies.length;
      if (verdict.kind === "consistent") {
        console.log(`ok: all ${n} responses verify and the chain is consistent`);
        return;
      }
      const first = findInconsistencies(verdict.replies)[0];
      const keys = (data as { responses?: { publicKey?: string }[] }).responses;
      const who = (i: number) => keys?.[i]?.publicKey ? ` (key ${keys[i].publicKey})` : "";
      throw new CliError(
        `malfeasance: response ${first.earlier}${who(first.earlier)} claims a time ${seconds(first.gapMs)} ` +
          `after response ${first.later}${who(first.later)}, which was made later in the chain`,
        EXIT_MALFEASANCE,
      );
    });
}
