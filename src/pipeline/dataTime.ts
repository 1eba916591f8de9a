import type { Knex } from 'knex';

// Data time of an MV over MVs (DESIGN.md §2 "Data time and lag"): the minimum of the data times
// of the MVs it read and its own read time for the base tables it reads directly.

/** What an MV's upstream MVs reflected just before it read them; undefined: it reads no MV. */
export interface UpstreamTimes {
  /** The oldest data time among them (null when one has none recorded yet). */
  min: Date | null;
  count: number;
}

/**
 * Read before the refresh reads its sources: an upstream refreshed meanwhile only makes the
 * contents newer than this says, never older, so the recorded data time is never too new.
 * An upstream that has no data time yet (metadata older than data times) stands at the start of
 * its last successful run, or at the epoch when it never ran.
 */
export async function upstreamDataTimes(db: Knex | Knex.Transaction, mviewId: number): Promise<UpstreamTimes | undefined> {
  const row = (await db('mvs_mview_base_tables as b')
    .join('mvs_mviews as u', function () {
      this.on('u.table_schema', 'b.base_table_schema').andOn('u.mview_name', 'b.base_table_name');
    })
    .join('mvs_mview_refresh_info as ri', 'ri.mview_id', 'u.mview_id')
    .where('b.mview_id', mviewId)
    .first(
      db.raw('COUNT(*) AS n'),
      db.raw("MIN(COALESCE(ri.data_time, CASE WHEN ri.last_refresh_result = 'SUCCESS' THEN ri.refresh_time END, TIMESTAMP'1970-01-01 00:00:01')) AS t"),
    )) as { n: number | string; t: Date | null } | undefined;
  const count = Number(row?.n ?? 0);
  if (count === 0) return undefined;
  return { min: row?.t ?? null, count };
}

/** The MV's data time: its own read's, held back by the oldest upstream it read. */
export function propagateDataTime(own: Date | null, upstream: UpstreamTimes | undefined): Date | null {
  if (!upstream) return own;
  if (own === null) return null;
  if (upstream.min === null) return own;
  return upstream.min.getTime() < own.getTime() ? upstream.min : own;
}
