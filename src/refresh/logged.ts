import type { Knex } from 'knex';
import { connectionDatabase } from '../db/connect.js';
import { probeSelect } from '../ddl/evaluate.js';
import { MvsError, ValidationError } from '../errors.js';
import { explainFast, setupLogs, type FastSetup } from '../fast/explain.js';
import { allColumns, applyFast, buildSelect, fillFromSnapshot, prepareBuildTable, type FastRange } from '../fast/fastRefresh.js';
import type { Logger } from '../log.js';
import { CutTimeoutError, endCut, takeCut, type Cut, type KnownMode } from '../mlog/cut.js';
import { identityProblem, readLogIdentities } from '../mlog/identity.js';
import { tableExists, type MviewRow, type RefreshInfoRow } from '../mv/repository.js';
import { isNoSuchTable } from '../db/errors.js';
import { retryDelayMs } from '../schedule/nextTime.js';
import { buildComplete, buildInPlaceOf } from './completeRefresh.js';
import type { MlogLink } from './method.js';
import { emptyFromTops, identityHolds, probeEmpty, topsCover, type LogTop, type Tops } from './emptyFast.js';
import { builtResult, type ConcreteMethod, type RunResult } from './types.js';

/** The log cannot have captured every change of its table: nothing may be applied from it. */
export class LogBrokenError extends MvsError {}

/** A base table was truncated or rebuilt since the MV read it: a complete refresh is needed. */
class IdentityMovedError extends Error {
  constructor(readonly mlogId: number) {
    super('base table identity moved');
  }
}

/**
 * Snapshots of one cut a join's delta is read on at once: the server computes its parts on as
 * many threads (BENCHMARKS.md §8).
 */
export const JOIN_DELTA_READERS = 2;

/** Consecutive cuts that gave up before a FORCE MV refreshes COMPLETE without one. */
export const FORCE_FALLBACK_AFTER = 2;

export interface LoggedRefreshDeps {
  db: Knex;
  /** How long a cut waits for writer transactions in flight (MVS_CUT_WAIT_MS). */
  cutWaitMs?: number;
}

export interface LoggedOutcome extends RunResult {
  method: ConcreteMethod;
  /** What happened to the consistent cut: it decides the MV's cut back-off (refresh-info). */
  cut: 'taken' | 'timed-out' | 'none';
}

/** refresh-info columns that follow the cut: a give-up backs FORCE MVs off from the next one. */
export function cutPatch(cut: LoggedOutcome['cut'], info: Pick<RefreshInfoRow, 'cut_timeouts'>, nowMs: number): Record<string, unknown> {
  if (cut === 'taken') return { cut_timeouts: 0, cut_retry_after: null };
  if (cut === 'none') return {};
  const n = Number(info.cut_timeouts ?? 0) + 1;
  return { cut_timeouts: n, cut_retry_after: new Date(nowMs + retryDelayMs(n)) };
}

const brokenText = (link: MlogLink, reason: string) =>
  `the materialized view log on ${link.table.schema}.${link.table.name} is broken (${reason}); ` +
  `re-create it with CREATE MATERIALIZED VIEW LOG ON ${link.table.schema}.${link.table.name} (...)`;

/**
 * Refreshes of an MV that consumes MV logs (one, or one per table of a join): FAST from the logs,
 * and COMPLETE built from a snapshot at a cut so that it records an exact watermark per log.
 * Also what happens when a log cannot be used: a broken log fails REFRESH FAST MVs with the
 * reason and rebuilds the others from their definition; a cut that keeps giving up does the
 * same for FORCE MVs. An MV over several logs is FAST only while every one of them is OK.
 */
export class LoggedRefresh {
  /**
   * FAST plans by MV, keyed by what they depend on: the definition (changes only with the MV's
   * modify time) and the logs (their columns and capture mode change only when a log is
   * re-created, which moves its modify time). Saves the analysis and its round trips on every run.
   */
  private readonly setups = new Map<number, { key: string; setup: FastSetup }>();

  constructor(private readonly deps: LoggedRefreshDeps) {}

