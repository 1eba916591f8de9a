import type { Knex } from 'knex';
import { exactRows, exactStream, type ExactValue } from '../db/exactValues.js';
import { quoteIdent } from '../mv/identifiers.js';
import { OLD_NEW_COLUMN, SEQ_COLUMN } from '../mlog/names.js';
import type { AggregatePlan, AggregateItem } from './analyze.js';
import type { FastSetup } from './explain.js';

// Incremental (FAST) refresh from an MV log, and the pieces a log-backed MV's complete build
// needs (hidden helper columns, keys). All writes to the MV go through the caller's transaction,
// so the MV change commits together with the log watermark it consumed.

const q = quoteIdent;

export interface TableRef {
  schema: string;
  name: string;
}

const qt = (t: TableRef) => `${q(t.schema)}.${q(t.name)}`;

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

function fromClause(setup: FastSetup, table: TableRef = setup.plan.table): string {
  return `FROM ${qt(table)} AS ${q(setup.plan.alias)}`;
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
  return (
    `SELECT ${cols.join(', ')} ${fromClause(setup)}` +
    (plan.where ? ` WHERE ${plan.where}` : '') +
    (plan.groups.length ? ` GROUP BY ${plan.groups.map((g) => g.expr).join(', ')}` : '')
  );
}

export function allColumns(setup: FastSetup): string[] {
  return [...setup.outputColumns, ...hiddenColumns(setup).map((h) => h.name)];
}

interface ColumnInfo {
  name: string;
  dataType: string;
  columnType: string;
}

