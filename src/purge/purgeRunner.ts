import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { isLockNotGranted } from '../db/errors.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { quoteIdent } from '../mv/identifiers.js';
import { toNumber } from '../mv/repository.js';
import { SEQ_COLUMN } from '../mlog/names.js';
import { getMlog, mlogConsumers, type MlogRow, type PurgeInfoRow, type PurgeTrigger } from '../mlog/repository.js';
import { nextExecTime, retryDelayMs } from '../schedule/nextTime.js';
import { DUE_TOLERANCE_MS } from '../refresh/types.js';
import type { RunObserver } from '../metrics/runMetrics.js';

export interface PurgeRequest {
  mlogId: number;
  trigger: PurgeTrigger;
  jobId?: string;
  scheduledFor?: number;
}

export type PurgeOutcome =
  /** purgeId is null for a PURGE IMMEDIATE that removed nothing (counted, not written to history). */
  | { kind: 'SUCCESS'; purgeId: number | null; rows: number; watermark: number; nextTime: number | null; durationMs: number }
  | { kind: 'FAILED'; purgeId: number; error: string; nextTime: number | null; failures: number }
  | { kind: 'DEFERRED' }
  | { kind: 'GONE' }
  | { kind: 'NOT_DUE'; nextTime: number | null };

export interface PurgeRunnerDeps {
  db: Knex;
  logger: Logger;
  clock: Clock;
  nodeId: string;
  /** Rows per DELETE (MVS_PURGE_BATCH): each batch is its own short transaction. */
  batchSize: number;
  /** Told every outcome (metrics). */
  observer?: Pick<RunObserver, 'purged'>;
}

/**
 * Purges one MV log up to its safe watermark: the lowest watermark consumed by the MVs that read
 * the log (an MV that has not been built yet holds it at 0); with no such MV, everything in the
 * log now. Runs under the log's lock (FOR UPDATE NOWAIT on its purge-info row, like refreshes),
 * deletes in batches so a writer never waits on more than one batch, and records history.
 */
export class PurgeRunner {
  constructor(private readonly deps: PurgeRunnerDeps) {}

  async run(req: PurgeRequest): Promise<PurgeOutcome> {
    const outcome = await this.runOnce(req);
    this.deps.observer?.purged(req, outcome);
    return outcome;
  }

  private async runOnce(req: PurgeRequest): Promise<PurgeOutcome> {
    const { db, clock } = this.deps;
    const log = this.deps.logger.child({ mlog_id: req.mlogId, job_id: req.jobId, trigger: req.trigger });
    const lock = await db.transaction({ isolationLevel: 'read committed' });
    let done = false;
    try {
      let info: PurgeInfoRow | undefined;
      try {
        const [rows] = (await lock.raw('SELECT * FROM mvs_mlog_purge_info WHERE mlog_id = ? FOR UPDATE NOWAIT', [req.mlogId])) as [PurgeInfoRow[]];
        info = rows[0];
      } catch (err) {
        if (isLockNotGranted(err)) return { kind: 'DEFERRED' };
        throw err;
      }
      const mlog = await getMlog(lock, req.mlogId);
      if (!mlog || !info) return { kind: 'GONE' };
      const nextTime = info.next_time ? info.next_time.getTime() : null;
      if (req.trigger === 'SCHEDULED') {
        if (mlog.purge_method !== 'SCHEDULED' || nextTime === null || nextTime > clock.now() + DUE_TOLERANCE_MS) {
          return { kind: 'NOT_DUE', nextTime: mlog.purge_method === 'SCHEDULED' ? nextTime : null };
        }
      }
      const startMs = clock.now();
      // A PURGE IMMEDIATE follows every refresh of a consumer and usually finds nothing: it gets a
      // history row only when it removes something (or fails); otherwise it is counted.
      const quiet = req.trigger === 'IMMEDIATE';
      let purgeId = quiet ? null : await this.startHistory(req, startMs);
      let result = { rows: 0, watermark: 0 };
      let failure: unknown;
      try {
        result = await this.purgeRows(mlog, (rows) => log.info({ purge_id: purgeId, rows }, 'purge in progress'));
      } catch (err) {
        failure = err;
      }
      const { rows, watermark } = result;
      const endMs = clock.now();
      if (failure === undefined) {
        const anchor = mlog.purge_start ? mlog.purge_start.getTime() : null;
        const newNext =
          mlog.purge_method === 'SCHEDULED' && req.trigger === 'SCHEDULED' && anchor !== null ? nextExecTime(anchor, mlog.purge_interval, endMs) : nextTime;
        if (quiet && rows === 0) {
          await lock('mvs_mlog_purge_info').where({ mlog_id: req.mlogId }).increment('empty_immediate_purges', 1);
        } else {
          purgeId ??= await this.startHistory(req, startMs);
          await recordPurgeSuccess(lock, req, { purgeId, startMs, endMs, rows, watermark, newNext });
        }
        await lock.commit();
        done = true;
        log.info({ purge_id: purgeId, rows, watermark, duration_ms: endMs - startMs, next_time: newNext }, 'purge succeeded');
        return { kind: 'SUCCESS', purgeId, rows, watermark, nextTime: newNext, durationMs: endMs - startMs };
      }
      const reason = ((failure as { sqlMessage?: string }).sqlMessage ?? errorMessage(failure)).slice(0, 4000);
      const failures = toNumber(info.consecutive_failures) + 1;
      const newNext = req.trigger === 'SCHEDULED' ? endMs + retryDelayMs(failures) : nextTime;
      purgeId ??= await this.startHistory(req, startMs);
      await recordPurgeFailure(lock, req, { purgeId, endMs, rows, reason, failures, newNext });
      await lock.commit();
      done = true;
      log.warn({ purge_id: purgeId, err: reason, failures }, 'purge failed');
      return { kind: 'FAILED', purgeId, error: reason, nextTime: newNext, failures };
    } finally {
      if (!done && !lock.isCompleted()) await lock.rollback().catch(() => {});
    }
  }

