import type { Knex } from 'knex';
import { byteColumns, startedStream, type ExactValue, type StartedStream } from '../db/exactValues.js';
import { quoteIdent } from '../mv/identifiers.js';
import { BPOS_COLUMN, DML_TYPE_COLUMN, OLD_NEW_COLUMN, SEQ_COLUMN } from '../mlog/names.js';
import { logColumns, type MlogRow } from '../mlog/repository.js';
import {
  aggregateShape,
  applyAggregateDelta,
  createTemporary,
  deltaColumnSpecs,
  NO_CHANGES,
  qt,
  withCurrentValues,
  type FastChanges,
  type TableRef,
} from './aggregateApply.js';
import { fillFromSnapshot, insertRows } from './copyRows.js';
import type { JoinSetup } from './explain.js';
import { deltaTerms, deltaUnionParts, orderOccurrences, WEIGHT, type DeltaInput, type Term } from './joinDelta.js';

// FAST refresh of a join MV (DESIGN.md §2 "FAST refresh over joins"). The delta reads the base
// tables as they were at the cut, so it runs in the cut's snapshot; the MV change must commit
// with the watermarks in the refresh's own transaction, on another connection. So the delta
// (per group for aggregates, per joined row for select-project-join views) is streamed from the
// snapshot into a temporary table of the refresh's transaction and applied from there.
//
// The snapshot sees a trigger log's rows (they commit with their base rows), not a BINLOG log's:
// capture writes those after the cut's snapshot was opened (mlog/cut.ts). So the rows of a
// BINLOG log in its range are first copied, as committed, into a temporary table of the
// snapshot's connection, and the delta reads that copy in place of the log.

const q = quoteIdent;
const TERM = '__mvs_term';
const SIGN = '__mvs_w';

export interface LogRange {
  from: number;
  to: number;
}

/**
 * The logs with rows in their range, without asking the server: a range's end is its log's
 * high-water mark at the cut, the sequence number of a row the cut saw (the highest), and rows
 * above a watermark are never purged while this MV's watermark is below them. So a range that
 * is not empty holds at least its last row.
 */
function changedLogs(setup: JoinSetup, ranges: Map<number, LogRange>): Set<number> {
  return new Set(
    setup.mlogs
      .filter((m) => {
        const r = ranges.get(m.mlog_id);
        return r !== undefined && r.to > r.from;
      })
      .map((m) => m.mlog_id),
  );
}

/**
 * The delta rule's input for this refresh: occurrences in term order, ranges, changed logs;
 * `copies`: the table to read in place of a log (by mlog_id), for BINLOG logs.
 */
export function deltaInput(setup: JoinSetup, ranges: Map<number, LogRange>, changed: Set<number>, copies = new Map<number, TableRef>()): DeltaInput {
  return {
    occurrences: orderOccurrences(setup.occurrences, setup.sizes).map((o) => ({
      alias: o.alias,
      base: o.table,
      log: copies.get(o.mlog.mlog_id) ?? { schema: o.mlog.table_schema, name: o.mlog.mlog_name },
      logId: o.mlog.mlog_id,
      pk: o.mlog.pkColumns,
      exposed: o.exposed,
    })),
    ...(setup.plan.where ? { where: setup.plan.where } : {}),
    ranges,
    changed,
  };
}

/**
 * More connections a join's apply may use: `also`, more snapshots of the cut (the delta is read
 * in parts on them at once); `pool`, for what may run beside the refresh's own statements.
 */
export interface JoinReaders {
  also?: Knex.Transaction[];
  pool?: Knex;
}

/**
 * Apply the changes logged in each log's range (by mlog_id) to a join MV. Returns the MV rows
 * changed. Nothing touches the MV before `ready` resolves (the logs' identity check, which runs
 * beside the delta query: see LoggedRefresh.fast); it rejecting fails the apply.
 */
