import { quoteIdent } from '../mv/identifiers.js';
import { OLD_NEW_COLUMN, SEQ_COLUMN } from '../mlog/names.js';

// The delta rule of a join, as SQL (DESIGN.md §2 "FAST refresh over joins"). With occurrences
// T1..Tn in a chosen order, pre-change state Ti, post-change state Ti' = Ti + dTi (signed rows):
//
//   J(T1', .., Tn') - J(T1, .., Tn) = sum over i of J(T1', .., T(i-1)', dTi, T(i+1), .., Tn)
//
// (telescoping: term i turns J(T1'..T(i-1)', Ti, ..) into J(T1'..Ti', T(i+1), ..)), so each change
// is counted exactly once whichever tables one transaction touched, and a self-join is just two
// occurrences of one table. Term i exists only when Ti's log has rows in the range.
//
// - dTi: the net change of each row of Ti since the watermark, from its log rows in
//   (watermark, cut]: the first image of a key when it is an old one (-1: the row as it was)
//   and the last image when it is a new one (+1: the row as it is). Images in between cancel.
// - Ti' (post-change): the table as the cut's snapshot sees it.
// - Ti (pre-change): the table at the cut minus every row whose key has log rows in the range
//   ("kept"), plus the first image of each such key when it is an old one ("old"). That is the
//   table as it was at the watermark, rebuilt at the cut's snapshot from the table and its log.
//   A table whose log has no rows in the range is the same before and after.
//
// A pre-change state is a union; inside a join the optimizer could not reach the table through
// its indexes behind a derived UNION, so by default each sub-term takes one branch ("kept" is
// the table itself, anti-joined with the keys its log changed; "old" a small derived table),
// which doubles the sub-terms per pre-change table; past `maxSubterms` the remaining ones use
// the derived union.
//
// Watermarks are integers mvsched read itself and go into the SQL as literals: these statements
// carry the user's expressions, whose string literals may hold a `?` that no binding may touch.

const q = quoteIdent;

export interface TableRef {
  schema: string;
  name: string;
}

export interface DeltaOccurrence {
  alias: string;
  base: TableRef;
  log: TableRef;
  logId: number;
  /** Primary key columns of the table. */
  pk: string[];
  /** Columns the delta and pre-change sources expose: the primary key, then the columns read. */
  exposed: string[];
}

export interface DeltaInput {
  /** In term order (see orderOccurrences). */
  occurrences: DeltaOccurrence[];
  /** Every join and WHERE condition, columns qualified by alias. */
  where?: string;
  /** Log range (watermark, cut] by mlog_id. */
  ranges: Map<number, { from: number; to: number }>;
  /** Logs with rows in their range. */
  changed: Set<number>;
  maxSubterms?: number;
}

/** The sign of a delta row: +1 it comes, -1 it goes. */
export const WEIGHT = '_mlog$w';
/** The sequence numbers of the log rows before and after a row of the same key in the range (NULL: none). */
const BEFORE = '_mlog$before';
const AFTER = '_mlog$after';
export const DEFAULT_MAX_SUBTERMS = 16;

/** How one occurrence is read in one sub-term. */
export type SourceKind = 'post' | 'delta' | 'kept' | 'old' | 'pre';

export interface Term {
  /** Position (in term order) of the occurrence whose changes this term applies. */
  index: number;
  /** One list of source kinds (by position) per sub-term; their rows are added up. */
  subterms: SourceKind[][];
}

const int = (n: number): string => {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`not a log sequence number: ${n}`);
  return String(n);
};

const qt = (t: TableRef) => `${q(t.schema)}.${q(t.name)}`;

function range(input: DeltaInput, o: DeltaOccurrence, col: string): string {
  const r = input.ranges.get(o.logId);
  if (!r) throw new Error(`no log range for ${o.alias}`);
  return `${col} > ${int(r.from)} AND ${col} <= ${int(r.to)}`;
}

