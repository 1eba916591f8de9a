// Next run time on TiDB's grid (calcNextExecTime) and the retry backoff. Pure functions over
// epoch milliseconds so tests are exact; callers pass their clock's "now".

/**
 * next(start, interval, last): start is truncated to whole seconds; no recurring schedule when
 * the interval is absent or <= 0; `start` itself when there was no run yet or the last run ended
 * before start; otherwise the first grid point strictly after `last`. Missed slots are not
 * replayed: one catch-up run, then back on the grid.
 */
export function nextExecTime(startMs: number, intervalS: number | null | undefined, lastMs: number | null | undefined): number | null {
  const startS = Math.floor(startMs / 1000);
  if (lastMs === null || lastMs === undefined || Math.floor(lastMs / 1000) < startS) return startS * 1000;
  if (intervalS === null || intervalS === undefined || intervalS <= 0) return null;
  const elapsedS = Math.floor(lastMs / 1000) - startS;
  return (startS + (Math.floor(elapsedS / intervalS) + 1) * intervalS) * 1000;
}

export const RETRY_BASE_MS = 5_000;
export const RETRY_MAX_MS = 5 * 60_000;

/** Delay before retry number `failures` (1 = first failure): 5 s doubling, capped at 5 min. */
export function retryDelayMs(failures: number): number {
  if (failures <= 1) return RETRY_BASE_MS;
  // 2^6 * 5 s already passes the cap; bounding the exponent keeps the arithmetic exact.
  return Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(failures - 1, 16));
}

export interface ScheduleSpec {
  /** START WITH, evaluated (epoch ms), or null. */
  startMs: number | null;
  /** NEXT in seconds, or null. */
  intervalS: number | null;
}

/**
 * The first next_time of a schedule (DESIGN.md §2): START WITH alone runs once at start; NEXT
 * alone starts one interval after creation; neither means manual refresh only.
 */
export function initialNextTime(spec: ScheduleSpec, createdMs: number, lastMs: number | null): number | null {
  if (spec.startMs === null && spec.intervalS === null) return null;
  const start = spec.startMs ?? createdMs + spec.intervalS! * 1000;
  return nextExecTime(start, spec.intervalS, lastMs);
}

/** next_time after a successful run that ended at `endMs`. */
export function nextTimeAfterSuccess(spec: ScheduleSpec, createdMs: number, endMs: number): number | null {
  if (spec.startMs === null && spec.intervalS === null) return null;
  const start = spec.startMs ?? createdMs + spec.intervalS! * 1000;
  return nextExecTime(start, spec.intervalS, endMs);
}
