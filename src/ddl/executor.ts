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
  AlterMviewRefreshStatement,
  CreateMviewStatement,
  RefreshMviewStatement,
  Schedule,
  SimpleMviewStatement,
  Statement,
} from './ast.js';
import { evalNextSeconds, evalStartWith, extractTables, probeSelect } from './evaluate.js';
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
  refreshId?: number;
  rows?: number;
}

export interface DdlExecutorDeps {
  db: Knex;
  logger: Logger;
  clock: Clock;
  runner: RefreshRunner;
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
      default:
        throw new ValidationError(`${stmt.kind}: materialized view logs are not supported by this version yet`);
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
    if (method === 'FAST') {
      throw new ValidationError(
        `cannot create ${displayName(n)} with REFRESH FAST: fast refresh needs materialized view logs, which this version does not support yet; use COMPLETE or FORCE`,
      );
    }
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
        fast_reason: 'no materialized view log support in this version',
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
    if (stmt.method === 'FAST') {
      throw new ValidationError(`cannot switch ${displayName(n)} to REFRESH FAST: ${mv.fast_reason ?? 'not fast-refreshable'}`);
    }
    const scheduleChanged = stmt.schedule.startWith !== undefined || stmt.schedule.next !== undefined;
    const nowMs = clock.now();
    const sched = scheduleChanged ? await this.evalSchedule(stmt.schedule, nowMs) : undefined;
    await db.transaction(async (trx) => {
      const current = await this.mustFind(n, trx);
      await this.lockInfo(trx, current);
      const patch: Record<string, unknown> = { mview_modify_time: new Date(nowMs) };
      if (stmt.method) patch.refresh_method = stmt.method;
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
}
