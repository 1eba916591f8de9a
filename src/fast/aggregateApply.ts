import type { Knex } from 'knex';
import { exactRows } from '../db/exactValues.js';
import { quoteIdent } from '../mv/identifiers.js';
import type { FastSetup } from './explain.js';
import type { AggregateItem, OutputItem } from './selectList.js';

// Applying a per-group delta to an aggregate MV, whatever the delta was computed from (one
// table's log, or the delta terms of a join). The MV keeps hidden INVISIBLE helper columns:
// `__mvs_cnt` (rows in the group), and per aggregate k `__mvs_cnt_k` (non-NULL arguments) and,
// for AVG, `__mvs_sum_k`; so groups vanish and reappear exactly and NULLs stay right.
//
// The delta is a temporary table with, per group: g0.. (the group values), d_cnt (signed rows),
// d{k}_cnt, d{k}_plus / d{k}_minus (SUM / AVG), d{k}_ins / d{k}_del (MIN / MAX), and the
// group's current values in the MV (o_*; NULL when the MV has no such group).

const q = quoteIdent;

export interface TableRef {
  schema: string;
  name: string;
}

export const qt = (t: TableRef) => `${q(t.schema)}.${q(t.name)}`;

/**
 * MV rows a FAST refresh changed: `changed` counts each statement's rows once; an updated row
 * (a group whose values moved) counts as one deleted and one inserted.
 */
export interface FastChanges {
  changed: number;
  inserted: number;
  deleted: number;
}

export const NO_CHANGES: FastChanges = Object.freeze({ changed: 0, inserted: 0, deleted: 0 });

/** What applying a delta needs to know of an aggregate MV. */
export interface AggregateShape {
  groups: OutputItem[];
  aggregates: AggregateItem[];
  outputColumns: string[];
  /** The base rows at the cut (FROM ... and the WHERE condition), for MIN / MAX recomputes. */
  source: { from: string; where?: string };
}

/** The definition's base rows: its FROM clause (one table, or every occurrence of a join) and its condition. */
export function baseSource(setup: FastSetup): { from: string; where?: string } {
  if (setup.shape === 'table') {
    return { from: `FROM ${qt(setup.plan.table)} AS ${q(setup.plan.alias)}`, ...(setup.plan.where ? { where: setup.plan.where } : {}) };
  }
  return {
    from: `FROM ${setup.plan.occurrences.map((o) => `${qt(o.table)} AS ${q(o.alias)}`).join(', ')}`,
    ...(setup.plan.where ? { where: setup.plan.where } : {}),
  };
}

/** What applying a per-group delta needs of an aggregate setup. */
export function aggregateShape(setup: FastSetup): AggregateShape {
  if (setup.plan.kind !== 'aggregate') throw new Error('not an aggregate plan');
  return { groups: setup.plan.groups, aggregates: setup.plan.aggregates, outputColumns: setup.outputColumns, source: baseSource(setup) };
}

interface AggCols {
  a: AggregateItem;
  k: number;
  vis: string;
}

const aggCols = (shape: AggregateShape): AggCols[] => shape.aggregates.map((a, k) => ({ a, k, vis: shape.outputColumns[a.index]! }));

/**
 * One column of a per-group delta; `like`: the MV column whose type it takes (null: a signed
 * count); `combine`: how two partial deltas of one group add up.
 */
export interface DeltaColumn {
  name: string;
  expr: string;
  like: string | null;
  combine: 'SUM' | 'MIN' | 'MAX';
}

/**
 * The delta columns of one group, from rows carrying a sign (`weight`: +1 a row that comes, -1 a
 * row that goes) and the aggregates' arguments (`arg(k)`).
 */
export function deltaColumnSpecs(shape: Pick<AggregateShape, 'aggregates' | 'outputColumns'>, weight: string, arg: (k: number) => string): DeltaColumn[] {
  const cols: DeltaColumn[] = [{ name: 'd_cnt', expr: `SUM(${weight})`, like: null, combine: 'SUM' }];
  shape.aggregates.forEach((ag, k) => {
    if (ag.fn === 'COUNT_STAR') return;
    const x = `(${arg(k)})`;
    const vis = shape.outputColumns[ag.index]!;
    cols.push({ name: `d${k}_cnt`, expr: `SUM(CASE WHEN ${x} IS NOT NULL THEN ${weight} ELSE 0 END)`, like: null, combine: 'SUM' });
    if (ag.fn === 'SUM' || ag.fn === 'AVG') {
      // Plus and minus apart: -1 * x overflows for unsigned columns.
      const like = ag.fn === 'SUM' ? vis : `__mvs_sum_${k}`;
      cols.push(
        { name: `d${k}_plus`, expr: `SUM(CASE WHEN ${weight} = 1 THEN ${x} END)`, like, combine: 'SUM' },
        { name: `d${k}_minus`, expr: `SUM(CASE WHEN ${weight} = -1 THEN ${x} END)`, like, combine: 'SUM' },
      );
    }
    if (ag.fn === 'MIN' || ag.fn === 'MAX') {
      cols.push(
        { name: `d${k}_ins`, expr: `${ag.fn}(CASE WHEN ${weight} = 1 THEN ${x} END)`, like: vis, combine: ag.fn },
        { name: `d${k}_del`, expr: `${ag.fn}(CASE WHEN ${weight} = -1 THEN ${x} END)`, like: vis, combine: ag.fn },
      );
    }
  });
  return cols;
}

