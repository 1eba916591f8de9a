import type { Knex } from 'knex';
import { getPurgeInfo, listMlogs, mlogConsumers } from './repository.js';

export interface MlogStatus {
  mlogId: number;
  /** Display names `schema.table` of the base table and of the log table; also apart. */
  table: string;
  log: string;
  schema: string;
  tableName: string;
  /** TRIGGERS (or BINLOG). */
  capture: string;
  /** OK, or BROKEN: the log cannot have captured every change (brokenReason says why). */
  state: string;
  brokenReason: string | null;
  columns: string[];
  primaryKey: string[];
  purgeMethod: string;
  purgeStart: string | null;
  purgeIntervalS: number | null;
  nextPurgeTime: string | null;
  lastPurgeResult: string | null;
  lastPurgeTime: string | null;
  lastPurgeRows: number;
  purgeWatermark: number;
  lastFailedReason: string | null;
  /** MVs that refresh from this log, and how far each has consumed it. */
  consumers: Array<{ mview: string; refreshMethod: string; consumedWatermark: number }>;
}

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

export async function listMlogStatus(db: Knex): Promise<MlogStatus[]> {
  const out: MlogStatus[] = [];
  for (const m of await listMlogs(db)) {
    const info = await getPurgeInfo(db, m.mlog_id);
    const consumers = await mlogConsumers(db, m.mlog_id);
    out.push({
      mlogId: m.mlog_id,
      table: `${m.table_schema}.${m.base_table_name}`,
      log: `${m.table_schema}.${m.mlog_name}`,
      schema: m.table_schema,
      tableName: m.base_table_name,
      capture: m.capture_mode ?? 'TRIGGERS',
      state: m.state ?? 'OK',
      brokenReason: m.broken_reason ?? null,
      columns: m.columns,
      primaryKey: m.pkColumns,
      purgeMethod: m.purge_method,
      purgeStart: iso(m.purge_start),
      purgeIntervalS: m.purge_interval,
      nextPurgeTime: iso(info?.next_time),
      lastPurgeResult: info?.last_purge_result ?? null,
      lastPurgeTime: iso(info?.purge_endtime),
      lastPurgeRows: info?.purge_rows ?? 0,
      purgeWatermark: info?.purge_watermark ?? 0,
      lastFailedReason: info?.last_failed_reason ?? null,
      consumers: consumers.map((c) => ({
        mview: `${c.table_schema}.${c.mview_name}`,
        refreshMethod: c.refresh_method,
        consumedWatermark: c.consumed_watermark,
      })),
    });
  }
  return out;
}
