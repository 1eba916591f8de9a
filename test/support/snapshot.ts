import type { Knex } from 'knex';

/**
 * Everything an error path must leave alone: every row of every mvs_* table of `database`, and
 * the names of all tables and triggers in `schemas` (MV tables and their `__mvs_<id>_new/_old`
 * shadows, MV-log tables and their triggers included). Rows are sorted by their JSON form, so two snapshots compare with toEqual whatever
 * order the server returned them in.
 */
export interface Snapshot {
  tables: Record<string, string[]>;
  /** Triggers per schema (MV logs create them): name, table and event. */
  triggers: Record<string, string[]>;
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
  const triggers: Record<string, string[]> = {};
  for (const s of schemas) {
    tables[s] = await listTables(db, s);
    const trg = (await db('information_schema.triggers')
      .where({ trigger_schema: s })
      .select({ name: 'trigger_name', table: 'event_object_table', event: 'event_manipulation' })) as Array<Record<string, string>>;
    triggers[s] = trg.map((t) => `${t.name} ${t.event} ON ${t.table}`).sort();
  }
  const rows: Record<string, string[]> = {};
  for (const table of (tables[database] ?? (await listTables(db, database))).filter((n) => n.startsWith('mvs_'))) {
    const all = (await db.withSchema(database).from(table).select('*')) as Array<Record<string, unknown>>;
    rows[table] = all.map((r) => JSON.stringify(r)).sort();
  }
  return { tables, triggers, rows };
}