export function deltaColumns(shape: Pick<AggregateShape, 'aggregates' | 'outputColumns'>, weight: string, arg: (k: number) => string): string[] {
  return deltaColumnSpecs(shape, weight, arg).map((c) => `${c.expr} AS ${c.name}`);
}

/** `perGroup` (a derived table or a table with g0.. and the delta columns) joined with the MV's current values. */
export function withCurrentValues(mv: TableRef, shape: AggregateShape, perGroup: string): string {
  const groupCols = shape.groups.map((g) => shape.outputColumns[g.index]!);
  const ocols = [`m.${q('__mvs_cnt')} AS o_cnt`];
  for (const { a: ag, k, vis } of aggCols(shape)) {
    ocols.push(`m.${q(vis)} AS o${k}_v`);
    if (ag.fn === 'SUM' || ag.fn === 'AVG' || ag.fn === 'MIN' || ag.fn === 'MAX') ocols.push(`m.${q(`__mvs_cnt_${k}`)} AS o${k}_cnt`);
    if (ag.fn === 'AVG') ocols.push(`m.${q(`__mvs_sum_${k}`)} AS o${k}_sum`);
  }
  const joinOn = groupCols.length ? groupCols.map((c, i) => `m.${q(c)} <=> x.g${i}`).join(' AND ') : 'TRUE';
  return `SELECT x.*, ${ocols.join(', ')} FROM ${perGroup} AS x LEFT JOIN ${qt(mv)} AS m ON ${joinOn}`;
}

/**
 * CREATE TEMPORARY TABLE name AS select, in memory when it can be: a delta lives for one refresh
 * and needs no undo or redo. A table of that name left on this pooled connection by a run that
 * failed to drop it is dropped first.
 */
export async function createTemporary(trx: Knex.Transaction, name: string, select: string, bindings: readonly unknown[] = []): Promise<void> {
  const create = (engine: string) => trx.raw(`CREATE TEMPORARY TABLE ${q(name)}${engine} AS ${select}`, bindings as never);
  try {
    await create(' ENGINE=MEMORY');
  } catch (err) {
    const errno = (err as { errno?: number }).errno ?? 0;
    // BLOB / TEXT values (or a server without MEMORY): the default engine. 1050: a leftover.
    if (![1163, 1286, 1114, 1050].includes(errno)) throw err;
    await trx.raw(`DROP TEMPORARY TABLE IF EXISTS ${q(name)}`);
    await (errno === 1050 ? create(' ENGINE=MEMORY').catch(() => create('')) : create(''));
  }
}

/**
 * Apply the delta table `d` to the MV: update the groups it has, delete those left empty, insert
 * new ones, then recompute MIN / MAX where the extreme may have gone. Returns MV rows changed.
 */
