import type { Knex } from 'knex';
import { isDuplicateKey, isLockNotGranted } from '../db/errors.js';
import { ConflictError, MvsError, NotFoundError, ValidationError } from '../errors.js';
import { explainFast, setupLogs } from '../fast/explain.js';
import { assertMviewNameAllowed, displayName, resolveName, type ResolvedName } from '../mv/identifiers.js';
import { findMviewByName, tableExists, type MviewRow, type RefreshMethod } from '../mv/repository.js';
import { dropMviewTable, dropShadowTables } from '../refresh/completeRefresh.js';
import type { RefreshOutcome } from '../refresh/runner.js';
import { nextExecTime } from '../schedule/nextTime.js';
import { describeSteps, refreshUpstream, type CascadeStep } from '../pipeline/cascade.js';
import { loadGraph, mviewNames, readersOfName } from '../pipeline/repository.js';
import type { AlterMviewRefreshStatement, CreateMviewStatement, DropMviewStatement, RefreshMviewStatement, SimpleMviewStatement } from './ast.js';
import { sleep, type DdlContext, type DdlResult } from './context.js';
import { extractTables, probeSelect } from './evaluate.js';
import { linkToLog, unlinkFromLog } from './links.js';
import { evalWhen, hasWhen, whenColumns } from './schedule.js';

/**
 * CREATE / ALTER / DROP / REFRESH MATERIALIZED VIEW (DESIGN.md §3). Every statement validates
 * everything it can before writing, writes metadata in one transaction, and on a later failure
 * (the first build of a new MV) undoes what it wrote, so an error leaves the database as it was.
 */
export class MviewDdl {
  constructor(private readonly ctx: DdlContext) {}

  private name(stmt: { name: { schema?: string; name: string } }): ResolvedName {
    return resolveName(stmt.name, this.ctx.deps.defaultSchema, 'materialized view');
  }

  private async mustFind(n: ResolvedName, trx: Knex | Knex.Transaction = this.ctx.db): Promise<MviewRow> {
    const mv = await findMviewByName(trx, n.schema, n.name);
    if (!mv) throw new NotFoundError(`materialized view ${displayName(n)} does not exist`);
    return mv;
  }

