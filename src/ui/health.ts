// How the dashboard judges an MV at a glance (DESIGN.md §3 "Dashboard": lag against its target
// or schedule). Pure, so the overview's filters, its colours and the graph agree, and the rules
// are unit-tested without a database.

/**
 * failing: its last run failed (or failures are piling up); late: its lag is past what its target
 * lag or its schedule allows; behind: past the usual but not yet late; ok: within; pending: never
 * refreshed yet; suspended; unscheduled: on demand (or a single START WITH run), so no lag is
 * too much.
 */
export type Health = 'failing' | 'late' | 'behind' | 'ok' | 'pending' | 'suspended' | 'unscheduled';

export const HEALTHS: readonly Health[] = ['failing', 'late', 'behind', 'ok', 'pending', 'suspended', 'unscheduled'];

/** Filters of the overview: a health, or `attention` (failing or late). */
export type HealthFilter = 'all' | 'attention' | Health;

export interface HealthInput {
  status: string;
  lastResult: string | null;
  failures: number;
  lagSeconds: number | null;
  /** NEXT n of a grid schedule, seconds. */
  intervalS: number | null;
  /** TARGET LAG n (seconds) or DOWNSTREAM; absent before pipelines. */
  targetLag: number | 'DOWNSTREAM' | null;
}

export interface Judgement {
  health: Health;
  /** Lag past which the MV is late (target lag, or twice its interval as the alert rule says). */
  lateAfterS: number | null;
  /** Lag past which it is behind its usual pace (a refresh a little late). */
  behindAfterS: number | null;
}

/** A grid MV is refreshed every interval, so its lag normally stays below interval + a run's length. */
export function allowance(input: Pick<HealthInput, 'intervalS' | 'targetLag'>): { lateAfterS: number | null; behindAfterS: number | null } {
  if (typeof input.targetLag === 'number') return { lateAfterS: input.targetLag, behindAfterS: input.targetLag * 0.8 };
  const i = input.intervalS;
  if (i !== null && i > 0) return { lateAfterS: 2 * i, behindAfterS: i + Math.max(5, i / 4) };
  return { lateAfterS: null, behindAfterS: null };
}

export function judge(input: HealthInput): Judgement {
  const a = allowance(input);
  const health = (): Health => {
    if (input.status === 'SUSPENDED') return 'suspended';
    if (input.failures > 0 || input.lastResult === 'FAILED') return 'failing';
    if (input.lagSeconds === null) return input.lastResult === null ? 'pending' : a.lateAfterS === null ? 'unscheduled' : 'ok';
    if (a.lateAfterS === null || a.behindAfterS === null) return 'unscheduled';
    if (input.lagSeconds > a.lateAfterS) return 'late';
    if (input.lagSeconds > a.behindAfterS) return 'behind';
    return 'ok';
  };
  return { health: health(), ...a };
}

export function matchesFilter(health: Health, filter: HealthFilter): boolean {
  if (filter === 'all') return true;
  if (filter === 'attention') return health === 'failing' || health === 'late';
  return health === filter;
}

export function parseHealthFilter(text: string | undefined): HealthFilter | undefined {
  if (text === undefined || text === '') return 'all';
  if (text === 'all' || text === 'attention') return text;
  return (HEALTHS as readonly string[]).includes(text) ? (text as Health) : undefined;
}

/** Order for "worst first": what needs a person comes first. */
export const SEVERITY: Record<Health, number> = { failing: 0, late: 1, behind: 2, pending: 3, ok: 4, unscheduled: 5, suspended: 6 };
