import type { Knex } from 'knex';
import { binlogCaptureProblems } from '../capture/settings.js';
import { boundedDdl } from '../db/boundedDdl.js';
import { isDuplicateKey, isLockNotGranted } from '../db/errors.js';
import { ConflictError, MvsError, NotFoundError, ValidationError } from '../errors.js';
import { identityProblem, readLogIdentity } from '../mlog/identity.js';
import { createLogStatements, describeBaseTable, dropLogObjects, logTableState, resolveTrackedColumns } from '../mlog/logObjects.js';
import { logTableName } from '../mlog/names.js';
import { findMlogByTable, mlogConsumers, type MlogRow } from '../mlog/repository.js';
import { displayName, resolveName, type ResolvedName } from '../mv/identifiers.js';
import type { PurgeOutcome } from '../purge/purgeRunner.js';
import type { AlterMlogPurgeStatement, CreateMlogStatement, SimpleMlogStatement } from './ast.js';
import { sleep, type DdlContext, type DdlResult } from './context.js';
import { unlinkFromLog } from './links.js';
import { evalPurge } from './schedule.js';

/** CREATE / ALTER / DROP / PURGE MATERIALIZED VIEW LOG (DESIGN.md §2 MV logs, §3 DDL). */
export class MlogDdl {
  constructor(private readonly ctx: DdlContext) {}

  private tableName(stmt: { table: { schema?: string; name: string } }): ResolvedName {
    return resolveName(stmt.table, this.ctx.deps.defaultSchema, 'table');
  }

  private async mustFind(n: ResolvedName) {
    const m = await findMlogByTable(this.ctx.db, n.schema, n.name);
    if (!m) throw new NotFoundError(`there is no materialized view log on ${displayName(n)}`);
    return m;
  }

  async create(stmt: CreateMlogStatement): Promise<DdlResult> {
    const { db, clock, defaultSchema } = this.ctx.deps;
    const n = this.tableName(stmt);
    const logName = logTableName(n.name);
    const shape = await describeBaseTable(db, n.schema, n.name);
    const tracked = resolveTrackedColumns(n.schema, n.name, shape, stmt.columns);
    await refuseCascadingChild(db, n);
    const mode = stmt.capture ?? 'TRIGGERS';
    if (mode === 'BINLOG') await refuseWithoutBinlog(db, n);
    const previous = await findMlogByTable(db, n.schema, n.name);
    if (previous && !(await this.replaceable(previous))) {
      throw new ConflictError(`a materialized view log on ${displayName(n)} already exists`);
    }
    const logState = await logTableState(db, previous?.mlog_id ?? -1, n.schema, logName);
    if (logState === 'foreign' || (logState === 'ours' && !previous)) {
      throw new ConflictError(`a table named ${n.schema}.${logName} already exists and mvsched did not make it; the log cannot be created`);
    }
    const nowMs = clock.now();
    const purge = await evalPurge(db, stmt.purge, nowMs);
    if (previous) await this.retire(previous);
    const mlogId = previous?.mlog_id ?? (await this.insertMetadata(n, logName, shape.primaryKey, tracked, purge, nowMs, mode));
    const spec = { mlogId, schema: n.schema, table: n.name, logTable: logName, metaSchema: defaultSchema, shape, tracked, captureMode: mode };
    try {
      await this.makeObjects(createLogStatements(spec));
    } catch (err) {
      if (!previous) await this.deleteMetadata(mlogId);
      const e = err as { sqlMessage?: string };
      throw new ValidationError(`could not create the materialized view log on ${displayName(n)}: ${e.sqlMessage ?? String(err)}`);
    }
    const token = (await readLogIdentity(db, { mlog_id: mlogId, table_schema: n.schema, base_table_name: n.name })).token;
    const consumers = await db.transaction(async (trx) => {
      const patch = {
        mlog_columns: JSON.stringify(tracked),
        pk_columns: JSON.stringify(shape.primaryKey),
        purge_method: purge.method,
        purge_start: purge.anchor === null ? null : new Date(purge.anchor),
        purge_interval: purge.interval,
        // Capture starts filling a BINLOG log where this commit is in the binary log.
        capture_mode: mode,
        state: 'OK',
        broken_reason: null,
        broken_at: null,
        base_table_id: token,
        mlog_modify_time: new Date(nowMs),
      };
      await trx('mvs_mlogs').where({ mlog_id: mlogId }).update(patch);
      if (!previous) return 0;
      await trx('mvs_mlog_purge_info')
        .where({ mlog_id: mlogId })
        .update({ next_time: purge.next === null ? null : new Date(purge.next), consecutive_failures: 0, purge_watermark: 0, updated_at: trx.fn.now(6) });
      return relinkAfterReplace(trx, mlogId, displayName(n));
    });
    await this.ctx.notify({ kind: 'mlog', id: mlogId, change: previous ? 'altered' : 'created' });
    this.ctx.deps.logger.info(
      { mlog_id: mlogId, table: displayName(n), columns: tracked, purge: purge.method, capture: mode, replaced: Boolean(previous), consumers },
      previous ? 'materialized view log re-created' : 'materialized view log created',
    );
    return {
      statement: stmt.kind,
      name: displayName(n),
      mlogId,
      message:
        `${previous ? 're-created' : 'created'} materialized view log ${n.schema}.${logName} on ${displayName(n)}` +
        (mode === 'BINLOG' ? ' (filled from the binary log by mvsched capture)' : '') +
        (consumers ? ` (${consumers} materialized view${consumers > 1 ? 's' : ''} get one complete refresh, then FAST again)` : ''),
    };
  }

