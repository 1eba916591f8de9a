import type { Knex } from 'knex';
import { quoteIdent } from '../mv/identifiers.js';
import type { MviewRow } from '../mv/repository.js';

// COMPLETE refresh: build the MV out of place, swap it in with one RENAME TABLE.
//
// The build and the retired table live in the MV's schema, next to the user's tables, so
// mvsched marks every table it makes with a comment naming its MV and only ever drops a table
// that carries it: a user's table that happens to have a shadow table's name is left alone, and
// the build takes another name (DESIGN.md §2: mvsched drops only objects it made and recorded).

export interface TableRef {
  schema: string;
  name: string;
}

type MvRef = Pick<MviewRow, 'mview_id' | 'table_schema' | 'mview_name'>;

/** The comment every table mvsched makes for an MV carries (build tables, hence MV tables). */
export function ownerComment(mviewId: number): string {
  return `mvsched:mv:${Number(mviewId)}`;
}

/** Base name of an MV's shadow tables; named by id so any MV name (up to 64 chars) fits. */
export function shadowTables(mviewId: number): { building: string; retired: string } {
  return { building: `__mvs_${mviewId}_new`, retired: `__mvs_${mviewId}_old` };
}

const qt = (t: TableRef) => `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
const likeEscape = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/**
 * The tables named like the MV's shadow tables, with whether mvsched made them. Ours are
 * leftovers of a run that died half-way: dropped here.
 */
async function shadowNamesInUse(db: Knex, mv: MvRef): Promise<Set<string>> {
  const [rows] = (await db.raw(
    'SELECT TABLE_NAME AS name, TABLE_COMMENT AS comment FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE ?',
    [mv.table_schema, `${likeEscape(`__mvs_${Number(mv.mview_id)}_`)}%`],
  )) as [Array<{ name: string; comment: string }>];
  const foreign = new Set<string>();
  for (const r of rows) {
    if (r.comment === ownerComment(mv.mview_id)) await db.raw(`DROP TABLE IF EXISTS ${qt({ schema: mv.table_schema, name: r.name })}`);
    else foreign.add(r.name);
  }
  return foreign;
}

/** `base`, or `base_<n>` when someone else's table already has that name. */
function freeName(base: string, taken: Set<string>): string {
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) if (!taken.has(`${base}_${i}`)) return `${base}_${i}`;
}

/** Drop the leftovers of an MV's runs (tables carrying its comment); others stay. */
export async function dropShadowTables(db: Knex, mv: MvRef): Promise<void> {
  await shadowNamesInUse(db, mv);
}

export interface Filled {
  rows: number;
  /** Database time of the snapshot the rows were read from. */
  dataTime: Date;
}

export interface BuildResult extends Filled {
  /** Rows the MV held before (null: it had no table). */
  previousRows: number | null;
}

export interface BuildSteps {
  /** Shape the empty build table (hidden columns, keys). */
  prepare?: (build: TableRef) => Promise<void>;
  /** Fill the build table. Default: INSERT ... SELECT at READ COMMITTED. */
  fill?: (build: TableRef) => Promise<Filled>;
  /** Runs just before the swap. */
  beforeSwap?: () => Promise<void>;
}

/**
 * Recompute the MV from `select` out of place and swap it in with one RENAME TABLE, so a reader
 * sees either the old contents or the new ones, never an empty or partial table. Returns the
 * row count. Runs on pool connections outside the caller's lock transaction, because DDL
 * implicitly commits: the per-MV lock lives on another connection for the whole build.
 */
export async function buildInPlaceOf(db: Knex, mv: MvRef, select: string, steps: BuildSteps = {}): Promise<BuildResult> {
  const taken = await shadowNamesInUse(db, mv);
  const { building, retired } = shadowTables(mv.mview_id);
  const build = { schema: mv.table_schema, name: freeName(building, taken) };
  // Structure first (no rows, so no locks on the base tables worth speaking of) ...
  // No bindings next to the definition: a `?` in the user's SQL is not a placeholder. The comment
  // is built from an integer, so it is safe as a literal.
  await db.raw(`CREATE TABLE ${qt(build)} COMMENT = '${ownerComment(mv.mview_id)}' AS SELECT * FROM (${select}) AS __mvs_def LIMIT 0`);
  try {
    await steps.prepare?.(build);
    const filled = steps.fill ? await steps.fill(build) : await fillReadCommitted(db, build, select);
    await analyzeForSwap(db, qt(build));
    await steps.beforeSwap?.();
    const previousRows = await swap(db, mv, build, { schema: mv.table_schema, name: freeName(retired, taken) });
    return { ...filled, previousRows };
  } catch (err) {
    await db.raw(`DROP TABLE IF EXISTS ${qt(build)}`).catch(() => {});
    throw err;
  }
}

/** COMPLETE refresh from the definition. */
export function buildComplete(db: Knex, mv: MvRef & Pick<MviewRow, 'mview_definition'>): Promise<BuildResult> {
  return buildInPlaceOf(db, mv, mv.mview_definition);
}

/**
 * The rows in a READ COMMITTED transaction: a consistent read that takes no shared locks on the
 * base tables, so writers are not blocked while a big MV is rebuilt. Its data time is the
 * database's clock just before the read (the statement's snapshot is taken as it starts).
 */
async function fillReadCommitted(db: Knex, build: TableRef, select: string): Promise<Filled> {
  let rows = 0;
  let dataTime = new Date();
  await db.transaction(
    async (trx) => {
      const [now] = (await trx.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>];
      dataTime = now[0]!.t;
      const [res] = (await trx.raw(`INSERT INTO ${qt(build)} SELECT * FROM (${select}) AS __mvs_def`)) as [{ affectedRows: number }];
      rows = res.affectedRows;
    },
    { isolationLevel: 'read committed' },
  );
  return { rows, dataTime };
}

/**
 * Statistics for a freshly filled table before it is swapped in: InnoDB computed them while it
 * was empty and RENAME keeps them, so for a while the optimizer would take a big MV for a
 * one-row table (and a FAST refresh's joins would scan it once per changed group).
 */
export async function analyzeForSwap(db: Knex, qualifiedTable: string): Promise<void> {
  await db.raw(`ANALYZE TABLE ${qualifiedTable}`);
}

/**
 * Put the build table in the MV's place (readers see the old table or the new one); returns how
 * many rows the replaced table held (null when there was none).
 */
async function swap(db: Knex, mv: MvRef, build: TableRef, retired: TableRef): Promise<number | null> {
  const target = { schema: mv.table_schema, name: mv.mview_name };
  const existing = await db('information_schema.tables').where({ table_schema: target.schema, table_name: target.name }).first('table_name');
  if (!existing) {
    await db.raw(`RENAME TABLE ${qt(build)} TO ${qt(target)}`);
    return null;
  }
  await db.raw(`RENAME TABLE ${qt(target)} TO ${qt(retired)}, ${qt(build)} TO ${qt(target)}`);
  // The MV's previous table, which this statement just moved there: counted (the run's rows
  // deleted), then dropped.
  const [count] = (await db.raw(`SELECT COUNT(*) AS n FROM ${qt(retired)}`)) as [Array<{ n: number | string }>];
  await db.raw(`DROP TABLE IF EXISTS ${qt(retired)}`);
  return Number(count[0]!.n);
}

/**
 * DROP MATERIALIZED VIEW's table: the MV's own (it carries the MV's comment, or none when an
 * earlier release built it). A table someone put in its place since is left alone.
 */
export async function dropMviewTable(db: Knex, mv: MvRef): Promise<'dropped' | 'absent' | 'foreign'> {
  const row = (await db('information_schema.tables')
    .where({ table_schema: mv.table_schema, table_name: mv.mview_name })
    .first({ comment: 'table_comment' })) as { comment: string } | undefined;
  if (!row) return 'absent';
  if (row.comment !== ownerComment(mv.mview_id) && row.comment !== '') return 'foreign';
  await db.raw(`DROP TABLE IF EXISTS ${qt({ schema: mv.table_schema, name: mv.mview_name })}`);
  return 'dropped';
}