export async function applyJoin(
  trx: Knex.Transaction,
  snapshot: Knex.Transaction,
  mv: TableRef,
  setup: JoinSetup,
  ranges: Map<number, LogRange>,
  ready: Promise<unknown> = Promise.resolve(),
  { also = [], pool }: JoinReaders = {},
): Promise<FastChanges> {
  const changed = changedLogs(setup, ranges);
  if (!changed.size) return NO_CHANGES;
  const binlog = setup.mlogs.filter((m) => m.capture_mode === 'BINLOG' && changed.has(m.mlog_id));
  const copies = new Map<number, TableRef>();
  try {
    for (const m of binlog) copies.set(m.mlog_id, await copyLogRange(trx, snapshot, m, ranges.get(m.mlog_id)!));
    const input = deltaInput(setup, ranges, changed, copies);
    // A BINLOG log's copy is a temporary table of the snapshot's connection: the others cannot read it.
    const readers = copies.size ? [snapshot] : [snapshot, ...also];
    const go = { trx, pool, snapshot, readers, mv, setup, input, ready };
    return await (setup.plan.kind === 'aggregate' ? applyJoinAggregate(go) : applyJoinSpj(go));
  } finally {
    for (const c of copies.values()) await snapshot.raw(`DROP TEMPORARY TABLE IF EXISTS ${qt(c)}`).catch(() => {});
  }
}

/**
 * A BINLOG log's rows in (from, to], read as committed by `trx`, copied into a temporary table
 * of the same shape on the snapshot's connection (in the log's schema, so it is named like a
 * log). One left on this pooled connection by a run that died is dropped first.
 */
async function copyLogRange(trx: Knex.Transaction, snapshot: Knex.Transaction, m: MlogRow, r: LogRange): Promise<TableRef> {
  const copy = { schema: m.table_schema, name: `__mvs_logcopy_${Number(m.mlog_id)}` };
  const log = { schema: m.table_schema, name: m.mlog_name };
  await snapshot.raw(`DROP TEMPORARY TABLE IF EXISTS ${qt(copy)}`);
  await snapshot.raw(`CREATE TEMPORARY TABLE ${qt(copy)} LIKE ${qt(log)}`);
  const cols = [SEQ_COLUMN, ...logColumns(m), DML_TYPE_COLUMN, OLD_NEW_COLUMN, BPOS_COLUMN];
  const seq = q(SEQ_COLUMN);
  const select = `SELECT ${cols.map(q).join(', ')} FROM ${qt(log)} WHERE ${seq} > ${int(r.from)} AND ${seq} <= ${int(r.to)}`;
  await fillFromSnapshot(snapshot, trx, qt(copy), cols, select);
  return copy;
}

const int = (n: number): string => {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`not a log sequence number: ${n}`);
  return String(n);
};

/** The per-group delta of an aggregate join MV, as one SELECT over the delta terms. */
export function joinAggregateDelta(setup: JoinSetup, input: DeltaInput): { sql: string; columns: string[] } {
  const { sqls, columns } = joinAggregateDeltaParts(setup, input, 1);
  return { sql: sqls[0]!, columns };
}

/**
 * The per-group delta as up to `parts` SELECTs over parts of the delta terms (deltaUnionParts):
 * a group may have a row in each, which add up by their columns' `combine`.
 */
function joinAggregateDeltaParts(setup: JoinSetup, input: DeltaInput, parts: number): { sqls: string[]; columns: string[] } {
  if (setup.plan.kind !== 'aggregate') throw new Error('not an aggregate plan');
  const { groups, aggregates } = setup.plan;
  const args = aggregates.flatMap((a, k) => (a.arg === undefined ? [] : [`${a.arg} AS a${k}`]));
  const select = () => [...groups.map((g, i) => `${g.expr} AS g${i}`), ...args];
  const unions = deltaUnionParts(input, select, parts);
  const specs = deltaColumnSpecs({ aggregates, outputColumns: setup.outputColumns }, `z.${q(WEIGHT)}`, (k) => `z.a${k}`);
  const g = groups.map((_, i) => `z.g${i}`);
  return {
    sqls: unions.map((union) => `SELECT ${[...g, ...specs.map((c) => `${c.expr} AS ${c.name}`)].join(', ')} FROM (${union}) AS z${g.length ? ` GROUP BY ${g.join(', ')}` : ''}`),
    columns: [...groups.map((_, i) => `g${i}`), ...specs.map((c) => c.name)],
  };
}

