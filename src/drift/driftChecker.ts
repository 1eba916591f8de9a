import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { identityToken, innodbTableName, tableIdView } from '../mlog/identity.js';
import { dropLogTriggers, logTableComment, ownTriggerMarker } from '../mlog/logObjects.js';
import { triggerNames } from '../mlog/names.js';
import { evaluateLog, type CatalogView, type LogUnderCheck } from './evaluate.js';

// Changes made behind mvsched's back (DESIGN.md §2): every MVS_DRIFT_CHECK_S the leading planner
// compares every MV log with the catalog, in a fixed number of queries however many logs there
// are (their cost follows the tables in the logged schemas). BINLOG logs get the same checks
// without the trigger ones (capture follows their tables in the binary log and marks them BROKEN
// where it sees them dropped, renamed or replaced; the first reason recorded stays, whoever
// found it, and capture stops filling a log the moment it reads its BROKEN mark):
// - a log that can no longer capture its table (table dropped, re-created or renamed, a trigger
//   gone, a tracked column dropped / renamed / retyped, the primary key changed, the log table
//   gone or altered, a cascading foreign key added) is BROKEN: its triggers are dropped at once
//   (a trigger naming a dropped column fails every write), the reason recorded; FAST MVs then
//   fail with it, FORCE MVs refresh COMPLETE, until the log is re-created;
// - a table truncated or rebuilt (its identity moved, no log row for it) gets a complete refresh
//   (trigger SYSTEM) of every MV whose contents reflect the old identity;
// - a missing gate row (deleted by hand) is put back: writers would otherwise skip the gate.

export interface DriftCheckerDeps {
  db: Knex;
  logger: Logger;
  clock: Clock;
  /** Ask for a COMPLETE refresh of an MV with trigger SYSTEM (a request job); deduplicated by key. */
  requestSystemRefresh: (mviewId: number, key: string, reason: string) => Promise<void>;
  /** Bound of each DROP TRIGGER's wait for the table's open transactions (MVS_CUT_WAIT_MS). */
  ddlWaitMs: number;
}

export interface DriftReport {
  checked: number;
  broken: Array<{ mlogId: number; reason: string }>;
  /** MVs asked to refresh COMPLETE because their base table's identity moved. */
  systemRefreshes: number[];
  queries: number;
  ms: number;
}

interface MlogMeta extends LogUnderCheck {
  state: string;
  captureMode: string;
  modifiedAt: Date;
}

/** A log still CREATING after this long is one whose creation died half-way. */
const CREATING_GRACE_MS = 60_000;

const inList = (xs: readonly unknown[]) => xs.map(() => '?').join(', ');

export class DriftChecker {
  private readonly log: Logger;

  constructor(private readonly deps: DriftCheckerDeps) {
    this.log = deps.logger.child({ component: 'drift' });
  }

  /** One pass over every MV log. */
  async check(): Promise<DriftReport> {
    const t0 = this.deps.clock.now();
    const report: DriftReport = { checked: 0, broken: [], systemRefreshes: [], queries: 0, ms: 0 };
    const logs = await this.readLogs();
    report.queries++;
    if (logs.length) {
      const catalog = await this.readCatalog(logs, report);
      for (const m of logs) {
        report.checked++;
        await this.checkOne(m, catalog, report).catch((err: unknown) =>
          this.log.warn({ mlog_id: m.mlogId, err: errorMessage(err) }, 'drift check of a materialized view log failed; next pass retries'),
        );
      }
    }
    report.ms = this.deps.clock.now() - t0;
    return report;
  }

  private async readLogs(): Promise<MlogMeta[]> {
    const rows = (await this.deps.db('mvs_mlogs').select('*')) as Array<Record<string, unknown>>;
    return rows.map((r) => ({
      mlogId: Number(r.mlog_id),
      schema: String(r.table_schema),
      table: String(r.base_table_name),
      logTable: String(r.mlog_name),
      columns: JSON.parse(String(r.mlog_columns)) as string[],
      pk: JSON.parse(String(r.pk_columns)) as string[],
      state: String(r.state ?? 'OK'),
      captureMode: String(r.capture_mode ?? 'TRIGGERS'),
      modifiedAt: r.mlog_modify_time as Date,
      token: r.base_table_id === null || r.base_table_id === undefined ? null : Number(r.base_table_id),
    }));
  }

