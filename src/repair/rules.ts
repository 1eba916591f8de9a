import type { RepairInfo, VersionEntry } from '../versions/types.js';

// The repair rules of DESIGN.md §2 (StarRocks MVMetaVersionRepairer), as pure functions over
// one MV's version-map entries for one base table.

export type SkipReason =
  | 'no-table-entry'
  | 'no-partition-entry'
  | 'partition-id-mismatch'
  /** entry.version > lastVersion: already applied, or superseded by a refresh. */
  | 'version-behind'
  /** entry.version < lastVersion: an earlier link of a chain has not been applied yet. */
  | 'version-ahead'
  | 'last-version-time-newer';

export interface RepairPlan {
  /** Entries to write, by partition name (a later info for the same name wins). */
  updates: Map<string, VersionEntry>;
  skipped: Array<{ info: RepairInfo; reason: SkipReason }>;
  /** Max newVersionTime of the applied infos: the MV's new last refresh time. */
  maxNewVersionTime: number | undefined;
}

/**
 * Decide what a repair does to one MV. Every info is checked against the map as it is (rule 1),
 * so a chain v1->v2, v2->v3 in one batch applies its first link now and reports the second as
 * 'version-ahead'; the caller retries that one once the first has landed.
 * `entries` is the MV's map for the table, or undefined
 * when the MV has no entry for the table at all (never refreshed with it).
 */
export function planRepair(entries: Map<string, VersionEntry> | undefined, infos: RepairInfo[]): RepairPlan {
  const plan: RepairPlan = { updates: new Map(), skipped: [], maxNewVersionTime: undefined };
  for (const info of infos) {
    const reason = skipReason(entries, info);
    if (reason) {
      plan.skipped.push({ info, reason });
      continue;
    }
    plan.updates.set(info.partitionName, {
      partitionId: info.partitionId,
      version: info.newVersion,
      lastRefreshTime: info.newVersionTime,
      // StarRocks resets the external-table fields on repair.
      extLastFileModifiedTime: -1,
      fileNumber: -1,
    });
    plan.maxNewVersionTime = Math.max(plan.maxNewVersionTime ?? info.newVersionTime, info.newVersionTime);
  }
  return plan;
}

export function skipReason(entries: Map<string, VersionEntry> | undefined, info: RepairInfo): SkipReason | undefined {
  if (!entries || entries.size === 0) return 'no-table-entry';
  const entry = entries.get(info.partitionName);
  if (!entry) return 'no-partition-entry';
  if (entry.partitionId !== info.partitionId) return 'partition-id-mismatch';
  if (entry.version > info.lastVersion) return 'version-behind';
  if (entry.version < info.lastVersion) return 'version-ahead';
  if (info.lastVersionTime !== undefined && info.lastVersionTime > entry.lastRefreshTime) return 'last-version-time-newer';
  return undefined;
}