  /**
   * One run with the concrete `method`. `strict`: the MV (or the request) wants FAST and nothing
   * else, so a log that cannot serve it is a failure rather than a reason to rebuild.
   */
  async refresh(
    lock: Knex.Transaction,
    mv: MviewRow,
    info: RefreshInfoRow,
    links: MlogLink[],
    method: ConcreteMethod,
    strict: boolean,
    nowMs: number,
    log: Logger,
  ): Promise<LoggedOutcome> {
    const broken = links.find((l) => l.broken);
    if (broken) {
      if (strict) throw new LogBrokenError(brokenText(broken, broken.broken!));
      return this.withoutLog(mv, brokenText(broken, broken.broken!), log);
    }
    const force = mv.refresh_method === 'FORCE' && !strict;
    if (force && info.cut_retry_after && info.cut_retry_after.getTime() > nowMs) {
      return this.withoutLog(mv, 'consistent cuts of its logs keep timing out (writer transactions held open); retrying later', log);
    }
    try {
      if (method === 'FAST') {
        try {
          return { ...(await this.fast(lock, mv, links, log)), method, cut: 'taken' };
        } catch (err) {
          if (err instanceof IdentityMovedError) {
            log.info({ mlog_id: err.mlogId }, 'base table truncated or rebuilt since the last complete refresh: refreshing COMPLETE');
          } else if (isNoSuchTable(err) && !(await tableExists(this.deps.db, mv.table_schema, mv.mview_name))) {
            // The MV's own table was dropped behind our back: build it again.
            log.warn('the materialized view table is gone: refreshing COMPLETE');
          } else throw err;
        }
      }
      return { ...(await this.complete(lock, mv, links, log)), method: 'COMPLETE', cut: 'taken' };
    } catch (err) {
      if (err instanceof LogBrokenError && !strict) return this.withoutLog(mv, err.message, log);
      if (err instanceof CutTimeoutError && force && Number(info.cut_timeouts ?? 0) + 1 >= FORCE_FALLBACK_AFTER) {
        log.warn({ mlog_ids: links.map((l) => l.mlogId), err: err.message }, 'cut timed out again: FORCE falls back to COMPLETE');
        const out = await this.withoutLog(mv, `consistent cut timed out: ${err.message}`, log);
        return { ...out, cut: 'timed-out' };
      }
      throw err;
    }
  }

  /**
   * COMPLETE from the definition alone, no cut: the MV is right at the end of its build but
   * records no watermark, so it is marked not fast-refreshable before the swap (a run that dies
   * after the swap must not be followed by FAST from a stale watermark).
   */
  private async withoutLog(mv: MviewRow, reason: string, log: Logger): Promise<LoggedOutcome> {
    await this.deps.db('mvs_mviews').where({ mview_id: mv.mview_id }).update({ fast_refreshable: false, fast_reason: reason.slice(0, 1024) });
    log.info({ reason }, 'refreshing COMPLETE without the MV log');
    return { ...builtResult(await buildComplete(this.deps.db, mv)), method: 'COMPLETE', cut: 'none' };
  }

  /**
   * A FAST run that would apply nothing, found without a cut (emptyFast.ts): its data time and
   * the identity check that must pass before it may be recorded; null when the run must go the
   * full way (changes to apply, a BINLOG log, anything unusual: the full path reports it).
   */
  async nothingToApply(
    lock: Knex.Transaction,
    mv: MviewRow,
    links: MlogLink[],
    early?: { guess: LogTop[]; tops: Tops },
  ): Promise<{ dataTime: Date; identityHolds: () => Promise<boolean> } | null> {
    if (links.some((l) => l.broken)) return null;
    try {
      const setup = await this.setup(mv, links);
      const out = early && topsCover(early.guess, links) ? emptyFromTops(setup, links, early.tops) : await probeEmpty(lock, setup, links);
      if (typeof out === 'string') return null;
      return { dataTime: out.dataTime, identityHolds: () => identityHolds(this.deps.db, setup, links).catch(() => false) };
    } catch {
      return null;
    }
  }

  async setup(mv: MviewRow, links: MlogLink[]): Promise<FastSetup> {
    const ids = links.map((l) => l.mlogId).sort((a, b) => a - b);
    // A log re-created in place keeps its id but may change its columns and how it is filled.
    const logs = [...links]
      .sort((a, b) => a.mlogId - b.mlogId)
      .map((l) => `${l.mlogId}/${l.captureMode}/${l.modifiedMs}`)
      .join(',');
    const key = `${mv.mview_modify_time.getTime()}:${logs}:${mv.mview_definition}`;
    const cached = this.setups.get(mv.mview_id);
    if (cached?.key === key) return cached.setup;
    const probe = await probeSelect(this.deps.db, mv.mview_definition);
    const ex = await explainFast(this.deps.db, mv.mview_definition, connectionDatabase(this.deps.db), probe.columns);
    if (!ex.fast) throw new ValidationError(`${mv.table_schema}.${mv.mview_name} cannot be fast-refreshed: ${ex.reason}`);
    const wanted = setupLogs(ex.setup).map((m) => m.mlog_id).sort((a, b) => a - b);
    if (wanted.join(',') !== ids.join(',')) {
      throw new ValidationError(`${mv.table_schema}.${mv.mview_name}: its materialized view logs changed; refresh it COMPLETE`);
    }
    if (this.setups.size > 10_000) this.setups.clear();
    this.setups.set(mv.mview_id, { key, setup: ex.setup });
    return ex.setup;
  }

