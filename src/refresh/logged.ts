import type { Knex } from 'knex';
import { connectionDatabase } from '../db/connect.js';
import { probeSelect } from '../ddl/evaluate.js';
import { ValidationError } from '../errors.js';
import { explainFast, type FastSetup } from '../fast/explain.js';
import { allColumns, applyFast, buildSelect, fillFromSnapshot, prepareBuildTable } from '../fast/fastRefresh.js';
import type { Logger } from '../log.js';
import { takeCut } from '../mlog/cut.js';
import { quoteIdent } from '../mv/identifiers.js';
import type { MviewRow } from '../mv/repository.js';
import { shadowTables, swapIn } from './completeRefresh.js';
import type { MlogLink } from './method.js';

export interface LoggedRefreshDeps {
  db: Knex;
  /** How long a cut waits for writer transactions in flight (s). */
  cutWaitS?: number;
}

/**
 * Refreshes of an MV that consumes an MV log: FAST from the log, and COMPLETE built from a
 * snapshot at a cut so that it records an exact watermark.
 */
export class LoggedRefresh {
  /**
   * FAST plans by MV, keyed by what they depend on: the definition (changes only with the MV's
   * modify time) and the log (an MV log's columns never change). Saves the analysis and its
   * round trips on every run.
   */
  private readonly setups = new Map<number, { key: string; setup: FastSetup }>();

  constructor(private readonly deps: LoggedRefreshDeps) {}

  async setup(mv: MviewRow, link: MlogLink): Promise<FastSetup> {
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
  async fast(lock: Knex.Transaction, mv: MviewRow, link: MlogLink, log: Logger): Promise<number> {
    const setup = await this.setup(mv, link);
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
  async complete(lock: Knex.Transaction, mv: MviewRow, link: MlogLink, log: Logger): Promise<number> {
    const { db } = this.deps;
    const setup = await this.setup(mv, link);
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
}
