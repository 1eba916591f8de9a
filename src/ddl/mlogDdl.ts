import { isDuplicateKey, isLockNotGranted } from '../db/errors.js';
import { ConflictError, MvsError, NotFoundError, ValidationError } from '../errors.js';
import { createLogStatements, describeBaseTable, dropLogObjects, resolveTrackedColumns } from '../mlog/logObjects.js';
import { logTableName } from '../mlog/names.js';
import { findMlogByTable, mlogConsumers } from '../mlog/repository.js';
import { displayName, resolveName, type ResolvedName } from '../mv/identifiers.js';
import { tableExists } from '../mv/repository.js';
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
    if (await findMlogByTable(db, n.schema, n.name)) {
      throw new ConflictError(`a materialized view log on ${displayName(n)} already exists`);
    }
    if (await tableExists(db, n.schema, logName)) {
      throw new ConflictError(`a table named ${n.schema}.${logName} already exists; the log cannot be created`);
    }
    const nowMs = clock.now();
    const purge = await evalPurge(db, stmt.purge, nowMs);
    const mlogId = await db
      .transaction(async (trx) => {
        const [id] = (await trx('mvs_mlogs').insert({
          table_schema: n.schema,
          base_table_name: n.name,
          mlog_name: logName,
          mlog_columns: JSON.stringify(tracked),
          pk_columns: JSON.stringify(shape.primaryKey),
          purge_method: purge.method,
          purge_start: purge.anchor === null ? null : new Date(purge.anchor),
          purge_interval: purge.interval,
          created_at: new Date(nowMs),
          mlog_modify_time: new Date(nowMs),
        })) as number[];
        await trx('mvs_mlog_purge_info').insert({
          mlog_id: id,
          next_time: purge.next === null ? null : new Date(purge.next),
          updated_at: trx.fn.now(6),
        });
        await trx('mvs_mlog_gates').insert({ mlog_id: id });
        return id!;
      })
      .catch((err: unknown) => {
        if (isDuplicateKey(err)) throw new ConflictError(`a materialized view log on ${displayName(n)} already exists`);
        throw err;
      });
    const done: string[] = [];
    try {
      const statements = createLogStatements({ mlogId, schema: n.schema, table: n.name, logTable: logName, metaSchema: defaultSchema, shape, tracked });
      for (const st of statements) {
        await db.raw(st.sql);
        done.push(st.undo);
      }
    } catch (err) {
      // DDL is not transactional: undo by hand what this statement made (and only that: a
      // trigger of the same name that was there before is not ours), so nothing is left behind.
      for (const undo of done.reverse()) await db.raw(undo).catch(() => {});
      await db.transaction(async (trx) => {
        for (const t of ['mvs_mlogs', 'mvs_mlog_purge_info', 'mvs_mlog_gates']) await trx(t).where({ mlog_id: mlogId }).delete();
      });
      const e = err as { sqlMessage?: string };
      throw new ValidationError(`could not create the materialized view log on ${displayName(n)}: ${e.sqlMessage ?? String(err)}`);
    }
    await this.ctx.notify({ kind: 'mlog', id: mlogId, change: 'created' });
    this.ctx.deps.logger.info({ mlog_id: mlogId, table: displayName(n), columns: tracked, purge: purge.method }, 'materialized view log created');
    return {
      statement: stmt.kind,
      name: displayName(n),
      mlogId,
      message: `created materialized view log ${n.schema}.${logName} on ${displayName(n)}`,
    };
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
    await dropLogObjects(db, m.mlog_id, n.schema, m.mlog_name);
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
            purgeId: outcome.purgeId,
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
