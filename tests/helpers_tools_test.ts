/**
 * The tool helper's contract, run as `deno test` in a child the way CI runs it: a test that needs a missing
 * tool is ignored with a message by default and FAILS with SECURECHAT_REQUIRE_TOOLS=1; a tool that is present
 * runs the test either way; `useTool` inside a test follows the same rule.
 */
import assert from "node:assert/strict";
import { REQUIRE_TOOLS_ENV } from "./helpers/tools.ts";

const TOOLS = new URL("./helpers/tools.ts", import.meta.url).href;
const MISSING = "securechat-no-such-tool";

/** A test file using the helper: one test on a missing tool, one on a present one (deno itself), one inline. */
function fixture(): string {
  return `import { useTool, withTools } from ${JSON.stringify(TOOLS)};
Deno.test(withTools(${JSON.stringify(MISSING)}, { name: "needs-missing", fn() {} }));
Deno.test(withTools(${JSON.stringify(Deno.execPath())}, { name: "needs-present", fn() {} }));
Deno.test("inline-missing", () => { if (useTool(${
    JSON.stringify(MISSING)
  })) throw new Error("not missing?"); });
`;
}

async function runFixture(require: boolean): Promise<{ code: number; out: string }> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/fixture_test.ts`, fixture());
    // A clean environment (CI itself runs with the variable set), keeping what deno needs to find its cache.
    const env: Record<string, string> = { NO_COLOR: "1", RUST_BACKTRACE: "0" };
    for (const k of ["PATH", "HOME", "DENO_DIR"]) {
      const v = Deno.env.get(k);
      if (v !== undefined) env[k] = v;
    }
    if (require) env[REQUIRE_TOOLS_ENV] = "1";
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["test", "--no-check", "--allow-run", "--allow-env", "--allow-read", `${dir}/fixture_test.ts`],
      env,
      clearEnv: true,
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("tools: without SECURECHAT_REQUIRE_TOOLS a missing tool skips its test with a message", async () => {
  const r = await runFixture(false);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /needs-missing \.\.\. ignored/);
  assert.match(r.out, /needs-present \.\.\. ok/);
  assert.match(r.out, /inline-missing \.\.\. ok/);
  assert.match(r.out, new RegExp(`${MISSING} is not installed \\(apt-get install ${MISSING}\\): skipping`));
});

Deno.test("tools: with SECURECHAT_REQUIRE_TOOLS=1 a missing tool fails its test and says which tool", async () => {
  const r = await runFixture(true);
  assert.notEqual(r.code, 0, r.out);
  assert.match(r.out, /needs-missing \.\.\. FAILED/);
  assert.match(r.out, /inline-missing \.\.\. FAILED/);
  assert.match(r.out, /needs-present \.\.\. ok/);
  assert.match(r.out, new RegExp(`${MISSING} is not installed, and ${REQUIRE_TOOLS_ENV}=1 requires it`));
  assert.doesNotMatch(r.out, /\d+ ignored/);
});
