import type { Knex } from 'knex';
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

type Row = Record<string, unknown>;

/**
 * Freshness of many MVs (`ids`: a list, or a query of MV ids such as a page's; else every MV) in
 * one query whatever their number: each base table of each MV that reads a versioned table,
 * with that table's reported partitions and the MV's version-map entry for each. An MV missing
 * from the answer reads no versioned table (unversioned).
 */
export async function mviewsFreshness(db: Executor, ids?: number[] | Knex.QueryBuilder): Promise<Map<number, Freshness>> {
  if (Array.isArray(ids) && ids.length === 0) return new Map();
  // No ORDER BY (a sort of every row in a temporary table): judgeFreshness sorts what it reports.
  return judgeFreshness((await freshnessQuery(db, ids)) as Row[]);
}

/** The names of the columns freshnessQuery selects (for a UNION beside another read). */
export const FRESHNESS_COLUMNS = [
  'mview_id', 'base_table_schema', 'base_table_name', 'partition_name', 'partition_id', 'version', 'version_time', 'updated_at',
  'vm_partition_id', 'vm_version', 'vm_last_refresh_time',
] as const;

/**
 * mviewsFreshness' statement, unsent (`ids` a non-empty list, a query of MV ids, or every MV);
 * its rows (FRESHNESS_COLUMNS) go to judgeFreshness.
 */
export function freshnessQuery(db: Executor, ids?: number[] | Knex.QueryBuilder): Knex.QueryBuilder {
  // Driven from the MVs asked about when given: from those of a page's derived table that read
  // a versioned table, by STRAIGHT_JOIN (the optimizer does not count the derived table's LIMIT
  // and would rather scan every base table row); else from the MVs that read a versioned table,
  // found from the reported partitions (few), so MVs over ordinary tables cost nothing.
  const q: Knex.QueryBuilder =
    Array.isArray(ids) || !ids
      ? db('mvs_mview_base_tables as b')
      : db.from(versionedReaders(db, ids).as('p')).joinRaw('STRAIGHT_JOIN `mvs_mview_base_tables` AS `b` ON `b`.`mview_id` = `p`.`mview_id`');
  if (Array.isArray(ids)) q.whereIn('b.mview_id', ids);
  if (!ids) {
    const readers = db('mvs_base_partitions as rp')
      .join('mvs_mview_base_tables as rb', (j) => j.on('rb.base_table_schema', 'rp.base_table_schema').andOn('rb.base_table_name', 'rp.base_table_name'))
      .distinct('rb.mview_id');
    q.whereIn('b.mview_id', readers);
  }
  q.leftJoin('mvs_base_partitions as bp', (j) => j.on('bp.base_table_schema', 'b.base_table_schema').andOn('bp.base_table_name', 'b.base_table_name'))
    .leftJoin('mvs_mview_version_map as vm', (j) =>
      j
        .on('vm.mview_id', 'b.mview_id')
        .andOn('vm.base_table_schema', 'b.base_table_schema')
        .andOn('vm.base_table_name', 'b.base_table_name')
        .andOn('vm.partition_name', 'bp.partition_name'),
    )
    .select(
      'b.mview_id', 'b.base_table_schema', 'b.base_table_name',
      'bp.partition_name', 'bp.partition_id', 'bp.version', 'bp.version_time', 'bp.updated_at',
      { vm_partition_id: 'vm.partition_id', vm_version: 'vm.version', vm_last_refresh_time: 'vm.last_refresh_time' },
    );
  return q;
}

/**
 * The MVs of `ids` (a query of MV ids, such as a page's) that read at least one versioned table:
 * usually a few of a page or none, so only their rows are read in full and sent (all of a
 * page's rows cost the database and this process more than the lookups that pick them).
 */
function versionedReaders(db: Executor, ids: Knex.QueryBuilder): Knex.QueryBuilder {
  return db
    .from(ids.clone().as('p0'))
    .joinRaw('STRAIGHT_JOIN `mvs_mview_base_tables` AS `b0` ON `b0`.`mview_id` = `p0`.`mview_id`')
    .joinRaw('STRAIGHT_JOIN `mvs_base_partitions` AS `v` ON `v`.`base_table_schema` = `b0`.`base_table_schema` AND `v`.`base_table_name` = `b0`.`base_table_name`')
    .distinct('b0.mview_id');
}

/** DESIGN.md §2 freshness from freshnessQuery's rows (partitionStale per reported partition). */
export function judgeFreshness(rows: Row[]): Map<number, Freshness> {
  const out = new Map<number, Freshness>();
  const readsVersioned = new Set<number>();
  for (const r of rows) if (r.partition_name !== null) readsVersioned.add(Number(r.mview_id));
  for (const r of rows) {
    if (!readsVersioned.has(Number(r.mview_id))) continue;
    const id = Number(r.mview_id);
    const f = out.get(id) ?? out.set(id, { versioned: true, stale: [], reportedAt: null }).get(id)!;
    if (r.partition_name === null) {
      f.versioned = false; // a base table that reports no versions
      continue;
    }
    const p: PartitionState = {
      partitionName: String(r.partition_name),
      partitionId: Number(r.partition_id),
      version: Number(r.version),
      versionTime: Number(r.version_time),
      dataVersion: 0,
    };
    if (r.updated_at instanceof Date) f.reportedAt = Math.max(f.reportedAt ?? 0, r.updated_at.getTime());
    const entry: VersionEntry | undefined =
      r.vm_version === null
        ? undefined
        : { partitionId: Number(r.vm_partition_id), version: Number(r.vm_version), lastRefreshTime: Number(r.vm_last_refresh_time), extLastFileModifiedTime: -1, fileNumber: -1 };
    if (partitionStale(p, entry)) f.stale.push(`${tableKey({ schema: String(r.base_table_schema), name: String(r.base_table_name) })}.${p.partitionName}`);
  }
  for (const f of out.values()) if (f.stale.length > 1) f.stale.sort();
  return out;
}

/** Freshness of one MV out of mviewsFreshness' answer. */
export function freshnessOf(all: Map<number, Freshness>, mviewId: number): Freshness {
  return all.get(mviewId) ?? { versioned: false, stale: [], reportedAt: null };
}