  /** A BROKEN log, or one whose objects are gone (the drift check has not marked it yet). */
  private async replaceable(m: MlogRow): Promise<boolean> {
    if (m.state !== 'OK') return true; // BROKEN, or a creation that did not finish
    const id = await readLogIdentity(this.ctx.db, m);
    if (identityProblem(m, id)) return true;
    return (await logTableState(this.ctx.db, m.mlog_id, m.table_schema, m.mlog_name)) !== 'ours';
  }

  /**
   * Before a broken or orphaned log is replaced: marked CREATING (so no purge, FAST refresh or
   * drift check uses it meanwhile), then its objects dropped. They capture nothing any more, so
   * losing them loses nothing; the log's id, gate and consumers carry over to the new objects.
   */
  private async retire(m: MlogRow): Promise<void> {
    const { db } = this.ctx;
    const now = new Date(this.ctx.deps.clock.now());
    await db('mvs_mlogs').where({ mlog_id: m.mlog_id }).update({ state: 'CREATING', broken_reason: 'being re-created', broken_at: now, mlog_modify_time: now });
    await dropLogObjects(db, m.mlog_id, m.table_schema, m.mlog_name, this.ctx.ddlWaitMs);
    const gate = await db('mvs_mlog_gates').where({ mlog_id: m.mlog_id }).first('mlog_id');
    if (!gate) await db('mvs_mlog_gates').insert({ mlog_id: m.mlog_id });
  }

  private async insertMetadata(
    n: ResolvedName,
    logName: string,
    pk: string[],
    tracked: string[],
    purge: Awaited<ReturnType<typeof evalPurge>>,
    nowMs: number,
    mode: 'TRIGGERS' | 'BINLOG',
  ): Promise<number> {
    return this.ctx.db
      .transaction(async (trx) => {
        const [id] = (await trx('mvs_mlogs').insert({
          table_schema: n.schema,
          base_table_name: n.name,
          mlog_name: logName,
          mlog_columns: JSON.stringify(tracked),
          pk_columns: JSON.stringify(pk),
          purge_method: purge.method,
          purge_start: purge.anchor === null ? null : new Date(purge.anchor),
          purge_interval: purge.interval,
          created_at: new Date(nowMs),
          mlog_modify_time: new Date(nowMs),
          capture_mode: mode,
          // Until its table and triggers exist: the drift check leaves it alone meanwhile.
          state: 'CREATING',
        })) as number[];
        await trx('mvs_mlog_purge_info').insert({ mlog_id: id, next_time: purge.next === null ? null : new Date(purge.next), updated_at: trx.fn.now(6) });
        await trx('mvs_mlog_gates').insert({ mlog_id: id });
        return id!;
      })
      .catch((err: unknown) => {
        if (isDuplicateKey(err)) throw new ConflictError(`a materialized view log on ${displayName(n)} already exists`);
        throw err;
      });
  }

