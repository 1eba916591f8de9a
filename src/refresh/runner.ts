import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { isLockNotGranted } from '../db/errors.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { getMview, toNumber, type MviewRow, type RefreshInfoRow } from '../mv/repository.js';
import { nextExecTime, retryDelayMs } from '../schedule/nextTime.js';
import type { RunObserver } from '../metrics/runMetrics.js';
import { baseTableVersions } from '../versions/repository.js';
import { buildComplete } from './completeRefresh.js';
import { failureReason, insertRunning, markAbandoned, recordFailure, recordQuickSuccess, recordSkip, recordSuccess, type RunEnd } from './history.js';
import { CutTimeoutError } from '../mlog/cut.js';
import { cutPatch, LoggedRefresh, type LoggedOutcome } from './logged.js';
import { chooseMethod, logBacklog, mlogLinks, type MlogLink } from './method.js';
import { builtResult, DUE_TOLERANCE_MS, type ConcreteMethod, type RefreshOutcome, type RefreshRequest } from './types.js';
import { recordVersionMap, versionsUnchanged } from './versionStep.js';
import { readTops, type LogTop, type Tops } from './emptyFast.js';
import { propagateDataTime, upstreamDataTimes } from '../pipeline/dataTime.js';

export { DUE_TOLERANCE_MS, type ConcreteMethod, type RefreshOutcome, type RefreshRequest } from './types.js';
export { chooseMethod, mlogLinks, type MlogLink } from './method.js';

export interface RefreshRunnerDeps {
  db: Knex;
  logger: Logger;
  clock: Clock;
  nodeId: string;
  /** Runs an MV log's purge after a refresh that consumed it, when the log says PURGE IMMEDIATE. */
  purgeImmediate?: (mlogId: number) => Promise<void>;
  /** How long a cut waits for writer transactions in flight (MVS_CUT_WAIT_MS). */
  cutWaitMs?: number;
  /** Told every outcome (metrics). */
  observer?: Pick<RunObserver, 'refreshed'>;
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

/** What a run does once it holds the lock and knows it must recompute. */
interface Work {
  mv: MviewRow;
  info: RefreshInfoRow;
  versions: Awaited<ReturnType<typeof baseTableVersions>>;
  /** The MV logs it consumes (none: it is refreshed from its definition alone). */
  links: MlogLink[];
  method: ConcreteMethod;
  /** When the run took the MV's lock: its start (what it reads and writes after is its work). */
  startMs: number;
  /** Data times of the MVs it reads, read before anything reads them (pipeline/dataTime.ts). */
  upstream: Awaited<ReturnType<typeof upstreamDataTimes>>;
  /** The tops of the logs the previous run consumed, read with the other reads after the lock. */
  early: { guess: LogTop[]; tops: Tops } | undefined;
}

/** A run whose no-change shortcut found a log's table replaced: run again the full way. */
const AGAIN = Symbol('again');

/**
 * Runs one refresh of one MV under the MV's lock: `SELECT ... FOR UPDATE NOWAIT` on its
 * refresh-info row, held on a dedicated connection for the whole run. A second attempt finds
 * the lock taken and is DEFERRED (never run concurrently, never failed for it).
 *
 * History: a RUNNING row is committed first (visible while the run goes on), then completed in
 * the lock transaction together with refresh-info, so the two always agree (history.ts).
 */
export class RefreshRunner {
  private readonly logged: LoggedRefresh;
  /** By MV: the logs its last run consumed (where the next run's early probe looks). */
  private readonly lastLogs = new Map<number, LogTop[]>();

  constructor(private readonly deps: RefreshRunnerDeps) {
    this.logged = new LoggedRefresh({ db: deps.db, ...(deps.cutWaitMs !== undefined ? { cutWaitMs: deps.cutWaitMs } : {}) });
  }

  async run(req: RefreshRequest): Promise<RefreshOutcome> {
    let outcome = await this.runOnce(req, true);
    if (outcome === AGAIN) outcome = await this.runOnce(req, false);
    if (outcome === AGAIN) throw new Error('refresh runner: a run without the no-change shortcut asked to run again');
    this.deps.observer?.refreshed(req, outcome);
    return outcome;
  }

