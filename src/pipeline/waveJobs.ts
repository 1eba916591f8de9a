// The jobs of a pipeline wave: one per MV it refreshes, in the node queue of that MV's owner on
// the ring, next to the MV's scheduled jobs (if any). They are not scheduled jobs: a target-lag
// MV has no next_time and no `mv-<id>` job (the planner owns its clock), and a wave's steps come
// and go with the wave, so invariant 1 (one pending scheduled job per scheduled MV) is untouched
// and a step id never looks like one (`wave-<wave>-<mv>`).

export const WAVE_STEP = 'wave-step';

export function waveStepJobId(waveId: string, mviewId: number): string {
  return `wave-${waveId}-${mviewId}`;
}

/** The wave and MV of a step's job id, or undefined for any other job. */
export function waveStepOfJob(jobId: string | undefined): { waveId: string; mviewId: number } | undefined {
  const m = /^wave-(\d+)-(\d+)$/.exec(jobId ?? '');
  return m ? { waveId: m[1]!, mviewId: Number(m[2]) } : undefined;
}

export interface WaveStepData {
  waveId: string;
  mviewId: number;
  /** Display name, for Bull Board and logs. */
  mview: string;
  /** A target due in this wave: its own run (trigger SCHEDULED); else a run for its readers (UPSTREAM). */
  target: boolean;
  /** Steps of the same wave it reads: it runs after each of them ended. */
  preds: number[];
  /** Steps that wait for this one: where their jobs are and what each waits for. */
  next: Array<{ mviewId: number; queue: string; preds: number[] }>;
  /** Planner clock, epoch ms. */
  startMs: number;
  /** As a scheduled job's: the step is due from the wave's start on (what a node queue's consumer reads). */
  dueAt: number;
}

/**
 * A step's BullMQ priority: the earliest deadline (data time + target, in whole seconds) of the
 * targets it serves, so that where steps queue up behind each other the most urgent run first
 * (earliest deadline first). BullMQ priorities are 1..2^21-1, lower first: seconds wrap every
 * 23 days, when for a moment steps queued just before the wrap come after those queued just
 * after it. (Scheduled jobs of grid MVs carry no priority and come before any step.)
 */
export function deadlinePriority(deadlineMs: number): number {
  return 1 + (Math.floor(deadlineMs / 1000) % 2_000_000);
}

export const WAVE_JOB_OPTS = { removeOnComplete: true, removeOnFail: true } as const;
