import type { Knex } from 'knex';
import { quoteIdent } from '../mv/identifiers.js';
import { OLD_NEW_COLUMN, SEQ_COLUMN } from '../mlog/names.js';
import {
  aggregateShape,
  applyAggregateDelta,
  baseSource,
  columnInfo,
  createTemporary,
  deltaColumns,
  NO_CHANGES,
  qt,
  withCurrentValues,
  type FastChanges,
  type TableRef,
} from './aggregateApply.js';
import type { AggregatePlan } from './analyze.js';
import type { FastSetup, TableSetup } from './explain.js';
import { applyJoin, type JoinReaders } from './joinRefresh.js';

// Incremental (FAST) refresh from MV logs, and the pieces a log-backed MV's complete build
// needs (hidden helper columns, keys). All writes to the MV go through the caller's transaction,
// so the MV change commits together with the log watermarks it consumed. One-table definitions
// are applied here from their log alone; joins in joinRefresh.ts.

const q = quoteIdent;

export type { FastChanges, TableRef } from './aggregateApply.js';
export { fillFromSnapshot } from './copyRows.js';

/** Hidden columns of an aggregate MV: the row count of each group, and per aggregate what it needs. */
export function hiddenColumns(setup: FastSetup): Array<{ name: string; expr: string }> {
  if (setup.plan.kind !== 'aggregate') return [];
  const out = [{ name: '__mvs_cnt', expr: 'COUNT(*)' }];
  setup.plan.aggregates.forEach((a, k) => {
    if (a.fn === 'SUM' || a.fn === 'AVG' || a.fn === 'MIN' || a.fn === 'MAX') out.push({ name: `__mvs_cnt_${k}`, expr: `COUNT(${a.arg})` });
    if (a.fn === 'AVG') out.push({ name: `__mvs_sum_${k}`, expr: `SUM(${a.arg})` });
  });
  return out;
}

/** The SELECT a log-backed MV is built from: the definition plus its hidden columns. */
export function buildSelect(setup: FastSetup, definition: string): string {
  const plan = setup.plan;
  if (plan.kind !== 'aggregate') return definition;
  const items = [...plan.groups, ...plan.aggregates].sort((a, b) => a.index - b.index);
  const cols = [
    ...items.map((it) => `${it.expr} AS ${q(setup.outputColumns[it.index]!)}`),
    ...hiddenColumns(setup).map((h) => `${h.expr} AS ${q(h.name)}`),
  ];
  const src = baseSource(setup);
  return (
    `SELECT ${cols.join(', ')} ${src.from}` +
    (src.where ? ` WHERE ${src.where}` : '') +
    (plan.groups.length ? ` GROUP BY ${plan.groups.map((g) => g.expr).join(', ')}` : '')
  );
}

export function allColumns(setup: FastSetup): string[] {
  return [...setup.outputColumns, ...hiddenColumns(setup).map((h) => h.name)];
}

const UNINDEXABLE = new Set(['tinytext', 'text', 'mediumtext', 'longtext', 'tinyblob', 'blob', 'mediumblob', 'longblob', 'json', 'geometry']);

/**
 * Give a freshly created (empty) build table what FAST needs: hidden columns made INVISIBLE (so
 * `SELECT *` shows the definition's columns only), and a key to find groups / rows by.
 */
export async function prepareBuildTable(db: Knex, build: TableRef, setup: FastSetup): Promise<void> {
  const info = await columnInfo(db, build);
  const alters: string[] = [];
  for (const h of hiddenColumns(setup)) {
    const c = info.get(h.name.toLowerCase())!;
    alters.push(`MODIFY COLUMN ${q(h.name)} ${c.columnType} NULL INVISIBLE`);
  }
  const keyCols =
    setup.plan.kind === 'aggregate' ? setup.plan.groups.map((g) => setup.outputColumns[g.index]!) : (setup.pkOutput ?? []).map((p) => p.output);
  const indexable = keyCols.length > 0 && keyCols.length <= 16 && keyCols.every((c) => !UNINDEXABLE.has(info.get(c.toLowerCase())?.dataType ?? 'text'));
  if (indexable) {
    // Primary-key columns are unique in an SPJ view; group values are unique too, but may be NULL.
    alters.push(`ADD ${setup.plan.kind === 'spj' ? 'UNIQUE ' : ''}INDEX __mvs_key (${keyCols.map(q).join(', ')})`);
  }
  if (alters.length) await db.raw(`ALTER TABLE ${qt(build)} ${alters.join(', ')}`);
}

export interface FastRange {
  /** Consumed watermark: log rows after this one are applied ... */
  from: number;
  /** ... up to and including the cut's high-water mark. */
  to: number;
}

/**
 * Apply the log rows in (from, to] of every log (`ranges` by mlog_id) to the MV. `trx` is the
 * refresh's transaction (READ COMMITTED: the rows up to the cut are committed and never change);
 * `snapshot` sees the base tables as of the cut (and so does each of `also`, which a join's delta
 * is read on in parts at once). Nothing touches the MV before `ready` resolves (a join's delta
 * query is sent before). Returns the MV rows changed.
 */
