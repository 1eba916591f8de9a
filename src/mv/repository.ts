import type { Knex } from 'knex';

// Reads and writes of the MV metadata tables. Functions take the knex instance or a
// transaction, so callers decide the transaction boundaries.

export type Executor = Knex | Knex.Transaction;

export type RefreshMethod = 'FAST' | 'COMPLETE' | 'FORCE';
export type MviewStatus = 'ACTIVE' | 'SUSPENDED';
/**
 * SYSTEM: a run mvsched forces (a log re-created, a base table truncated or rebuilt). UPSTREAM:
 * a run made for a downstream MV (its target lag's wave, or a REFRESH ... CASCADE).
 */
export type RefreshTrigger = 'SCHEDULED' | 'MANUAL' | 'REQUEST' | 'SYSTEM' | 'UPSTREAM';
export type RefreshResult = 'SUCCESS' | 'FAILED' | 'SKIPPED';

export interface MviewRow {
  mview_id: number;
  table_schema: string;
  mview_name: string;
  mview_definition: string;
  refresh_method: RefreshMethod;
  /** Grid anchor: START WITH, or creation time + NEXT when START WITH was absent. */
  refresh_start: Date | null;
  refresh_interval: number | null;
  status: MviewStatus;
  fast_refreshable: number | boolean;
  fast_reason: string | null;
  meta_version: number;
  created_at: Date;
  mview_modify_time: Date;
  /** TARGET LAG n, in seconds (null: none). */
  target_lag?: number | null;
  /** TARGET LAG DOWNSTREAM. */
  target_downstream?: number | boolean;
}

export interface RefreshInfoRow {
  mview_id: number;
  refresh_job_id: string | null;
  refresh_method: string | null;
  refresh_status: string | null;
  refresh_time: Date | null;
  refresh_endtime: Date | null;
  last_refresh_result: RefreshResult | null;
  last_refresh_type: string | null;
  last_refresh_trigger: RefreshTrigger | null;
  last_success_endtime: Date | null;
  last_failed_reason: string | null;
  consecutive_failures: number;
  refresh_count: number;
  next_time: Date | null;
  updated_at: Date;
  /** Consecutive consistent cuts that gave up waiting for writers. */
  cut_timeouts?: number;
  /** A FORCE MV refreshes COMPLETE without a cut until then. */
  cut_retry_after?: Date | null;
}

export interface RefreshHistRow {
  refresh_id: number;
  mview_id: number;
  refresh_job_id: string | null;
  refresh_method: string;
  refresh_trigger: RefreshTrigger;
  refresh_status: 'RUNNING' | RefreshResult;
  node_id: string | null;
  scheduled_time: Date | null;
  start_time: Date;
  end_time: Date | null;
  rows_changed: number | null;
  failed_reason: string | null;
}

export function toNumber(v: unknown): number {
  return typeof v === 'number' ? v : Number(v);
}

function normalizeMview(r: MviewRow | undefined): MviewRow | undefined {
  if (!r) return undefined;
  return { ...r, mview_id: toNumber(r.mview_id), meta_version: toNumber(r.meta_version) };
}

export async function findMviewByName(db: Executor, schema: string, name: string): Promise<MviewRow | undefined> {
  return normalizeMview(await db<MviewRow>('mvs_mviews').where({ table_schema: schema, mview_name: name }).first());
}

export async function getMview(db: Executor, mviewId: number): Promise<MviewRow | undefined> {
  return normalizeMview(await db<MviewRow>('mvs_mviews').where({ mview_id: mviewId }).first());
}

export async function getRefreshInfo(db: Executor, mviewId: number): Promise<RefreshInfoRow | undefined> {
  return db<RefreshInfoRow>('mvs_mview_refresh_info').where({ mview_id: mviewId }).first();
}

/** Base tables an MV reads, as recorded at CREATE time. */
export async function listBaseTables(db: Executor, mviewId: number): Promise<Array<{ schema: string; name: string }>> {
  const rows = await db('mvs_mview_base_tables')
    .where({ mview_id: mviewId })
    .select({ schema: 'base_table_schema', name: 'base_table_name' })
    .orderBy(['base_table_schema', 'base_table_name']);
  return rows as Array<{ schema: string; name: string }>;
}

export async function recentHistory(db: Executor, mviewId: number, limit = 10): Promise<RefreshHistRow[]> {
  const rows = await db<RefreshHistRow>('mvs_mview_refresh_hist')
    .where({ mview_id: mviewId })
    .orderBy('refresh_id', 'desc')
    .limit(limit);
  return rows.map((r) => ({ ...r, refresh_id: toNumber(r.refresh_id), mview_id: toNumber(r.mview_id) }));
}

/** Does a table or view with this name exist in the database? */
export async function tableExists(db: Executor, schema: string, name: string): Promise<boolean> {
  const row = await db('information_schema.tables')
    .where({ table_schema: schema, table_name: name })
    .first('table_name');
  return row !== undefined;
}
