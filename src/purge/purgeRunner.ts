import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { isLockNotGranted } from '../db/errors.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { quoteIdent } from '../mv/identifiers.js';
import { toNumber } from '../mv/repository.js';
import { SEQ_COLUMN } from '../mlog/names.js';
import { getMlog, mlogConsumers, type PurgeInfoRow, type PurgeTrigger } from '../mlog/repository.js';
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
  | { kind: 'SUCCESS'; purgeId: number; rows: number; watermark: number; nextTime: number | null; durationMs: number }
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
    const { db, clock, nodeId } = this.deps;
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
      const logT = `${quoteIdent(mlog.table_schema)}.${quoteIdent(mlog.mlog_name)}`;
      const seq = quoteIdent(SEQ_COLUMN);

      const abandoned = await db('mvs_mlog_purge_hist').where({ mlog_id: req.mlogId, purge_status: 'RUNNING' }).pluck('purge_id');
      const startMs = clock.now();
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
        node_id: nodeId,
        start_time: new Date(startMs),
      })) as number[];

      let rows = 0;
      let watermark = 0;
      let failure: unknown;
      try {
        if (mlog.state === 'BROKEN') {
          throw new Error(`the materialized view log on ${mlog.table_schema}.${mlog.base_table_name} is broken (${mlog.broken_reason ?? 'unknown'}); nothing to purge until it is re-created`);
        }
        // Consumers only ever move forward, and a new consumer is linked (at watermark 0) before
        // its first cut, so a watermark read now stays safe for the whole purge.
        const consumers = await mlogConsumers(db, req.mlogId);
        if (consumers.length) {
          watermark = Math.min(...consumers.map((c) => c.consumed_watermark));
        } else {
          const [r] = (await db.raw(`SELECT COALESCE(MAX(${seq}), 0) AS h FROM ${logT}`)) as [Array<{ h: number | string }>];
          watermark = toNumber(r[0]!.h);
        }
        log.info({ purge_id: purgeId, watermark, consumers: consumers.length }, 'purge started');
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
            log.info({ purge_id: purgeId, rows }, 'purge in progress');
          }
        }
      } catch (err) {
        failure = err;
      }
      const endMs = clock.now();
      const anchor = mlog.purge_start ? mlog.purge_start.getTime() : null;
      if (failure === undefined) {
        const newNext =
          mlog.purge_method === 'SCHEDULED' && req.trigger === 'SCHEDULED' && anchor !== null
            ? nextExecTime(anchor, mlog.purge_interval, endMs)
            : nextTime;
        await lock('mvs_mlog_purge_hist')
          .where({ purge_id: purgeId })
          .update({ purge_status: 'SUCCESS', end_time: new Date(endMs), purge_rows: rows, purge_watermark: watermark });
        await lock('mvs_mlog_purge_info')
          .where({ mlog_id: req.mlogId })
          .update({
            purge_job_id: req.jobId ?? null,
            purge_method: req.trigger,
            purge_status: null,
            purge_time: new Date(startMs),
            purge_endtime: new Date(endMs),
            purge_rows: rows,
            purge_watermark: watermark,
            purge_duration_ms: endMs - startMs,
            last_purge_result: 'SUCCESS',
            last_failed_reason: null,
            consecutive_failures: 0,
            next_time: newNext === null ? null : new Date(newNext),
            updated_at: lock.fn.now(6),
          });
        await lock.commit();
        done = true;
        log.info({ purge_id: purgeId, rows, watermark, duration_ms: endMs - startMs, next_time: newNext }, 'purge succeeded');
        return { kind: 'SUCCESS', purgeId: toNumber(purgeId), rows, watermark, nextTime: newNext, durationMs: endMs - startMs };
      }
      const reason = ((failure as { sqlMessage?: string }).sqlMessage ?? errorMessage(failure)).slice(0, 4000);
      const failures = toNumber(info.consecutive_failures) + 1;
      const newNext = req.trigger === 'SCHEDULED' ? endMs + retryDelayMs(failures) : nextTime;
      await lock('mvs_mlog_purge_hist')
        .where({ purge_id: purgeId })
        .update({ purge_status: 'FAILED', end_time: new Date(endMs), purge_rows: rows, failed_reason: reason });
      await lock('mvs_mlog_purge_info')
        .where({ mlog_id: req.mlogId })
        .update({
          purge_status: null,
          last_purge_result: 'FAILED',
          last_failed_reason: reason,
          consecutive_failures: failures,
          next_time: newNext === null ? null : new Date(newNext),
          updated_at: lock.fn.now(6),
        });
      await lock.commit();
      done = true;
      log.warn({ purge_id: purgeId, err: reason, failures }, 'purge failed');
      return { kind: 'FAILED', purgeId: toNumber(purgeId), error: reason, nextTime: newNext, failures };
    } finally {
      if (!done && !lock.isCompleted()) await lock.rollback().catch(() => {});
    }
  }
}
