/**
 * `deno task compile`: the one-file `securechat` executable for each release target, with the permissions
 * the program needs baked in (the same as `deno task start`: network, files, environment, system info; no
 * subprocesses, no FFI) and every module it loads embedded.
 *
 *   deno task compile                        all five targets into dist/
 *   deno task compile --target x86_64-unknown-linux-gnu --out DIR
 *   deno task compile --check                what a machine without the runtime download can prove (below)
 *
 * `deno compile` downloads the matching `denort` runtime for each target. On a machine that cannot, `--check`
 * points DENORT_BIN at this `deno` binary: the executables are then built for the Linux targets (so the
 * module graph resolves, every npm package embeds and the archive is written) but they run as plain `deno`,
 * not as securechat; macOS and Windows cannot be checked that way (a Linux binary is no Mach-O or PE image).
 * It also proves that nothing is left for run time: every module reachable from main.ts (dynamic imports
 * included) is in the graph, and none of them reads a file next to itself or imports a computed specifier.
 */
import { dirname, join, relative } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";

export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;
export type Target = typeof TARGETS[number];

/** The compiled program's permissions: those of `deno task start`. */
export const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env", "--allow-sys"];

/** Modules the program starts as workers (`new Worker(import.meta.resolve("..."))`): not in main.ts's
 * static module graph, so each is embedded with --include (with the modules it imports). */
export const WORKER_MODULES = ["client/store/writer_worker.ts"];

const ROOT = dirname(dirname(fromFileUrl(import.meta.url)));
const MAIN = join(ROOT, "main.ts");

export class CompileError extends Error {
  constructor(readonly code: "COMPILE_FAILED" | "GRAPH" | "BAD_ARGS", message: string) {
    super(message);
    this.name = "CompileError";
  }
}

export function outputName(target: Target): string {
  return `securechat-${target}${target.includes("windows") ? ".exe" : ""}`;
}

/** Runs `deno compile` for one target; returns its output (the embedded-files listing). */
export async function compileTarget(
  target: Target,
  outDir: string,
  env: Record<string, string> = {},
): Promise<string> {
  const out = join(outDir, outputName(target));
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "compile",
      "--no-prompt",
      ...PERMISSIONS,
      ...WORKER_MODULES.flatMap((m) => ["--include", m]),
      "--target",
      target,
      "--output",
      out,
      MAIN,
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1", RUST_BACKTRACE: "0", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  if (!r.success) {
    throw new CompileError("COMPILE_FAILED", `deno compile --target ${target} failed:\n${text}`);
  }
  return text;
}

interface InfoModule {
  specifier: string;
  kind?: string;
  dependencies?: { specifier: string; code?: { specifier: string }; isDynamic?: boolean }[];
}

/** The program's own modules (file: specifiers under the repository) reachable from `entry` (main.ts). */
export async function programModules(entry = MAIN): Promise<string[]> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    env: { NO_COLOR: "1", RUST_BACKTRACE: "0" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) throw new CompileError("GRAPH", new TextDecoder().decode(r.stderr));
  const info = JSON.parse(new TextDecoder().decode(r.stdout)) as { modules: InfoModule[] };
  return info.modules
    .filter((m) => m.specifier.startsWith("file:") && !m.specifier.includes("/node_modules/"))
    .map((m) => relative(ROOT, fromFileUrl(m.specifier)))
    .sort();
}

