/**
 * `deno task bench`: runs every `bench/*_bench.ts` module (or those named on the command line) in this one
 * process and prints each figure with its in-run baseline and ratio. `--json FILE` also writes them as JSON.
 */
import { type BenchFigure, type BenchModule, formatFigure, ratio } from "./harness.ts";

const args = [...Deno.args];
let jsonOut: string | null = null;
const j = args.indexOf("--json");
if (j >= 0) {
  jsonOut = args[j + 1] ?? null;
  args.splice(j, 2);
}

const dir = new URL(".", import.meta.url);
const names: string[] = [];
for await (const e of Deno.readDir(dir)) {
  if (e.isFile && e.name.endsWith("_bench.ts")) names.push(e.name);
}
names.sort();
// The scale benchmark loads a million users: it runs only when named (`deno task bench scale`).
const selected = args.length
  ? names.filter((n) => args.some((a) => n.startsWith(a)))
  : names.filter((n) => n !== "scale_bench.ts");

const all: Record<string, (BenchFigure & { ratio: number | null })[]> = {};
for (const name of selected) {
  console.log(`== ${name}`);
  const mod = (await import(new URL(name, dir).href)) as BenchModule;
  const figures = await mod.run();
  for (const f of figures) console.log(`  ${formatFigure(f)}`);
  all[name] = figures.map((f) => ({ ...f, ratio: ratio(f) }));
}
if (jsonOut) await Deno.writeTextFile(jsonOut, JSON.stringify(all, null, 2) + "\n");
