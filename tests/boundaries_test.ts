/**
 * The folder boundaries of docs/architecture.md, checked on every import of the program's own code (tests/
 * and bench/ may reach inside a folder: they test and measure its internals):
 * - client/ never imports server/, and server/ never imports client/ (they meet in contract/);
 * - other folders import clock/ only through clock/mod.ts (or the type contract clock/types.ts), pki/ only
 *   through pki/mod.ts, and server/ only through server/mod.ts (main.ts also uses each job's cli.ts);
 * - clock/, pki/ and contract/ import none of the jobs (server/, client/, demo/);
 * - no module imports itself through a cycle.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), "..");
const EXEMPT = ["tests", "bench", "node_modules", ".git", "docs"];

function sourceFiles(dir = ROOT): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) {
      if (!EXEMPT.includes(relative(ROOT, p)) && !e.name.startsWith(".")) out.push(...sourceFiles(p));
    } else if (/\.(ts|tsx)$/.test(e.name)) out.push(relative(ROOT, p));
  }
  return out.sort();
}

/** Relative import specifiers of a file: static imports and re-exports, and dynamic import("..."). */
function importsOf(file: string): string[] {
  const text = Deno.readTextFileSync(join(ROOT, file));
  const specs = new Set<string>();
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?\sfrom\s+"([^"]+)"/g)) specs.add(m[1]);
  for (const m of text.matchAll(/(?:^|\n)\s*import\s+"([^"]+)"/g)) specs.add(m[1]);
  for (const m of text.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g)) specs.add(m[1]);
  return [...specs].filter((s) => s.startsWith(".")).map((s) =>
    relative(ROOT, resolve(ROOT, dirname(file), s))
  );
}

const top = (p: string) => p.includes("/") ? p.slice(0, p.indexOf("/")) : "";

/** Why importing `to` from `from` breaks a boundary, or null. */
export function boundaryViolation(from: string, to: string): string | null {
  const a = top(from);
  const b = top(to);
  if (a === b) return null;
  if (a === "client" && b === "server") return "client/ must not import server/";
  if (a === "server" && b === "client") return "server/ must not import client/";
  if (["clock", "pki", "contract"].includes(a) && ["server", "client", "demo"].includes(b)) {
    return `${a}/ must not import the jobs (${b}/)`;
  }
  const entry: Record<string, string[]> = {
    clock: ["clock/mod.ts", "clock/types.ts"],
    pki: ["pki/mod.ts"],
    server: ["server/mod.ts"],
    contract: ["contract/mod.ts"],
  };
  const allowed = [...(entry[b] ?? []), ...(from === "main.ts" ? [`${b}/cli.ts`, `${b}/enroll_cli.ts`] : [])];
  if (entry[b] && !allowed.includes(to)) return `${b}/ is reached only through ${entry[b].join(" or ")}`;
  return null;
}

function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (n: string) => {
    state.set(n, "open");
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (state.get(m) === "open") found.push([...stack.slice(stack.indexOf(m)), m]);
      else if (!state.has(m)) visit(m);
    }
    stack.pop();
    state.set(n, "done");
  };
  for (const n of [...graph.keys()].sort()) if (!state.has(n)) visit(n);
  return found;
}

Deno.test("boundaries: the rule itself refuses what it should (so the scan below cannot pass vacuously)", () => {
  assert.match(boundaryViolation("client/engine.ts", "server/mod.ts")!, /client\/ must not import server/);
  assert.match(boundaryViolation("server/http.ts", "client/engine.ts")!, /server\/ must not/);
  assert.match(boundaryViolation("client/engine.ts", "clock/trusted_clock.ts")!, /clock\/mod.ts/);
  assert.match(boundaryViolation("server/ca_state.ts", "pki/ca.ts")!, /pki\/mod.ts/);
  assert.match(boundaryViolation("pki/verify.ts", "client/engine.ts")!, /jobs/);
  assert.equal(boundaryViolation("client/engine.ts", "clock/mod.ts"), null);
  assert.equal(boundaryViolation("client/home.ts", "clock/types.ts"), null);
  assert.equal(boundaryViolation("main.ts", "server/cli.ts"), null);
  assert.equal(boundaryViolation("demo/main.ts", "server/mod.ts"), null);
  assert.deepEqual(cycles(new Map([["a", ["b"]], ["b", ["a"]]])), [["a", "b", "a"]]);
});

Deno.test("boundaries: every import of the program keeps to the folder rules, and there are no import cycles", () => {
  const files = sourceFiles();
  assert.ok(files.includes("client/engine.ts") && files.includes("main.ts"), "scan found the sources");
  const graph = new Map<string, string[]>();
  const violations: string[] = [];
  for (const f of files) {
    const deps = importsOf(f);
    graph.set(f, deps);
    for (const d of deps) {
      const why = boundaryViolation(f, d);
      if (why) violations.push(`${f} imports ${d}: ${why}`);
    }
  }
  assert.ok([...graph.values()].flat().length > 200, "imports were read");
  assert.deepEqual(violations, []);
  assert.deepEqual(cycles(graph).map((c) => c.join(" -> ")), []);
});
