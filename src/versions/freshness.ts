import type { Executor } from '../mv/repository.js';
import { baseTableVersions, readVersionMap, tableKey } from './repository.js';
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
  const bases = await baseTableVersions(db, mviewId);
  const map = await readVersionMap(db, mviewId);
  const out: Freshness = { versioned: bases.length > 0, stale: [], reportedAt: null };
  for (const { table, partitions } of bases) {
    for (const p of partitions.values()) if (p.reportedAt !== undefined) out.reportedAt = Math.max(out.reportedAt ?? 0, p.reportedAt);
    if (partitions.size === 0) {
      out.versioned = false;
      continue;
    }
    const entries = map.get(tableKey(table));
    for (const p of partitions.values()) {
      if (partitionStale(p, entries?.get(p.partitionName))) out.stale.push(`${tableKey(table)}.${p.partitionName}`);
    }
  }
  return out;
}
