import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { isLockNotGranted } from '../db/errors.js';
import { ValidationError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import {
  getMview,
  toNumber,
  type MviewRow,
  type RefreshInfoRow,
  type RefreshTrigger,
} from '../mv/repository.js';
import { nextExecTime, retryDelayMs } from '../schedule/nextTime.js';
import { buildComplete, shadowTables, swapIn } from './completeRefresh.js';
import { connectionDatabase } from '../db/connect.js';
import { probeSelect } from '../ddl/evaluate.js';
import { explainFast, type FastSetup } from '../fast/explain.js';
import { allColumns, applyFast, buildSelect, fillFromSnapshot, prepareBuildTable } from '../fast/fastRefresh.js';
import { takeCut } from '../mlog/cut.js';
import type { RunObserver } from '../metrics/runMetrics.js';
import { quoteIdent } from '../mv/identifiers.js';
import { partitionStale } from '../versions/freshness.js';
import { baseTableVersions, readVersionMap, tableKey, upsertVersionEntries } from '../versions/repository.js';
import type { VersionEntry } from '../versions/types.js';

export type ConcreteMethod = 'COMPLETE' | 'FAST';

export interface RefreshRequest {
  mviewId: number;
  trigger: RefreshTrigger;
  jobId?: string;
  /** The slot a scheduled run was planned for (epoch ms); for lateness and history. */
  scheduledFor?: number;
  method?: ConcreteMethod;
  /**
   * When a request was made (epoch ms). A request is already satisfied by a successful run that
   * started after it was made, so a burst of requests collapses into few runs.
   */
  requestedAt?: number;
}

export type RefreshOutcome =
  | { kind: 'SUCCESS'; refreshId: number; rows: number; method: ConcreteMethod; nextTime: number | null; startMs: number; endMs: number }
  | { kind: 'FAILED'; refreshId: number; error: string; method: ConcreteMethod; nextTime: number | null; failures: number }
  /** Every base table is versioned and unchanged since the last refresh: nothing recomputed. */
  | { kind: 'SKIPPED'; refreshId: number; nextTime: number | null }
  /** Another run holds the MV's lock: try again later; nothing was done. */
  | { kind: 'DEFERRED' }
  /** The MV no longer exists. */
  | { kind: 'GONE' }
  | { kind: 'SUSPENDED' }
  /** A scheduled job whose slot moved (ALTER, or a run elsewhere): nothing to do now. */
  | { kind: 'NOT_DUE'; nextTime: number | null }
  /** A request already served by a run that started after it was made. */
  | { kind: 'COALESCED'; lastStartMs: number };

/** How much earlier than next_time a scheduled job may fire and still count as due (clock skew). */
export const DUE_TOLERANCE_MS = 1_000;
const MAX_REASON = 4_000;

export interface RefreshRunnerDeps {
  db: Knex;
  logger: Logger;
  clock: Clock;
  nodeId: string;
  /** Runs an MV log's purge after a refresh that consumed it, when the log says PURGE IMMEDIATE. */
  purgeImmediate?: (mlogId: number) => Promise<void>;
  /** How long a FAST refresh waits for writer transactions in flight to take its cut (s). */
  cutWaitS?: number;
  /** Told every outcome (metrics). */
  observer?: Pick<RunObserver, 'refreshed'>;
}

/** The MV log an MV consumes, and how far it has consumed it. */
export interface MlogLink {
  mlogId: number;
  watermark: number;
  purgeMethod: string;
}

export async function mlogLink(db: Knex | Knex.Transaction, mviewId: number): Promise<MlogLink | undefined> {
  const row = await db('mvs_mview_base_tables as b')
    .join('mvs_mlogs as l', 'l.mlog_id', 'b.mlog_id')
    .where('b.mview_id', mviewId)
    .first('b.mlog_id', 'b.consumed_watermark', 'l.purge_method');
  return row ? { mlogId: toNumber(row.mlog_id), watermark: toNumber(row.consumed_watermark), purgeMethod: String(row.purge_method) } : undefined;
}

function coalescedBy(
  info: Pick<RefreshInfoRow, 'last_refresh_result' | 'refresh_time'> | undefined,
  requestedAt: number,
): RefreshOutcome | undefined {
  if (info?.last_refresh_result === 'SUCCESS' && info.refresh_time && info.refresh_time.getTime() >= requestedAt) {
    return { kind: 'COALESCED', lastStartMs: info.refresh_time.getTime() };
  }
  return undefined;
}

/**
 * Pick the concrete method for a run. An MV linked to a log is fast-refreshable once a complete
 * refresh has recorded its watermark (`fast_refreshable`); until then FAST means that complete
 * refresh (it is the only way to get there).
 */
export function chooseMethod(
  mv: Pick<MviewRow, 'refresh_method' | 'fast_refreshable' | 'fast_reason' | 'table_schema' | 'mview_name'>,
  requested?: ConcreteMethod,
  linked = Boolean(mv.fast_refreshable),
): ConcreteMethod {
  const ready = linked && Boolean(mv.fast_refreshable);
  if (requested === 'FAST' || (!requested && mv.refresh_method === 'FAST')) {
    if (!linked) {
      throw new ValidationError(
        `${mv.table_schema}.${mv.mview_name} cannot be fast-refreshed: ${mv.fast_reason ?? 'no materialized view log'}`,
      );
    }
    return ready ? 'FAST' : 'COMPLETE';
  }
  if (requested === 'COMPLETE') return 'COMPLETE';
  return mv.refresh_method === 'FORCE' && ready ? 'FAST' : 'COMPLETE';
}

/**
 * Runs one refresh of one MV under the MV's lock: `SELECT ... FOR UPDATE NOWAIT` on its
 * refresh-info row, held on a dedicated connection for the whole run. A second attempt finds
 * the lock taken and is DEFERRED (never run concurrently, never failed for it).
 *
 * History: a RUNNING row is committed first (visible while the run goes on), then completed in
 * the lock transaction together with refresh-info, so the two always agree. A RUNNING row left
 * by a worker that died is marked FAILED by the next run that takes the lock: while we hold the
 * lock, no other run can be live.
 */
export class RefreshRunner {
  /**
   * FAST plans by MV, keyed by what they depend on: the definition (changes only with the MV's
   * modify time) and the log (an MV log's columns never change). Saves the analysis and its
   * round trips on every run.
   */
  private readonly setups = new Map<number, { key: string; setup: FastSetup }>();

  constructor(private readonly deps: RefreshRunnerDeps) {}

  async run(req: RefreshRequest): Promise<RefreshOutcome> {
    const outcome = await this.runOnce(req);
    this.deps.observer?.refreshed(req, outcome);
    return outcome;
  }

  private async runOnce(req: RefreshRequest): Promise<RefreshOutcome> {
    const { db, clock, nodeId } = this.deps;
    const log = this.deps.logger.child({ mview_id: req.mviewId, job_id: req.jobId, trigger: req.trigger });
    // A committed success that started after the request was made already answers it: check
    // without the lock first, so a burst of requests does not queue up behind the lock.
    if (req.trigger === 'REQUEST' && req.requestedAt !== undefined) {
      const seen = await db<RefreshInfoRow>('mvs_mview_refresh_info')
        .where({ mview_id: req.mviewId })
        .first('last_refresh_result', 'refresh_time');
      const served = coalescedBy(seen, req.requestedAt);
      if (served) return served;
    }
    // READ COMMITTED: a FAST run reads log rows committed after this transaction began.
    const lock = await db.transaction({ isolationLevel: 'read committed' });
    let committed = false;
    try {
      let info: RefreshInfoRow | undefined;
      try {
        const [rows] = (await lock.raw(
          'SELECT * FROM mvs_mview_refresh_info WHERE mview_id = ? FOR UPDATE NOWAIT',
          [req.mviewId],
        )) as [RefreshInfoRow[]];
        info = rows[0];
      } catch (err) {
        if (isLockNotGranted(err)) {
          log.debug('refresh lock held by another run: deferred');
          return { kind: 'DEFERRED' };
        }
        throw err;
      }
      const mv = await getMview(lock, req.mviewId);
      if (!mv || !info) return { kind: 'GONE' };
      const now = clock.now();
      const nextTime = info.next_time ? info.next_time.getTime() : null;

      if (req.trigger === 'SCHEDULED') {
        if (mv.status === 'SUSPENDED') return { kind: 'SUSPENDED' };
        if (nextTime === null || nextTime > now + DUE_TOLERANCE_MS) return { kind: 'NOT_DUE', nextTime };
      }
      if (req.trigger === 'REQUEST' && req.requestedAt !== undefined) {
        const served = coalescedBy(info, req.requestedAt);
        if (served) return served;
      }

      // Read in the lock transaction's snapshot, before the build: the map then never claims a
      // newer version than the data the build reads.
      const versions = await baseTableVersions(lock, req.mviewId);
      if (req.trigger === 'SCHEDULED' && versions.length > 0 && versions.every((v) => v.partitions.size > 0)) {
        const map = await readVersionMap(lock, req.mviewId);
        const stale = versions.some(({ table, partitions }) =>
          [...partitions.values()].some((p) => partitionStale(p, map.get(tableKey(table))?.get(p.partitionName))),
        );
        if (!stale) return await this.skip(lock, mv, req, now, () => (committed = true), log);
      }

      const link = await mlogLink(lock, req.mviewId);
      const method = chooseMethod(mv, req.method, link !== undefined);
      // Find them with a plain read and update by primary key: an UPDATE ... WHERE status =
      // 'RUNNING' would lock index ranges shared with other MVs' runs and deadlock with them.
      const abandoned = await db('mvs_mview_refresh_hist')
        .where({ mview_id: req.mviewId, refresh_status: 'RUNNING' })
        .pluck('refresh_id');
      if (abandoned.length) {
        await db('mvs_mview_refresh_hist')
          .whereIn('refresh_id', abandoned)
          .update({
            refresh_status: 'FAILED',
            end_time: new Date(now),
            failed_reason: 'abandoned: the run stopped before finishing (worker died or lost its connection)',
          });
      }
      const startMs = clock.now();
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
      log.info({ refresh_id: refreshId, method }, 'refresh started');

      let rows = 0;
      let failure: unknown;
      try {
        if (!link) rows = await buildComplete(db, mv);
        else if (method === 'FAST') rows = await this.fast(lock, mv, link, log);
        else rows = await this.completeLogged(lock, mv, link, log);
      } catch (err) {
        failure = err;
      }
      const endMs = clock.now();
      const anchor = mv.refresh_start ? mv.refresh_start.getTime() : null;
      const common = {
        refresh_job_id: req.jobId ?? null,
        refresh_method: method,
        refresh_status: null,
        refresh_time: new Date(startMs),
        refresh_endtime: new Date(endMs),
        last_refresh_type: method,
        last_refresh_trigger: req.trigger,
        updated_at: lock.fn.now(6),
      };

      if (failure === undefined) {
        // Only scheduled runs move the schedule; manual and requested runs leave next_time.
        const newNext =
          req.trigger === 'SCHEDULED' ? (anchor === null ? null : nextExecTime(anchor, mv.refresh_interval, endMs)) : nextTime;
        await lock('mvs_mview_refresh_hist')
          .where({ refresh_id: refreshId })
          .update({ refresh_status: 'SUCCESS', end_time: new Date(endMs), rows_changed: rows });
        if (versions.some((v) => v.partitions.size > 0)) {
          // The map changes: bump the fence first (same lock order as repairs: mviews, then map),
          // so a repair computed from the old map loses its compare-and-set.
          await lock('mvs_mviews').where({ mview_id: req.mviewId }).increment('meta_version', 1);
          for (const { table, partitions } of versions) {
            const entries = new Map<string, VersionEntry>();
            for (const p of partitions.values()) {
              entries.set(p.partitionName, {
                partitionId: p.partitionId,
                version: p.version,
                lastRefreshTime: p.versionTime,
                extLastFileModifiedTime: -1,
                fileNumber: -1,
              });
            }
            await upsertVersionEntries(lock, req.mviewId, table, entries);
          }
        }
        await lock('mvs_mview_refresh_info')
          .where({ mview_id: req.mviewId })
          .update({
            ...common,
            last_refresh_result: 'SUCCESS',
            last_success_endtime: new Date(endMs),
            last_failed_reason: null,
            consecutive_failures: 0,
            refresh_count: lock.raw('refresh_count + 1'),
            next_time: newNext === null ? null : new Date(newNext),
          });
        await lock.commit();
        committed = true;
        log.info({ refresh_id: refreshId, method, rows, duration_ms: endMs - startMs, next_time: newNext }, 'refresh succeeded');
        if (link && this.deps.purgeImmediate) {
          if (link.purgeMethod === 'IMMEDIATE') {
            await this.deps.purgeImmediate(link.mlogId).catch((err: unknown) =>
              log.warn({ mlog_id: link.mlogId, err: errorMessage(err) }, 'immediate purge after refresh failed; the next one will catch up'),
            );
          }
        }
        return { kind: 'SUCCESS', refreshId: toNumber(refreshId), rows, method, nextTime: newNext, startMs, endMs };
      }

      // The server's own words; knex prefixes its message with the whole statement.
      const reason = ((failure as { sqlMessage?: string }).sqlMessage ?? errorMessage(failure)).slice(0, MAX_REASON);
      const failures = toNumber(info.consecutive_failures) + 1;
      const newNext = req.trigger === 'SCHEDULED' ? endMs + retryDelayMs(failures) : nextTime;
      await lock('mvs_mview_refresh_hist')
        .where({ refresh_id: refreshId })
        .update({ refresh_status: 'FAILED', end_time: new Date(endMs), failed_reason: reason });
      await lock('mvs_mview_refresh_info')
        .where({ mview_id: req.mviewId })
        .update({
          ...common,
          last_refresh_result: 'FAILED',
          last_failed_reason: reason,
          consecutive_failures: failures,
          next_time: newNext === null ? null : new Date(newNext),
        });
      await lock.commit();
      committed = true;
      log.warn({ refresh_id: refreshId, err: reason, failures, next_time: newNext }, 'refresh failed');
      return { kind: 'FAILED', refreshId: toNumber(refreshId), error: reason, method, nextTime: newNext, failures };
    } finally {
      if (!committed && !lock.isCompleted()) await lock.rollback().catch(() => {});
    }
  }

  private async fastSetup(mv: MviewRow, link: MlogLink): Promise<FastSetup> {
    const key = `${mv.mview_modify_time.getTime()}:${link.mlogId}:${mv.mview_definition}`;
    const cached = this.setups.get(mv.mview_id);
    if (cached?.key === key) return cached.setup;
    const probe = await probeSelect(this.deps.db, mv.mview_definition);
    const ex = await explainFast(this.deps.db, mv.mview_definition, connectionDatabase(this.deps.db), probe.columns);
    if (!ex.fast) throw new ValidationError(`${mv.table_schema}.${mv.mview_name} cannot be fast-refreshed: ${ex.reason}`);
    if (ex.setup.mlog.mlog_id !== link.mlogId) {
      throw new ValidationError(`${mv.table_schema}.${mv.mview_name}: its materialized view log changed; refresh it COMPLETE`);
    }
    if (this.setups.size > 10_000) this.setups.clear();
    this.setups.set(mv.mview_id, { key, setup: ex.setup });
    return ex.setup;
  }

  /**
   * FAST: take a consistent cut of the log, apply the rows after the MV's watermark up to it, and
   * move the watermark, in the lock transaction (under a savepoint, so a failure leaves the MV and
   * its watermark as they were and the run is still recorded).
   */
  private async fast(lock: Knex.Transaction, mv: MviewRow, link: MlogLink, log: Logger): Promise<number> {
    const setup = await this.fastSetup(mv, link);
    const cut = await takeCut(this.deps.db, setup.mlog, this.deps.cutWaitS);
    try {
      const to = Math.max(cut.highWater, link.watermark);
      const rows = await lock.transaction(async (sp) => {
        const n = await applyFast(sp, cut.snapshot, { schema: mv.table_schema, name: mv.mview_name }, setup, { from: link.watermark, to });
        await sp('mvs_mview_base_tables').where({ mview_id: mv.mview_id, mlog_id: link.mlogId }).update({ consumed_watermark: to });
        return n;
      });
      log.debug({ mlog_id: link.mlogId, from: link.watermark, to, rows }, 'fast refresh applied');
      return rows;
    } finally {
      await cut.snapshot.rollback().catch(() => {});
    }
  }

  /**
   * COMPLETE of an MV that consumes a log: built out of place from a snapshot at a cut of the
   * log, then swapped in. The swap is DDL and cannot share a transaction with the watermark, so
   * the MV is marked not fast-refreshable first: if the run dies between swap and commit, the
   * next run is a complete one again, never a FAST run from a stale watermark.
   */
  private async completeLogged(lock: Knex.Transaction, mv: MviewRow, link: MlogLink, log: Logger): Promise<number> {
    const { db } = this.deps;
    const setup = await this.fastSetup(mv, link);
    const schema = quoteIdent(mv.table_schema);
    const { building, retired } = shadowTables(mv.mview_id);
    const build = { schema: mv.table_schema, name: building };
    const buildT = `${schema}.${quoteIdent(building)}`;
    const oldT = `${schema}.${quoteIdent(retired)}`;
    const select = buildSelect(setup, mv.mview_definition);
    await db.raw(`DROP TABLE IF EXISTS ${buildT}, ${oldT}`);
    await db.raw(`CREATE TABLE ${buildT} AS SELECT * FROM (${select}) AS __mvs_def LIMIT 0`);
    let rows: number;
    let highWater: number;
    try {
      await prepareBuildTable(db, build, setup);
      const cut = await takeCut(db, setup.mlog, this.deps.cutWaitS);
      try {
        highWater = cut.highWater;
        rows = await fillFromSnapshot(db, cut.snapshot, build, allColumns(setup), select, (n) =>
          log.info({ rows: n }, 'complete refresh: rows copied so far'),
        );
      } finally {
        await cut.snapshot.rollback().catch(() => {});
      }
      await swapIn(db, mv, async () => {
        await db('mvs_mviews').where({ mview_id: mv.mview_id }).update({ fast_refreshable: false });
      });
    } catch (err) {
      await db.raw(`DROP TABLE IF EXISTS ${buildT}`).catch(() => {});
      throw err;
    }
    // A purge never passes this MV's watermark, so rows after the cut are all still in the log.
    await lock('mvs_mview_base_tables').where({ mview_id: mv.mview_id, mlog_id: link.mlogId }).update({ consumed_watermark: highWater });
    await lock('mvs_mviews').where({ mview_id: mv.mview_id }).update({ fast_refreshable: true, fast_reason: null });
    return rows;
  }

  /** Record a SKIPPED run: nothing changed in any (versioned) base table since the last one. */
  private async skip(
    lock: Knex.Transaction,
    mv: MviewRow,
    req: RefreshRequest,
    now: number,
    markCommitted: () => void,
    log: Logger,
  ): Promise<RefreshOutcome> {
    const anchor = mv.refresh_start ? mv.refresh_start.getTime() : null;
    const next = anchor === null ? null : nextExecTime(anchor, mv.refresh_interval, now);
    const [refreshId] = (await lock('mvs_mview_refresh_hist').insert({
      mview_id: req.mviewId,
      refresh_job_id: req.jobId ?? null,
      refresh_method: 'NONE',
      refresh_trigger: req.trigger,
      refresh_status: 'SKIPPED',
      node_id: this.deps.nodeId,
      scheduled_time: req.scheduledFor !== undefined ? new Date(req.scheduledFor) : null,
      start_time: new Date(now),
      end_time: new Date(now),
      rows_changed: 0,
    })) as number[];
    await lock('mvs_mview_refresh_info')
      .where({ mview_id: req.mviewId })
      .update({
        last_refresh_result: 'SKIPPED',
        last_refresh_trigger: req.trigger,
        next_time: next === null ? null : new Date(next),
        updated_at: lock.fn.now(6),
      });
    await lock.commit();
    markCommitted();
    log.info({ refresh_id: refreshId, next_time: next }, 'refresh skipped: every base table is versioned and unchanged');
    return { kind: 'SKIPPED', refreshId: toNumber(refreshId), nextTime: next };
  }
}
