import type { Knex } from 'knex';
import { quoteIdent } from '../mv/identifiers.js';
import type { MviewRow } from '../mv/repository.js';

/**
 * Statistics for a freshly filled table before it is swapped in: InnoDB computed them while it
 * was empty and RENAME keeps them, so for a while the optimizer would take a big MV for a
 * one-row table (and a FAST refresh's joins would scan it once per changed group).
 */
export async function analyzeForSwap(db: Knex, qualifiedTable: string): Promise<void> {
  await db.raw(`ANALYZE TABLE ${qualifiedTable}`);
}

/** Shadow tables of one MV; named by id so any MV name (up to 64 chars) fits. */
export function shadowTables(mviewId: number): { building: string; retired: string } {
  return { building: `__mvs_${mviewId}_new`, retired: `__mvs_${mviewId}_old` };
}

/**
 * Recompute the MV out of place and swap it in with one RENAME TABLE, so a reader sees either
 * the old contents or the new ones, never an empty or partial table. Returns the row count.
 *
 * Runs on pool connections outside the caller's lock transaction, because DDL implicitly
 * commits: the per-MV lock lives on another connection for the whole build.
 */
export async function buildComplete(db: Knex, mv: Pick<MviewRow, 'mview_id' | 'table_schema' | 'mview_name' | 'mview_definition'>): Promise<number> {
  const schema = quoteIdent(mv.table_schema);
  const { building, retired } = shadowTables(mv.mview_id);
  const buildT = `${schema}.${quoteIdent(building)}`;
  const oldT = `${schema}.${quoteIdent(retired)}`;

  // Leftovers of a run that died half-way.
  await db.raw(`DROP TABLE IF EXISTS ${buildT}, ${oldT}`);
  // Structure first (no rows, so no locks on the base tables worth speaking of) ...
  await db.raw(`CREATE TABLE ${buildT} AS SELECT * FROM (${mv.mview_definition}) AS __mvs_def LIMIT 0`);
  let rows = 0;
  try {
    // ... then the rows in a READ COMMITTED transaction: a consistent read that takes no shared
    // locks on the base tables, so writers are not blocked while a big MV is rebuilt.
    await db.transaction(
      async (trx) => {
        const [res] = (await trx.raw(`INSERT INTO ${buildT} SELECT * FROM (${mv.mview_definition}) AS __mvs_def`)) as [
          { affectedRows: number },
        ];
        rows = res.affectedRows;
      },
      { isolationLevel: 'read committed' },
    );
    await swapIn(db, mv);
  } catch (err) {
    await db.raw(`DROP TABLE IF EXISTS ${buildT}`).catch(() => {});
    throw err;
  }
  return rows;
}

/**
 * Put a filled build table in the MV's place with one RENAME TABLE (readers see the old table or
 * the new one), after refreshing its statistics; `beforeSwap` runs just before the rename.
 */
export async function swapIn(
  db: Knex,
  mv: Pick<MviewRow, 'mview_id' | 'table_schema' | 'mview_name'>,
  beforeSwap?: () => Promise<void>,
): Promise<void> {
  const schema = quoteIdent(mv.table_schema);
  const { building, retired } = shadowTables(mv.mview_id);
  const target = `${schema}.${quoteIdent(mv.mview_name)}`;
  const buildT = `${schema}.${quoteIdent(building)}`;
  const oldT = `${schema}.${quoteIdent(retired)}`;
  await analyzeForSwap(db, buildT);
  await beforeSwap?.();
  const existing = await db('information_schema.tables')
    .where({ table_schema: mv.table_schema, table_name: mv.mview_name })
    .first('table_name');
  if (existing) {
    await db.raw(`RENAME TABLE ${target} TO ${oldT}, ${buildT} TO ${target}`);
    await db.raw(`DROP TABLE IF EXISTS ${oldT}`);
  } else {
    await db.raw(`RENAME TABLE ${buildT} TO ${target}`);
  }
}
