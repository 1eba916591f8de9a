import type { Knex } from 'knex';

/**
 * Everything an error path must leave alone: every row of every mvs_* table of `database`, and
 * the names of all tables in `schemas` (MV tables and their `__mvs_<id>_new/_old` shadows
 * included). Rows are sorted by their JSON form, so two snapshots compare with toEqual whatever
 * order the server returned them in.
 */
export interface Snapshot {
  tables: Record<string, string[]>;
  rows: Record<string, string[]>;
}

export async function listTables(db: Knex, schema: string): Promise<string[]> {
  const rows = (await db('information_schema.tables')
    .where({ table_schema: schema })
    .select({ name: 'table_name' })) as Array<{ name: string }>;
  return rows.map((r) => r.name).sort();
}

export async function snapshot(db: Knex, database: string, schemas: string[] = [database]): Promise<Snapshot> {
  const tables: Record<string, string[]> = {};
  for (const s of schemas) tables[s] = await listTables(db, s);
  const rows: Record<string, string[]> = {};
  for (const table of (tables[database] ?? (await listTables(db, database))).filter((n) => n.startsWith('mvs_'))) {
    const all = (await db.withSchema(database).from(table).select('*')) as Array<Record<string, unknown>>;
    rows[table] = all.map((r) => JSON.stringify(r)).sort();
  }
  return { tables, rows };
}
