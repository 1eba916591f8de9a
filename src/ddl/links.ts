import type { Knex } from 'knex';
import { ConflictError } from '../errors.js';
import { displayName, type ResolvedName } from '../mv/identifiers.js';
import type { RefreshMethod } from '../mv/repository.js';

/**
 * Make an MV a consumer of a log, at watermark 0 (which holds the log's purge until the MV's
 * first complete refresh records a real one). The log's row is share-locked so that a DROP
 * of the log cannot slip in between.
 */
export async function linkToLog(
  trx: Knex.Transaction,
  mviewId: number,
  mlog: { mlog_id: number; table_schema: string; base_table_name: string },
  n: ResolvedName,
  method: RefreshMethod,
): Promise<void> {
  const [rows] = (await trx.raw('SELECT mlog_id FROM mvs_mlogs WHERE mlog_id = ? LOCK IN SHARE MODE', [mlog.mlog_id])) as [unknown[]];
  if (rows.length === 0) {
    if (method === 'FAST') {
      throw new ConflictError(`cannot make ${displayName(n)} REFRESH FAST: the materialized view log on ${mlog.table_schema}.${mlog.base_table_name} was just dropped`);
    }
    return;
  }
  const key = { mview_id: mviewId, base_table_schema: mlog.table_schema, base_table_name: mlog.base_table_name };
  const updated = await trx('mvs_mview_base_tables').where(key).update({ mlog_id: mlog.mlog_id, consumed_watermark: 0 });
  if (!updated) await trx('mvs_mview_base_tables').insert({ ...key, mlog_id: mlog.mlog_id, consumed_watermark: 0 });
}

/** Release an MV's hold on its log (it no longer refreshes from it). */
export async function unlinkFromLog(trx: Knex.Transaction, mviewId: number, reason: string | null): Promise<void> {
  await trx('mvs_mview_base_tables').where({ mview_id: mviewId }).whereNotNull('mlog_id').update({ mlog_id: null, consumed_watermark: 0 });
  await trx('mvs_mviews').where({ mview_id: mviewId }).update({ fast_refreshable: false, fast_reason: reason });
}
