/**
 * The release build's rules that can be checked without building: the scan that keeps run-time loads out of
 * the compiled program catches computed imports and files read beside a module, and `securechat --version`
 * names the program's and the runtime's versions. (.ci/compile-check.sh builds the archives themselves.)
 */
import assert from "node:assert/strict";
import { outputName, PERMISSIONS, runtimeLoads, TARGETS, workerSpecifiers } from "../release/compile.ts";
import { runCli } from "./helpers/cli.ts";
import { VERSION } from "../main.ts";

Deno.test("runtimeLoads flags computed imports and import.meta file paths, not literal imports", () => {
  const bad = [
    "const m = await import(name);",
    "await import(`./tui/${x}.ts`);",
    'const data = await Deno.readTextFile(new URL("./words.txt", import.meta.url));',
    "const here = import.meta.dirname;",
    "const w = new Worker(workerUrl, { type: 'module' });",
  ];
  for (const line of bad) assert.deepEqual(runtimeLoads(line), [line], line);
  const ok = [
    'const { firstRun } = await import("./first_run.ts");',
    "return import('./tui/mod.ts');",
    "if (import.meta.main) main();",
    "// import(name) in a comment",
    'this.w = new Worker(import.meta.resolve("./writer_worker.ts"), { type: "module" });',
  ];
  for (const line of ok) assert.deepEqual(runtimeLoads(line), [], line);
});

Deno.test("workerSpecifiers finds the literal paths workers start from (what compile must embed)", () => {
  assert.deepEqual(
    workerSpecifiers('const w = new Worker(import.meta.resolve("./writer_worker.ts"), { type: "module" });'),
    ["./writer_worker.ts"],
  );
  assert.deepEqual(workerSpecifiers("new Worker(url)"), []);
});

Deno.test("release targets: five platforms, Windows gets .exe, the program's permissions carry no --allow-run", () => {
  assert.equal(TARGETS.length, 5);
  assert.equal(outputName("x86_64-pc-windows-msvc"), "securechat-x86_64-pc-windows-msvc.exe");
  assert.equal(outputName("aarch64-apple-darwin"), "securechat-aarch64-apple-darwin");
  assert.ok(
    !PERMISSIONS.some((p) => p.startsWith("--allow-run") || p.startsWith("--allow-ffi") || p === "-A"),
  );
});

Deno.test("securechat --version prints the program's version and the Deno it runs on", async () => {
  const r = await runCli(["--version"]);
  assert.equal(r.code, 0);
  assert.equal(
    r.stdout.trim(),
    `securechat ${VERSION} (Deno ${Deno.version.deno}, V8 ${Deno.version.v8}, TypeScript ${Deno.version.typescript})`,
  );
});