  /**
   * Each log's identity, checked after the cut: a change made before the cut that a log cannot
   * have seen (table re-created, renamed, triggers gone) would make the MV wrong at the cut; so
   * would a log now filled otherwise than the cut was taken for (linkModes).
   * Returns each base table's identity token by mlog_id.
   */
  private async checkIdentities(setup: FastSetup, links: MlogLink[]): Promise<Map<number, number | null>> {
    const logs = setupLogs(setup);
    const tokens = new Map<number, number | null>();
    const ids = await readLogIdentities(this.deps.db, logs);
    for (const m of logs) {
      const id = ids.get(m.mlog_id)!;
      const link = links.find((l) => l.mlogId === m.mlog_id)!;
      const problem = identityProblem(m, id);
      if (problem) throw new LogBrokenError(brokenText(link, problem));
      // The cut was taken the way the links said each log is filled: that must still be so.
      if (id.captureMode !== undefined && id.captureMode !== link.captureMode) {
        throw new MvsError(
          `the materialized view log on ${link.table.schema}.${link.table.name} was re-created (now filled by ${id.captureMode}) during the refresh; the next run reads it`,
        );
      }
      tokens.set(m.mlog_id, id.token);
    }
    return tokens;
  }

  /** One cut over every log the MV reads, then their identities (checkIdentities). */
  private async cutAndCheck(setup: FastSetup, links: MlogLink[]): Promise<{ cut: Cut; tokens: Map<number, number | null> }> {
    const cut = await takeCut(this.deps.db, setupLogs(setup), this.deps.cutWaitMs, {}, { modes: linkModes(links) });
    try {
      return { cut, tokens: await this.checkIdentities(setup, links) };
    } catch (err) {
      await endCut(cut);
      throw err;
    }
  }

  /**
   * FAST: take one consistent cut of the logs, apply the rows after the MV's watermark up to it
   * from each, and move every watermark, in the lock transaction (under a savepoint, so a
   * failure leaves the MV and its watermarks as they were and the run is still recorded).
   * The logs' identity check runs on the pool beside the delta query, which is sent to the
   * snapshot at once; nothing touches the MV before the check passed (applyFast's `ready`).
   * History gets the log range consumed when there is one log; an MV over several logs has one
   * range per log (sequence numbers of different logs do not compare), logged here.
   */
  private async fast(lock: Knex.Transaction, mv: MviewRow, links: MlogLink[], log: Logger): Promise<RunResult> {
    const setup = await this.setup(mv, links);
    // The savepoint is made while the cut is taken (the lock's connection has nothing else to
    // do then); it is released by the COMMIT, or rolled back to when the apply fails.
    const savepoint = lock.raw(`SAVEPOINT ${FAST_SAVEPOINT}`).then(() => undefined);
    savepoint.catch(() => {});
    // A join's delta is read in parts on two snapshots of the cut at once (joinRefresh.ts).
    let cut: Cut;
    try {
      const parallel = setup.shape === 'join' ? JOIN_DELTA_READERS : 1;
      cut = await takeCut(this.deps.db, setupLogs(setup), this.deps.cutWaitMs, {}, { parallel, modes: linkModes(links) });
    } finally {
      await savepoint.catch(() => {});
    }
    const checked = this.checkIdentities(setup, links).then((tokens) => {
      for (const link of links) {
        const token = tokens.get(link.mlogId) ?? null;
        if (link.mvToken !== null && token !== null && link.mvToken !== token) throw new IdentityMovedError(link.mlogId);
      }
      return tokens;
    });
    // Awaited below, whatever happens first; a failure before that is not unhandled.
    checked.catch(() => {});
    let applied = false;
    try {
      const ranges = new Map<number, FastRange>(links.map((l) => [l.mlogId, { from: l.watermark, to: Math.max(cut.highWater.get(l.mlogId)!, l.watermark) }]));
      const changes = await withSavepoint(lock, savepoint, async () => {
        // The watermarks move as soon as the check passed, while the delta query may still run.
        const marked = checked.then((tokens) =>
          recordWatermarks(
            lock,
            mv.mview_id,
            links.map((l) => {
              const token = tokens.get(l.mlogId) ?? null;
              return { mlogId: l.mlogId, watermark: ranges.get(l.mlogId)!.to, token: l.mvToken === null ? token : undefined };
            }),
          ),
        );
        // Both settle before the savepoint ends, whichever failed.
        const [n, m] = await Promise.allSettled([applyFast(lock, cut.snapshot, { schema: mv.table_schema, name: mv.mview_name }, setup, ranges, checked, { also: cut.also, pool: this.deps.db }), marked]);
        if (n.status === 'rejected') throw n.reason;
        if (m.status === 'rejected') throw m.reason;
        return n.value;
      });
      log.debug({ ranges: Object.fromEntries(ranges), rows: changes.changed }, 'fast refresh applied');
      const { changed, inserted, deleted } = changes;
      const one = links.length === 1 ? ranges.get(links[0]!.mlogId)! : undefined;
      applied = true;
      return { rows: changed, inserted, deleted, dataTime: cut.at, watermarkFrom: one?.from ?? null, watermarkTo: one?.to ?? null };
    } finally {
      // Applied: the snapshot ends while the run records itself (a closing pool waits for it).
      // Failed: it ends first, so a COMPLETE that follows finds no metadata lock of it held.
      const ended = endCut(cut);
      if (!applied) await Promise.all([ended, checked.catch(() => {})]);
    }
  }

