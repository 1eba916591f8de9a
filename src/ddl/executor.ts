import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { isDuplicateKey, isLockNotGranted } from '../db/errors.js';
import { ConflictError, MvsError, NotFoundError, ValidationError } from '../errors.js';
import type { Logger } from '../log.js';
import { displayName, quoteQualified, resolveName, type ResolvedName } from '../mv/identifiers.js';
import { findMviewByName, tableExists, type MviewRow, type RefreshMethod } from '../mv/repository.js';
import { shadowTables } from '../refresh/completeRefresh.js';
import type { RefreshOutcome, RefreshRunner } from '../refresh/runner.js';
import { nextExecTime } from '../schedule/nextTime.js';
import type {
  AlterMlogPurgeStatement,
  CreateMlogStatement,
  PurgeClause,
  SimpleMlogStatement,
  AlterMviewRefreshStatement,
  CreateMviewStatement,
  RefreshMviewStatement,
  Schedule,
  SimpleMviewStatement,
  Statement,
} from './ast.js';
import { evalNextSeconds, evalStartWith, extractTables, probeSelect } from './evaluate.js';
import { explainFast } from '../fast/explain.js';
import { logTableName } from '../mlog/names.js';
import { createLogStatements, describeBaseTable, dropLogObjects, resolveTrackedColumns } from '../mlog/logObjects.js';
import { findMlogByTable, mlogConsumers } from '../mlog/repository.js';
import type { PurgeOutcome, PurgeRunner } from '../purge/purgeRunner.js';
import { parseStatement } from './parser.js';

export interface DdlEvent {
  kind: 'mview' | 'mlog';
  id: number;
  change: 'created' | 'altered' | 'dropped' | 'refreshed';
}

export interface DdlResult {
  statement: Statement['kind'];
  name: string;
  message: string;
  mviewId?: number;
  mlogId?: number;
  refreshId?: number;
  purgeId?: number;
  rows?: number;
}

export interface DdlExecutorDeps {
  db: Knex;
  logger: Logger;
  clock: Clock;
  runner: RefreshRunner;
  /** Runs PURGE MATERIALIZED VIEW LOG. */
  purger?: PurgeRunner;
  /** Database named by DATABASE_URL: the schema of unqualified names. */
  defaultSchema: string;
  /** Wake the planner (Redis pub/sub); failures are logged, the DDL has already committed. */
  notify: (event: DdlEvent) => Promise<void>;
  /** How long a REFRESH statement waits for a running refresh of the same MV. */
  refreshWaitMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Executes the MV DDL of DESIGN.md §3. Every statement validates everything it can before
 * writing, writes metadata in one transaction, and on a later failure (the first build of a new
 * MV) undoes what it wrote, so an error leaves the database as it was.
 */
export class DdlExecutor {
  constructor(private readonly deps: DdlExecutorDeps) {}

  async execute(sql: string): Promise<DdlResult> {
    const stmt = parseStatement(sql);
    switch (stmt.kind) {
      case 'createMview':
        return this.createMview(stmt);
      case 'alterMviewRefresh':
        return this.alterRefresh(stmt);
      case 'alterMviewSuspend':
      case 'alterMviewResume':
        return this.setStatus(stmt);
      case 'dropMview':
        return this.dropMview(stmt);
      case 'refreshMview':
        return this.refreshMview(stmt);
      case 'createMlog':
        return this.createMlog(stmt);
      case 'alterMlogPurge':
        return this.alterMlogPurge(stmt);
      case 'dropMlog':
        return this.dropMlog(stmt);
      case 'purgeMlog':
        return this.purgeMlog(stmt);
    }
  }

  private name(stmt: { name: { schema?: string; name: string } }): ResolvedName {
    return resolveName(stmt.name, this.deps.defaultSchema, 'materialized view');
  }

  private async mustFind(n: ResolvedName, trx: Knex | Knex.Transaction = this.deps.db): Promise<MviewRow> {
    const mv = await findMviewByName(trx, n.schema, n.name);
    if (!mv) throw new NotFoundError(`materialized view ${displayName(n)} does not exist`);
    return mv;
  }

