import type { RepairInfo, TableRef } from '../versions/types.js';

// Jobs mvsched puts on its own `repair` queue. Repairs are applied per MV under the MV's Redlock
// (src/repair/batcher.ts); a job names a group of MVs that share the same infos.

/** A group of MVs of one base table and the infos each of them still has to apply. */
export const REPAIR_MVIEWS = 'repair-mviews';
/** Before groups (release 0.1.0): one MV per job. Still accepted, so jobs queued before an upgrade run. */
export const REPAIR_MVIEW = 'repair-mview';
export const RECREATE_MVIEW = 'recreate-mview';

export interface RepairMviewsData {
  table: TableRef;
  mviewIds: number[];
  partitions: RepairInfo[];
  /** How many times these infos already waited for an earlier link of their chain. */
  attempt?: number;
  /** When they first waited (epoch ms). */
  waitingSince?: number;
}

/** The shape of release 0.1.0's `repair-mview` jobs. */
export interface RepairMviewData {
  mviewId: number;
  table: TableRef;
  partitions: RepairInfo[];
  attempt?: number;
}

export interface RecreateMviewData {
  mviewId: number;
  table: TableRef;
  newIdent: string;
  updatedPartitions: string[];
  newModifiedTime: number;
}

/** A repair job of either shape, as a group. */
export function repairGroupOf(name: string, data: unknown): RepairMviewsData | undefined {
  if (name === REPAIR_MVIEWS) return data as RepairMviewsData;
  if (name !== REPAIR_MVIEW) return undefined;
  const d = data as RepairMviewData;
  return { table: d.table, mviewIds: [d.mviewId], partitions: d.partitions, ...(d.attempt !== undefined ? { attempt: d.attempt } : {}) };
}

/** Waiting infos retry after 100 ms, doubling to 5 s (sooner when their MV moves), for about 2 minutes. */
export const MAX_CHAIN_WAIT_MS = 120_000;
/** Jobs queued before `waitingSince` existed count rounds instead: 30 rounds are about 2 minutes. */
export const MAX_CHAIN_WAITS = 30;

/** Infos that have waited this long for an earlier link will not see it: they are dropped. */
export function chainWaitOver(group: Pick<RepairMviewsData, 'attempt' | 'waitingSince'>, now: number): boolean {
  if (group.waitingSince === undefined) return (group.attempt ?? 0) + 1 > MAX_CHAIN_WAITS;
  return now - group.waitingSince > MAX_CHAIN_WAIT_MS;
}

export function chainRetryDelayMs(attempt: number): number {
  return Math.min(5_000, 100 * 2 ** Math.min(attempt, 10));
}