/** What applying a join's delta works with: `readers` are the cut's snapshots the delta may be read on at once. */
interface JoinApply {
  trx: Knex.Transaction;
  pool: Knex | undefined;
  snapshot: Knex.Transaction;
  readers: Knex.Transaction[];
  mv: TableRef;
  setup: JoinSetup;
  input: DeltaInput;
  ready: Promise<unknown>;
}

async function applyJoinAggregate({ trx, pool, snapshot, readers, mv, setup, input, ready }: JoinApply): Promise<FastChanges> {
  if (setup.plan.kind !== 'aggregate') throw new Error('not an aggregate plan');
  const { groups } = setup.plan;
  const out = setup.outputColumns;
  const shape = aggregateShape(setup);
  const delta = joinAggregateDeltaParts(setup, input, readers.length);
  // Typed like the MV's own columns (values go back bit for bit); counts are signed.
  const specs = deltaColumnSpecs(shape, 'w', () => 'x');
  const typed = [
    ...groups.map((gr, i) => `m.${q(out[gr.index]!)} AS g${i}`),
    ...specs.map((c) => (c.like === null ? `CAST(NULL AS SIGNED) AS ${c.name}` : `m.${q(c.like)} AS ${c.name}`)),
  ];
  const d0 = '__mvs_join_delta0';
  const d = '__mvs_join_delta';
  // Parts read apart may each have a row for a group: added up first.
  const g = groups.map((_, i) => `g${i}`);
  const perGroup =
    delta.sqls.length > 1
      ? `(SELECT ${[...g, ...specs.map((c) => `${c.combine}(${c.name}) AS ${c.name}`)].join(', ')} FROM ${q(d0)}${g.length ? ` GROUP BY ${g.join(', ')}` : ''})`
      : q(d0);
  const like = `SELECT ${typed.join(', ')} FROM ${qt(mv)} AS m LIMIT 0`;
  return withDeltaRows({ trx, pool, readers, ready }, delta, d0, like, [d], async () => {
    await createTemporary(trx, d, withCurrentValues(mv, shape, perGroup));
    return applyAggregateDelta(trx, snapshot, mv, shape, d);
  });
}

/** The joined rows that come (+1) and go (-1), each tagged with its term, as one SELECT. */
export function joinSpjDelta(setup: JoinSetup, input: DeltaInput): { sql: string; columns: string[] } {
  const { sqls, columns } = joinSpjDeltaParts(setup, input, 1);
  return { sql: sqls[0]!, columns };
}

/** The same rows as up to `parts` SELECTs over parts of the delta terms (deltaUnionParts). */
function joinSpjDeltaParts(setup: JoinSetup, input: DeltaInput, parts: number): { sqls: string[]; columns: string[] } {
  if (setup.plan.kind !== 'spj') throw new Error('not an SPJ plan');
  const items = setup.plan.items;
  const select = (t: Term) => [`${t.index} AS ${q(TERM)}`, ...items.map((it, i) => `${it.expr} AS c${i}`)];
  return {
    sqls: deltaUnionParts(input, select, parts),
    columns: [TERM, ...items.map((_, i) => `c${i}`), SIGN],
  };
}

/**
 * Select-project-join: each MV row is one combination of base rows, identified by their primary
 * keys. Within one term a key has at most one row going and one coming, and the row going is in
 * the MV as the previous terms left it; so the terms are applied in order, each deleting its
 * going rows by key and inserting its coming ones.
 */