  /** Everything the checks compare, for all logs at once: a fixed number of queries. */
  private async readCatalog(logs: MlogMeta[], report: DriftReport): Promise<CatalogView> {
    const { db } = this.deps;
    const schemas = [...new Set(logs.map((l) => l.schema))];
    const names = [...new Set(logs.flatMap((l) => [l.table, l.logTable]))];
    const bases = [...new Set(logs.map((l) => l.table))];
    const q = async <T>(sql: string, bindings: unknown[]): Promise<T[]> => {
      report.queries++;
      const [rows] = (await db.raw(sql, bindings as never)) as [T[]];
      return rows;
    };
    const where = `TABLE_SCHEMA IN (${inList(schemas)}) AND TABLE_NAME IN (${inList(names)})`;
    const [tables, columns, keys, triggers, fks, gates, consumers] = await Promise.all([
      q<{ s: string; t: string; type: string; ct: Date | null; comment: string }>(
        `SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t, TABLE_TYPE AS type, CREATE_TIME AS ct, TABLE_COMMENT AS comment FROM information_schema.TABLES WHERE ${where}`,
        [...schemas, ...names],
      ),
      q<{ s: string; t: string; c: string; type: string; cs: string | null }>(
        `SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t, COLUMN_NAME AS c, COLUMN_TYPE AS type, CHARACTER_SET_NAME AS cs FROM information_schema.COLUMNS WHERE ${where}`,
        [...schemas, ...names],
      ),
      q<{ s: string; t: string; c: string }>(
        `SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t, COLUMN_NAME AS c FROM information_schema.KEY_COLUMN_USAGE WHERE ${where} ` +
          "AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        [...schemas, ...names],
      ),
      q<{ s: string; name: string; t: string; body: string }>(
        'SELECT TRIGGER_SCHEMA AS s, TRIGGER_NAME AS name, EVENT_OBJECT_TABLE AS t, ACTION_STATEMENT AS body FROM information_schema.TRIGGERS ' +
          `WHERE TRIGGER_SCHEMA IN (${inList(schemas)}) AND TRIGGER_NAME LIKE 'mvs\\_mlog\\_%'`,
        schemas,
      ),
      q<{ s: string; t: string; name: string; parent: string; onDelete: string; onUpdate: string }>(
        'SELECT CONSTRAINT_SCHEMA AS s, TABLE_NAME AS t, CONSTRAINT_NAME AS name, REFERENCED_TABLE_NAME AS parent, DELETE_RULE AS onDelete, ' +
          `UPDATE_RULE AS onUpdate FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA IN (${inList(schemas)}) AND TABLE_NAME IN (${inList(bases)})`,
        [...schemas, ...bases],
      ),
      q<{ id: number | string }>('SELECT mlog_id AS id FROM mvs_mlog_gates', []),
      q<{ mview: number | string; mlog: number | string; token: number | string | null }>(
        'SELECT mview_id AS mview, mlog_id AS mlog, base_table_id AS token FROM mvs_mview_base_tables WHERE mlog_id IS NOT NULL',
        [],
      ),
    ]);
    const ids = await this.tableIds(logs, report);
    return buildCatalog({ tables, columns, keys, triggers, fks, gates, consumers, ids });
  }

  /** InnoDB table ids of the base tables, where the PROCESS privilege lets us read them. */
  private async tableIds(logs: MlogMeta[], report: DriftReport): Promise<Map<string, number>> {
    const view = await tableIdView(this.deps.db);
    const byInno = new Map<string, string>();
    for (const l of logs) {
      const inno = innodbTableName(l.schema, l.table);
      if (inno) byInno.set(inno, `${l.schema}.${l.table}`);
    }
    if (!view || byInno.size === 0) return new Map();
    report.queries++;
    const [rows] = (await this.deps.db.raw(`SELECT NAME AS n, TABLE_ID AS id FROM ${view} WHERE NAME IN (${inList([...byInno.keys()])})`, [
      ...byInno.keys(),
    ] as never)) as [Array<{ n: string; id: number | string }>];
    return new Map(rows.map((r) => [byInno.get(r.n)!, Number(r.id)]));
  }