  /** Evaluate START WITH / NEXT into the stored form: grid anchor + interval. */
  private async evalSchedule(s: Schedule, nowMs: number): Promise<{ anchor: number | null; interval: number | null }> {
    const interval = s.next !== undefined ? await evalNextSeconds(this.deps.db, s.next) : null;
    const start = s.startWith !== undefined ? await evalStartWith(this.deps.db, s.startWith) : null;
    if (start !== null) return { anchor: start, interval };
    if (interval !== null) return { anchor: nowMs + interval * 1000, interval };
    return { anchor: null, interval: null };
  }

  private async notify(event: DdlEvent): Promise<void> {
    try {
      await this.deps.notify(event);
    } catch (err) {
      this.deps.logger.warn({ err, event }, 'could not wake the planner; its periodic pass will pick the change up');
    }
  }

  private async createMview(stmt: CreateMviewStatement): Promise<DdlResult> {
    const { db, clock } = this.deps;
    const n = this.name(stmt);
    const method: RefreshMethod = stmt.method ?? 'COMPLETE';
    if (await findMviewByName(db, n.schema, n.name)) {
      throw new ConflictError(`materialized view ${displayName(n)} already exists`);
    }
    if (await tableExists(db, n.schema, n.name)) {
      throw new ConflictError(`a table or view named ${displayName(n)} already exists`);
    }
    const schemaRow = await db('information_schema.schemata').where({ schema_name: n.schema }).first('schema_name');
    if (!schemaRow) throw new NotFoundError(`database ${n.schema} does not exist`);

    const probe = await probeSelect(db, stmt.select);
    const dupCol = probe.columns.find((c, i) => probe.columns.findIndex((d) => d.toLowerCase() === c.toLowerCase()) !== i);
    if (dupCol) throw new ValidationError(`invalid SELECT: duplicate column name ${JSON.stringify(dupCol)}; give each column an alias`);
    const tables = (extractTables(stmt.select, this.deps.defaultSchema) ?? []).filter(
      (t) => !(t.schema === n.schema && t.name === n.name),
    );
    const fast = method === 'COMPLETE' ? undefined : await explainFast(db, stmt.select, this.deps.defaultSchema, probe.columns);
    if (method === 'FAST' && fast && !fast.fast) {
      throw new ValidationError(`cannot create ${displayName(n)} with REFRESH FAST: ${fast.reason}`);
    }
    const linkTo = fast?.fast ? fast.setup.mlog : undefined;
    const nowMs = clock.now();
    const sched = await this.evalSchedule(stmt.schedule, nowMs);

    // The name checks above race with a concurrent CREATE of the same name; the unique key on
    // (table_schema, mview_name) decides, and the loser gets the same error as a late one.
    const mviewId = await db.transaction(async (trx) => {
      const [id] = (await trx('mvs_mviews').insert({
        table_schema: n.schema,
        mview_name: n.name,
        mview_definition: stmt.select,
        refresh_method: method,
        refresh_start: sched.anchor === null ? null : new Date(sched.anchor),
        refresh_interval: sched.interval,
        status: 'ACTIVE',
        fast_refreshable: false,
        fast_reason: fast === undefined ? null : fast.fast ? 'waiting for its first complete refresh' : fast.reason,
        created_at: new Date(nowMs),
        mview_modify_time: new Date(nowMs),
      })) as number[];
      await trx('mvs_mview_refresh_info').insert({ mview_id: id, next_time: null, updated_at: trx.fn.now(6) });
      if (tables.length) {
        const existing = new Set<string>();
        for (const t of tables) if (await tableExists(trx, t.schema, t.name)) existing.add(`${t.schema}.${t.name}`);
        const rows = tables
          .filter((t) => existing.has(`${t.schema}.${t.name}`))
          .map((t) => ({ mview_id: id, base_table_schema: t.schema, base_table_name: t.name }));
        if (rows.length) await trx('mvs_mview_base_tables').insert(rows);
      }
      if (linkTo) await this.link(trx, id!, linkTo, n, method);
      return id!;
    }).catch((err: unknown) => {
      if (isDuplicateKey(err)) throw new ConflictError(`materialized view ${displayName(n)} already exists`);
      throw err;
    });

    let outcome: RefreshOutcome;
    try {
      // The metadata is committed, so a request for the new MV may already hold its lock: wait
      // for that run like REFRESH does, rather than fail the CREATE and tear the MV down.
      const deadline = clock.now() + (this.deps.refreshWaitMs ?? 10 * 60_000);
      for (;;) {
        outcome = await this.deps.runner.run({ mviewId, trigger: 'MANUAL', method: 'COMPLETE' });
        if (outcome.kind !== 'DEFERRED' || clock.now() > deadline) break;
        await sleep(100 + Math.random() * 200);
      }
      if (outcome.kind !== 'SUCCESS') {
        throw new ValidationError(
          `materialized view ${displayName(n)} could not be built: ${outcome.kind === 'FAILED' ? outcome.error : outcome.kind}`,
        );
      }
    } catch (err) {
      await this.forget(mviewId, n, true);
      throw err;
    }
    const next = sched.anchor === null ? null : nextExecTime(sched.anchor, sched.interval, null);
    await db('mvs_mview_refresh_info')
      .where({ mview_id: mviewId })
      .update({ next_time: next === null ? null : new Date(next), updated_at: db.fn.now(6) });
    await this.notify({ kind: 'mview', id: mviewId, change: 'created' });
    this.deps.logger.info({ mview_id: mviewId, mview: displayName(n), rows: outcome.rows, next_time: next }, 'materialized view created');
    return {
      statement: stmt.kind,
      name: displayName(n),
      mviewId,
      refreshId: outcome.refreshId,
      rows: outcome.rows,
      message: `created materialized view ${displayName(n)} (${outcome.rows} rows)`,
    };
  }

