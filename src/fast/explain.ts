import type { Knex } from 'knex';
import { findMlogByTable, logColumns, type MlogRow } from '../mlog/repository.js';
import { describeBaseTable } from '../mlog/logObjects.js';
import { analyzeFast, definitionTables, type ColumnCatalog, type FastPlan, type JoinPlan, type Occurrence } from './analyze.js';
import { probeSelect } from '../ddl/evaluate.js';
import { serverFlavor } from '../db/flavor.js';

/** A FAST plan over one table, tied to the MV log it reads and to the MV's output column names. */
export interface TableSetup {
  shape: 'table';
  plan: FastPlan;
  mlog: MlogRow;
  /** The MV's column names, in select-list order (as the database names them). */
  outputColumns: string[];
  /** For select-project-filter views: MV column of each primary key column of the base table. */
  pkOutput?: Array<{ base: string; output: string }>;
  /** For `SELECT *`: the base table's columns in order (each is an MV column of the same name). */
  starColumns?: string[];
}

export interface OccurrenceSetup extends Occurrence {
  mlog: MlogRow;
  /** Columns this occurrence's delta and pre-change sources expose: primary key, then those read. */
  exposed: string[];
}

/** A FAST plan over an inner join, tied to the log of every table it reads. */
export interface JoinSetup {
  shape: 'join';
  plan: JoinPlan;
  /** In FROM order. */
  occurrences: OccurrenceSetup[];
  /** The distinct logs (a self-join reads one log under two aliases), by mlog_id. */
  mlogs: MlogRow[];
  outputColumns: string[];
  /** For select-project-join views: MV column of each primary key column of each occurrence. */
  pkOutput?: Array<{ alias: string; base: string; output: string }>;
  /** Estimated rows of each occurrence's table (orders the delta terms; see joinDelta.ts). */
  sizes: Record<string, number>;
}

export type FastSetup = TableSetup | JoinSetup;

/** Every MV log a setup reads. */
export function setupLogs(setup: FastSetup): MlogRow[] {
  return setup.shape === 'table' ? [setup.mlog] : setup.mlogs;
}

export type FastExplanation = { fast: true; setup: FastSetup } | { fast: false; reason: string };

const noLog = (t: string) => `${t} has no materialized view log (CREATE MATERIALIZED VIEW LOG ON ${t} (...))`;
const notInLog = (missing: string[], t: string) =>
  `column${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${t} ${missing.length > 1 ? 'are' : 'is'} not in its materialized view log`;

/** Columns (in table order) and estimated row counts of the tables a definition names. */
async function readCatalog(db: Knex, tables: Array<{ schema: string; name: string }>) {
  const columns = new Map<string, string[]>();
  const rows = new Map<string, number>();
  if (!tables.length) return { columns, rows };
  const pairs = tables.flatMap((t) => [t.schema, t.name]);
  const where = tables.map(() => '(TABLE_SCHEMA = ? AND TABLE_NAME = ?)').join(' OR ');
  const [cols] = (await db.raw(`SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t, COLUMN_NAME AS c FROM information_schema.COLUMNS WHERE ${where} ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION`, pairs)) as [
    Array<{ s: string; t: string; c: string }>,
  ];
  for (const c of cols) columns.set(`${c.s}.${c.t}`, [...(columns.get(`${c.s}.${c.t}`) ?? []), c.c]);
  const [sizes] = (await db.raw(`SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t, TABLE_ROWS AS n FROM information_schema.TABLES WHERE ${where}`, pairs)) as [
    Array<{ s: string; t: string; n: number | string | null }>,
  ];
  for (const r of sizes) rows.set(`${r.s}.${r.t}`, Number(r.n ?? 0));
  return { columns, rows };
}

/**
 * Can this definition be fast-refreshed, given the MV logs that exist now? `outputColumns` are
 * the names the database gives the select list (from planning it). The reason, when not, is
 * phrased for a person: it is what `explain-mv` prints and what REFRESH FAST is refused with.
 */