/**
 * The net change of each row of the occurrence's table in the range: its first image when old
 * (with weight -1) and its last image when new (+1); `oldOnly`: only the first old images (the
 * rows as they were), without a weight. One read of the range, each row seeing the sequence
 * numbers of its key's rows before and after it (LAG / LEAD over the primary key in one window,
 * one sort), so the first and last images are known and none is looked up again by number.
 * Where a grouping of the range found each key's first and last numbers and a second pass
 * fetched those rows by primary key, a batch of 1,000 fact changes cost ~2,000 lookups more, and
 * the optimizer merged that pass into the join, once per row of the other side (BENCHMARKS.md §8:
 * the whole delta query ~30 % faster, same rows). The sign column is the weight: an old image is
 * -1, a new one +1.
 */
export function netChanges(input: DeltaInput, o: DeltaOccurrence, oldOnly = false): string {
  const seq = q(SEQ_COLUMN);
  const sign = q(OLD_NEW_COLUMN);
  const [before, after] = [q(BEFORE), q(AFTER)];
  const byKey = `OVER (PARTITION BY ${o.pk.map((c) => `l.${q(c)}`).join(', ')} ORDER BY l.${seq})`;
  const numbered = (ends: string) => `SELECT ${o.exposed.map((c) => `l.${q(c)}`).join(', ')}, l.${sign}, ${ends} FROM ${qt(o.log)} AS l WHERE ${range(input, o, `l.${seq}`)}`;
  const cols = o.exposed.map((c) => `x.${q(c)}`).join(', ');
  const firstOld = `x.${before} IS NULL AND x.${sign} = -1`;
  if (oldOnly) return `SELECT ${cols} FROM (${numbered(`LAG(l.${seq}) ${byKey} AS ${before}`)}) AS x WHERE ${firstOld}`;
  return (
    `SELECT ${cols}, x.${sign} AS ${q(WEIGHT)} FROM (${numbered(`LAG(l.${seq}) ${byKey} AS ${before}, LEAD(l.${seq}) ${byKey} AS ${after}`)}) AS x ` +
    `WHERE (${firstOld}) OR (x.${after} IS NULL AND x.${sign} = 1)`
  );
}

/** The keys the log changed in the range (a derived table the anti-join finds rows in by key). */
function changedKeys(input: DeltaInput, o: DeltaOccurrence): string {
  return `SELECT DISTINCT ${o.pk.map(q).join(', ')} FROM ${qt(o.log)} WHERE ${range(input, o, q(SEQ_COLUMN))}`;
}

/**
 * The table without the rows whose key the log changed in the range: an anti-join with those
 * keys (`keys` is the alias of the key set; the caller adds `keyAbsent`).
 */
export function keptRows(input: DeltaInput, o: DeltaOccurrence, alias: string, keys: string): string {
  const on = o.pk.map((c) => `${q(keys)}.${q(c)} = ${q(alias)}.${q(c)}`).join(' AND ');
  return `${qt(o.base)} AS ${q(alias)} LEFT JOIN (${changedKeys(input, o)}) AS ${q(keys)} ON ${on}`;
}

export const keyAbsent = (o: DeltaOccurrence, keys: string) => `${q(keys)}.${q(o.pk[0]!)} IS NULL`;

/** The table as it was at the watermark, as one derived table. */
export function preState(input: DeltaInput, o: DeltaOccurrence): string {
  const kept = `SELECT ${o.exposed.map((c) => `x.${q(c)}`).join(', ')} FROM ${keptRows(input, o, 'x', '__mvs_k')} WHERE ${keyAbsent(o, '__mvs_k')}`;
  return `${kept} UNION ALL ${netChanges(input, o, true)}`;
}

/** The terms of the delta rule and their sub-terms, for the logs that changed. */
export function deltaTerms(input: DeltaInput): Term[] {
  const max = Math.max(1, input.maxSubterms ?? DEFAULT_MAX_SUBTERMS);
  const changed = input.occurrences.map((o) => input.changed.has(o.logId));
  const terms: Term[] = [];
  input.occurrences.forEach((_, i) => {
    if (!changed[i]) return;
    let subterms: SourceKind[][] = [[]];
    input.occurrences.forEach((__, j) => {
      if (j < i || !changed[j]) subterms = subterms.map((s) => [...s, 'post']);
      else if (j === i) subterms = subterms.map((s) => [...s, 'delta']);
      else if (subterms.length * 2 <= max) subterms = subterms.flatMap((s) => [[...s, 'kept'], [...s, 'old']]);
      else subterms = subterms.map((s) => [...s, 'pre']);
    });
    terms.push({ index: i, subterms });
  });
  return terms;
}

