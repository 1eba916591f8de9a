import type { Knex } from 'knex';

// Metadata columns the dashboard shows when the database has them. Features land with their own
// migrations (data times, target lags); a server whose database lacks one shows the page without
// that field rather than failing. Checked once a minute per database handle, since a migration
// may run while the server is up.

export interface OptionalColumns {
  /** mvs_mview_refresh_info.data_time */
  dataTime: boolean;
  /** mvs_mviews.target_lag and target_downstream */
  targetLag: boolean;
  /** mvs_mview_refresh_info.target_unmet_reason */
  targetUnmet: boolean;
}

const TTL_MS = 60_000;
const cache = new WeakMap<Knex, { at: number; value: Promise<OptionalColumns> }>();

async function probe(db: Knex): Promise<OptionalColumns> {
  const rows = (await db('information_schema.columns')
    .whereRaw('table_schema = DATABASE()')
    .whereIn('table_name', ['mvs_mviews', 'mvs_mview_refresh_info'])
    .select({ t: 'table_name', c: 'column_name' })) as Array<{ t: string; c: string }>;
  const has = (t: string, c: string) => rows.some((r) => r.t === t && r.c === c);
  return {
    dataTime: has('mvs_mview_refresh_info', 'data_time'),
    targetLag: has('mvs_mviews', 'target_lag') && has('mvs_mviews', 'target_downstream'),
    targetUnmet: has('mvs_mview_refresh_info', 'target_unmet_reason'),
  };
}

export function optionalColumns(db: Knex, nowMs = Date.now()): Promise<OptionalColumns> {
  const hit = cache.get(db);
  if (hit && nowMs - hit.at < TTL_MS) return hit.value;
  const value = probe(db);
  cache.set(db, { at: nowMs, value });
  value.catch(() => cache.delete(db));
  return value;
}