async function columnInfo(db: Knex | Knex.Transaction, t: TableRef): Promise<Map<string, ColumnInfo>> {
  const rows = (await db('information_schema.columns')
    .where({ table_schema: t.schema, table_name: t.name })
    .select({ name: 'column_name', dataType: 'data_type', columnType: 'column_type' })) as ColumnInfo[];
  return new Map(rows.map((r) => [r.name.toLowerCase(), { ...r, dataType: String(r.dataType).toLowerCase() }]));
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

/** Copy the rows of `select`, as seen by `snapshot`, into `target` (batched multi-row INSERTs). */
export async function fillFromSnapshot(
  db: Knex | Knex.Transaction,
  snapshot: Knex.Transaction,
  target: TableRef,
  columns: string[],
  select: string,
  onProgress?: (rows: number) => void,
): Promise<number> {
  const perBatch = Math.max(1, Math.min(1000, Math.floor(30_000 / columns.length)));
  const head = `INSERT INTO ${qt(target)} (${columns.map(q).join(', ')}) VALUES `;
  const tuple = `(${columns.map(() => '?').join(', ')})`;
  let batch: ExactValue[][] = [];
  let rows = 0;
  const flush = async () => {
    if (!batch.length) return;
    await db.raw(head + batch.map(() => tuple).join(', '), batch.flat() as never);
    rows += batch.length;
    batch = [];
    if (onProgress && rows % 100_000 < perBatch) onProgress(rows);
  };
  for await (const row of exactStream(snapshot, `SELECT * FROM (${select}) AS __mvs_def`)) {
    batch.push(row);
    if (batch.length >= perBatch) await flush();
  }
  await flush();
  return rows;
}

/** A bound value compared with a column of this type, without a detour through DOUBLE. */
function typedParam(c: ColumnInfo | undefined): string {
  if (!c) return '?';
  if (c.dataType === 'decimal') {
    const m = /decimal\((\d+),(\d+)\)/i.exec(c.columnType);
    return m ? `CAST(? AS DECIMAL(${m[1]},${m[2]}))` : '?';
  }
  if (/int$/.test(c.dataType)) return /unsigned/i.test(c.columnType) ? 'CAST(? AS UNSIGNED)' : 'CAST(? AS SIGNED)';
  return '?';
}

export interface FastRange {
  /** Consumed watermark: log rows after this one are applied ... */
  from: number;
  /** ... up to and including the cut's high-water mark. */
  to: number;
}

function logRange(setup: FastSetup): string {
  const a = q(setup.plan.alias);
  return `${a}.${q(SEQ_COLUMN)} > ? AND ${a}.${q(SEQ_COLUMN)} <= ?`;
}

function logTable(setup: FastSetup): TableRef {
  return { schema: setup.mlog.table_schema, name: setup.mlog.mlog_name };
}

/**
 * Apply the log rows in (from, to] to the MV. `trx` is the refresh's transaction (READ COMMITTED:
 * the rows up to the cut are committed and never change); `snapshot` sees the base table as of
 * the cut, for the MIN/MAX groups that must be recomputed. Returns the number of MV rows changed.
 */
/**
 * MV rows a FAST refresh changed: `changed` counts each statement's rows once; an updated row
 * (a group whose values moved) counts as one deleted and one inserted.
 */
export interface FastChanges {
  changed: number;
  inserted: number;
  deleted: number;
}

export async function applyFast(trx: Knex.Transaction, snapshot: Knex.Transaction, mv: TableRef, setup: FastSetup, range: FastRange): Promise<FastChanges> {
  if (range.to <= range.from) return { changed: 0, inserted: 0, deleted: 0 };
  return setup.plan.kind === 'aggregate'
    ? applyAggregate(trx, snapshot, mv, setup, setup.plan, range)
    : applySpj(trx, mv, setup, range);
}

async function applySpj(trx: Knex.Transaction, mv: TableRef, setup: FastSetup, range: FastRange): Promise<FastChanges> {
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

interface AggCols {
  a: AggregateItem;
  k: number;
  vis: string;
}

async function applyAggregate(
  trx: Knex.Transaction,
  snapshot: Knex.Transaction,
  mv: TableRef,
  setup: FastSetup,
  plan: AggregatePlan,
  range: FastRange,
): Promise<FastChanges> {
  const log = qt(logTable(setup));
  const a = q(plan.alias);
  const on = `${a}.${q(OLD_NEW_COLUMN)}`;
  const out = setup.outputColumns;
  const groupCols = plan.groups.map((g) => out[g.index]!);
  const aggs: AggCols[] = plan.aggregates.map((ag, k) => ({ a: ag, k, vis: out[ag.index]! }));
  const delta = `__mvs_delta_${Number(setup.mlog.mlog_id)}_${mv.name.length}_${process.pid}`.slice(0, 64);
  const d = q(delta);

  // 1. The delta per group, joined with the group's current values in the MV (o_*). Every
  //    statement below reads the (small) delta first and finds MV rows by their key: the
  //    optimizer's row estimates for a just-swapped-in MV can be far off.
  const dcols: string[] = plan.groups.map((g, i) => `${g.expr} AS g${i}`);
  dcols.push(`SUM(${on}) AS d_cnt`);
  for (const { a: ag, k } of aggs) {
    if (ag.fn === 'COUNT_STAR') continue;
    const arg = `(${ag.arg})`;
    dcols.push(`SUM(CASE WHEN ${arg} IS NOT NULL THEN ${on} ELSE 0 END) AS d${k}_cnt`);
    if (ag.fn === 'SUM' || ag.fn === 'AVG') {
      // Plus and minus apart: -1 * x overflows for unsigned columns.
      dcols.push(`SUM(CASE WHEN ${on} = 1 THEN ${arg} END) AS d${k}_plus`, `SUM(CASE WHEN ${on} = -1 THEN ${arg} END) AS d${k}_minus`);
    }
    if (ag.fn === 'MIN' || ag.fn === 'MAX') {
      dcols.push(`${ag.fn}(CASE WHEN ${on} = 1 THEN ${arg} END) AS d${k}_ins`, `${ag.fn}(CASE WHEN ${on} = -1 THEN ${arg} END) AS d${k}_del`);
    }
  }
  const agg =
    `SELECT ${dcols.join(', ')} FROM ${log} AS ${a} WHERE ${logRange(setup)}` +
    (plan.where ? ` AND (${plan.where})` : '') +
    (plan.groups.length ? ` GROUP BY ${plan.groups.map((g) => g.expr).join(', ')}` : '');
  const ocols = [`m.${q('__mvs_cnt')} AS o_cnt`];
  for (const { a: ag, k, vis } of aggs) {
    ocols.push(`m.${q(vis)} AS o${k}_v`);
    if (ag.fn === 'SUM' || ag.fn === 'AVG' || ag.fn === 'MIN' || ag.fn === 'MAX') ocols.push(`m.${q(`__mvs_cnt_${k}`)} AS o${k}_cnt`);
    if (ag.fn === 'AVG') ocols.push(`m.${q(`__mvs_sum_${k}`)} AS o${k}_sum`);
  }
  const joinOn = groupCols.length ? groupCols.map((c, i) => `m.${q(c)} <=> x.g${i}`).join(' AND ') : 'TRUE';
  const deltaSelect = `SELECT x.*, ${ocols.join(', ')} FROM (${agg}) AS x LEFT JOIN ${qt(mv)} AS m ON ${joinOn}`;
  try {
    // In memory: the delta lives for one refresh and needs no undo or redo. (It is dropped at
    // the end; one left by a run that died went with that run's connection.)
    await trx.raw(`CREATE TEMPORARY TABLE ${d} ENGINE=MEMORY AS ${deltaSelect}`, [range.from, range.to]);
  } catch (err) {
    // BLOB / TEXT group values (or a server without MEMORY): the default engine.
    if (![1163, 1286, 1114].includes((err as { errno?: number }).errno ?? 0)) throw err;
    await trx.raw(`DROP TEMPORARY TABLE IF EXISTS ${d}`);
    await trx.raw(`CREATE TEMPORARY TABLE ${d} AS ${deltaSelect}`, [range.from, range.to]);
  }
  try {
    // 2. New values, from the delta row alone (multi-table UPDATE assigns in no set order, so no
    //    expression may read an MV column that the same statement writes).
    const n = `(COALESCE(d.o_cnt, 0) + COALESCE(d.d_cnt, 0))`;
    const set: Array<[string, string]> = [['__mvs_cnt', n]];
    const recomputeWhen: string[] = [];
    for (const { a: ag, k, vis } of aggs) {
      const cnt = `(COALESCE(d.o${k}_cnt, 0) + COALESCE(d.d${k}_cnt, 0))`;
      switch (ag.fn) {
        case 'COUNT_STAR':
          set.push([vis, n]);
          break;
        case 'COUNT':
          set.push([vis, `(COALESCE(d.o${k}_v, 0) + COALESCE(d.d${k}_cnt, 0))`]);
          break;
        case 'SUM': {
          set.push([`__mvs_cnt_${k}`, cnt]);
          set.push([vis, `CASE WHEN ${cnt} = 0 THEN NULL ELSE COALESCE(d.o${k}_v, 0) + COALESCE(d.d${k}_plus, 0) - COALESCE(d.d${k}_minus, 0) END`]);
          break;
        }
        case 'AVG': {
          const sum = `CASE WHEN ${cnt} = 0 THEN NULL ELSE COALESCE(d.o${k}_sum, 0) + COALESCE(d.d${k}_plus, 0) - COALESCE(d.d${k}_minus, 0) END`;
          set.push([`__mvs_cnt_${k}`, cnt], [`__mvs_sum_${k}`, sum]);
          set.push([vis, `(${sum}) / NULLIF(${cnt}, 0)`]);
          break;
        }
        case 'MIN':
        case 'MAX': {
          const pick = ag.fn === 'MIN' ? 'LEAST' : 'GREATEST';
          const cand = `CASE WHEN d.o${k}_v IS NULL THEN d.d${k}_ins WHEN d.d${k}_ins IS NULL THEN d.o${k}_v ELSE ${pick}(d.o${k}_v, d.d${k}_ins) END`;
          set.push([`__mvs_cnt_${k}`, cnt]);
          set.push([vis, `CASE WHEN ${cnt} = 0 THEN NULL ELSE ${cand} END`]);
          // A removed value that could be the extreme: only the base table can say what is now.
          recomputeWhen.push(`(${cnt} > 0 AND d.d${k}_del IS NOT NULL AND d.d${k}_del ${ag.fn === 'MIN' ? '<=' : '>='} (${cand}))`);
          break;
        }
      }
    }
    const mjoin = groupCols.length ? groupCols.map((c, i) => `m.${q(c)} <=> d.g${i}`).join(' AND ') : 'TRUE';
    const affected = (r: unknown) => (r as [{ affectedRows: number }])[0].affectedRows;
    const updated = affected(
      await trx.raw(
        `UPDATE ${d} AS d STRAIGHT_JOIN ${qt(mv)} AS m ON ${mjoin} SET ${set.map(([c, e]) => `m.${q(c)} = ${e}`).join(', ')}` +
          ` WHERE d.o_cnt IS NOT NULL AND (${n} > 0${groupCols.length ? '' : ' OR TRUE'})`,
      ),
    );
    let deleted = 0;
    let inserted = 0;
    if (groupCols.length) {
      deleted = affected(await trx.raw(`DELETE m FROM ${d} AS d STRAIGHT_JOIN ${qt(mv)} AS m ON ${mjoin} WHERE d.o_cnt IS NOT NULL AND ${n} = 0`));
      const insCols = [...groupCols, ...set.map(([c]) => c)];
      const insExprs = [...groupCols.map((_, i) => `d.g${i}`), ...set.map(([, e]) => e)];
      inserted = affected(
        await trx.raw(`INSERT INTO ${qt(mv)} (${insCols.map(q).join(', ')}) SELECT ${insExprs.join(', ')} FROM ${d} AS d WHERE d.o_cnt IS NULL AND ${n} > 0`),
      );
    }
    if (recomputeWhen.length) await recomputeExtremes(trx, snapshot, mv, setup, plan, aggs, d, recomputeWhen);
    return { changed: updated + deleted + inserted, inserted: updated + inserted, deleted: updated + deleted };
  } finally {
    await trx.raw(`DROP TEMPORARY TABLE IF EXISTS ${d}`);
  }
}

/** MIN/MAX of the groups whose extreme may have been removed, read from the base table at the cut. */
async function recomputeExtremes(
  trx: Knex.Transaction,
  snapshot: Knex.Transaction,
  mv: TableRef,
  setup: FastSetup,
  plan: AggregatePlan,
  aggs: AggCols[],
  d: string,
  when: string[],
): Promise<void> {
  const out = setup.outputColumns;
  const groupCols = plan.groups.map((g) => out[g.index]!);
  const keys = await exactRows(trx, `SELECT ${groupCols.length ? groupCols.map((_, i) => `d.g${i}`).join(', ') : '1'} FROM ${d} AS d WHERE ${when.join(' OR ')}`);
  if (!keys.length) return;
  const info = await columnInfo(trx, mv);
  const extremes = aggs.filter((x) => x.a.fn === 'MIN' || x.a.fn === 'MAX');
  const match = (prefix: string, exprs: string[]) =>
    `(${exprs.map((e, i) => `${prefix}${e} <=> ${typedParam(info.get(groupCols[i]!.toLowerCase()))}`).join(' AND ')})`;
  const BATCH = 200;
  for (let i = 0; i < keys.length; i += BATCH) {
    const chunk = keys.slice(i, i + BATCH);
    const groupExprs = plan.groups.map((g) => `(${g.expr})`);
    const where = [
      ...(plan.where ? [`(${plan.where})`] : []),
      ...(groupCols.length ? [`(${chunk.map(() => match('', groupExprs)).join(' OR ')})`] : []),
    ];
    const rows = await exactRows(
      snapshot,
      `SELECT ${[...groupExprs, ...extremes.map((x) => `${x.a.fn}(${x.a.arg})`)].join(', ')} ${fromClause(setup)}` +
        (where.length ? ` WHERE ${where.join(' AND ')}` : '') +
        (groupExprs.length ? ` GROUP BY ${groupExprs.join(', ')}` : ''),
      groupCols.length ? chunk.flat() : [],
    );
    for (const r of rows) {
      const g = r.slice(0, groupCols.length);
      const vals = r.slice(groupCols.length);
      await trx.raw(
        `UPDATE ${qt(mv)} SET ${extremes.map((x) => `${q(x.vis)} = ?`).join(', ')}` +
          (groupCols.length ? ` WHERE ${groupCols.map((c) => `${q(c)} <=> ${typedParam(info.get(c.toLowerCase()))}`).join(' AND ')}` : ''),
        [...vals, ...g] as never,
      );
    }
  }
}