  /**
   * Make an MV a consumer of a log, at watermark 0 (which holds the log's purge until the MV's
   * first complete refresh records a real one). The log's row is share-locked so that a DROP
   * of the log cannot slip in between.
   */
  private async link(
    trx: Knex.Transaction,
    mviewId: number,
    mlog: { mlog_id: number; table_schema: string; base_table_name: string },
    n: ResolvedName,
    method: RefreshMethod,
  ): Promise<void> {
    const [rows] = (await trx.raw('SELECT mlog_id FROM mvs_mlogs WHERE mlog_id = ? LOCK IN SHARE MODE', [mlog.mlog_id])) as [unknown[]];
    if (rows.length === 0) {
      if (method === 'FAST') {
        throw new ConflictError(`cannot make ${displayName(n)} REFRESH FAST: the materialized view log on ${mlog.table_schema}.${mlog.base_table_name} was just dropped`);
      }
      return;
    }
    const key = { mview_id: mviewId, base_table_schema: mlog.table_schema, base_table_name: mlog.base_table_name };
    const updated = await trx('mvs_mview_base_tables').where(key).update({ mlog_id: mlog.mlog_id, consumed_watermark: 0 });
    if (!updated) await trx('mvs_mview_base_tables').insert({ ...key, mlog_id: mlog.mlog_id, consumed_watermark: 0 });
  }

  /** Release an MV's hold on its log (it no longer refreshes from it). */
  private async unlink(trx: Knex.Transaction, mviewId: number, reason: string | null): Promise<void> {
    await trx('mvs_mview_base_tables').where({ mview_id: mviewId }).whereNotNull('mlog_id').update({ mlog_id: null, consumed_watermark: 0 });
    await trx('mvs_mviews').where({ mview_id: mviewId }).update({ fast_refreshable: false, fast_reason: reason });
  }

  /** Remove every trace of an MV: metadata in one transaction, then its tables. */
  private async forget(mviewId: number, n: ResolvedName, withHistory: boolean): Promise<void> {
    const { db } = this.deps;
    await db.transaction(async (trx) => {
      for (const table of ['mvs_mviews', 'mvs_mview_refresh_info', 'mvs_mview_base_tables', 'mvs_mview_version_map']) {
        await trx(table).where({ mview_id: mviewId }).delete();
      }
      if (withHistory) await trx('mvs_mview_refresh_hist').where({ mview_id: mviewId }).delete();
    });
    const { building, retired } = shadowTables(mviewId);
    await db.raw(
      `DROP TABLE IF EXISTS ${quoteQualified(n)}, ${quoteQualified({ schema: n.schema, name: building })}, ${quoteQualified({ schema: n.schema, name: retired })}`,
    );
  }