  /**
   * COMPLETE of an MV that consumes logs: built out of place from a snapshot at a cut of all of
   * them, then swapped in. The swap is DDL and cannot share a transaction with the watermarks,
   * so the MV is marked not fast-refreshable first: if the run dies between swap and commit, the
   * next run is a complete one again, never a FAST run from a stale watermark.
   */
  private async complete(lock: Knex.Transaction, mv: MviewRow, links: MlogLink[], log: Logger): Promise<RunResult> {
    const { db } = this.deps;
    const setup = await this.setup(mv, links);
    const select = buildSelect(setup, mv.mview_definition);
    let highWater = new Map<number, number>();
    let tokens = new Map<number, number | null>();
    const built = await buildInPlaceOf(db, mv, select, {
      prepare: (build) => prepareBuildTable(db, build, setup),
      fill: async (build) => {
        const taken = await this.cutAndCheck(setup, links);
        tokens = taken.tokens;
        highWater = taken.cut.highWater;
        try {
          const rows = await fillFromSnapshot(db, taken.cut.snapshot, build, allColumns(setup), select, (n) =>
            log.info({ rows: n }, 'complete refresh: rows copied so far'),
          );
          return { rows, dataTime: taken.cut.at };
        } finally {
          await endCut(taken.cut);
        }
      },
      beforeSwap: async () => {
        await db('mvs_mviews').where({ mview_id: mv.mview_id }).update({ fast_refreshable: false });
      },
    });
    // A purge never passes this MV's watermarks, so rows after the cut are all still in the logs.
    await recordWatermarks(
      lock,
      mv.mview_id,
      links.map((l) => ({ mlogId: l.mlogId, watermark: highWater.get(l.mlogId)!, token: tokens.get(l.mlogId) ?? null })),
    );
    await lock('mvs_mviews').where({ mview_id: mv.mview_id }).update({ fast_refreshable: true, fast_reason: null });
    return builtResult(built);
  }
}

const FAST_SAVEPOINT = '__mvs_fast';

/**
 * How each log is filled, as the links read it under the MV's lock: the cut is taken that way,
 * and the identity check after it fails the run where a log no longer is (checkIdentities).
 */
function linkModes(links: MlogLink[]): Map<number, KnownMode> {
  return new Map(links.map((l) => [l.mlogId, { captureMode: l.captureMode, baseTable: l.table.name }]));
}

/**
 * `work` in `lock` after the savepoint (made by `made`): a failure rolls back to it, so the MV
 * and its watermarks are as they were and the run is still recorded in `lock`.
 */
async function withSavepoint<T>(lock: Knex.Transaction, made: Promise<void>, work: () => Promise<T>): Promise<T> {
  await made;
  try {
    return await work();
  } catch (err) {
    await lock.raw(`ROLLBACK TO SAVEPOINT ${FAST_SAVEPOINT}`);
    throw err;
  }
}

/**
 * Every log's consumed watermark (and, where given, the base table's identity) in one statement:
 * one row per (MV, table) in mvs_mview_base_tables.
 */
async function recordWatermarks(
  trx: Knex.Transaction,
  mviewId: number,
  marks: Array<{ mlogId: number; watermark: number; token: number | null | undefined }>,
): Promise<void> {
  const ids = marks.map((m) => m.mlogId);
  const withToken = marks.filter((m) => m.token !== undefined);
  const sets = [`consumed_watermark = CASE mlog_id ${marks.map(() => 'WHEN ? THEN ?').join(' ')} END`];
  const bindings: unknown[] = marks.flatMap((m) => [m.mlogId, m.watermark]);
  if (withToken.length) {
    sets.push(`base_table_id = CASE mlog_id ${withToken.map(() => 'WHEN ? THEN ?').join(' ')} ELSE base_table_id END`);
    bindings.push(...withToken.flatMap((m) => [m.mlogId, m.token]));
  }
  await trx.raw(
    `UPDATE mvs_mview_base_tables SET ${sets.join(', ')} WHERE mview_id = ? AND mlog_id IN (${ids.map(() => '?').join(', ')})`,
    [...bindings, mviewId, ...ids] as never,
  );
}