  /** A RUNNING history row (an earlier one left by a dead run is marked abandoned first). */
  private async startHistory(req: PurgeRequest, startMs: number): Promise<number> {
    const { db } = this.deps;
    const abandoned = await db('mvs_mlog_purge_hist').where({ mlog_id: req.mlogId, purge_status: 'RUNNING' }).pluck('purge_id');
    if (abandoned.length) {
      await db('mvs_mlog_purge_hist')
        .whereIn('purge_id', abandoned)
        .update({ purge_status: 'FAILED', end_time: new Date(startMs), failed_reason: 'abandoned: the purge stopped before finishing' });
    }
    const [purgeId] = (await db('mvs_mlog_purge_hist').insert({
      mlog_id: req.mlogId,
      purge_job_id: req.jobId ?? null,
      purge_trigger: req.trigger,
      purge_status: 'RUNNING',
      node_id: this.deps.nodeId,
      start_time: new Date(startMs),
    })) as number[];
    return toNumber(purgeId);
  }

  /** Delete the log rows every consumer consumed, in batches; returns how many, and up to where. */
  private async purgeRows(mlog: MlogRow, progress: (rows: number) => void): Promise<{ rows: number; watermark: number }> {
    const { db, clock } = this.deps;
    if (mlog.state && mlog.state !== 'OK') {
      throw new Error(`the materialized view log on ${mlog.table_schema}.${mlog.base_table_name} is broken (${mlog.broken_reason ?? 'unknown'}); nothing to purge until it is re-created`);
    }
    const logT = `${quoteIdent(mlog.table_schema)}.${quoteIdent(mlog.mlog_name)}`;
    const seq = quoteIdent(SEQ_COLUMN);
    // Consumers only ever move forward, and a new consumer is linked (at watermark 0) before
    // its first cut, so a watermark read now stays safe for the whole purge.
    const consumers = await mlogConsumers(db, mlog.mlog_id);
    let watermark: number;
    if (consumers.length) watermark = Math.min(...consumers.map((c) => c.consumed_watermark));
    else {
      const [r] = (await db.raw(`SELECT COALESCE(MAX(${seq}), 0) AS h FROM ${logT}`)) as [Array<{ h: number | string }>];
      watermark = toNumber(r[0]!.h);
    }
    let rows = 0;
    let lastReport = clock.now();
    for (;;) {
      // READ COMMITTED: under REPEATABLE READ the last batch would also lock the gap after the
      // watermark, and writers' log inserts would wait for it.
      const [res] = (await db.transaction(
        (trx) => trx.raw(`DELETE FROM ${logT} WHERE ${seq} <= ? ORDER BY ${seq} LIMIT ?`, [watermark, this.deps.batchSize]),
        { isolationLevel: 'read committed' },
      )) as [{ affectedRows: number }];
      rows += res.affectedRows;
      if (res.affectedRows < this.deps.batchSize) break;
      if (clock.now() - lastReport > 5_000) {
        lastReport = clock.now();
        progress(rows);
      }
    }
    return { rows, watermark };
  }
}

async function recordPurgeSuccess(
  lock: Knex.Transaction,
  req: PurgeRequest,
  e: { purgeId: number; startMs: number; endMs: number; rows: number; watermark: number; newNext: number | null },
): Promise<void> {
  await lock('mvs_mlog_purge_hist')
    .where({ purge_id: e.purgeId })
    .update({ purge_status: 'SUCCESS', end_time: new Date(e.endMs), purge_rows: e.rows, purge_watermark: e.watermark });
  await lock('mvs_mlog_purge_info')
    .where({ mlog_id: req.mlogId })
    .update({
      purge_job_id: req.jobId ?? null,
      purge_method: req.trigger,
      purge_status: null,
      purge_time: new Date(e.startMs),
      purge_endtime: new Date(e.endMs),
      purge_rows: e.rows,
      purge_watermark: e.watermark,
      purge_duration_ms: e.endMs - e.startMs,
      last_purge_result: 'SUCCESS',
      last_failed_reason: null,
      consecutive_failures: 0,
      next_time: e.newNext === null ? null : new Date(e.newNext),
      updated_at: lock.fn.now(6),
    });
}

async function recordPurgeFailure(
  lock: Knex.Transaction,
  req: PurgeRequest,
  e: { purgeId: number; endMs: number; rows: number; reason: string; failures: number; newNext: number | null },
): Promise<void> {
  await lock('mvs_mlog_purge_hist')
    .where({ purge_id: e.purgeId })
    .update({ purge_status: 'FAILED', end_time: new Date(e.endMs), purge_rows: e.rows, failed_reason: e.reason });
  await lock('mvs_mlog_purge_info')
    .where({ mlog_id: req.mlogId })
    .update({
      purge_status: null,
      last_purge_result: 'FAILED',
      last_failed_reason: e.reason,
      consecutive_failures: e.failures,
      next_time: e.newNext === null ? null : new Date(e.newNext),
      updated_at: lock.fn.now(6),
    });
}