/** Lines of `source` that would need a file or module at run time that compile cannot see. */
export function runtimeLoads(source: string): string[] {
  const found: string[] = [];
  for (const line of source.split("\n")) {
    const code = line.replace(/\/\/.*$/, "");
    // import("literal") is followed by the compiler; import(variable) is not.
    for (const m of code.matchAll(/\bimport\(\s*([^)]*)\)/g)) {
      if (!/^(["'`])[^"'`$]*\1$/.test(m[1].trim())) found.push(line.trim());
    }
    if (/import\.meta\.(url|dirname|filename)/.test(code)) found.push(line.trim());
    // A worker is embedded only when it is started by a literal path (checked against WORKER_MODULES).
    if (/\bnew Worker\(/.test(code) && workerSpecifiers(code).length === 0) found.push(line.trim());
  }
  return found;
}

/** The literal paths `source` starts workers from (`new Worker(import.meta.resolve("./x.ts"), ...)`). */
export function workerSpecifiers(source: string): string[] {
  const out: string[] = [];
  for (const line of source.split("\n")) {
    const code = line.replace(/\/\/.*$/, "");
    for (const m of code.matchAll(/\bnew Worker\(\s*import\.meta\.resolve\(\s*(["'])([^"'`$]+)\1\s*\)/g)) {
      out.push(m[2]);
    }
  }
  return out;
}

/** The --check run: module graph, source scan, and the Linux builds with DENORT_BIN. */
export async function check(log: (s: string) => void = console.log): Promise<void> {
  const modules = await programModules();
  // Each worker a module starts must be one compile embeds; the workers' own modules are checked as well.
  const workers = new Set<string>();
  for (const m of modules) {
    for (const spec of workerSpecifiers(await Deno.readTextFile(join(ROOT, m)))) {
      const w = relative(ROOT, join(ROOT, dirname(m), spec));
      if (!WORKER_MODULES.includes(w)) {
        throw new CompileError("GRAPH", `${m} starts a worker from ${w}, which is not in WORKER_MODULES`);
      }
      workers.add(w);
    }
  }
  for (const w of WORKER_MODULES) {
    if (!workers.has(w)) throw new CompileError("GRAPH", `no module starts the worker ${w}`);
    for (const m of await programModules(join(ROOT, w))) if (!modules.includes(m)) modules.push(m);
  }
  for (const must of ["client/tui/first_run.ts", "client/tui/mod.ts", "server/store_postgres.ts"]) {
    if (!modules.includes(must)) throw new CompileError("GRAPH", `${must} is not in main.ts's module graph`);
  }
  const problems: string[] = [];
  for (const m of modules) {
    for (const line of runtimeLoads(await Deno.readTextFile(join(ROOT, m)))) problems.push(`${m}: ${line}`);
  }
  if (problems.length > 0) {
    throw new CompileError("GRAPH", `modules that load something at run time:\n${problems.join("\n")}`);
  }
  log(
    `module graph: ${modules.length} program modules (${WORKER_MODULES.length} worker), all static or literal ` +
      "imports, no file read beside them",
  );
  const tmp = await Deno.makeTempDir({ prefix: "securechat-compile-" });
  try {
    for (const target of TARGETS.filter((t) => t.includes("linux"))) {
      const listing = await compileTarget(target, tmp, { DENORT_BIN: Deno.execPath() });
      for (const entry of ["main.ts", "server", "client", "clock", "pki", "node_modules"]) {
        if (!new RegExp(`[├└]─[─┬] ${entry}\\b`).test(listing)) {
          throw new CompileError("GRAPH", `${entry} is missing from the ${target} archive:\n${listing}`);
        }
      }
      for (const w of WORKER_MODULES) {
        const name = w.split("/").pop()!;
        if (!listing.includes(name)) {
          throw new CompileError(
            "GRAPH",
            `the worker ${w} is missing from the ${target} archive:\n${listing}`,
          );
        }
      }
      const size = (await Deno.stat(join(tmp, outputName(target)))).size;
      log(`${target}: archive built (${(size / 1e6).toFixed(0)} MB, runtime = this deno, not a real denort)`);
    }
    for (const target of TARGETS.filter((t) => !t.includes("linux"))) {
      log(`${target}: not checkable here (needs its downloaded denort); built by the release workflow`);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

async function cli(args: string[]): Promise<void> {
  if (args.includes("--check")) return await check();
  let outDir = join(ROOT, "dist");
  const chosen: Target[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--out") outDir = args[++i];
    else if (args[i] === "--target") {
      const t = args[++i];
      if (!(TARGETS as readonly string[]).includes(t)) {
        throw new CompileError("BAD_ARGS", `unknown target ${t}; one of ${TARGETS.join(", ")}`);
      }
      chosen.push(t as Target);
    } else throw new CompileError("BAD_ARGS", `unknown argument ${args[i]}`);
  }
  const targets = chosen.length > 0 ? chosen : [...TARGETS];
  await Deno.mkdir(outDir, { recursive: true });
  for (const t of targets) {
    await compileTarget(t, outDir);
    console.log(join(outDir, outputName(t)));
  }
}

if (import.meta.main) {
  try {
    await cli(Deno.args);
  } catch (e) {
    console.error(`compile: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