export async function explainFast(db: Knex, select: string, defaultSchema: string, outputColumns: string[]): Promise<FastExplanation> {
  // The tables' columns resolve unqualified names in a join (one round trip for all tables).
  const catalog = await readCatalog(db, definitionTables(select, defaultSchema) ?? []);
  const columnsOf: ColumnCatalog = (s, t) => catalog.columns.get(`${s}.${t}`);
  const a = analyzeFast(select, defaultSchema, columnsOf);
  if (!a.ok) return { fast: false, reason: a.reason };
  if (a.plan.shape === 'table') return explainTable(db, a.plan, outputColumns);
  return explainJoin(db, a.plan, outputColumns, catalog.rows);
}

async function explainTable(db: Knex, plan: FastPlan, outputColumns: string[]): Promise<FastExplanation> {
  const t = `${plan.table.schema}.${plan.table.name}`;
  const mlog = await findMlogByTable(db, plan.table.schema, plan.table.name);
  if (!mlog) return { fast: false, reason: noLog(t) };
  const inLog = new Set(logColumns(mlog).map((c) => c.toLowerCase()));
  let starColumns: string[] | undefined;
  let read = plan.columnsRead;
  if (plan.kind === 'spj' && plan.items === null) {
    const shape = await describeBaseTable(db, plan.table.schema, plan.table.name);
    starColumns = shape.columns.map((c) => c.name);
    read = [...read, ...starColumns.map((c) => c.toLowerCase())];
  }
  const missing = [...new Set(read)].filter((c) => !inLog.has(c));
  if (missing.length) return { fast: false, reason: notInLog(missing, t) };
  const setup: TableSetup = { shape: 'table', plan, mlog, outputColumns, starColumns };
  if (plan.kind === 'spj') {
    const pkOutput: Array<{ base: string; output: string }> = [];
    for (const pk of mlog.pkColumns) {
      let output: string | undefined;
      if (plan.items === null) output = pk;
      else {
        const item = plan.items.find((it) => it.column?.toLowerCase() === pk.toLowerCase());
        if (item) output = outputColumns[item.index];
      }
      if (!output) {
        return { fast: false, reason: `the select list must include the primary key column ${pk} of ${t} as a plain column` };
      }
      pkOutput.push({ base: pk, output });
    }
    setup.pkOutput = pkOutput;
  }
  return { fast: true, setup };
}

async function explainJoin(db: Knex, plan: JoinPlan, outputColumns: string[], rows: Map<string, number>): Promise<FastExplanation> {
  const logs = new Map<string, MlogRow>();
  for (const o of plan.occurrences) {
    const t = `${o.table.schema}.${o.table.name}`;
    if (logs.has(t)) continue;
    const mlog = await findMlogByTable(db, o.table.schema, o.table.name);
    if (!mlog) return { fast: false, reason: noLog(t) };
    logs.set(t, mlog);
  }
  // A BINLOG log's range is read from a temporary copy (joinRefresh.ts), under several aliases
  // in one statement: MySQL cannot open a temporary table twice in one statement, MariaDB can.
  const binlogged = [...logs].filter(([, m]) => m.capture_mode === 'BINLOG').map(([t]) => t);
  if (binlogged.length && (await serverFlavor(db)) !== 'mariadb') {
    return { fast: false, reason: `FAST refresh of a join over logs filled from the binary log (${binlogged.join(', ')}) needs MariaDB; use USING TRIGGERS here` };
  }
  // A table read under several aliases needs every column any of them reads.
  for (const [t, mlog] of logs) {
    const inLog = new Set(logColumns(mlog).map((c) => c.toLowerCase()));
    const read = new Set(plan.occurrences.filter((o) => `${o.table.schema}.${o.table.name}` === t).flatMap((o) => o.columnsRead));
    const missing = [...read].filter((c) => !inLog.has(c));
    if (missing.length) return { fast: false, reason: notInLog(missing, t) };
  }
  const occurrences: OccurrenceSetup[] = plan.occurrences.map((o) => {
    const mlog = logs.get(`${o.table.schema}.${o.table.name}`)!;
    const pk = new Set(mlog.pkColumns.map((c) => c.toLowerCase()));
    return { ...o, mlog, exposed: [...mlog.pkColumns, ...o.columnsRead.filter((c) => !pk.has(c))] };
  });
  const mlogs = [...new Map([...logs.values()].map((m) => [m.mlog_id, m])).values()].sort((a, b) => a.mlog_id - b.mlog_id);
  const sizes = Object.fromEntries(plan.occurrences.map((o) => [o.alias, rows.get(`${o.table.schema}.${o.table.name}`) ?? 0]));
  const setup: JoinSetup = { shape: 'join', plan, occurrences, mlogs, outputColumns, sizes };
  if (plan.kind === 'spj') {
    const pkOutput: NonNullable<JoinSetup['pkOutput']> = [];
    for (const o of occurrences) {
      for (const pk of o.mlog.pkColumns) {
        const item = plan.items.find((it) => it.column?.alias === o.alias && it.column.name.toLowerCase() === pk.toLowerCase());
        if (!item) {
          return {
            fast: false,
            reason: `the select list must include the primary key column ${o.alias}.${pk} of ${o.table.schema}.${o.table.name} as a plain column (a select-project-join view needs the primary key of every table)`,
          };
        }
        pkOutput.push({ alias: o.alias, base: pk, output: outputColumns[item.index]! });
      }
    }
    setup.pkOutput = pkOutput;
  }
  return { fast: true, setup };
}

