import type { Knex } from 'knex';
import sqlParser from 'node-sql-parser';

const { Parser } = sqlParser;
import { ValidationError, errorMessage } from '../errors.js';

// START WITH / NEXT and the SELECT body are SQL the user wrote; the database is the authority
// on them. Each is evaluated in a read-only transaction so a stray side effect cannot land.

function serverMessage(err: unknown): string {
  const e = err as { sqlMessage?: string };
  return e.sqlMessage ?? errorMessage(err);
}

async function readOnly<T>(db: Knex, fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
  return db.transaction(fn, { readOnly: true });
}

/** NEXT: a whole number of seconds > 0. */
export async function evalNextSeconds(db: Knex, expr: string): Promise<number> {
  let v: unknown;
  try {
    const [rows] = (await readOnly(db, (trx) => trx.raw(`SELECT (${expr}) AS v`))) as [Array<{ v: unknown }>];
    v = rows[0]?.v;
  } catch (err) {
    throw new ValidationError(`invalid NEXT expression ${JSON.stringify(expr)}: ${serverMessage(err)}`);
  }
  const n = typeof v === 'string' && /^\s*-?\d+(\.0+)?\s*$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0) {
    throw new ValidationError(`NEXT must be a whole number of seconds > 0, got ${JSON.stringify(v)} from ${JSON.stringify(expr)}`);
  }
  if (n > 366 * 86_400 * 100) throw new ValidationError(`NEXT ${n} s is more than a century`);
  return n;
}

/** START WITH: a DATETIME, evaluated in UTC. Returns epoch ms. */
export async function evalStartWith(db: Knex, expr: string): Promise<number> {
  let v: unknown;
  try {
    const [rows] = (await readOnly(db, (trx) => trx.raw(`SELECT CAST((${expr}) AS DATETIME(3)) AS v`))) as [
      Array<{ v: unknown }>,
    ];
    v = rows[0]?.v;
  } catch (err) {
    throw new ValidationError(`invalid START WITH expression ${JSON.stringify(expr)}: ${serverMessage(err)}`);
  }
  if (!(v instanceof Date) || Number.isNaN(v.getTime())) {
    throw new ValidationError(`START WITH must evaluate to a DATETIME, got NULL from ${JSON.stringify(expr)}`);
  }
  return v.getTime();
}

export interface SelectProbe {
  columns: string[];
}

/** Ask the database to plan the SELECT (no rows read); a bad query fails here, before any write. */
export async function probeSelect(db: Knex, select: string): Promise<SelectProbe> {
  try {
    const [, fields] = (await readOnly(db, (trx) =>
      trx.raw(`SELECT * FROM (${select}) AS __mvs_probe LIMIT 0`),
    )) as [unknown, Array<{ name: string }>];
    return { columns: fields.map((f) => f.name) };
  } catch (err) {
    throw new ValidationError(`invalid SELECT: ${await selectError(db, select, serverMessage(err))}`);
  }
}

const PROBE_WRAPPER_TAIL = /\) AS __mvs_probe LIMIT 0/g;

/**
 * The server's complaint about the user's own SELECT, not about the probe wrapped around it
 * (whose text would show up in "near '...'"): PREPARE parses and resolves the SELECT as
 * written. When PREPARE accepts it (the error came from the derived table, e.g. a duplicate
 * column name), the wrapper's text is cut out of the first message instead.
 */
async function selectError(db: Knex, select: string, wrapped: string): Promise<string> {
  let own: string | undefined;
  await db
    .transaction(
      async (trx) => {
        try {
          await trx.raw('PREPARE __mvs_check FROM ?', [select]);
          await trx.raw('DEALLOCATE PREPARE __mvs_check');
        } catch (err) {
          own = serverMessage(err);
        }
      },
      { readOnly: true },
    )
    .catch(() => undefined);
  return own ?? wrapped.replace(PROBE_WRAPPER_TAIL, '').replace("near '' at", 'at the end of the SELECT at');
}

/**
 * Tables the SELECT reads, from a real SQL parser. Returns undefined when the parser does not
 * understand the dialect (the database already accepted the query, so that is not an error).
 */
export function extractTables(select: string, defaultSchema: string): Array<{ schema: string; name: string }> | undefined {
  try {
    const list = new Parser().tableList(select, { database: 'MariaDB' });
    const out = new Map<string, { schema: string; name: string }>();
    for (const entry of list) {
      const [, schema, name] = entry.split('::');
      if (!name) continue;
      const s = !schema || schema === 'null' ? defaultSchema : schema;
      out.set(`${s}.${name}`, { schema: s, name });
    }
    return [...out.values()];
  } catch {
    return undefined;
  }
}