  private async deleteMetadata(mlogId: number): Promise<void> {
    await this.ctx.db.transaction(async (trx) => {
      for (const t of ['mvs_mlogs', 'mvs_mlog_purge_info', 'mvs_mlog_gates']) await trx(t).where({ mlog_id: mlogId }).delete();
    });
  }

  /**
   * DDL is not transactional: on a failure, undo by hand what this statement made (and only that:
   * a trigger of the same name that was there before is not ours), so nothing is left behind.
   */
  private async makeObjects(statements: Array<{ sql: string; undo: string }>): Promise<void> {
    const done: string[] = [];
    try {
      for (const st of statements) {
        await boundedDdl(this.ctx.db, st.sql, this.ctx.ddlWaitMs);
        done.push(st.undo);
      }
    } catch (err) {
      for (const undo of done.reverse()) await boundedDdl(this.ctx.db, undo, this.ctx.ddlWaitMs).catch(() => {});
      throw err;
    }
  }

  async alterPurge(stmt: AlterMlogPurgeStatement): Promise<DdlResult> {
    const { db, clock } = this.ctx.deps;
    const n = this.tableName(stmt);
    const m = await this.mustFind(n);
    const nowMs = clock.now();
    const purge = await evalPurge(db, stmt.purge, nowMs);
    await db.transaction(async (trx) => {
      try {
        await trx.raw('SELECT mlog_id FROM mvs_mlog_purge_info WHERE mlog_id = ? FOR UPDATE', [m.mlog_id]);
      } catch (err) {
        if (isLockNotGranted(err)) throw new ConflictError(`a purge of the log on ${displayName(n)} is running; try again when it finishes`);
        throw err;
      }
      await trx('mvs_mlogs').where({ mlog_id: m.mlog_id }).update({
        purge_method: purge.method,
        purge_start: purge.anchor === null ? null : new Date(purge.anchor),
        purge_interval: purge.interval,
        mlog_modify_time: new Date(nowMs),
      });
      await trx('mvs_mlog_purge_info').where({ mlog_id: m.mlog_id }).update({
        next_time: purge.next === null ? null : new Date(purge.next),
        consecutive_failures: 0,
        updated_at: trx.fn.now(6),
      });
    });
    await this.ctx.notify({ kind: 'mlog', id: m.mlog_id, change: 'altered' });
    return { statement: stmt.kind, name: displayName(n), mlogId: m.mlog_id, message: `altered materialized view log on ${displayName(n)}` };
  }

  async drop(stmt: SimpleMlogStatement): Promise<DdlResult> {
    const { db } = this.ctx;
    const n = this.tableName(stmt);
    const m = await this.mustFind(n);
    await db.transaction(async (trx) => {
      // Serializes with CREATE / ALTER of an MV linking to this log (they share-lock the row).
      await trx.raw('SELECT mlog_id FROM mvs_mlogs WHERE mlog_id = ? FOR UPDATE', [m.mlog_id]);
      const consumers = await mlogConsumers(trx, m.mlog_id);
      const fastOnes = consumers.filter((c) => c.refresh_method === 'FAST');
      if (fastOnes.length) {
        throw new ConflictError(
          `cannot drop the materialized view log on ${displayName(n)}: REFRESH FAST materialized view${fastOnes.length > 1 ? 's' : ''} ` +
            `${fastOnes.map((c) => `${c.table_schema}.${c.mview_name}`).join(', ')} depend${fastOnes.length > 1 ? '' : 's'} on it ` +
            '(drop them or ALTER them to REFRESH COMPLETE first)',
        );
      }
      // FORCE views fall back to complete refreshes.
      for (const c of consumers) await unlinkFromLog(trx, c.mview_id, `the materialized view log on ${displayName(n)} was dropped`);
      for (const t of ['mvs_mlogs', 'mvs_mlog_purge_info', 'mvs_mlog_gates']) await trx(t).where({ mlog_id: m.mlog_id }).delete();
    });
    await dropLogObjects(db, m.mlog_id, n.schema, m.mlog_name, this.ctx.ddlWaitMs);
    await this.ctx.notify({ kind: 'mlog', id: m.mlog_id, change: 'dropped' });
    return { statement: stmt.kind, name: displayName(n), mlogId: m.mlog_id, message: `dropped materialized view log on ${displayName(n)}` };
  }

