import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { appendEditLog } from './repository.js';
import type { TableRef } from './types.js';

export interface ForgetOutcome {
  /** Reported partitions removed. */
  partitions: number;
  /** MVs whose version map named the table. */
  mviews: number[];
}

/**
 * Make a versioned table ordinary again (DESIGN.md §2): its reported versions go, and so do the
 * entries MVs' version maps hold for it, so no MV over it is SKIPPED on versions any more. The
 * MVs' fence (meta_version) moves in the same transaction, so a repair computed before loses its
 * compare-and-set; each MV touched gets an edit-log row.
 */
export async function forgetVersions(db: Knex, table: TableRef, clock: Clock): Promise<ForgetOutcome> {
  return db.transaction(async (trx) => {
    const where = { base_table_schema: table.schema, base_table_name: table.name };
    const mviews = (await trx('mvs_mview_version_map').where(where).distinct('mview_id').pluck('mview_id')).map(Number).sort((a, b) => a - b);
    if (mviews.length) await trx('mvs_mviews').whereIn('mview_id', mviews).increment('meta_version', 1);
    await trx('mvs_mview_version_map').where(where).delete();
    const partitions = await trx('mvs_base_partitions').where(where).delete();
    const now = clock.now();
    for (const id of mviews) await appendEditLog(trx, id, 'FORGET_VERSIONS', { table: `${table.schema}.${table.name}` }, now);
    return { partitions, mviews };
  });
}
