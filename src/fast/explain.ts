import type { Knex } from 'knex';
import { findMlogByTable, logColumns, type MlogRow } from '../mlog/repository.js';
import { describeBaseTable } from '../mlog/logObjects.js';
import { analyzeFast, type FastPlan } from './analyze.js';
import { probeSelect } from '../ddl/evaluate.js';

/** A FAST plan tied to the MV log it reads and to the MV's output column names. */
export interface FastSetup {
  plan: FastPlan;
  mlog: MlogRow;
  /** The MV's column names, in select-list order (as the database names them). */
  outputColumns: string[];
  /** For select-project-filter views: MV column of each primary key column of the base table. */
  pkOutput?: Array<{ base: string; output: string }>;
  /** For `SELECT *`: the base table's columns in order (each is an MV column of the same name). */
  starColumns?: string[];
}

export type FastExplanation = { fast: true; setup: FastSetup } | { fast: false; reason: string };

/**
 * Can this definition be fast-refreshed, given the MV logs that exist now? `outputColumns` are
 * the names the database gives the select list (from planning it). The reason, when not, is
 * phrased for a person: it is what `explain-mv` prints and what REFRESH FAST is refused with.
 */
export async function explainFast(db: Knex, select: string, defaultSchema: string, outputColumns: string[]): Promise<FastExplanation> {
  const a = analyzeFast(select, defaultSchema);
  if (!a.ok) return { fast: false, reason: a.reason };
  const plan = a.plan;
  const t = `${plan.table.schema}.${plan.table.name}`;
  const mlog = await findMlogByTable(db, plan.table.schema, plan.table.name);
  if (!mlog) return { fast: false, reason: `${t} has no materialized view log (CREATE MATERIALIZED VIEW LOG ON ${t} (...))` };
  const inLog = new Set(logColumns(mlog).map((c) => c.toLowerCase()));
  let starColumns: string[] | undefined;
  let read = plan.columnsRead;
  if (plan.kind === 'spj' && plan.items === null) {
    const shape = await describeBaseTable(db, plan.table.schema, plan.table.name);
    starColumns = shape.columns.map((c) => c.name);
    read = [...read, ...starColumns.map((c) => c.toLowerCase())];
  }
  const missing = [...new Set(read)].filter((c) => !inLog.has(c));
  if (missing.length) {
    return { fast: false, reason: `column${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${t} ${missing.length > 1 ? 'are' : 'is'} not in its materialized view log` };
  }
  const setup: FastSetup = { plan, mlog, outputColumns, starColumns };
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

export interface ExplainResult {
  fastRefreshable: boolean;
  reason?: string;
  kind?: 'aggregate' | 'spj';
  table?: string;
  mlog?: string;
}

/** Can this SELECT be fast-refreshed with the MV logs that exist now, and if not, why not? */
export async function explainMv(db: Knex, select: string, defaultSchema: string): Promise<ExplainResult> {
  const probe = await probeSelect(db, select);
  const ex = await explainFast(db, select, defaultSchema, probe.columns);
  if (!ex.fast) return { fastRefreshable: false, reason: ex.reason };
  const { plan, mlog } = ex.setup;
  return {
    fastRefreshable: true,
    kind: plan.kind,
    table: `${plan.table.schema}.${plan.table.name}`,
    mlog: `${mlog.table_schema}.${mlog.mlog_name}`,
  };
}
