/**
 * clock/ has no import cycles: every module can be read, tested and replaced from the bottom up (the old
 * server.ts <-> tcp.ts circle is gone: both now build on responder.ts).
 */
import assert from "node:assert/strict";

const CLOCK = new URL("../clock/", import.meta.url);

/** Relative imports (static `import`/`export ... from`, type-only included) of every .ts file under clock/. */
async function graph(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const walk = async (dir: URL) => {
    for await (const e of Deno.readDir(dir)) {
      const url = new URL(e.name + (e.isDirectory ? "/" : ""), dir);
      if (e.isDirectory) await walk(url);
      else if (e.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(url);
        const deps = [...text.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+"(\.{1,2}\/[^"]+)"/gms)]
          .map((m) => new URL(m[1], url).href)
          .filter((href) => href.startsWith(CLOCK.href));
        out.set(url.href, deps);
      }
    }
  };
  await walk(CLOCK);
  return out;
}

/** The first cycle found by depth-first search, as a list of file names, or null. */
function findCycle(g: Map<string, string[]>): string[] | null {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    state.set(n, "open");
    stack.push(n);
    for (const d of g.get(n) ?? []) {
      if (state.get(d) === "open") return [...stack.slice(stack.indexOf(d)), d];
      if (!state.has(d)) {
        const c = visit(d);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(n, "done");
    return null;
  };
  for (const n of g.keys()) {
    if (!state.has(n)) {
      const c = visit(n);
      if (c) return c;
    }
  }
  return null;
}

Deno.test("clock/: no module imports itself through others (no import cycle)", async () => {
  const g = await graph();
  assert.ok(g.size > 10, "found the clock modules");
  assert.ok(
    (g.get(new URL("roughtime/server.ts", CLOCK).href) ?? []).includes(
      new URL("roughtime/tcp.ts", CLOCK).href,
    ),
    "the graph sees server.ts importing tcp.ts",
  );
  const cycle = findCycle(g);
  assert.equal(cycle, null, `import cycle: ${cycle?.map((u) => u.slice(CLOCK.href.length)).join(" -> ")}`);
});

Deno.test("the cycle finder reports a cycle when there is one", () => {
  const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", []]]);
  assert.deepEqual(findCycle(g), ["a", "b", "c", "a"]);
  assert.equal(findCycle(new Map([["a", ["b"]], ["b", []]])), null);
});