  private async checkOne(m: MlogMeta, catalog: CatalogView, report: DriftReport): Promise<void> {
    const triggers = m.captureMode !== 'BINLOG';
    const key = `${m.schema}.${m.table}`;
    if (m.state === 'CREATING') {
      if (this.deps.clock.now() - m.modifiedAt.getTime() < CREATING_GRACE_MS) return; // being made now
      await this.markBroken(m, 'its creation did not finish (CREATE MATERIALIZED VIEW LOG failed half-way)');
      report.broken.push({ mlogId: m.mlogId, reason: 'its creation did not finish' });
      return;
    }
    if (m.state === 'BROKEN') {
      // Its triggers must stay gone (a DROP that timed out behind a long transaction is retried).
      if (triggers && catalog.ownTriggers(m).length) await dropLogTriggers(this.deps.db, m.mlogId, m.schema, this.deps.ddlWaitMs);
      return;
    }
    const verdict = evaluateLog(m, catalog);
    if (verdict.problem) {
      await this.markBroken(m, verdict.problem);
      report.broken.push({ mlogId: m.mlogId, reason: verdict.problem });
      return;
    }
    if (triggers && !catalog.gates.has(m.mlogId)) {
      await this.deps.db('mvs_mlog_gates').insert({ mlog_id: m.mlogId }).onConflict('mlog_id').ignore();
      this.log.warn({ mlog_id: m.mlogId, table: key }, 'the gate row of a materialized view log was missing: put back');
    }
    const token = identityToken(catalog.tableIds.get(key), catalog.createTime(m.schema, m.table));
    if (token === null) return;
    if (m.token !== token) await this.deps.db('mvs_mlogs').where({ mlog_id: m.mlogId }).update({ base_table_id: token });
    for (const c of catalog.consumers.get(m.mlogId) ?? []) {
      if (c.token === null || c.token === token) continue;
      const reason =
        c.token === 0 ? `the materialized view log on ${key} was re-created` : `base table ${key} was truncated or rebuilt (its identity moved)`;
      await this.deps.requestSystemRefresh(c.mviewId, `system-${c.mviewId}-${token}`, reason);
      report.systemRefreshes.push(c.mviewId);
    }
  }

  /** Triggers first (writes go through again), then the state, with the reason. */
  private async markBroken(m: MlogMeta, reason: string): Promise<void> {
    const dropped = m.captureMode === 'BINLOG' ? [] : await dropLogTriggers(this.deps.db, m.mlogId, m.schema, this.deps.ddlWaitMs);
    await this.deps
      .db('mvs_mlogs')
      .where({ mlog_id: m.mlogId })
      .whereIn('state', ['OK', 'CREATING'])
      .update({ state: 'BROKEN', broken_reason: reason.slice(0, 4000), broken_at: new Date(this.deps.clock.now()) });
    this.log.error(
      { mlog_id: m.mlogId, table: `${m.schema}.${m.table}`, capture: m.captureMode, reason, dropped_triggers: dropped },
      m.captureMode === 'BINLOG'
        ? 'materialized view log BROKEN: capture stops filling it; FAST refreshes from it fail until it is re-created'
        : 'materialized view log BROKEN: its triggers are dropped; FAST refreshes from it fail until it is re-created',
    );
  }
}

/** The catalog rows, indexed for evaluateLog. */
function buildCatalog(r: {
  tables: Array<{ s: string; t: string; type: string; ct: Date | null; comment: string }>;
  columns: Array<{ s: string; t: string; c: string; type: string; cs: string | null }>;
  keys: Array<{ s: string; t: string; c: string }>;
  triggers: Array<{ s: string; name: string; t: string; body: string }>;
  fks: Array<{ s: string; t: string; name: string; parent: string; onDelete: string; onUpdate: string }>;
  gates: Array<{ id: number | string }>;
  consumers: Array<{ mview: number | string; mlog: number | string; token: number | string | null }>;
  ids: Map<string, number>;
}): CatalogView {
  const k = (s: string, t: string) => `${s}.${t}`;
  const tables = new Map(r.tables.map((x) => [k(x.s, x.t), x]));
  const columns = new Map<string, Map<string, { type: string; cs: string | null }>>();
  for (const c of r.columns) {
    const m = columns.get(k(c.s, c.t)) ?? new Map();
    m.set(c.c.toLowerCase(), { type: c.type, cs: c.cs });
    columns.set(k(c.s, c.t), m);
  }
  const keys = new Map<string, string[]>();
  for (const c of r.keys) keys.set(k(c.s, c.t), [...(keys.get(k(c.s, c.t)) ?? []), c.c]);
  const consumers = new Map<number, Array<{ mviewId: number; token: number | null }>>();
  for (const c of r.consumers) {
    const list = consumers.get(Number(c.mlog)) ?? [];
    list.push({ mviewId: Number(c.mview), token: c.token === null ? null : Number(c.token) });
    consumers.set(Number(c.mlog), list);
  }
  return {
    table: (s, t) => tables.get(k(s, t)),
    createTime: (s, t) => tables.get(k(s, t))?.ct ?? null,
    columns: (s, t) => columns.get(k(s, t)),
    primaryKey: (s, t) => keys.get(k(s, t)) ?? [],
    ownTriggers: (m) => {
      const names = new Set(Object.values(triggerNames(m.mlogId)));
      return r.triggers.filter((x) => x.s === m.schema && names.has(x.name) && String(x.body).includes(ownTriggerMarker(m.mlogId)));
    },
    cascadingKeys: (s, t) => r.fks.filter((f) => f.s === s && f.t === t && /CASCADE|SET NULL|SET DEFAULT/.test(`${f.onDelete} ${f.onUpdate}`)),
    logTableComment,
    gates: new Set(r.gates.map((g) => Number(g.id))),
    consumers,
    tableIds: r.ids,
  };
}