  /** Lock an MV's refresh-info row, waiting for a running refresh; a long one is a conflict. */
  private async lockInfo(trx: Knex.Transaction, mv: MviewRow): Promise<void> {
    try {
      await trx.raw('SELECT mview_id FROM mvs_mview_refresh_info WHERE mview_id = ? FOR UPDATE', [mv.mview_id]);
    } catch (err) {
      if (isLockNotGranted(err)) {
        throw new ConflictError(`a refresh of ${mv.table_schema}.${mv.mview_name} is running; try again when it finishes`);
      }
      throw err;
    }
  }

  private async alterRefresh(stmt: AlterMviewRefreshStatement): Promise<DdlResult> {
    const { db, clock } = this.deps;
    const n = this.name(stmt);
    const mv = await this.mustFind(n);
    let fast: Awaited<ReturnType<typeof explainFast>> | undefined;
    if (stmt.method === 'FAST' || stmt.method === 'FORCE') {
      const probe = await probeSelect(db, mv.mview_definition);
      fast = await explainFast(db, mv.mview_definition, this.deps.defaultSchema, probe.columns);
      if (stmt.method === 'FAST' && !fast.fast) {
        throw new ValidationError(`cannot switch ${displayName(n)} to REFRESH FAST: ${fast.reason}`);
      }
    }
    const scheduleChanged = stmt.schedule.startWith !== undefined || stmt.schedule.next !== undefined;
    const nowMs = clock.now();
    const sched = scheduleChanged ? await this.evalSchedule(stmt.schedule, nowMs) : undefined;
    await db.transaction(async (trx) => {
      const current = await this.mustFind(n, trx);
      await this.lockInfo(trx, current);
      const patch: Record<string, unknown> = { mview_modify_time: new Date(nowMs) };
      if (stmt.method) patch.refresh_method = stmt.method;
      if (stmt.method === 'COMPLETE') await this.unlink(trx, current.mview_id, null);
      if (fast) {
        const linked = await trx('mvs_mview_base_tables').where({ mview_id: current.mview_id }).whereNotNull('mlog_id').first('mlog_id');
        if (fast.fast && !linked) {
          // Consumes the log from its next (complete) refresh on, which records the watermark.
          await this.link(trx, current.mview_id, fast.setup.mlog, n, stmt.method!);
          patch.fast_refreshable = false;
          patch.fast_reason = 'waiting for its first complete refresh';
        } else if (!fast.fast) {
          patch.fast_reason = fast.reason;
        }
      }
      if (sched) {
        patch.refresh_start = sched.anchor === null ? null : new Date(sched.anchor);
        patch.refresh_interval = sched.interval;
      }
      await trx('mvs_mviews').where({ mview_id: current.mview_id }).update(patch);
      const infoPatch: Record<string, unknown> = { updated_at: trx.fn.now(6) };
      if (sched) {
        const next = sched.anchor === null ? null : nextExecTime(sched.anchor, sched.interval, null);
        infoPatch.next_time = next === null ? null : new Date(next);
        infoPatch.consecutive_failures = 0;
      }
      await trx('mvs_mview_refresh_info').where({ mview_id: current.mview_id }).update(infoPatch);
    });
    await this.notify({ kind: 'mview', id: mv.mview_id, change: 'altered' });
    return { statement: stmt.kind, name: displayName(n), mviewId: mv.mview_id, message: `altered materialized view ${displayName(n)}` };
  }