export interface ExplainResult {
  fastRefreshable: boolean;
  reason?: string;
  kind?: 'aggregate' | 'spj';
  /** One-table definitions: the table and its log. */
  table?: string;
  mlog?: string;
  /** Join definitions: every occurrence (alias, table, log), and the rules a refresh follows. */
  join?: Array<{ alias: string; table: string; mlog: string }>;
  rules?: string[];
}

/** How a FAST refresh of a join definition works, for people (explain-mv). */
export function joinRules(setup: JoinSetup): string[] {
  const { plan } = setup;
  const n = setup.mlogs.length;
  const selfJoined = [...new Set(plan.occurrences.map((o) => `${o.table.schema}.${o.table.name}`))].filter(
    (t) => plan.occurrences.filter((o) => `${o.table.schema}.${o.table.name}` === t).length > 1,
  );
  const rules = [
    `inner join of ${plan.occurrences.length} table occurrences; every ON and WHERE condition is applied to each change`,
    n === 1
      ? 'each refresh takes one consistent cut of the log and commits the MV change with its watermark in one transaction'
      : `each refresh takes one consistent cut of all ${n} logs and commits the MV change with the watermark of every log in one transaction`,
    'tables taken in a fixed order (biggest first): for each table with changes, its log rows since the watermark are joined with the tables before it as they are at the cut and the tables after it as they were before the changes (rebuilt from the table and its log), so each change counts exactly once',
  ];
  if (selfJoined.length) rules.push(`${selfJoined.join(', ')} appears more than once (self-join): one log, one watermark, one delta term per alias`);
  if (plan.kind === 'aggregate') {
    rules.push('groups keep hidden row counts, so they vanish and reappear exactly; MIN / MAX of a group whose extreme was removed are re-read from the join at the cut');
  } else {
    rules.push(`rows are identified by the primary keys ${(setup.pkOutput ?? []).map((p) => `${p.alias}.${p.base}`).join(', ')}`);
  }
  return rules;
}

/** Can this SELECT be fast-refreshed with the MV logs that exist now, and if not, why not? */
export async function explainMv(db: Knex, select: string, defaultSchema: string): Promise<ExplainResult> {
  const probe = await probeSelect(db, select);
  const ex = await explainFast(db, select, defaultSchema, probe.columns);
  if (!ex.fast) return { fastRefreshable: false, reason: ex.reason };
  const setup = ex.setup;
  if (setup.shape === 'table') {
    return {
      fastRefreshable: true,
      kind: setup.plan.kind,
      table: `${setup.plan.table.schema}.${setup.plan.table.name}`,
      mlog: `${setup.mlog.table_schema}.${setup.mlog.mlog_name}`,
    };
  }
  return {
    fastRefreshable: true,
    kind: setup.plan.kind,
    join: setup.occurrences.map((o) => ({ alias: o.alias, table: `${o.table.schema}.${o.table.name}`, mlog: `${o.mlog.table_schema}.${o.mlog.mlog_name}` })),
    rules: joinRules(setup),
  };
}
