import type { Knex } from 'knex';
import { nextExecTime } from '../schedule/nextTime.js';
import type { PurgeClause, Schedule } from './ast.js';
import { evalNextSeconds, evalStartWith } from './evaluate.js';

/** Evaluate START WITH / NEXT into the stored form: grid anchor + interval. */
export async function evalSchedule(db: Knex, s: Schedule, nowMs: number): Promise<{ anchor: number | null; interval: number | null }> {
  const interval = s.next !== undefined ? await evalNextSeconds(db, s.next) : null;
  const start = s.startWith !== undefined ? await evalStartWith(db, s.startWith) : null;
  if (start !== null) return { anchor: start, interval };
  if (interval !== null) return { anchor: nowMs + interval * 1000, interval };
  return { anchor: null, interval: null };
}

/** A `<when>` in its stored form: a grid (anchor + interval), a target lag, or neither (on demand). */
export interface StoredWhen {
  anchor: number | null;
  interval: number | null;
  targetLag: number | null;
  targetDownstream: boolean;
}

/** Evaluate an MV's `<when>` (DESIGN.md §3): START WITH / NEXT, TARGET LAG, ON DEMAND or nothing. */
export async function evalWhen(db: Knex, s: Schedule, nowMs: number): Promise<StoredWhen> {
  if (s.targetLag !== undefined) {
    const lag = s.targetLag;
    return lag === 'DOWNSTREAM'
      ? { anchor: null, interval: null, targetLag: null, targetDownstream: true }
      : { anchor: null, interval: null, targetLag: lag, targetDownstream: false };
  }
  const grid = s.onDemand ? { anchor: null, interval: null } : await evalSchedule(db, s, nowMs);
  return { ...grid, targetLag: null, targetDownstream: false };
}

/** Does the statement carry a `<when>` (which then replaces the MV's schedule)? */
export function hasWhen(s: Schedule): boolean {
  return s.startWith !== undefined || s.next !== undefined || s.targetLag !== undefined || s.onDemand === true;
}

/** The mvs_mviews columns of a `<when>`. */
export function whenColumns(w: StoredWhen): Record<string, unknown> {
  return {
    refresh_start: w.anchor === null ? null : new Date(w.anchor),
    refresh_interval: w.interval,
    target_lag: w.targetLag,
    target_downstream: w.targetDownstream,
  };
}

/** PURGE clause -> stored method, grid anchor and interval, and the first next_time. */
export async function evalPurge(db: Knex, p: PurgeClause | undefined, nowMs: number) {
  if (!p) return { method: 'MANUAL' as const, anchor: null, interval: null, next: null };
  if (p.immediate) return { method: 'IMMEDIATE' as const, anchor: null, interval: null, next: null };
  const s = await evalSchedule(db, { startWith: p.startWith, next: p.next }, nowMs);
  return { method: 'SCHEDULED' as const, anchor: s.anchor, interval: s.interval, next: s.anchor === null ? null : nextExecTime(s.anchor, s.interval, null) };
}