export async function applyFast(
  trx: Knex.Transaction,
  snapshot: Knex.Transaction,
  mv: TableRef,
  setup: FastSetup,
  ranges: Map<number, FastRange>,
  ready: Promise<unknown> = Promise.resolve(),
  readers: JoinReaders = {},
): Promise<FastChanges> {
  if (setup.shape === 'join') return applyJoin(trx, snapshot, mv, setup, ranges, ready, readers);
  await ready;
  const range = ranges.get(setup.mlog.mlog_id)!;
  if (range.to <= range.from) return NO_CHANGES;
  return setup.plan.kind === 'aggregate' ? applyAggregate(trx, snapshot, mv, setup, setup.plan, range) : applySpj(trx, mv, setup, range);
}

function logRange(setup: TableSetup): string {
  const a = q(setup.plan.alias);
  return `${a}.${q(SEQ_COLUMN)} > ? AND ${a}.${q(SEQ_COLUMN)} <= ?`;
}

const logTable = (setup: TableSetup): TableRef => ({ schema: setup.mlog.table_schema, name: setup.mlog.mlog_name });

async function applySpj(trx: Knex.Transaction, mv: TableRef, setup: TableSetup, range: FastRange): Promise<FastChanges> {
  const plan = setup.plan;
  if (plan.kind !== 'spj') throw new Error('not an SPJ plan');
  const log = qt(logTable(setup));
  const a = q(plan.alias);
  const pk = setup.mlog.pkColumns;
  const pkOut = setup.pkOutput!;
  const bind = [range.from, range.to];
  const touched = `SELECT DISTINCT ${pk.map((c) => `${a}.${q(c)}`).join(', ')} FROM ${log} AS ${a} WHERE ${logRange(setup)}`;
  const [del] = (await trx.raw(
    `DELETE m FROM (${touched}) AS k STRAIGHT_JOIN ${qt(mv)} AS m ON ${pkOut.map((p) => `m.${q(p.output)} = k.${q(p.base)}`).join(' AND ')}`,
    bind,
  )) as [{ affectedRows: number }];
  // Each touched row's state at the cut is its last image in the range: +1 it exists with these
  // values, -1 it was deleted (or moved to another key, which has its own +1).
  const last = `SELECT MAX(${a}.${q(SEQ_COLUMN)}) AS __mvs_last FROM ${log} AS ${a} WHERE ${logRange(setup)} GROUP BY ${pk.map((c) => `${a}.${q(c)}`).join(', ')}`;
  const exprs = plan.items === null ? setup.starColumns!.map((c) => `${a}.${q(c)}`) : plan.items.map((it) => it.expr);
  const [ins] = (await trx.raw(
    `INSERT INTO ${qt(mv)} (${setup.outputColumns.map(q).join(', ')}) ` +
      `SELECT ${exprs.join(', ')} FROM ${log} AS ${a} JOIN (${last}) AS __mvs_l ON ${a}.${q(SEQ_COLUMN)} = __mvs_l.__mvs_last ` +
      `WHERE ${a}.${q(OLD_NEW_COLUMN)} = 1` +
      (plan.where ? ` AND (${plan.where})` : ''),
    bind,
  )) as [{ affectedRows: number }];
  return { changed: del.affectedRows + ins.affectedRows, inserted: ins.affectedRows, deleted: del.affectedRows };
}

async function applyAggregate(
  trx: Knex.Transaction,
  snapshot: Knex.Transaction,
  mv: TableRef,
  setup: TableSetup,
  plan: AggregatePlan,
  range: FastRange,
): Promise<FastChanges> {
  const log = qt(logTable(setup));
  const a = q(plan.alias);
  const shape = aggregateShape(setup);
  const delta = `__mvs_delta_${Number(setup.mlog.mlog_id)}_${mv.name.length}_${process.pid}`.slice(0, 64);
  // The delta per group, straight from the log's images (+1 new, -1 old), joined with the
  // group's current values in the MV.
  const dcols = [...plan.groups.map((g, i) => `${g.expr} AS g${i}`), ...deltaColumns(shape, `${a}.${q(OLD_NEW_COLUMN)}`, (k) => plan.aggregates[k]!.arg!)];
  const agg =
    `SELECT ${dcols.join(', ')} FROM ${log} AS ${a} WHERE ${logRange(setup)}` +
    (plan.where ? ` AND (${plan.where})` : '') +
    (plan.groups.length ? ` GROUP BY ${plan.groups.map((g) => g.expr).join(', ')}` : '');
  await createTemporary(trx, delta, withCurrentValues(mv, shape, `(${agg})`), [range.from, range.to]);
  try {
    return await applyAggregateDelta(trx, snapshot, mv, shape, delta);
  } finally {
    await trx.raw(`DROP TEMPORARY TABLE IF EXISTS ${q(delta)}`);
  }
}