  async purge(stmt: SimpleMlogStatement): Promise<DdlResult> {
    const n = this.tableName(stmt);
    const m = await this.mustFind(n);
    const purger = this.ctx.deps.purger;
    if (!purger) throw new MvsError('this process cannot run purges');
    const deadline = this.ctx.waitDeadline();
    for (;;) {
      const outcome: PurgeOutcome = await purger.run({ mlogId: m.mlog_id, trigger: 'MANUAL' });
      switch (outcome.kind) {
        case 'SUCCESS':
          return {
            statement: stmt.kind,
            name: displayName(n),
            mlogId: m.mlog_id,
            purgeId: outcome.purgeId ?? undefined,
            rows: outcome.rows,
            message: `purged materialized view log on ${displayName(n)} (${outcome.rows} rows up to ${outcome.watermark})`,
          };
        case 'FAILED':
          throw new MvsError(`purge of the log on ${displayName(n)} failed: ${outcome.error}`, { purgeId: outcome.purgeId });
        case 'GONE':
          throw new NotFoundError(`there is no materialized view log on ${displayName(n)}`);
        case 'DEFERRED':
          if (this.ctx.deps.clock.now() > deadline) throw new ConflictError(`a purge of the log on ${displayName(n)} has been running too long; try again later`);
          await sleep(100 + Math.random() * 200);
          continue;
        default:
          throw new MvsError(`unexpected purge outcome ${outcome.kind}`);
      }
    }
  }
}

/**
 * USING BINLOG needs a row-based binary log with full images and metadata, and a user that may
 * read it (DESIGN.md §2): refused before anything is written, naming every missing piece.
 */
async function refuseWithoutBinlog(db: Knex, n: ResolvedName): Promise<void> {
  const problems = await binlogCaptureProblems(db);
  if (problems.length) {
    throw new ValidationError(
      `cannot create a materialized view log USING BINLOG on ${displayName(n)}: ${problems.join('; ')} ` +
        '(or use USING TRIGGERS, the default)',
    );
  }
}

/**
 * Changes made by ON DELETE / ON UPDATE CASCADE or SET NULL reach no trigger (and are not in the
 * row binlog either): a log on such a child table would miss them, so it is refused.
 */
async function refuseCascadingChild(db: Knex, n: ResolvedName): Promise<void> {
  const fks = (await db('information_schema.referential_constraints')
    .where({ constraint_schema: n.schema, table_name: n.name })
    .select({ name: 'constraint_name', parent: 'referenced_table_name', onDelete: 'delete_rule', onUpdate: 'update_rule' })) as Array<{
    name: string;
    parent: string;
    onDelete: string;
    onUpdate: string;
  }>;
  const cascading = fks.find((f) => /CASCADE|SET NULL|SET DEFAULT/.test(`${f.onDelete} ${f.onUpdate}`));
  if (cascading) {
    const rule = /CASCADE|SET NULL|SET DEFAULT/.test(cascading.onDelete) ? `ON DELETE ${cascading.onDelete}` : `ON UPDATE ${cascading.onUpdate}`;
    throw new ValidationError(
      `${displayName(n)} is the child of foreign key ${cascading.name} (${rule}) on ${cascading.parent}: ` +
        'the rows that key changes fire no triggers, so a materialized view log would miss them; use ON DELETE / ON UPDATE RESTRICT or NO ACTION',
    );
  }
}

/**
 * The consumers of a re-created log start over: watermark 0 (the new log's sequence starts
 * again), one complete refresh first (identity token 0 never matches a table's, so the planner's
 * drift check asks for it at once, with trigger SYSTEM). Returns how many there are.
 */
async function relinkAfterReplace(trx: Knex.Transaction, mlogId: number, table: string): Promise<number> {
  const ids = (await trx('mvs_mview_base_tables').where({ mlog_id: mlogId }).pluck('mview_id')).map(Number);
  if (!ids.length) return 0;
  await trx('mvs_mview_base_tables').where({ mlog_id: mlogId }).update({ consumed_watermark: 0, base_table_id: 0 });
  await trx('mvs_mviews')
    .whereIn('mview_id', ids)
    .update({ fast_refreshable: false, fast_reason: `the materialized view log on ${table} was re-created: one complete refresh first` });
  return ids.length;
}
