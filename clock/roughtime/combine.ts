/**
 * Turning several verified replies into one time interval, pure. Each reply says the true time at its
 * arrival lies in [MIDP - RADI, MIDP + RADI + RTT]; carried forward on the monotonic clock to a common
 * instant with a drift allowance, the intervals of honest servers all contain the true time. The largest
 * group of intervals sharing a point agrees; if it is a strict majority of the replies, the answer is the
 * hull of that group. The hull (not the intersection) keeps "latest" above the true time even when a
 * liar squeezes into the group at an edge, as long as liars are a minority.
 */

/** Assumed worst-case rate error of the local monotonic clock: 100 ppm (quartz oscillators are specified at
 * +-20..50 ppm; 100 leaves margin for temperature and VMs). */
export const DRIFT_PPM = 100;

export interface TimeSample {
  midpointMs: number;
  radiusMs: number;
  rttMs: number;
  receivedAtMono: number;
}

export interface Interval {
  earliestMs: number;
  latestMs: number;
}

/** The interval a sample proves for monotonic instant `atMono` (>= its arrival). */
export function sampleInterval(s: TimeSample, atMono: number, driftPpm = DRIFT_PPM): Interval {
  const elapsed = Math.max(0, atMono - s.receivedAtMono);
  const drift = ((elapsed + s.rttMs) * driftPpm) / 1e6;
  return {
    earliestMs: s.midpointMs - s.radiusMs + elapsed - drift,
    latestMs: s.midpointMs + s.radiusMs + s.rttMs + elapsed + drift,
  };
}

export interface Combination extends Interval {
  /** Indices (into the input) of the samples in the agreeing group. */
  agreeing: number[];
  /** True when the agreeing group is a strict majority; otherwise earliest/latest must not be used. */
  majority: boolean;
}

/** Combines samples at monotonic instant `atMono`. Returns null for no samples. */
export function combineSamples(
  samples: TimeSample[],
  atMono: number,
  driftPpm = DRIFT_PPM,
): Combination | null {
  if (samples.length === 0) return null;
  const iv = samples.map((s) => sampleInterval(s, atMono, driftPpm));
  // Sweep: starts before ends at equal positions, so touching intervals count as overlapping.
  const points = iv.flatMap((v) => [
    { x: v.earliestMs, d: 1 },
    { x: v.latestMs, d: -1 },
  ]).sort((a, b) => a.x - b.x || b.d - a.d);
  let best = 0;
  let bestX = iv[0].earliestMs;
  let cur = 0;
  for (const p of points) {
    cur += p.d;
    if (cur > best) {
      best = cur;
      bestX = p.x;
    }
  }
  const agreeing = iv.flatMap((v, i) => (v.earliestMs <= bestX && bestX <= v.latestMs ? [i] : []));
  const group = agreeing.map((i) => iv[i]);
  return {
    earliestMs: Math.min(...group.map((v) => v.earliestMs)),
    latestMs: Math.max(...group.map((v) => v.latestMs)),
    agreeing,
    majority: agreeing.length * 2 > samples.length,
  };
}

/** An interval and how many servers agreed on it. */
export interface SupportedInterval extends Interval {
  support: number;
}

export interface AnchorUpdate {
  interval: SupportedInterval;
  /** True when the fresh answer and the carried-forward interval have no point in common. */
  contradicts: boolean;
  /** True when the fresh answer replaced the carried-forward interval (false: widened it). */
  replaced: boolean;
}

/**
 * The clock's next interval from the one it carried forward and a fresh majority answer (pure). A fresh answer
 * replaces the old one when it is backed by a majority of all `configured` servers or by at least as many
 * servers as the old one. A weaker answer (say one server left reachable, after three agreed) can only widen
 * the interval to the hull of both: otherwise a single liar, with the others blocked, could move the time
 * back and a deadline would be reported late. Widening is always safe for "never late".
 */
export function nextAnchorInterval(
  carried: SupportedInterval | null,
  fresh: SupportedInterval,
  configured: number,
): AnchorUpdate {
  if (!carried) return { interval: fresh, contradicts: false, replaced: true };
  const contradicts = fresh.latestMs < carried.earliestMs || fresh.earliestMs > carried.latestMs;
  if (fresh.support * 2 > configured || fresh.support >= carried.support) {
    return { interval: fresh, contradicts, replaced: true };
  }
  return {
    interval: {
      earliestMs: Math.min(carried.earliestMs, fresh.earliestMs),
      latestMs: Math.max(carried.latestMs, fresh.latestMs),
      support: carried.support,
    },
    contradicts,
    replaced: false,
  };
}

/**
 * The order in which to chain servers so that an outlier's reply is caught between agreeing ones: a reply
 * that is behind is only provable against an earlier honest one, a reply that is ahead only against a later
 * one. Up to two agreeing servers go before the outliers and the same two after (two, so one failing link
 * does not leave an outlier without a neighbour). Returns indices into the answering servers.
 */
export function proofOrder(answering: number, agreeing: readonly number[]): number[] {
  const inGroup = new Set(agreeing);
  const outliers: number[] = [];
  for (let i = 0; i < answering; i++) if (!inGroup.has(i)) outliers.push(i);
  const around = agreeing.slice(0, 2);
  return outliers.length ? [...around, ...outliers, ...around] : [];
}