  private async runOnce(req: RefreshRequest, shortcut: boolean): Promise<RefreshOutcome | typeof AGAIN> {
    const { db, clock } = this.deps;
    const log = this.deps.logger.child({ mview_id: req.mviewId, job_id: req.jobId, trigger: req.trigger });
    // A committed success that started after the request was made already answers it: check
    // without the lock first, so a burst of requests does not queue up behind the lock.
    if (req.trigger === 'REQUEST' && req.requestedAt !== undefined) {
      const seen = await db<RefreshInfoRow>('mvs_mview_refresh_info').where({ mview_id: req.mviewId }).first('last_refresh_result', 'refresh_time');
      const served = coalescedBy(seen, req.requestedAt);
      if (served) return served;
    }
    // READ COMMITTED: a FAST run reads log rows committed after this transaction began.
    const lock = await db.transaction({ isolationLevel: 'read committed' });
    let done = false;
    try {
      let info: RefreshInfoRow | undefined;
      let lockedAt = 0;
      try {
        const [rows] = (await lock.raw('SELECT * FROM mvs_mview_refresh_info WHERE mview_id = ? FOR UPDATE NOWAIT', [req.mviewId])) as [
          RefreshInfoRow[],
        ];
        info = rows[0];
        lockedAt = clock.now();
      } catch (err) {
        if (isLockNotGranted(err)) {
          log.debug('refresh lock held by another run: deferred');
          return { kind: 'DEFERRED' };
        }
        throw err;
      }
      if (!info) return { kind: 'GONE' };
      // What the run needs to know, read at once on the pool once the lock is granted: under
      // READ COMMITTED the lock transaction would see the same committed rows, one at a time.
      // The versions are read before the build: the map then never claims a newer version than
      // the data the build reads. A run left RUNNING ended, at the latest, when this one took
      // the lock it would hold.
      // The logs the last run consumed are looked at too: a FAST run with nothing to apply then
      // needs no statement of its own to find that out (emptyFast.ts).
      const guess = shortcut ? this.lastLogs.get(req.mviewId) : undefined;
      const [mv, versions, links, , upstream, tops] = await Promise.all([
        getMview(db, req.mviewId),
        baseTableVersions(db, req.mviewId),
        mlogLinks(db, req.mviewId),
        markAbandoned(db, req.mviewId, lockedAt),
        upstreamDataTimes(db, req.mviewId),
        guess ? readTops(db, guess).catch(() => undefined) : undefined,
      ]);
      if (!mv) return { kind: 'GONE' };
      this.rememberLogs(req.mviewId, links);
      const now = clock.now();
      const nextTime = info.next_time ? info.next_time.getTime() : null;
      if (req.trigger === 'SCHEDULED' || req.wave) {
        if (mv.status === 'SUSPENDED') return { kind: 'SUSPENDED' };
        if (!req.wave && (nextTime === null || nextTime > now + DUE_TOLERANCE_MS)) return { kind: 'NOT_DUE', nextTime };
      }
      if (req.trigger === 'REQUEST' && req.requestedAt !== undefined) {
        const served = coalescedBy(info, req.requestedAt);
        if (served) return served;
      }
      // Versions say nothing of a base table's MV log: rows past the MV's watermark are changes.
      if (req.trigger === 'SCHEDULED' && (await versionsUnchanged(lock, req.mviewId, versions)) && !(await logBacklog(lock, links))) {
        const next = req.wave ? nextTime : mv.refresh_start ? nextExecTime(mv.refresh_start.getTime(), mv.refresh_interval, now) : null;
        const refreshId = await recordSkip(lock, req, this.deps.nodeId, now, next, 'every base table is versioned and no reported version moved since the last refresh');
        await lock.commit();
        done = true;
        log.info({ refresh_id: refreshId, next_time: next }, 'refresh skipped: every base table is versioned and unchanged');
        return { kind: 'SKIPPED', refreshId, nextTime: next };
      }
      const method = chooseMethod(mv, req.method, links.length > 0);
      const early = guess && tops ? { guess, tops } : undefined;
      const outcome = await this.recompute(lock, req, { mv, info, versions, links, method, startMs: lockedAt, upstream, early }, shortcut, log);
      done = true;
      return outcome;
    } finally {
      if (!done && !lock.isCompleted()) await lock.rollback().catch(() => {});
    }
  }

  private rememberLogs(mviewId: number, links: MlogLink[]): void {
    if (!links.length) {
      this.lastLogs.delete(mviewId);
      return;
    }
    if (this.lastLogs.size > 10_000 && !this.lastLogs.has(mviewId)) this.lastLogs.clear();
    this.lastLogs.set(mviewId, links.map((l) => ({ mlogId: l.mlogId, schema: l.table.schema, logTable: l.logTable })));
  }

