import type { RefreshTrigger } from '../mv/repository.js';

export type ConcreteMethod = 'COMPLETE' | 'FAST';

export interface RefreshRequest {
  mviewId: number;
  trigger: RefreshTrigger;
  jobId?: string;
  /** The slot a scheduled run was planned for (epoch ms); for lateness and history. */
  scheduledFor?: number;
  method?: ConcreteMethod;
  /**
   * When a request was made (epoch ms). A request is already satisfied by a successful run that
   * started after it was made, so a burst of requests collapses into few runs.
   */
  requestedAt?: number;
  /**
   * Part of a pipeline wave (pipeline/waveStep.ts): the planner decided it is due, so there is no
   * next_time to check, and next_time is left as it is (target-lag MVs have none).
   */
  wave?: boolean;
}

export type RefreshOutcome =
  | { kind: 'SUCCESS'; refreshId: number; rows: number; method: ConcreteMethod; nextTime: number | null; startMs: number; endMs: number }
  | { kind: 'FAILED'; refreshId: number; error: string; method: ConcreteMethod; nextTime: number | null; failures: number }
  /** Every base table is versioned and unchanged since the last refresh: nothing recomputed. */
  | { kind: 'SKIPPED'; refreshId: number; nextTime: number | null }
  /** Another run holds the MV's lock: try again later; nothing was done. */
  | { kind: 'DEFERRED' }
  /** The MV no longer exists. */
  | { kind: 'GONE' }
  | { kind: 'SUSPENDED' }
  /** A scheduled job whose slot moved (ALTER, or a run elsewhere): nothing to do now. */
  | { kind: 'NOT_DUE'; nextTime: number | null }
  /** A request already served by a run that started after it was made. */
  | { kind: 'COALESCED'; lastStartMs: number };

/** How much earlier than next_time a scheduled job may fire and still count as due (clock skew). */
export const DUE_TOLERANCE_MS = 1_000;

/** What a run did to its MV, for its history row (DESIGN.md §2 "History and retention"). */
export interface RunResult {
  /** MV rows written (each statement's rows counted once). */
  rows: number;
  inserted: number | null;
  deleted: number | null;
  /** Database time of the snapshot the MV now reflects. */
  dataTime: Date | null;
  /** FAST runs: the log range consumed, (watermarkFrom, watermarkTo]. */
  watermarkFrom?: number | null;
  watermarkTo?: number | null;
}

/** A complete build's result as a run's. */
export function builtResult(b: { rows: number; dataTime: Date; previousRows: number | null }): RunResult {
  return { rows: b.rows, inserted: b.rows, deleted: b.previousRows ?? 0, dataTime: b.dataTime };
}