async function applyJoinSpj({ trx, pool, readers, mv, setup, input, ready }: JoinApply): Promise<FastChanges> {
  const out = setup.outputColumns;
  const delta = joinSpjDeltaParts(setup, input, readers.length);
  const rowsTable = '__mvs_join_rows';
  const r = q(rowsTable);
  const like = `SELECT CAST(NULL AS SIGNED) AS ${q(TERM)}, ${out.map((c, i) => `m.${q(c)} AS c${i}`).join(', ')}, CAST(NULL AS SIGNED) AS ${q(SIGN)} FROM ${qt(mv)} AS m LIMIT 0`;
  return withDeltaRows({ trx, pool, readers, ready }, delta, rowsTable, like, [], async (streamed) => {
    if (streamed === 0) return NO_CHANGES;
    const keyOn = (setup.pkOutput ?? []).map((p) => `m.${q(p.output)} = s.c${out.indexOf(p.output)}`).join(' AND ');
    const affected = (x: unknown) => (x as [{ affectedRows: number }])[0].affectedRows;
    let deleted = 0;
    let inserted = 0;
    // The terms in order: one per log with rows in its range (a term that joined nothing costs
    // two statements that change nothing, less than asking which terms have rows).
    for (const term of deltaTerms(input).map((t) => t.index)) {
      deleted += affected(await trx.raw(`DELETE m FROM ${r} AS s STRAIGHT_JOIN ${qt(mv)} AS m ON ${keyOn} WHERE s.${q(TERM)} = ? AND s.${q(SIGN)} = -1`, [term]));
      inserted += affected(
        await trx.raw(
          `INSERT INTO ${qt(mv)} (${out.map(q).join(', ')}) SELECT ${out.map((_, i) => `c${i}`).join(', ')} FROM ${r} WHERE ${q(TERM)} = ? AND ${q(SIGN)} = 1`,
          [term],
        ),
      );
    }
    return { changed: deleted + inserted, inserted, deleted };
  });
}

/**
 * The delta query's rows in a temporary table of the refresh's transaction, then `apply`. The
 * queries (one per part, each on a snapshot of its own) are sent first, so the server computes
 * them while `ready` (the identity check) settles and the table is made. The table is typed
 * from the MV (`like`, a LIMIT 0 SELECT), so it is made only once `ready` resolved: a COMPLETE
 * that follows a failed check must find no metadata lock of this transaction on the MV. Which
 * columns are binary is read from `like` on the pool meanwhile (or from the empty table), so no
 * delta query is planned twice for that. The parts' rows go in together (one INSERT for a small
 * delta). `more`: temporary tables `apply` makes, dropped with the table in one statement.
 */
async function withDeltaRows(
  { trx, pool, readers, ready }: { trx: Knex.Transaction; pool: Knex | undefined; readers: Knex.Transaction[]; ready: Promise<unknown> },
  delta: { sqls: string[]; columns: string[] },
  table: string,
  like: string,
  more: string[],
  apply: (streamed: number) => Promise<FastChanges>,
): Promise<FastChanges> {
  const started = delta.sqls.map((sql, i) => startedStream(readers[i]!, `SELECT * FROM (${sql}) AS __mvs_def`));
  let reading = false;
  try {
    await ready;
    const types = pool ? byteColumns(pool, like) : undefined;
    types?.catch(() => {});
    await createTemporary(trx, table, like);
    try {
      const asBytes = await (types ?? byteColumns(trx, `SELECT ${delta.columns.map(q).join(', ')} FROM ${q(table)}`));
      reading = true;
      let streamed: number;
      try {
        streamed = await insertRows(trx, q(table), delta.columns, allRows(started, asBytes));
      } catch (err) {
        await Promise.all(started.map((s) => s.discard()));
        throw err;
      }
      return await apply(streamed);
    } finally {
      await trx.raw(`DROP TEMPORARY TABLE IF EXISTS ${[table, ...more].map(q).join(', ')}`);
    }
  } finally {
    if (!reading) await Promise.all(started.map((s) => s.discard()));
  }
}

/** The rows of every part, one part after the other (the later ones wait in their sockets). */
async function* allRows(started: StartedStream[], asBytes: boolean[]): AsyncGenerator<ExactValue[]> {
  for (const s of started) yield* s.rows(asBytes);
}
