/**
 * Time since boot including suspend. performance.now() is CLOCK_MONOTONIC on Linux, which stops while the
 * machine sleeps: carried forward on it alone, a trusted time would fall behind by the length of every
 * suspend and a deadline would be noticed late. The system uptime (Deno.osUptime, from sysinfo(2), which
 * counts suspended time) cannot be set by the user and is not the wall clock, so it keeps "never late" true
 * across a laptop's sleep. The trusted clock only uses it to move time forward relative to the monotonic
 * clock, never back. (/proc/uptime would be finer, but Deno wants --allow-all to read /proc.)
 */

export interface BootClock {
  /** Milliseconds since boot, suspend included, or null when unreadable. */
  now(): number | null;
  /** Granularity of `now()` in ms (the error of one reading). */
  resolutionMs: number;
}

/** Whole seconds, so one reading may be up to a second behind. */
const OS_UPTIME_RESOLUTION_MS = 1000;

function readOsUptime(): number | null {
  try {
    return Deno.osUptime() * 1000;
  } catch {
    return null;
  }
}

/** The system's boot clock, or null when this process may not read it (no --allow-sys). The permission is
 * queried first so that an interactive session is never prompted for it. */
export function systemBootClock(): BootClock | null {
  try {
    if (Deno.permissions.querySync({ name: "sys", kind: "osUptime" }).state !== "granted") return null;
  } catch {
    return null;
  }
  return readOsUptime() === null ? null : { now: readOsUptime, resolutionMs: OS_UPTIME_RESOLUTION_MS };
}
