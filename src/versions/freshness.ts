import type { Executor } from '../mv/repository.js';
import { tableKey } from './repository.js';
import type { PartitionState, VersionEntry } from './types.js';

/**
 * DESIGN.md §2: a base partition is stale for an MV when its entry is missing (unless its
 * version is 1), its id differs, its version differs, or its versionTime is newer than the
 * entry's lastRefreshTime.
 */
export function partitionStale(p: PartitionState, entry: VersionEntry | undefined): boolean {
  if (!entry) return p.version !== 1;
  return entry.partitionId !== p.partitionId || entry.version !== p.version || p.versionTime > entry.lastRefreshTime;
}

export interface Freshness {
  /** Every base table reports versions (so freshness can be decided at all). */
  versioned: boolean;
  /** Partitions (table.partition) that changed since the MV read them. */
  stale: string[];
  /** Latest version report of any of the MV's base tables (epoch ms), null when none reported. */
  reportedAt: number | null;
}

export async function mviewFreshness(db: Executor, mviewId: number): Promise<Freshness> {
  return freshnessOf(await mviewsFreshness(db, [mviewId]), mviewId);
}

/**
 * Freshness of many MVs (`ids`, or every MV) in at most three queries whatever their number:
 * reported partitions, the base tables of the MVs that read a versioned table, and their version
 * maps. An MV missing from the answer reads no versioned table (unversioned).
 */
export async function mviewsFreshness(db: Executor, ids?: number[]): Promise<Map<number, Freshness>> {
  const out = new Map<number, Freshness>();
  if (ids && ids.length === 0) return out;
  const parts = (await db('mvs_base_partitions').select(
    'base_table_schema', 'base_table_name', 'partition_name', 'partition_id', 'version', 'version_time', 'data_version', 'updated_at',
  )) as Array<Record<string, unknown>>;
  if (parts.length === 0) return out;
  const byTable = new Map<string, PartitionState[]>();
  const versionedTables: Array<[string, string]> = [];
  for (const r of parts) {
    const key = tableKey({ schema: String(r.base_table_schema), name: String(r.base_table_name) });
    let list = byTable.get(key);
    if (!list) {
      byTable.set(key, (list = []));
      versionedTables.push([String(r.base_table_schema), String(r.base_table_name)]);
    }
    list.push({
      partitionName: String(r.partition_name),
      partitionId: Number(r.partition_id),
      version: Number(r.version),
      versionTime: Number(r.version_time),
      dataVersion: Number(r.data_version ?? 0),
      ...(r.updated_at instanceof Date ? { reportedAt: r.updated_at.getTime() } : {}),
    });
  }
  // Every base table of each MV that reads at least one versioned table.
  const readers = db('mvs_mview_base_tables').whereIn(['base_table_schema', 'base_table_name'], versionedTables).select('mview_id');
  if (ids) readers.whereIn('mview_id', ids);
  const bases = (await db('mvs_mview_base_tables')
    .whereIn('mview_id', readers)
    .select('mview_id', 'base_table_schema', 'base_table_name')
    .orderBy(['mview_id', 'base_table_schema', 'base_table_name'])) as Array<Record<string, unknown>>;
  if (bases.length === 0) return out;
  const maps = db('mvs_mview_version_map').whereIn(['base_table_schema', 'base_table_name'], versionedTables);
  if (ids) maps.whereIn('mview_id', ids);
  const entries = new Map<string, VersionEntry>();
  for (const r of (await maps) as Array<Record<string, unknown>>) {
    entries.set(`${Number(r.mview_id)}/${String(r.base_table_schema)}.${String(r.base_table_name)}/${String(r.partition_name)}`, {
      partitionId: Number(r.partition_id),
      version: Number(r.version),
      lastRefreshTime: Number(r.last_refresh_time),
      extLastFileModifiedTime: Number(r.ext_last_file_modified_time),
      fileNumber: Number(r.file_number),
    });
  }
  for (const b of bases) {
    const id = Number(b.mview_id);
    const key = tableKey({ schema: String(b.base_table_schema), name: String(b.base_table_name) });
    const f = out.get(id) ?? out.set(id, { versioned: true, stale: [], reportedAt: null }).get(id)!;
    const partitions = byTable.get(key);
    if (!partitions) {
      f.versioned = false;
      continue;
    }
    for (const p of partitions) {
      if (p.reportedAt !== undefined) f.reportedAt = Math.max(f.reportedAt ?? 0, p.reportedAt);
      if (partitionStale(p, entries.get(`${id}/${key}/${p.partitionName}`))) f.stale.push(`${key}.${p.partitionName}`);
    }
  }
  return out;
}

/** Freshness of one MV out of mviewsFreshness' answer. */
export function freshnessOf(all: Map<number, Freshness>, mviewId: number): Freshness {
  return all.get(mviewId) ?? { versioned: false, stale: [], reportedAt: null };
}
