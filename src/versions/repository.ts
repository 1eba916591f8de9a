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
  return new Map(rows.map((r) => [String(r.partition_name), partitionOf(r)]));
}

function partitionOf(r: Record<string, unknown>): PartitionState & { ident: string | null } {
  return {
    partitionName: String(r.partition_name),
    partitionId: num(r.partition_id),
    version: num(r.version),
    versionTime: num(r.version_time),
    dataVersion: num(r.data_version ?? 0),
    reportedAt: r.updated_at instanceof Date ? r.updated_at.getTime() : undefined,
    ident: (r.base_table_ident as string | null) ?? null,
  };
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
  // One statement for every base table and its reported partitions (a run reads this each time).
  const rows = (await db('mvs_mview_base_tables as b')
    .leftJoin('mvs_base_partitions as p', (j) => j.on('p.base_table_schema', 'b.base_table_schema').andOn('p.base_table_name', 'b.base_table_name'))
    .where('b.mview_id', mviewId)
    .orderBy(['b.base_table_schema', 'b.base_table_name'])
    .select('p.*', { t_schema: 'b.base_table_schema', t_name: 'b.base_table_name' })) as Array<Record<string, unknown>>;
  const out = new Map<string, { table: TableRef; partitions: Map<string, PartitionState> }>();
  for (const r of rows) {
    const table = { schema: String(r.t_schema), name: String(r.t_name) };
    const key = tableKey(table);
    const entry = out.get(key) ?? out.set(key, { table, partitions: new Map() }).get(key)!;
    if (r.partition_name !== null && r.partition_name !== undefined) entry.partitions.set(String(r.partition_name), partitionOf(r));
  }
  return [...out.values()];
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

/** Key of one MV's map for one base table in readVersionMapsOf's answer. */
export const mviewTableKey = (mviewId: number, t: TableRef) => `${mviewId}/${tableKey(t)}`;

/**
 * The version maps of several MVs for several base tables in one read: mviewTableKey -> partition
 * name -> entry (a pair with no entry is absent).
 */
export async function readVersionMapsOf(db: Executor, mviewIds: number[], tables: TableRef[]): Promise<Map<string, Map<string, VersionEntry>>> {
  const out = new Map<string, Map<string, VersionEntry>>();
  if (mviewIds.length === 0 || tables.length === 0) return out;
  const rows = (await db('mvs_mview_version_map')
    .whereIn('mview_id', mviewIds)
    .whereIn(['base_table_schema', 'base_table_name'], tables.map((t) => [t.schema, t.name]))) as Array<Record<string, unknown>>;
  for (const r of rows) {
    const key = mviewTableKey(num(r.mview_id), { schema: String(r.base_table_schema), name: String(r.base_table_name) });
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

export interface VersionRow {
  mviewId: number;
  table: TableRef;
  partitionName: string;
  entry: VersionEntry;
}

/** upsertVersionEntries for several MVs and tables in one statement (a later row for the same key wins). */
export async function upsertVersionRows(trx: Knex.Transaction, rows: VersionRow[]): Promise<void> {
  if (rows.length === 0) return;
  await trx('mvs_mview_version_map')
    .insert(
      rows.map(({ mviewId, table, partitionName, entry: e }) => ({
        mview_id: mviewId,
        base_table_schema: table.schema,
        base_table_name: table.name,
        partition_name: partitionName,
        partition_id: e.partitionId,
        version: e.version,
        last_refresh_time: e.lastRefreshTime,
        ext_last_file_modified_time: e.extLastFileModifiedTime,
        file_number: e.fileNumber,
      })),
    )
    .onConflict(['mview_id', 'base_table_schema', 'base_table_name', 'partition_name'])
    .merge(['partition_id', 'version', 'last_refresh_time', 'ext_last_file_modified_time', 'file_number']);
}

/** Several edit-log rows in one statement; their ids follow the order given. */
export async function appendEditLogRows(
  trx: Knex.Transaction,
  rows: Array<{ mviewId: number | null; opType: string; payload: unknown }>,
  now: number,
): Promise<void> {
  if (rows.length === 0) return;
  const createdAt = new Date(now);
  await trx('mvs_edit_log').insert(rows.map((r) => ({ mview_id: r.mviewId, op_type: r.opType, payload: JSON.stringify(r.payload), created_at: createdAt })));
}

/** dependentMviews for several base tables in one read: tableKey -> MV ids (ascending). */
export async function dependentMviewsOf(db: Executor, tables: TableRef[]): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>(tables.map((t) => [tableKey(t), []]));
  if (tables.length === 0) return out;
  const rows = (await db('mvs_mview_base_tables')
    .whereIn(['base_table_schema', 'base_table_name'], tables.map((t) => [t.schema, t.name]))
    .select('mview_id', 'base_table_schema', 'base_table_name')) as Array<{ mview_id: number | string; base_table_schema: string; base_table_name: string }>;
  for (const r of rows) out.get(tableKey({ schema: r.base_table_schema, name: r.base_table_name }))?.push(Number(r.mview_id));
  for (const ids of out.values()) ids.sort((a, b) => a - b);
  return out;
}
