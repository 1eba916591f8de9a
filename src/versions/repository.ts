import type { Knex } from 'knex';
import type { Executor } from '../mv/repository.js';
import type { PartitionState, TableRef, VersionEntry } from './types.js';

// Reads and writes of mvs_base_partitions (reported versions) and mvs_mview_version_map (what
// each MV read). Version times are epoch ms in BIGINT columns.

export const tableKey = (t: TableRef) => `${t.schema}.${t.name}`;

const num = (v: unknown) => Number(v);

export async function readPartitions(db: Executor, table: TableRef, opts: { forUpdate?: boolean } = {}): Promise<Map<string, PartitionState & { ident: string | null }>> {
  const q = db('mvs_base_partitions').where({ base_table_schema: table.schema, base_table_name: table.name });
  if (opts.forUpdate) q.forUpdate();
  const rows = (await q) as Array<Record<string, unknown>>;
  return new Map(
    rows.map((r) => [
      String(r.partition_name),
      {
        partitionName: String(r.partition_name),
        partitionId: num(r.partition_id),
        version: num(r.version),
        versionTime: num(r.version_time),
        dataVersion: num(r.data_version ?? 0),
        reportedAt: r.updated_at instanceof Date ? r.updated_at.getTime() : undefined,
        ident: (r.base_table_ident as string | null) ?? null,
      },
    ]),
  );
}

/** An MV's version map: table key -> partition name -> entry. */
export async function readVersionMap(db: Executor, mviewId: number, table?: TableRef): Promise<Map<string, Map<string, VersionEntry>>> {
  const q = db('mvs_mview_version_map').where({ mview_id: mviewId });
  if (table) q.andWhere({ base_table_schema: table.schema, base_table_name: table.name });
  const rows = (await q) as Array<Record<string, unknown>>;
  const out = new Map<string, Map<string, VersionEntry>>();
  for (const r of rows) {
    const key = `${String(r.base_table_schema)}.${String(r.base_table_name)}`;
    const m = out.get(key) ?? new Map<string, VersionEntry>();
    m.set(String(r.partition_name), {
      partitionId: num(r.partition_id),
      version: num(r.version),
      lastRefreshTime: num(r.last_refresh_time),
      extLastFileModifiedTime: num(r.ext_last_file_modified_time),
      fileNumber: num(r.file_number),
    });
    out.set(key, m);
  }
  return out;
}

export async function upsertVersionEntries(trx: Knex.Transaction, mviewId: number, table: TableRef, entries: Map<string, VersionEntry>): Promise<void> {
  if (entries.size === 0) return;
  const rows = [...entries].map(([name, e]) => ({
    mview_id: mviewId,
    base_table_schema: table.schema,
    base_table_name: table.name,
    partition_name: name,
    partition_id: e.partitionId,
    version: e.version,
    last_refresh_time: e.lastRefreshTime,
    ext_last_file_modified_time: e.extLastFileModifiedTime,
    file_number: e.fileNumber,
  }));
  await trx('mvs_mview_version_map')
    .insert(rows)
    .onConflict(['mview_id', 'base_table_schema', 'base_table_name', 'partition_name'])
    .merge(['partition_id', 'version', 'last_refresh_time', 'ext_last_file_modified_time', 'file_number']);
}

/** Base tables of an MV, each with its reported partitions (empty map: not versioned). */
export async function baseTableVersions(db: Executor, mviewId: number): Promise<Array<{ table: TableRef; partitions: Map<string, PartitionState> }>> {
  const tables = (await db('mvs_mview_base_tables')
    .where({ mview_id: mviewId })
    .select({ schema: 'base_table_schema', name: 'base_table_name' })) as TableRef[];
  const out = [];
  for (const table of tables) out.push({ table, partitions: await readPartitions(db, table) });
  return out;
}

/** MVs that read a base table. */
export async function dependentMviews(db: Executor, table: TableRef): Promise<number[]> {
  const ids = await db('mvs_mview_base_tables')
    .where({ base_table_schema: table.schema, base_table_name: table.name })
    .pluck('mview_id');
  return ids.map(Number).sort((a, b) => a - b);
}

export async function appendEditLog(trx: Knex.Transaction, mviewId: number | null, opType: string, payload: unknown, now: number): Promise<void> {
  await trx('mvs_edit_log').insert({ mview_id: mviewId, op_type: opType, payload: JSON.stringify(payload), created_at: new Date(now) });
}
