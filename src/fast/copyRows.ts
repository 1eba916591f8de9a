import type { Knex } from 'knex';
import { exactStream, type ExactValue } from '../db/exactValues.js';
import { quoteIdent } from '../mv/identifiers.js';

export interface TableRef {
  schema: string;
  name: string;
}

const q = quoteIdent;

/**
 * Copy the rows of `select`, as seen by `snapshot`, into `target` (a table, or the quoted name of
 * a temporary table on `db`'s connection), in batched multi-row INSERTs.
 */
export async function fillFromSnapshot(
  db: Knex | Knex.Transaction,
  snapshot: Knex.Transaction,
  target: TableRef | string,
  columns: string[],
  select: string,
  onProgress?: (rows: number) => void,
  bindings: readonly unknown[] = [],
  asBytes?: boolean[],
): Promise<number> {
  return insertRows(db, target, columns, exactStream(snapshot, `SELECT * FROM (${select}) AS __mvs_def`, bindings, asBytes), onProgress);
}

/** Insert `rows` into `target` on `db`'s connection, in batched multi-row INSERTs; returns how many. */
export async function insertRows(
  db: Knex | Knex.Transaction,
  target: TableRef | string,
  columns: string[],
  source: AsyncIterable<ExactValue[]>,
  onProgress?: (rows: number) => void,
): Promise<number> {
  const perBatch = Math.max(1, Math.min(1000, Math.floor(30_000 / columns.length)));
  const head = `INSERT INTO ${typeof target === 'string' ? target : `${q(target.schema)}.${q(target.name)}`} (${columns.map(q).join(', ')}) VALUES `;
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
  for await (const row of source) {
    batch.push(row);
    if (batch.length >= perBatch) await flush();
  }
  await flush();
  return rows;
}
