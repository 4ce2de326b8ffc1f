/**
 * A program run with its clock moved by libfaketime, preloaded directly rather than through the `faketime`
 * wrapper.
 *
 * The wrapper makes a POSIX semaphore and a shared memory object named after its own pid
 * (`/dev/shm/sem.faketime_sem_PID`), and removes them only when the program it started exits on its own. A
 * test that kills the program leaves both behind, and a later wrapper that is given the same pid stops at once
 * with "faketime: sem_open: File exists" (CI met this once pids came round again). Preloaded directly, the
 * library makes the same two objects for itself but carries on without them when they exist already (it
 * shares nothing between processes, which a relative spec such as "+31d" does not need), and the program is
 * the test's own child, so a signal reaches it and not a wrapper. What a killed program leaves behind is
 * removed by `removeFaketimeLeftovers` once it has exited.
 */

let preload: string | undefined;

/** The library the wrapper preloads. The wrapper has its path built in (Debian's names the loader's `$LIB`,
 * which the loader expands), so it is read from the wrapper's file on PATH: running the wrapper to ask would
 * meet the very semaphore this module avoids. */
function libfaketime(): string {
  if (preload !== undefined) return preload;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").filter(Boolean)) {
    let bytes: Uint8Array;
    try {
      bytes = Deno.readFileSync(`${dir}/faketime`);
    } catch {
      continue;
    }
    const text = new TextDecoder("latin1").decode(bytes);
    const lib = /\/[\x21-\x7e]*\/libfaketime\.so\.1(?=\0)/.exec(text)?.[0];
    if (lib !== undefined) return preload = lib;
    throw new Error(`${dir}/faketime names no libfaketime.so.1 to preload`);
  }
  throw new Error("faketime is not on PATH");
}

/** The environment that runs a program under libfaketime with `spec` (the wrapper's `-f` value). Only the
 * wall clock moves (FAKETIME_DONT_FAKE_MONOTONIC=1: a user who set the system clock) unless `fakeMonotonic`. */
export function faketimeEnv(spec: string, opts: { fakeMonotonic?: boolean } = {}): Record<string, string> {
  return {
    LD_PRELOAD: libfaketime(),
    FAKETIME: spec,
    ...(opts.fakeMonotonic ? {} : { FAKETIME_DONT_FAKE_MONOTONIC: "1" }),
  };
}

/** The names libfaketime gives, in /dev/shm, to the semaphore and shared memory object of process `pid`. */
export function faketimeObjects(pid: number): string[] {
  return [`/dev/shm/sem.faketime_sem_${pid}`, `/dev/shm/faketime_shm_${pid}`];
}

/** Removes the semaphore and shared memory object libfaketime made for process `pid`, once that process has
 * exited (it removes them itself only on a normal exit). Called after every program a test ran under
 * `faketimeEnv`, so a killed one leaves nothing in /dev/shm. Through `rm`: Deno lets only --allow-all touch
 * /dev, and the tests run without it. */
export function removeFaketimeLeftovers(pid: number): void {
  new Deno.Command("rm", { args: ["-f", ...faketimeObjects(pid)], stdout: "null", stderr: "null" })
    .outputSync();
}
