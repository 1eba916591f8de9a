import type { Knex } from 'knex';
import { errorMessage } from '../errors.js';
import { quoteIdent } from '../mv/identifiers.js';
import type { RefreshTrigger } from '../mv/repository.js';
import type { ConcreteMethod, RefreshRequest, RunResult } from './types.js';

// The refresh's record: a RUNNING history row committed when a run starts (visible while it
// goes on), then the outcome written to history and refresh-info in the lock transaction, so
// the two always agree.

const MAX_REASON = 4_000;

/** The server's own words (knex prefixes its message with the whole statement), bounded. */
export function failureReason(err: unknown): string {
  return ((err as { sqlMessage?: string }).sqlMessage ?? errorMessage(err)).slice(0, MAX_REASON);
}

/**
 * A RUNNING row left by a worker that died is FAILED now: while we hold the MV's lock no other
 * run can be live. Found with a plain read and updated by primary key: an UPDATE ... WHERE
 * status = 'RUNNING' would lock index ranges shared with other MVs' runs and deadlock with them.
 */
export async function markAbandoned(db: Knex, mviewId: number, nowMs: number): Promise<void> {
  const abandoned = await db('mvs_mview_refresh_hist').where({ mview_id: mviewId, refresh_status: 'RUNNING' }).pluck('refresh_id');
  if (!abandoned.length) return;
  await db('mvs_mview_refresh_hist')
    .whereIn('refresh_id', abandoned)
    .update({
      refresh_status: 'FAILED',
      end_time: new Date(nowMs),
      failed_reason: 'abandoned: the run stopped before finishing (worker died or lost its connection)',
    });
}

/** Commit the RUNNING row of a run that starts now; returns its refresh id. */
export async function insertRunning(
  db: Knex,
  req: RefreshRequest,
  method: ConcreteMethod,
  nodeId: string,
  startMs: number,
): Promise<number> {
  const [refreshId] = (await db('mvs_mview_refresh_hist').insert({
    mview_id: req.mviewId,
    refresh_job_id: req.jobId ?? null,
    refresh_method: method,
    refresh_trigger: req.trigger,
    refresh_status: 'RUNNING',
    node_id: nodeId,
    scheduled_time: req.scheduledFor !== undefined ? new Date(req.scheduledFor) : null,
    start_time: new Date(startMs),
  })) as number[];
  return Number(refreshId);
}

export interface RunEnd {
  refreshId: number;
  req: RefreshRequest;
  method: ConcreteMethod;
  startMs: number;
  endMs: number;
  newNext: number | null;
}

function infoCommon(lock: Knex.Transaction, e: RunEnd) {
  return {
    refresh_job_id: e.req.jobId ?? null,
    refresh_method: e.method,
    refresh_status: null,
    refresh_time: new Date(e.startMs),
    refresh_endtime: new Date(e.endMs),
    last_refresh_type: e.method,
    last_refresh_trigger: e.req.trigger,
    next_time: e.newNext === null ? null : new Date(e.newNext),
    updated_at: lock.fn.now(6),
  };
}

/**
 * The run's history row and refresh-info in one statement (a multi-table UPDATE: one round trip
 * at the end of every run). `extra`: more refresh-info columns, plain values.
 */
export async function recordSuccess(lock: Knex.Transaction, e: RunEnd, r: RunResult, extra: Record<string, unknown> = {}): Promise<void> {
  const hist = { refresh_method: e.method, refresh_status: 'SUCCESS', end_time: new Date(e.endMs), ...resultColumns(r) };
  const { updated_at: _now, ...common } = infoCommon(lock, e);
  const info = { ...common, ...successColumns(e, r), ...extra };
  const set = (alias: string, cols: Record<string, unknown>) => Object.keys(cols).map((c) => `${alias}.${quoteIdent(c)} = ?`);
  const [res] = (await lock.raw(
    'UPDATE mvs_mview_refresh_hist AS h, mvs_mview_refresh_info AS i SET ' +
      [...set('h', hist), ...set('i', info), 'i.refresh_count = i.refresh_count + 1', 'i.updated_at = NOW(6)'].join(', ') +
      ' WHERE h.refresh_id = ? AND i.mview_id = ?',
    [...Object.values(hist), ...Object.values(info), e.refreshId, e.req.mviewId] as never,
  )) as [{ affectedRows: number }];
  // Both rows exist while the run holds the MV's lock; anything else is a bug worth a failure.
  if (res.affectedRows !== 2) throw new Error(`recording refresh ${e.refreshId} of MV ${e.req.mviewId}: ${res.affectedRows} rows updated, expected 2`);
}