/** The key set of the occurrence at position j when it is read as "kept". */
const keysAlias = (j: number) => `__mvs_k${j}`;

function source(input: DeltaInput, o: DeltaOccurrence, kind: SourceKind, j: number): string {
  switch (kind) {
    case 'post':
      return `${qt(o.base)} AS ${q(o.alias)}`;
    case 'kept':
      return `(${keptRows(input, o, o.alias, keysAlias(j))})`;
    case 'delta':
      return `(${netChanges(input, o)}) AS ${q(o.alias)}`;
    case 'old':
      return `(${netChanges(input, o, true)}) AS ${q(o.alias)}`;
    case 'pre':
      return `(${preState(input, o)}) AS ${q(o.alias)}`;
  }
}

/**
 * One sub-term: `select` (expressions over the aliases) plus the delta row's weight, from each
 * occurrence read as `kinds` says, under every condition of the definition.
 */
export function subtermSql(input: DeltaInput, kinds: SourceKind[], select: string[]): string {
  const deltaAt = kinds.indexOf('delta');
  if (deltaAt < 0 || kinds.length !== input.occurrences.length) throw new Error('a sub-term reads exactly one delta');
  const from = input.occurrences.map((o, j) => source(input, o, kinds[j]!, j));
  const conds = [
    ...(input.where ? [`(${input.where})`] : []),
    ...input.occurrences.flatMap((o, j) => (kinds[j] === 'kept' ? [keyAbsent(o, keysAlias(j))] : [])),
  ];
  const weight = `${q(input.occurrences[deltaAt]!.alias)}.${q(WEIGHT)} AS ${q(WEIGHT)}`;
  return `SELECT ${[...select, weight].join(', ')} FROM ${from.join(', ')}${conds.length ? ` WHERE ${conds.join(' AND ')}` : ''}`;
}

/** Every sub-term of every term, one UNION ALL; `select(term)` may tell the terms apart. */
export function deltaUnion(input: DeltaInput, select: (term: Term) => string[]): string {
  return deltaUnionParts(input, select, 1)[0]!;
}

/**
 * The delta as up to `parts` UNION ALLs that add up to deltaUnion, to be read on as many
 * snapshots of one cut at once: whole terms dealt out in turn, or, with fewer terms than parts,
 * sub-terms. Their rows together are deltaUnion's rows.
 */
export function deltaUnionParts(input: DeltaInput, select: (term: Term) => string[], parts: number): string[] {
  const terms = deltaTerms(input);
  if (!terms.length) throw new Error('no log changed: nothing to join');
  const units = terms.length >= parts ? terms.map((t) => t.subterms.map((k) => ({ t, k }))) : terms.flatMap((t) => t.subterms.map((k) => [{ t, k }]));
  const groups: string[][] = [];
  units.forEach((unit, i) => (groups[i % parts] ??= []).push(...unit.map(({ t, k }) => subtermSql(input, k, select(t)))));
  return groups.map((g) => g.join(' UNION ALL '));
}

/**
 * The order of the terms: bigger tables first. Term i reads the occurrences after it in their
 * pre-change state, which costs more than reading a table as it is, so those should be the
 * small ones (the dimensions of a star join, not its fact table). Ties keep the FROM order.
 */
export function orderOccurrences<T extends { alias: string }>(occurrences: T[], sizes: Record<string, number>): T[] {
  return occurrences
    .map((o, i) => ({ o, i }))
    .sort((a, b) => (sizes[b.o.alias] ?? 0) - (sizes[a.o.alias] ?? 0) || a.i - b.i)
    .map((x) => x.o);
}
