/**
 * Benchmarks report ratios against a baseline measured in the same run, because the machines are shared and
 * noisy: an absolute figure alone says little, the ratio says how much our path costs over the plain one.
 */
export interface BenchFigure {
  /** What was measured, e.g. "roughtime replies/s". */
  name: string;
  value: number;
  unit: string;
  /** The in-run baseline this figure is compared with, when there is one. */
  baseline?: { name: string; value: number };
  /** Free-form extra facts (batch sizes reached, percentiles...). */
  notes?: string;
}

/** A benchmark module (`bench/*_bench.ts`) exports `run` returning its figures. */
export type BenchModule = { run: () => Promise<BenchFigure[]> };

export function ratio(f: BenchFigure): number | null {
  return f.baseline && f.baseline.value !== 0 ? f.value / f.baseline.value : null;
}

export function formatFigure(f: BenchFigure): string {
  const r = ratio(f);
  const base = f.baseline
    ? `  vs ${f.baseline.name} ${fmt(f.baseline.value)} ${f.unit}  ratio ${r === null ? "n/a" : r.toFixed(3)}`
    : "";
  return `${f.name}: ${fmt(f.value)} ${f.unit}${base}${f.notes ? `  (${f.notes})` : ""}`;
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(4);
}

/** Runs `fn` repeatedly for about `ms` milliseconds (at least once) and returns operations per second. */
export async function opsPerSecond(fn: () => Promise<void> | void, ms = 1000): Promise<number> {
  const start = performance.now();
  let n = 0;
  while (performance.now() - start < ms || n === 0) {
    await fn();
    n++;
  }
  return n / ((performance.now() - start) / 1000);
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** Runs a full garbage collection when the runtime exposes one (`deno task bench` passes --expose-gc), so
 * that a memory figure counts what is held, not what the collector has not yet taken back. */
export function collectGarbage(): void {
  (globalThis as { gc?: () => void }).gc?.();
}