/**
 * A run short enough to need no RUNNING row (a FAST run with nothing to apply): its SUCCESS row
 * and refresh-info written at once in the lock transaction. Returns its refresh id.
 */
export async function recordQuickSuccess(lock: Knex.Transaction, e: Omit<RunEnd, 'refreshId'>, nodeId: string, r: RunResult): Promise<number> {
  const [refreshId] = (await lock('mvs_mview_refresh_hist').insert({
    mview_id: e.req.mviewId,
    refresh_job_id: e.req.jobId ?? null,
    refresh_method: e.method,
    refresh_trigger: e.req.trigger satisfies RefreshTrigger,
    refresh_status: 'SUCCESS',
    node_id: nodeId,
    scheduled_time: e.req.scheduledFor !== undefined ? new Date(e.req.scheduledFor) : null,
    start_time: new Date(e.startMs),
    end_time: new Date(e.endMs),
    ...resultColumns(r),
  })) as number[];
  await successInfo(lock, { ...e, refreshId: Number(refreshId) }, r, {});
  return Number(refreshId);
}

function resultColumns(r: RunResult) {
  return {
    rows_changed: r.rows,
    rows_inserted: r.inserted,
    rows_deleted: r.deleted,
    data_time: r.dataTime,
    watermark_from: r.watermarkFrom ?? null,
    watermark_to: r.watermarkTo ?? null,
  };
}

function successColumns(e: RunEnd, r: RunResult) {
  return {
    last_refresh_result: 'SUCCESS',
    last_success_endtime: new Date(e.endMs),
    last_failed_reason: null,
    consecutive_failures: 0,
    ...(r.dataTime ? { data_time: r.dataTime } : {}),
  };
}

async function successInfo(lock: Knex.Transaction, e: RunEnd, r: RunResult, extra: Record<string, unknown>): Promise<void> {
  await lock('mvs_mview_refresh_info')
    .where({ mview_id: e.req.mviewId })
    .update({ ...infoCommon(lock, e), ...successColumns(e, r), refresh_count: lock.raw('refresh_count + 1'), ...extra });
}

export async function recordFailure(
  lock: Knex.Transaction,
  e: RunEnd,
  reason: string,
  failures: number,
  extra: Record<string, unknown> = {},
): Promise<void> {
  await lock('mvs_mview_refresh_hist')
    .where({ refresh_id: e.refreshId })
    .update({ refresh_method: e.method, refresh_status: 'FAILED', end_time: new Date(e.endMs), failed_reason: reason });
  await lock('mvs_mview_refresh_info')
    .where({ mview_id: e.req.mviewId })
    .update({
      ...infoCommon(lock, e),
      last_refresh_result: 'FAILED',
      last_failed_reason: reason,
      consecutive_failures: failures,
      ...extra,
    });
}

/**
 * A SKIPPED run: history row (with why) and refresh-info in the lock transaction; its data time
 * is the check's, on the database's clock (nothing changed up to now). Returns its refresh id.
 */
export async function recordSkip(
  lock: Knex.Transaction,
  req: RefreshRequest,
  nodeId: string,
  nowMs: number,
  next: number | null,
  reason: string,
): Promise<number> {
  const [now] = (await lock.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>];
  const dataTime = now[0]!.t;
  const [refreshId] = (await lock('mvs_mview_refresh_hist').insert({
    mview_id: req.mviewId,
    refresh_job_id: req.jobId ?? null,
    refresh_method: 'NONE',
    refresh_trigger: req.trigger satisfies RefreshTrigger,
    refresh_status: 'SKIPPED',
    node_id: nodeId,
    scheduled_time: req.scheduledFor !== undefined ? new Date(req.scheduledFor) : null,
    start_time: new Date(nowMs),
    end_time: new Date(nowMs),
    rows_changed: 0,
    rows_inserted: 0,
    rows_deleted: 0,
    data_time: dataTime,
    failed_reason: reason,
  })) as number[];
  await lock('mvs_mview_refresh_info')
    .where({ mview_id: req.mviewId })
    .update({
      last_refresh_result: 'SKIPPED',
      last_refresh_trigger: req.trigger,
      data_time: dataTime,
      next_time: next === null ? null : new Date(next),
      updated_at: lock.fn.now(6),
    });
  return Number(refreshId);
}