  private async setStatus(stmt: SimpleMviewStatement): Promise<DdlResult> {
    const { db, clock } = this.deps;
    const n = this.name(stmt);
    const mv = await this.mustFind(n);
    const suspend = stmt.kind === 'alterMviewSuspend';
    const nowMs = clock.now();
    await db.transaction(async (trx) => {
      const current = await this.mustFind(n, trx);
      await this.lockInfo(trx, current);
      await trx('mvs_mviews')
        .where({ mview_id: current.mview_id })
        .update({ status: suspend ? 'SUSPENDED' : 'ACTIVE', mview_modify_time: new Date(nowMs) });
      const infoPatch: Record<string, unknown> = { updated_at: trx.fn.now(6) };
      if (!suspend && current.refresh_start) {
        // Back on the grid; a slot missed while suspended gets one catch-up run.
        const info = await trx('mvs_mview_refresh_info').where({ mview_id: current.mview_id }).first('last_success_endtime');
        const last = info?.last_success_endtime ? (info.last_success_endtime as Date).getTime() : null;
        const next = nextExecTime(current.refresh_start.getTime(), current.refresh_interval, last);
        infoPatch.next_time = next === null ? null : new Date(next);
        infoPatch.consecutive_failures = 0;
      }
      await trx('mvs_mview_refresh_info').where({ mview_id: current.mview_id }).update(infoPatch);
    });
    await this.notify({ kind: 'mview', id: mv.mview_id, change: 'altered' });
    return {
      statement: stmt.kind,
      name: displayName(n),
      mviewId: mv.mview_id,
      message: `${suspend ? 'suspended' : 'resumed'} materialized view ${displayName(n)}`,
    };
  }

  private async dropMview(stmt: SimpleMviewStatement): Promise<DdlResult> {
    const { db } = this.deps;
    const n = this.name(stmt);
    const mv = await this.mustFind(n);
    await db.transaction(async (trx) => {
      const current = await this.mustFind(n, trx);
      await this.lockInfo(trx, current);
      for (const table of ['mvs_mviews', 'mvs_mview_refresh_info', 'mvs_mview_base_tables', 'mvs_mview_version_map']) {
        await trx(table).where({ mview_id: current.mview_id }).delete();
      }
    });
    const { building, retired } = shadowTables(mv.mview_id);
    await db.raw(
      `DROP TABLE IF EXISTS ${quoteQualified(n)}, ${quoteQualified({ schema: n.schema, name: building })}, ${quoteQualified({ schema: n.schema, name: retired })}`,
    );
    await this.notify({ kind: 'mview', id: mv.mview_id, change: 'dropped' });
    return { statement: stmt.kind, name: displayName(n), mviewId: mv.mview_id, message: `dropped materialized view ${displayName(n)}` };
  }

  private async refreshMview(stmt: RefreshMviewStatement): Promise<DdlResult> {
    const n = this.name(stmt);
    const mv = await this.mustFind(n);
    const deadline = this.deps.clock.now() + (this.deps.refreshWaitMs ?? 10 * 60_000);
    for (;;) {
      const outcome = await this.deps.runner.run({ mviewId: mv.mview_id, trigger: 'MANUAL', method: stmt.method });
      switch (outcome.kind) {
        case 'SUCCESS':
          await this.notify({ kind: 'mview', id: mv.mview_id, change: 'refreshed' });
          return {
            statement: stmt.kind,
            name: displayName(n),
            mviewId: mv.mview_id,
            refreshId: outcome.refreshId,
            rows: outcome.rows,
            message: `refreshed materialized view ${displayName(n)} (${outcome.method}, ${outcome.rows} rows)`,
          };
        case 'FAILED':
          throw new MvsError(`refresh of ${displayName(n)} failed: ${outcome.error}`, { refreshId: outcome.refreshId });
        case 'GONE':
          throw new NotFoundError(`materialized view ${displayName(n)} does not exist`);
        case 'DEFERRED':
          // Another run holds the lock: wait for it rather than run twice or fail.
          if (this.deps.clock.now() > deadline) {
            throw new ConflictError(`a refresh of ${displayName(n)} has been running too long; try again later`);
          }
          await sleep(100 + Math.random() * 200);
          continue;
        default:
          throw new MvsError(`unexpected refresh outcome ${outcome.kind}`);
      }
    }
  }
  // ---- MV logs -------------------------------------------------------------------------------

  private tableName(stmt: { table: { schema?: string; name: string } }): ResolvedName {
    return resolveName(stmt.table, this.deps.defaultSchema, 'table');
  }