export async function applyAggregateDelta(trx: Knex.Transaction, snapshot: Knex.Transaction, mv: TableRef, shape: AggregateShape, d: string): Promise<FastChanges> {
  const groupCols = shape.groups.map((g) => shape.outputColumns[g.index]!);
  // New values, from the delta row alone (multi-table UPDATE assigns in no set order, so no
  // expression may read an MV column that the same statement writes).
  const n = `(COALESCE(d.o_cnt, 0) + COALESCE(d.d_cnt, 0))`;
  const set: Array<[string, string]> = [['__mvs_cnt', n]];
  const recomputeWhen: string[] = [];
  for (const { a: ag, k, vis } of aggCols(shape)) {
    const cnt = `(COALESCE(d.o${k}_cnt, 0) + COALESCE(d.d${k}_cnt, 0))`;
    switch (ag.fn) {
      case 'COUNT_STAR':
        set.push([vis, n]);
        break;
      case 'COUNT':
        set.push([vis, `(COALESCE(d.o${k}_v, 0) + COALESCE(d.d${k}_cnt, 0))`]);
        break;
      case 'SUM':
        set.push([`__mvs_cnt_${k}`, cnt]);
        set.push([vis, `CASE WHEN ${cnt} = 0 THEN NULL ELSE COALESCE(d.o${k}_v, 0) + COALESCE(d.d${k}_plus, 0) - COALESCE(d.d${k}_minus, 0) END`]);
        break;
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
        // A removed value that could be the extreme: only the base rows can say what is now.
        recomputeWhen.push(`(${cnt} > 0 AND d.d${k}_del IS NOT NULL AND d.d${k}_del ${ag.fn === 'MIN' ? '<=' : '>='} (${cand}))`);
        break;
      }
    }
  }
  const dq = q(d);
  const mjoin = groupCols.length ? groupCols.map((c, i) => `m.${q(c)} <=> d.g${i}`).join(' AND ') : 'TRUE';
  const affected = (r: unknown) => (r as [{ affectedRows: number }])[0].affectedRows;
  // Every statement reads the (small) delta first and finds MV rows by their key: the
  // optimizer's row estimates for a just-swapped-in MV can be far off.
  const updated = affected(
    await trx.raw(
      `UPDATE ${dq} AS d STRAIGHT_JOIN ${qt(mv)} AS m ON ${mjoin} SET ${set.map(([c, e]) => `m.${q(c)} = ${e}`).join(', ')}` +
        ` WHERE d.o_cnt IS NOT NULL AND (${n} > 0${groupCols.length ? '' : ' OR TRUE'})`,
    ),
  );
  let deleted = 0;
  let inserted = 0;
  if (groupCols.length) {
    deleted = affected(await trx.raw(`DELETE m FROM ${dq} AS d STRAIGHT_JOIN ${qt(mv)} AS m ON ${mjoin} WHERE d.o_cnt IS NOT NULL AND ${n} = 0`));
    const insCols = [...groupCols, ...set.map(([c]) => c)];
    const insExprs = [...groupCols.map((_, i) => `d.g${i}`), ...set.map(([, e]) => e)];
    inserted = affected(
      await trx.raw(`INSERT INTO ${qt(mv)} (${insCols.map(q).join(', ')}) SELECT ${insExprs.join(', ')} FROM ${dq} AS d WHERE d.o_cnt IS NULL AND ${n} > 0`),
    );
  }
  if (recomputeWhen.length) await recomputeExtremes(trx, snapshot, mv, shape, dq, recomputeWhen);
  return { changed: updated + deleted + inserted, inserted: updated + inserted, deleted: updated + deleted };
}

export interface ColumnInfo {
  name: string;
  dataType: string;
  columnType: string;
  charset: string | null;
  collation: string | null;
}

export async function columnInfo(db: Knex | Knex.Transaction, t: TableRef): Promise<Map<string, ColumnInfo>> {
  const rows = (await db('information_schema.columns')
    .where({ table_schema: t.schema, table_name: t.name })
    .select({ name: 'column_name', dataType: 'data_type', columnType: 'column_type', charset: 'character_set_name', collation: 'collation_name' })) as ColumnInfo[];
  return new Map(rows.map((r) => [r.name.toLowerCase(), { ...r, dataType: String(r.dataType).toLowerCase() }]));
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

/** MIN/MAX of the groups whose extreme may have been removed, read from the base rows at the cut. */
async function recomputeExtremes(
  trx: Knex.Transaction,
  snapshot: Knex.Transaction,
  mv: TableRef,
  shape: AggregateShape,
  d: string,
  when: string[],
): Promise<void> {
  const groupCols = shape.groups.map((g) => shape.outputColumns[g.index]!);
  const keys = await exactRows(trx, `SELECT ${groupCols.length ? groupCols.map((_, i) => `d.g${i}`).join(', ') : '1'} FROM ${d} AS d WHERE ${when.join(' OR ')}`);
  if (!keys.length) return;
  const info = await columnInfo(trx, mv);
  const extremes = aggCols(shape).filter((x) => x.a.fn === 'MIN' || x.a.fn === 'MAX');
  const match = (exprs: string[]) => `(${exprs.map((e, i) => `${e} <=> ${typedParam(info.get(groupCols[i]!.toLowerCase()))}`).join(' AND ')})`;
  const BATCH = 200;
  for (let i = 0; i < keys.length; i += BATCH) {
    const chunk = keys.slice(i, i + BATCH);
    const groupExprs = shape.groups.map((g) => `(${g.expr})`);
    const where = [
      ...(shape.source.where ? [`(${shape.source.where})`] : []),
      ...(groupCols.length ? [`(${chunk.map(() => match(groupExprs)).join(' OR ')})`] : []),
    ];
    const rows = await exactRows(
      snapshot,
      `SELECT ${[...groupExprs, ...extremes.map((x) => `${x.a.fn}(${x.a.arg})`)].join(', ')} ${shape.source.from}` +
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
