import type { RepairInfo, TableRef } from '../versions/types.js';

// Jobs mvsched puts on its own `repair` queue: one per MV, so each is serialized per MV by
// Redlock while different MVs repair in parallel on any worker.

export const REPAIR_MVIEW = 'repair-mview';
export const RECREATE_MVIEW = 'recreate-mview';

export interface RepairMviewData {
  mviewId: number;
  table: TableRef;
  partitions: RepairInfo[];
  /** How many times some infos already waited for an earlier link of their chain. */
  attempt?: number;
}

export interface RecreateMviewData {
  mviewId: number;
  table: TableRef;
  newIdent: string;
  updatedPartitions: string[];
  newModifiedTime: number;
}

/** Waiting infos retry after 100 ms, doubling to 5 s, for at most this many rounds (~2 min). */
export const MAX_CHAIN_WAITS = 30;

export function chainRetryDelayMs(attempt: number): number {
  return Math.min(5_000, 100 * 2 ** Math.min(attempt, 10));
}
