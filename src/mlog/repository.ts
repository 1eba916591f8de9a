import type { Executor } from '../mv/repository.js';
import { toNumber } from '../mv/repository.js';

export type PurgeMethod = 'IMMEDIATE' | 'SCHEDULED' | 'MANUAL';
export type PurgeTrigger = 'SCHEDULED' | 'IMMEDIATE' | 'MANUAL' | 'REQUEST';

export interface MlogRow {
  mlog_id: number;
  table_schema: string;
  base_table_name: string;
  mlog_name: string;
  /** Tracked columns (JSON text in the table; parsed here). */
  columns: string[];
  pkColumns: string[];
  purge_method: PurgeMethod;
  purge_start: Date | null;
  purge_interval: number | null;
  created_at: Date;
  mlog_modify_time: Date;
  /** TRIGGERS, or BINLOG: filled by `mvsched capture` from the binary log. */
  capture_mode?: 'TRIGGERS' | 'BINLOG';
  /** OK, or BROKEN: the log cannot have captured every change of its table (broken_reason says why). */
  state?: 'OK' | 'BROKEN' | 'CREATING';
  broken_reason?: string | null;
  /** Identity token of the base table as the log last saw it (mlog/identity.ts). */
  base_table_id?: number | null;
}

export interface PurgeInfoRow {
  mlog_id: number;
  purge_job_id: string | null;
  purge_method: string | null;
  purge_status: string | null;
  purge_time: Date | null;
  purge_endtime: Date | null;
  purge_rows: number;
  purge_watermark: number;
  purge_duration_ms: number | null;
  last_purge_result: string | null;
  last_failed_reason: string | null;
  consecutive_failures: number;
  next_time: Date | null;
  updated_at: Date;
}

type RawMlog = Omit<MlogRow, 'columns' | 'pkColumns'> & { mlog_columns: string; pk_columns: string };

function normalize(r: RawMlog | undefined): MlogRow | undefined {
  if (!r) return undefined;
  const { mlog_columns, pk_columns, ...rest } = r;
  return {
    ...rest,
    mlog_id: toNumber(r.mlog_id),
    columns: JSON.parse(mlog_columns) as string[],
    pkColumns: JSON.parse(pk_columns) as string[],
  };
}

export async function findMlogByTable(db: Executor, schema: string, table: string): Promise<MlogRow | undefined> {
  return normalize(await db<RawMlog>('mvs_mlogs').where({ table_schema: schema, base_table_name: table }).first());
}

export async function getMlog(db: Executor, mlogId: number): Promise<MlogRow | undefined> {
  return normalize(await db<RawMlog>('mvs_mlogs').where({ mlog_id: mlogId }).first());
}

export async function listMlogs(db: Executor): Promise<MlogRow[]> {
  const rows = await db<RawMlog>('mvs_mlogs').orderBy(['table_schema', 'base_table_name']);
  return rows.map((r) => normalize(r)!);
}

export async function getPurgeInfo(db: Executor, mlogId: number): Promise<PurgeInfoRow | undefined> {
  const r = await db<PurgeInfoRow>('mvs_mlog_purge_info').where({ mlog_id: mlogId }).first();
  return r ? { ...r, purge_rows: toNumber(r.purge_rows), purge_watermark: toNumber(r.purge_watermark) } : undefined;
}

/** Every log column: the base table's primary key, then the tracked columns not in it. */
export function logColumns(m: Pick<MlogRow, 'columns' | 'pkColumns'>): string[] {
  const pk = new Set(m.pkColumns.map((c) => c.toLowerCase()));
  return [...m.pkColumns, ...m.columns.filter((c) => !pk.has(c.toLowerCase()))];
}

export interface MlogConsumer {
  mview_id: number;
  table_schema: string;
  mview_name: string;
  refresh_method: string;
  consumed_watermark: number;
}

/** MVs that consume a log (FAST, or FORCE while fast-refreshable), with their watermarks. */
export async function mlogConsumers(db: Executor, mlogId: number): Promise<MlogConsumer[]> {
  const rows = await db('mvs_mview_base_tables as b')
    .join('mvs_mviews as m', 'm.mview_id', 'b.mview_id')
    .where('b.mlog_id', mlogId)
    .select('m.mview_id', 'm.table_schema', 'm.mview_name', 'm.refresh_method', 'b.consumed_watermark')
    .orderBy('m.mview_id');
  return (rows as MlogConsumer[]).map((r) => ({
    ...r,
    mview_id: toNumber(r.mview_id),
    consumed_watermark: toNumber(r.consumed_watermark),
  }));
}
