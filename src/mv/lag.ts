import type { Knex } from 'knex';

// DESIGN.md §2 "Data time and lag": an MV's data_time is the database time of the snapshot its
// contents reflect (recorded by every SUCCESS / SKIPPED run), and lag = now - data_time. Every
// place that shows an MV's lag (status, API, metrics, dashboard) computes it here, against the
// database's clock, so no host's clock skew ever shows up as lag.

/** Lag in seconds (0.1 s steps, never negative) of data `ageMs` old, or null without a data time. */
export function lagOfAge(ageMs: number | null | undefined): number | null {
  if (ageMs === null || ageMs === undefined || !Number.isFinite(ageMs)) return null;
  return Math.max(0, Math.round(ageMs / 100) / 10);
}

/** Lag in seconds (0.1 s steps, never negative), or null while the MV has no data time. */
export function lagSeconds(dataTime: Date | number | null | undefined, nowMs: number): number | null {
  if (dataTime === null || dataTime === undefined) return null;
  return lagOfAge(nowMs - (typeof dataTime === 'number' ? dataTime : dataTime.getTime()));
}

/**
 * SQL for the age in microseconds of a data-time column on the database's clock (NULL when the
 * column is): lists of many MVs compute it in their own statement, then lagOfAge(age / 1000).
 * `column` is one of mvsched's own column names, never user input.
 */
export function dataAgeUsSql(column: string): string {
  return `TIMESTAMPDIFF(MICROSECOND, ${column}, NOW(3))`;
}

/** The database's clock now (epoch ms): data times are read on it, so lag is measured on it. */
export async function dbNowMs(db: Knex | Knex.Transaction): Promise<number> {
  const [rows] = (await db.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>];
  return rows[0]!.t.getTime();
}
