import type { Knex } from 'knex';
import { partitionStale } from '../versions/freshness.js';
import { readVersionMap, tableKey, upsertVersionEntries, type baseTableVersions } from '../versions/repository.js';
import type { VersionEntry } from '../versions/types.js';

// The version-map side of a refresh (StarRocks semantics, DESIGN.md §2): whether a scheduled run
// may be SKIPPED, and what a successful run records.

export type BaseVersions = Awaited<ReturnType<typeof baseTableVersions>>;

/** Every base table is versioned and no reported partition moved since the MV read it. */
export async function versionsUnchanged(lock: Knex.Transaction, mviewId: number, versions: BaseVersions): Promise<boolean> {
  if (versions.length === 0 || !versions.every((v) => v.partitions.size > 0)) return false;
  const map = await readVersionMap(lock, mviewId);
  return !versions.some(({ table, partitions }) =>
    [...partitions.values()].some((p) => partitionStale(p, map.get(tableKey(table))?.get(p.partitionName))),
  );
}

/**
 * Store the versions a successful run read. The map changes: bump the fence first (same lock
 * order as repairs: mviews, then map), so a repair computed from the old map loses its
 * compare-and-set.
 */
export async function recordVersionMap(lock: Knex.Transaction, mviewId: number, versions: BaseVersions): Promise<void> {
  if (!versions.some((v) => v.partitions.size > 0)) return;
  await lock('mvs_mviews').where({ mview_id: mviewId }).increment('meta_version', 1);
  for (const { table, partitions } of versions) {
    const entries = new Map<string, VersionEntry>();
    for (const p of partitions.values()) {
      entries.set(p.partitionName, {
        partitionId: p.partitionId,
        version: p.version,
        lastRefreshTime: p.versionTime,
        extLastFileModifiedTime: -1,
        fileNumber: -1,
      });
    }
    await upsertVersionEntries(lock, mviewId, table, entries);
  }
}
