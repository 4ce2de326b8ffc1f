/**
 * The tests' way of running a program with its wall clock moved (`tests/helpers/faketime.ts`): libfaketime
 * preloaded directly. The `faketime` wrapper refuses to start when a killed run left its semaphore under the
 * pid it is given ("sem_open: File exists"), which failed a CI run; the preloaded library carries on, and
 * what a killed program left behind is removed.
 */
import assert from "node:assert/strict";
import { faketimeEnv, faketimeObjects, removeFaketimeLeftovers } from "./helpers/faketime.ts";
import { withTools } from "./helpers/tools.ts";

const YEAR_MS = 365 * 86_400_000;
const STALE = 64;

/** Runs a shell line (Deno lets only --allow-all touch /proc and /dev; the tests run without it). */
function sh(line: string): string {
  const out = new Deno.Command("sh", { args: ["-c", line], stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) throw new Error(`sh -c ${line}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/** Stale objects, as a killed run leaves them, for the next `STALE` pids this machine will hand out. */
function plantStaleObjects(): number[] {
  const last = Number(sh("cat /proc/sys/kernel/ns_last_pid").trim());
  const pids = Array.from({ length: STALE }, (_, i) => last + 1 + i);
  sh(`for f in ${pids.flatMap(faketimeObjects).join(" ")}; do : > "$f"; done`);
  return pids;
}

/** Which of libfaketime's objects for `pid` exist. */
function leftoversOf(pid: number): string[] {
  return faketimeObjects(pid).filter((f) => sh(`test -e ${f} && echo yes || true`).trim() === "yes");
}

Deno.test(withTools("faketime", {
  name:
    "faketime env: the clock is a year back even where a killed run left its semaphore, and the wrapper would refuse",
  fn: async () => {
    const planted = plantStaleObjects();
    try {
      // The wrapper, given one of those pids, stops at once (what CI met).
      const wrapper = await new Deno.Command("faketime", {
        args: ["-f", "-365d", "true"],
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(wrapper.success, false, "the wrapper started despite a stale semaphore under its pid");
      assert.match(new TextDecoder().decode(wrapper.stderr), /sem_open/);

      const env = faketimeEnv("-365d");
      const before = Date.now();
      const run = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "console.log(Date.now())"],
        env,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(run.success, new TextDecoder().decode(run.stderr));
      const theirs = Number(new TextDecoder().decode(run.stdout).trim());
      const behind = before - theirs;
      assert.ok(
        Math.abs(behind - YEAR_MS) < 60_000,
        `the program's clock is ${behind} ms behind, not a year`,
      );
    } finally {
      for (const pid of planted) removeFaketimeLeftovers(pid);
    }
  },
}));

Deno.test(withTools("faketime", {
  name: "faketime env: a killed program's semaphore and shared memory are removed after it exits",
  fn: async () => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "console.log('up'); setTimeout(() => {}, 60_000)"],
      env: faketimeEnv("+31d"),
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.getReader();
    await reader.read(); // "up": libfaketime has made its objects by now
    assert.deepEqual(
      leftoversOf(child.pid).length,
      2,
      "libfaketime made no objects for its pid (is it preloaded?)",
    );
    child.kill("SIGKILL");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel();
    assert.equal(
      leftoversOf(child.pid).length,
      2,
      "a killed program should leave them (else this test proves nothing)",
    );
    removeFaketimeLeftovers(child.pid);
    assert.deepEqual(leftoversOf(child.pid), []);
  },
}));
