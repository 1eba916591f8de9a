import type { Knex } from 'knex';
import { toNumber } from '../mv/repository.js';
import { backlogRows, logHighWaterMarks } from './backlog.js';
import { listMlogs, type PurgeInfoRow } from './repository.js';

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
  /** Rows the log holds not purged yet (from sequence numbers; src/mlog/backlog.ts); null if unreadable. */
  backlogRows: number | null;
  /** MVs that refresh from this log, and how far each has consumed it. */
  consumers: Array<{ mview: string; refreshMethod: string; consumedWatermark: number }>;
}

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

/** Purge info and consumers of every log, by log id: one query each. */
async function perLog(db: Knex) {
  const infos = (await db('mvs_mlog_purge_info')) as PurgeInfoRow[];
  const consumers = (await db('mvs_mview_base_tables as b')
    .join('mvs_mviews as m', 'm.mview_id', 'b.mview_id')
    .whereNotNull('b.mlog_id')
    .select('b.mlog_id', 'm.table_schema', 'm.mview_name', 'm.refresh_method', 'b.consumed_watermark')
    .orderBy(['b.mlog_id', 'm.mview_id'])) as Array<Record<string, unknown>>;
  const byLog = new Map<number, MlogStatus['consumers']>();
  for (const c of consumers) {
    const id = toNumber(c.mlog_id as number);
    const list = byLog.get(id) ?? byLog.set(id, []).get(id)!;
    list.push({
      mview: `${String(c.table_schema)}.${String(c.mview_name)}`,
      refreshMethod: String(c.refresh_method),
      consumedWatermark: toNumber(c.consumed_watermark as number),
    });
  }
  return { infos: new Map(infos.map((i) => [toNumber(i.mlog_id), i])), consumers: byLog };
}

/** Every MV log with its purge state and backlog, in a few queries whatever their number. */
export async function listMlogStatus(db: Knex): Promise<MlogStatus[]> {
  const logs = await listMlogs(db);
  if (logs.length === 0) return [];
  const [{ infos, consumers }, high] = await Promise.all([
    perLog(db),
    logHighWaterMarks(db, logs.map((m) => ({ mlogId: m.mlog_id, schema: m.table_schema, table: m.mlog_name }))),
  ]);
  return logs.map((m) => {
    const info = infos.get(m.mlog_id);
    const purgeWatermark = toNumber(info?.purge_watermark ?? 0);
    return {
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
      lastPurgeRows: toNumber(info?.purge_rows ?? 0),
      purgeWatermark,
      lastFailedReason: info?.last_failed_reason ?? null,
      backlogRows: backlogRows(high.get(m.mlog_id), purgeWatermark),
      consumers: consumers.get(m.mlog_id) ?? [],
    };
  });
}