  /** Run the refresh itself and record its outcome; commits the lock transaction. */
  private async recompute(lock: Knex.Transaction, req: RefreshRequest, w: Work, shortcut: boolean, log: Logger): Promise<RefreshOutcome | typeof AGAIN> {
    const { db, clock } = this.deps;
    const { mv, info, links, method, startMs, upstream } = w;
    if (shortcut && method === 'FAST' && links.length) {
      const empty = await this.logged.nothingToApply(lock, mv, links, w.early);
      if (empty) return this.finishEmpty(lock, req, w, propagateDataTime(empty.dataTime, upstream) ?? empty.dataTime, empty.identityHolds, log);
    }
    // A FAST run's work stays in the lock transaction until it commits: its RUNNING row is
    // written beside it. Anything else waits for the row (a COMPLETE swap commits on its own).
    const running = insertRunning(db, req, method, this.deps.nodeId, startMs);
    running.then((id) => log.info({ refresh_id: id, method }, 'refresh started')).catch(() => {});
    if (method !== 'FAST' || !links.length) await running;

    let done: LoggedOutcome = { rows: 0, inserted: null, deleted: null, dataTime: null, method, cut: 'none' };
    let failure: unknown;
    try {
      if (!links.length) done = { ...builtResult(await buildComplete(db, mv)), method, cut: 'none' };
      else {
        const strict = (req.method ?? mv.refresh_method) === 'FAST';
        done = await this.logged.refresh(lock, mv, info, links, method, strict, startMs, log);
      }
    } catch (err) {
      failure = err;
      if (err instanceof CutTimeoutError) done.cut = 'timed-out';
    }
    const refreshId = await running;
    done.dataTime = propagateDataTime(done.dataTime, upstream);
    const { rows } = done;
    const endMs = clock.now();
    const nextTime = info.next_time ? info.next_time.getTime() : null;
    const end: Omit<RunEnd, 'newNext'> = { refreshId, req, method: done.method, startMs, endMs };
    const cutInfo = cutPatch(done.cut, info, endMs);

    if (failure === undefined) {
      // Only scheduled runs move the schedule; manual and requested runs leave next_time.
      const anchor = mv.refresh_start ? mv.refresh_start.getTime() : null;
      const newNext = req.trigger === 'SCHEDULED' && !req.wave ? (anchor === null ? null : nextExecTime(anchor, mv.refresh_interval, endMs)) : nextTime;
      await recordVersionMap(lock, req.mviewId, w.versions);
      await recordSuccess(lock, { ...end, newNext }, done, cutInfo);
      await lock.commit();
      log.info({ refresh_id: refreshId, method: done.method, rows, duration_ms: endMs - startMs, next_time: newNext }, 'refresh succeeded');
      for (const link of links) {
        if (link.purgeMethod !== 'IMMEDIATE' || !this.deps.purgeImmediate) continue;
        await this.deps.purgeImmediate(link.mlogId).catch((err: unknown) =>
          log.warn({ mlog_id: link.mlogId, err: errorMessage(err) }, 'immediate purge after refresh failed; the next one will catch up'),
        );
      }
      return { kind: 'SUCCESS', refreshId, rows, method: done.method, nextTime: newNext, startMs, endMs };
    }

    const reason = failureReason(failure);
    const failures = toNumber(info.consecutive_failures) + 1;
    const newNext = req.trigger === 'SCHEDULED' && !req.wave ? endMs + retryDelayMs(failures) : nextTime;
    await recordFailure(lock, { ...end, newNext }, reason, failures, cutInfo);
    await lock.commit();
    log.warn({ refresh_id: refreshId, err: reason, failures, next_time: newNext }, 'refresh failed');
    return { kind: 'FAILED', refreshId, error: reason, method: done.method, nextTime: newNext, failures };
  }

  /**
   * A FAST run with nothing to apply (emptyFast.ts): no cut, no RUNNING row, no watermark to
   * move; the MV is up to date as of the read that found the logs empty. The identity check runs
   * on the pool while the outcome is written here; a failed check rolls the writes back and the
   * run starts again the full way (which sees the table replaced and says so).
   */
  private async finishEmpty(
    lock: Knex.Transaction,
    req: RefreshRequest,
    w: Work,
    dataTime: Date,
    identityHolds: () => Promise<boolean>,
    log: Logger,
  ): Promise<RefreshOutcome | typeof AGAIN> {
    const { mv, info, links, startMs } = w;
    const endMs = this.deps.clock.now();
    const nextTime = info.next_time ? info.next_time.getTime() : null;
    const anchor = mv.refresh_start ? mv.refresh_start.getTime() : null;
    const newNext = req.trigger === 'SCHEDULED' && !req.wave ? (anchor === null ? null : nextExecTime(anchor, mv.refresh_interval, endMs)) : nextTime;
    const one = links.length === 1 ? links[0]!.watermark : null;
    const result = { rows: 0, inserted: 0, deleted: 0, dataTime, watermarkFrom: one, watermarkTo: one };
    const write = async () => {
      await recordVersionMap(lock, req.mviewId, w.versions);
      return recordQuickSuccess(lock, { req, method: 'FAST', startMs, endMs, newNext }, this.deps.nodeId, result);
    };
    const [holds, written] = await Promise.allSettled([identityHolds(), write()]);
    if (written.status === 'rejected') throw written.reason;
    if (holds.status !== 'fulfilled' || !holds.value) {
      await lock.rollback();
      log.info('a log\'s table changed identity: running again with a consistent cut');
      return AGAIN;
    }
    const refreshId = written.value;
    await lock.commit();
    log.info({ refresh_id: refreshId, method: 'FAST', rows: 0, duration_ms: endMs - startMs, next_time: newNext, nothing_to_apply: true }, 'refresh succeeded');
    return { kind: 'SUCCESS', refreshId, rows: 0, method: 'FAST', nextTime: newNext, startMs, endMs };
  }
}
