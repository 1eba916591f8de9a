import type { Knex } from 'knex';

// DESIGN.md §2 "Data time and lag": an MV's data_time is the database time of the snapshot its
// contents reflect (recorded by every SUCCESS / SKIPPED run), and lag = now - data_time. Every
// place that shows an MV's lag (status, API, metrics, dashboard) computes it here, against the
// database's clock, so no host's clock skew ever shows up as lag.

/** Lag in seconds (0.1 s steps, never negative), or null while the MV has no data time. */
export function lagSeconds(dataTime: Date | number | null | undefined, nowMs: number): number | null {
  if (dataTime === null || dataTime === undefined) return null;
  const ms = typeof dataTime === 'number' ? dataTime : dataTime.getTime();
  if (!Number.isFinite(ms)) return null;
  return Math.max(0, Math.round((nowMs - ms) / 100) / 10);
}

/** The database's clock now (epoch ms): data times are read on it, so lag is measured on it. */
export async function dbNowMs(db: Knex | Knex.Transaction): Promise<number> {
  const [rows] = (await db.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>];
  return rows[0]!.t.getTime();
}