  private async mustFindMlog(n: ResolvedName, trx: Knex | Knex.Transaction = this.deps.db) {
    const m = await findMlogByTable(trx, n.schema, n.name);
    if (!m) throw new NotFoundError(`there is no materialized view log on ${displayName(n)}`);
    return m;
  }

  /** PURGE clause -> stored method, grid anchor and interval, and the first next_time. */
  private async evalPurge(p: PurgeClause | undefined, nowMs: number) {
    if (!p) return { method: 'MANUAL' as const, anchor: null, interval: null, next: null };
    if (p.immediate) return { method: 'IMMEDIATE' as const, anchor: null, interval: null, next: null };
    const s = await this.evalSchedule({ startWith: p.startWith, next: p.next }, nowMs);
    return { method: 'SCHEDULED' as const, anchor: s.anchor, interval: s.interval, next: s.anchor === null ? null : nextExecTime(s.anchor, s.interval, null) };
  }

  private async createMlog(stmt: CreateMlogStatement): Promise<DdlResult> {
    const { db, clock } = this.deps;
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
    const purge = await this.evalPurge(stmt.purge, nowMs);
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
      const statements = createLogStatements({
        mlogId,
        schema: n.schema,
        table: n.name,
        logTable: logName,
        metaSchema: this.deps.defaultSchema,
        shape,
        tracked,
      });
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
    await this.notify({ kind: 'mlog', id: mlogId, change: 'created' });
    this.deps.logger.info({ mlog_id: mlogId, table: displayName(n), columns: tracked, purge: purge.method }, 'materialized view log created');
    return {
      statement: stmt.kind,
      name: displayName(n),
      mlogId,
      message: `created materialized view log ${n.schema}.${logName} on ${displayName(n)}`,
    };
  }

  private async alterMlogPurge(stmt: AlterMlogPurgeStatement): Promise<DdlResult> {
    const { db, clock } = this.deps;
    const n = this.tableName(stmt);
    const m = await this.mustFindMlog(n);
    const nowMs = clock.now();
    const purge = await this.evalPurge(stmt.purge, nowMs);
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
    await this.notify({ kind: 'mlog', id: m.mlog_id, change: 'altered' });
    return { statement: stmt.kind, name: displayName(n), mlogId: m.mlog_id, message: `altered materialized view log on ${displayName(n)}` };
  }

  private async dropMlog(stmt: SimpleMlogStatement): Promise<DdlResult> {
    const { db } = this.deps;
    const n = this.tableName(stmt);
    const m = await this.mustFindMlog(n);
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
      for (const c of consumers) await this.unlink(trx, c.mview_id, `the materialized view log on ${displayName(n)} was dropped`);
      for (const t of ['mvs_mlogs', 'mvs_mlog_purge_info', 'mvs_mlog_gates']) await trx(t).where({ mlog_id: m.mlog_id }).delete();
    });
    await dropLogObjects(db, m.mlog_id, n.schema, m.mlog_name);
    await this.notify({ kind: 'mlog', id: m.mlog_id, change: 'dropped' });
    return { statement: stmt.kind, name: displayName(n), mlogId: m.mlog_id, message: `dropped materialized view log on ${displayName(n)}` };
  }

  private async purgeMlog(stmt: SimpleMlogStatement): Promise<DdlResult> {
    const n = this.tableName(stmt);
    const m = await this.mustFindMlog(n);
    if (!this.deps.purger) throw new MvsError('this process cannot run purges');
    const deadline = this.deps.clock.now() + (this.deps.refreshWaitMs ?? 10 * 60_000);
    for (;;) {
      const outcome: PurgeOutcome = await this.deps.purger.run({ mlogId: m.mlog_id, trigger: 'MANUAL' });
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
          if (this.deps.clock.now() > deadline) throw new ConflictError(`a purge of the log on ${displayName(n)} has been running too long; try again later`);
          await sleep(100 + Math.random() * 200);
          continue;
        default:
          throw new MvsError(`unexpected purge outcome ${outcome.kind}`);
      }
    }
  }
}