  async create(stmt: CreateMviewStatement): Promise<DdlResult> {
    const { db, clock, defaultSchema } = this.ctx.deps;
    const n = this.name(stmt);
    assertMviewNameAllowed(n.name);
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
    const tables = (extractTables(stmt.select, defaultSchema) ?? []).filter((t) => !(t.schema === n.schema && t.name === n.name));
    const fast = method === 'COMPLETE' ? undefined : await explainFast(db, stmt.select, defaultSchema, probe.columns);
    if (method === 'FAST' && fast && !fast.fast) {
      throw new ValidationError(`cannot create ${displayName(n)} with REFRESH FAST: ${fast.reason}`);
    }
    const linkTo = fast?.fast ? setupLogs(fast.setup) : [];
    const nowMs = clock.now();
    const sched = await evalWhen(db, stmt.schedule, nowMs);
    await this.refuseCycle(n, tables);

    // The name checks above race with a concurrent CREATE of the same name; the unique key on
    // (table_schema, mview_name) decides, and the loser gets the same error as a late one.
    const mviewId = await db
      .transaction(async (trx) => {
        const [id] = (await trx('mvs_mviews').insert({
          table_schema: n.schema,
          mview_name: n.name,
          mview_definition: stmt.select,
          refresh_method: method,
          ...whenColumns(sched),
          status: 'ACTIVE',
          fast_refreshable: false,
          fast_reason: fast === undefined ? null : fast.fast ? 'waiting for its first complete refresh' : fast.reason,
          created_at: new Date(nowMs),
          mview_modify_time: new Date(nowMs),
        })) as number[];
        await trx('mvs_mview_refresh_info').insert({ mview_id: id, next_time: null, updated_at: trx.fn.now(6) });
        if (tables.length) {
          // Share-locks the MVs it reads: a DROP of one of them waits, then sees this reader.
          await lockUpstream(trx, tables);
          const existing = new Set<string>();
          for (const t of tables) if (await tableExists(trx, t.schema, t.name)) existing.add(`${t.schema}.${t.name}`);
          const rows = tables
            .filter((t) => existing.has(`${t.schema}.${t.name}`))
            .map((t) => ({ mview_id: id, base_table_schema: t.schema, base_table_name: t.name }));
          if (rows.length) await trx('mvs_mview_base_tables').insert(rows);
        }
        for (const m of linkTo) await linkToLog(trx, id!, m, n, method);
        return id!;
      })
      .catch((err: unknown) => {
        if (isDuplicateKey(err)) throw new ConflictError(`materialized view ${displayName(n)} already exists`);
        throw err;
      });

    const outcome = await this.firstBuild(mviewId, n);
    const next = sched.anchor === null ? null : nextExecTime(sched.anchor, sched.interval, null);
    await db('mvs_mview_refresh_info')
      .where({ mview_id: mviewId })
      .update({ next_time: next === null ? null : new Date(next), updated_at: db.fn.now(6) });
    await this.ctx.notify({ kind: 'mview', id: mviewId, change: 'created' });
    this.ctx.deps.logger.info({ mview_id: mviewId, mview: displayName(n), rows: outcome.rows, next_time: next }, 'materialized view created');
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
   * A definition can only name MVs that exist, so a new MV closes a cycle only when an MV it
   * reads (directly or not) recorded its name as a plain table it reads (a table of that name,
   * dropped by hand since). Refused, naming them.
   */
  private async refuseCycle(n: ResolvedName, tables: Array<{ schema: string; name: string }>): Promise<void> {
    const readers = await readersOfName(this.ctx.db, n.schema, n.name);
    if (readers.length === 0 || tables.length === 0) return;
    const graph = await loadGraph(this.ctx.db);
    const upstream = (
      await this.ctx.db('mvs_mviews').whereIn(['table_schema', 'mview_name'], tables.map((t) => [t.schema, t.name])).pluck('mview_id')
    ).map(Number);
    const cycle = graph.cycleWith(upstream, readers).map((id) => graph.node(id)!.name);
    if (cycle.length) {
      throw new ValidationError(
        `cannot create materialized view ${displayName(n)}: it would read ${cycle.join(', ')}, which ${cycle.length === 1 ? 'reads' : 'read'} a table named ${displayName(n)} (a cycle)`,
      );
    }
  }

  /** The first COMPLETE build of a new MV; on failure every trace of the MV is removed. */
  private async firstBuild(mviewId: number, n: ResolvedName): Promise<Extract<RefreshOutcome, { kind: 'SUCCESS' }>> {
    try {
      // The metadata is committed, so a request for the new MV may already hold its lock: wait
      // for that run like REFRESH does, rather than fail the CREATE and tear the MV down.
      const deadline = this.ctx.waitDeadline();
      let outcome: RefreshOutcome;
      for (;;) {
        outcome = await this.ctx.deps.runner.run({ mviewId, trigger: 'MANUAL', method: 'COMPLETE' });
        if (outcome.kind !== 'DEFERRED' || this.ctx.deps.clock.now() > deadline) break;
        await sleep(100 + Math.random() * 200);
      }
      if (outcome.kind !== 'SUCCESS') {
        throw new ValidationError(
          `materialized view ${displayName(n)} could not be built: ${outcome.kind === 'FAILED' ? outcome.error : outcome.kind}`,
        );
      }
      return outcome;
    } catch (err) {
      await this.forget(mviewId, n, true);
      throw err;
    }
  }

  /** Remove every trace of an MV: metadata in one transaction, then its tables. */
  private async forget(mviewId: number, n: ResolvedName, withHistory: boolean): Promise<void> {
    const { db } = this.ctx;
    await db.transaction(async (trx) => {
      for (const table of ['mvs_mviews', 'mvs_mview_refresh_info', 'mvs_mview_base_tables', 'mvs_mview_version_map']) {
        await trx(table).where({ mview_id: mviewId }).delete();
      }
      if (withHistory) await trx('mvs_mview_refresh_hist').where({ mview_id: mviewId }).delete();
    });
    await this.dropTables(mviewId, n);
  }

  /** The MV's table and its leftovers: only tables mvsched made; says what it left. */
  private async dropTables(mviewId: number, n: ResolvedName): Promise<string> {
    const mv = { mview_id: mviewId, table_schema: n.schema, mview_name: n.name };
    await dropShadowTables(this.ctx.db, mv);
    const r = await dropMviewTable(this.ctx.db, mv);
    if (r !== 'foreign') return '';
    this.ctx.deps.logger.warn({ mview_id: mviewId, mview: displayName(n) }, 'left a table in the MV\'s place that mvsched did not make');
    return ` (left table ${displayName(n)} in place: mvsched did not make it)`;
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

  async alterRefresh(stmt: AlterMviewRefreshStatement): Promise<DdlResult> {
    const { db, clock, defaultSchema } = this.ctx.deps;
    const n = this.name(stmt);
    const mv = await this.mustFind(n);
    let fast: Awaited<ReturnType<typeof explainFast>> | undefined;
    if (stmt.method === 'FAST' || stmt.method === 'FORCE') {
      const probe = await probeSelect(db, mv.mview_definition);
      fast = await explainFast(db, mv.mview_definition, defaultSchema, probe.columns);
      if (stmt.method === 'FAST' && !fast.fast) {
        throw new ValidationError(`cannot switch ${displayName(n)} to REFRESH FAST: ${fast.reason}`);
      }
    }
    const nowMs = clock.now();
    const sched = hasWhen(stmt.schedule) ? await evalWhen(db, stmt.schedule, nowMs) : undefined;
    await db.transaction(async (trx) => {
      const current = await this.mustFind(n, trx);
      await this.lockInfo(trx, current);
      const patch: Record<string, unknown> = { mview_modify_time: new Date(nowMs) };
      if (stmt.method) patch.refresh_method = stmt.method;
      if (stmt.method === 'COMPLETE') await unlinkFromLog(trx, current.mview_id, null);
      if (fast) {
        const linked = await trx('mvs_mview_base_tables').where({ mview_id: current.mview_id }).whereNotNull('mlog_id').first('mlog_id');
        if (fast.fast && !linked) {
          // Consumes the logs from its next (complete) refresh on, which records the watermarks.
          for (const m of setupLogs(fast.setup)) await linkToLog(trx, current.mview_id, m, n, stmt.method!);
          patch.fast_refreshable = false;
          patch.fast_reason = 'waiting for its first complete refresh';
        } else if (!fast.fast) {
          patch.fast_reason = fast.reason;
        }
      }
      if (sched) Object.assign(patch, whenColumns(sched));
      await trx('mvs_mviews').where({ mview_id: current.mview_id }).update(patch);
      const infoPatch: Record<string, unknown> = { updated_at: trx.fn.now(6) };
      if (sched) {
        // A target-lag MV has no next_time: the planner starts its waves (pipeline/).
        const next = sched.anchor === null ? null : nextExecTime(sched.anchor, sched.interval, null);
        infoPatch.next_time = next === null ? null : new Date(next);
        infoPatch.consecutive_failures = 0;
        infoPatch.target_unmet_reason = null;
      }
      await trx('mvs_mview_refresh_info').where({ mview_id: current.mview_id }).update(infoPatch);
    });
    await this.ctx.notify({ kind: 'mview', id: mv.mview_id, change: 'altered' });
    return { statement: stmt.kind, name: displayName(n), mviewId: mv.mview_id, message: `altered materialized view ${displayName(n)}` };
  }

  async setStatus(stmt: SimpleMviewStatement): Promise<DdlResult> {
    const { db, clock } = this.ctx.deps;
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
    await this.ctx.notify({ kind: 'mview', id: mv.mview_id, change: 'altered' });
    return {
      statement: stmt.kind,
      name: displayName(n),
      mviewId: mv.mview_id,
      message: `${suspend ? 'suspended' : 'resumed'} materialized view ${displayName(n)}`,
    };
  }

  /**
   * DROP: refused while other MVs read it, naming them; with CASCADE those go first, downstream
   * first, each dropped as if on its own (so a reader that appears meanwhile still stops it).
   */
  async drop(stmt: DropMviewStatement): Promise<DdlResult> {
    const n = this.name(stmt);
    const mv = await this.mustFind(n);
    const dropped: string[] = [];
    if (stmt.cascade) {
      const graph = await loadGraph(this.ctx.db);
      const below = graph.topoOrder(graph.downstreamClosure(mv.mview_id)).reverse();
      for (const id of below) {
        const row = (await this.ctx.db('mvs_mviews').where({ mview_id: id }).first('table_schema', 'mview_name')) as
          | { table_schema: string; mview_name: string }
          | undefined;
        if (!row) continue; // dropped meanwhile
        const name = { schema: row.table_schema, name: row.mview_name };
        await this.dropOne(name);
        dropped.push(displayName(name));
      }
    }
    const left = await this.dropOne(n);
    const also = dropped.length ? ` and ${dropped.length} that read it, downstream first: ${dropped.join(', ')}` : '';
    return { statement: stmt.kind, name: displayName(n), mviewId: mv.mview_id, message: `dropped materialized view ${displayName(n)}${also}${left}` };
  }

  /** Drop one MV that no other MV reads; returns what it left behind (a note, or ''). */
  private async dropOne(n: ResolvedName): Promise<string> {
    const mv = await this.mustFind(n);
    await this.ctx.db.transaction(async (trx) => {
      const current = await this.mustFind(n, trx);
      // Locked first: a CREATE that reads this MV share-locks the row, so the readers seen below
      // include every committed one, and one being made waits for this transaction.
      await trx.raw('SELECT mview_id FROM mvs_mviews WHERE mview_id = ? FOR UPDATE', [current.mview_id]);
      const readers = (await readersOfName(trx, n.schema, n.name)).filter((id) => id !== current.mview_id);
      const names = [...(await mviewNames(trx, readers)).values()].sort();
      if (names.length) {
        throw new ConflictError(
          `cannot drop materialized view ${displayName(n)}: ${names.join(', ')} ${names.length === 1 ? 'reads' : 'read'} it ` +
            `(DROP MATERIALIZED VIEW ${displayName(n)} CASCADE drops ${names.length === 1 ? 'it' : 'them'} too)`,
          { readers: names },
        );
      }
      await this.lockInfo(trx, current);
      for (const table of ['mvs_mviews', 'mvs_mview_refresh_info', 'mvs_mview_base_tables', 'mvs_mview_version_map']) {
        await trx(table).where({ mview_id: current.mview_id }).delete();
      }
    });
    const left = await this.dropTables(mv.mview_id, n);
    await this.ctx.notify({ kind: 'mview', id: mv.mview_id, change: 'dropped' });
    return left;
  }

  async refresh(stmt: RefreshMviewStatement): Promise<DdlResult> {
    const n = this.name(stmt);
    const mv = await this.mustFind(n);
    const { db, clock, logger, runner } = this.ctx.deps;
    const deadline = this.ctx.waitDeadline();
    const upstream: CascadeStep[] = stmt.cascade ? await refreshUpstream({ db, clock, logger, runner, waitMs: deadline - clock.now() }, mv.mview_id) : [];
    const after = upstream.length ? ` after its upstream ${describeSteps(upstream)}` : stmt.cascade ? ' (it reads no other materialized view)' : '';
    for (;;) {
      const outcome = await this.ctx.deps.runner.run({ mviewId: mv.mview_id, trigger: 'MANUAL', method: stmt.method });
      switch (outcome.kind) {
        case 'SUCCESS':
          await this.ctx.notify({ kind: 'mview', id: mv.mview_id, change: 'refreshed' });
          return {
            statement: stmt.kind,
            name: displayName(n),
            mviewId: mv.mview_id,
            refreshId: outcome.refreshId,
            rows: outcome.rows,
            message: `refreshed materialized view ${displayName(n)} (${outcome.method}, ${outcome.rows} rows)${after}`,
            ...(stmt.cascade ? { upstream } : {}),
          };
        case 'FAILED':
          throw new MvsError(`refresh of ${displayName(n)} failed: ${outcome.error}`, { refreshId: outcome.refreshId });
        case 'GONE':
          throw new NotFoundError(`materialized view ${displayName(n)} does not exist`);
        case 'DEFERRED':
          // Another run holds the lock: wait for it rather than run twice or fail.
          if (this.ctx.deps.clock.now() > deadline) {
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

/** Share-lock the MV rows of `tables` that are MVs (a DROP of them then waits for this one). */
async function lockUpstream(trx: Knex.Transaction, tables: Array<{ schema: string; name: string }>): Promise<void> {
  for (const t of tables) {
    await trx.raw('SELECT mview_id FROM mvs_mviews WHERE table_schema = ? AND mview_name = ? LOCK IN SHARE MODE', [t.schema, t.name]);
  }
}
