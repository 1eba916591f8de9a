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

/** PURGE clause -> stored method, grid anchor and interval, and the first next_time. */
export async function evalPurge(db: Knex, p: PurgeClause | undefined, nowMs: number) {
  if (!p) return { method: 'MANUAL' as const, anchor: null, interval: null, next: null };
  if (p.immediate) return { method: 'IMMEDIATE' as const, anchor: null, interval: null, next: null };
  const s = await evalSchedule(db, { startWith: p.startWith, next: p.next }, nowMs);
  return { method: 'SCHEDULED' as const, anchor: s.anchor, interval: s.interval, next: s.anchor === null ? null : nextExecTime(s.anchor, s.interval, null) };
}
