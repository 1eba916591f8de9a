import { retryDelayMs } from '../schedule/nextTime.js';
import { waveRefreshed, type PipelineGraph, type PipelineNode } from './graph.js';

// When each target-lag MV must start, what its wave refreshes, and why a target cannot be met
// (DESIGN.md §2 "Pipelines", invariant 7). Pure functions of the graph, the MVs' runtime state
// and the duration estimates, so the rules are unit-tested with exact numbers.

/** What the planner knows of an MV's last runs (refresh-info), times in epoch ms. */
export interface MvRuntime {
  /** Data time (database clock) of its contents. */
  dataTimeMs: number | null;
  /** Start and end of its last run, whatever its result. */
  lastStartMs: number | null;
  lastEndMs: number | null;
  lastResult: string | null;
  failures: number;
  lastFailedReason: string | null;
}

export interface PlanContext {
  graph: PipelineGraph;
  runtime(id: number): MvRuntime | undefined;
  /** Expected run time of one refresh of the MV. */
  stepMs(id: number): number;
  /** Expected time from a step becoming runnable to its run starting (queues, promotion). */
  overheadMs: number;
  /** Now, on the database's clock (data times are on it). */
  nowMs: number;
}

/** Never two waves for a target closer than this (a target that cannot be met must not spin). */
export const MIN_WAVE_GAP_MS = 1_000;
/** Lateness of the planner's own timer and pass, budgeted in every margin. */
export const PLANNER_SLACK_MS = 250;
/**
 * An upstream MV whose data is younger than this share of a target's lag is read as it is
 * rather than refreshed again for that target: a shared upstream refreshed for one reader a
 * moment ago serves another (invariant 7); the target's next wave comes that much earlier.
 */
export const REUSE_SHARE = 0.2;

/** Safety margin kept below a target: a tenth of it, 0.5 s to 10 s, plus the planner's slack. */
export function marginMs(targetMs: number): number {
  return Math.min(10_000, Math.max(500, targetMs * 0.1)) + PLANNER_SLACK_MS;
}

/** Wave durations per context (one planner tick asks for each target's more than once). */
const durations = new WeakMap<PlanContext, Map<number, number>>();

/**
 * Expected duration of a wave for `targetId`: the longest path, in run time plus dispatch
 * overhead per step, through the MVs waves refresh for it, ending with the target itself.
 */
export function waveDurationMs(ctx: PlanContext, targetId: number): number {
  let memo = durations.get(ctx);
  if (!memo) durations.set(ctx, (memo = new Map()));
  const known = memo.get(targetId);
  if (known !== undefined) return known;
  const set = new Set(ctx.graph.waveUpstream(targetId));
  set.add(targetId);
  const finish = new Map<number, number>();
  for (const id of ctx.graph.topoOrder(set)) {
    const before = Math.max(0, ...ctx.graph.upstream(id).filter((u) => set.has(u)).map((u) => finish.get(u)!));
    finish.set(id, before + ctx.overheadMs + ctx.stepMs(id));
  }
  memo.set(targetId, finish.get(targetId)!);
  return finish.get(targetId)!;
}

/**
 * Until when a failure holds a target back: the latest retry time (5 s doubling to 5 min after
 * its end) of a failing MV among the target and the MVs its waves refresh; 0 when none fails.
 */
export function backoffUntil(ctx: PlanContext, t: PipelineNode): number {
  let until = 0;
  for (const id of [t.id, ...ctx.graph.waveUpstream(t.id)]) {
    const r = ctx.runtime(id);
    if (r?.lastResult === 'FAILED' && r.failures > 0 && r.lastEndMs !== null) until = Math.max(until, r.lastEndMs + retryDelayMs(r.failures));
  }
  return until;
}

/**
 * When the target's next wave must start: as late as it can while `lag <= n` holds until it
 * ends, i.e. data time + n - expected duration - margin, but never less than half the target
 * after its data time: waves that take more than half the target do not fit in it (reported,
 * targetHealth), and starting them ever sooner would only add to the load that slows them.
 * No sooner than MIN_WAVE_GAP_MS after its previous wave (a target held back by a source waves
 * cannot refresh: one wave per target period, not more), and not before a failure's backoff.
 */
export function dueAt(ctx: PlanContext, t: PipelineNode, lastWaveStartMs: number | null, blocked: boolean): number {
  const n = (t.targetLagS ?? 0) * 1000;
  const slack = Math.max(n / 2, n - waveDurationMs(ctx, t.id) - marginMs(n));
  const dt = ctx.runtime(t.id)?.dataTimeMs ?? null;
  let due = dt === null ? ctx.nowMs : dt + slack;
  if (lastWaveStartMs !== null) due = Math.max(due, lastWaveStartMs + (blocked ? Math.max(MIN_WAVE_GAP_MS, slack) : MIN_WAVE_GAP_MS));
  return Math.max(due, backoffUntil(ctx, t));
}

export interface WaveStepPlan {
  id: number;
  /** A target due in this wave (its run is its own, trigger SCHEDULED); else an upstream run. */
  target: boolean;
  /** Steps of this wave it reads: it starts after they end. */
  preds: number[];
}

export interface WavePlan {
  /** Upstream first. */
  steps: WaveStepPlan[];
  /** Due targets that wait: an MV they need is in a wave still running. */
  deferred: number[];
  /** Due targets a wave cannot make fresher now (every source it reads is as old as it is). */
  idle: number[];
}

/**
 * One wave for the due targets: each target plus the MVs waves refresh that it reads (walking up
 * only through those) whose data is older than REUSE_SHARE of its lag; each MV once, however
 * many targets need it (a diamond refreshes its shared upstream once). `busy`: MVs in waves
 * still running.
 */
export function planWave(ctx: PlanContext, due: PipelineNode[], busy: ReadonlySet<number>): WavePlan {
  const steps = new Map<number, boolean>();
  const deferred: number[] = [];
  const idle: number[] = [];
  for (const t of due) {
    const need = neededUpstream(ctx, t, busy);
    if (need === 'busy' || busy.has(t.id)) {
      deferred.push(t.id);
      continue;
    }
    if (need.size === 0 && !improvable(ctx, t)) {
      idle.push(t.id);
      continue;
    }
    steps.set(t.id, true);
    for (const u of need) steps.set(u, steps.get(u) ?? false);
  }
  const order = ctx.graph.topoOrder(steps.keys());
  return {
    steps: order.map((id) => ({ id, target: steps.get(id)!, preds: ctx.graph.upstream(id).filter((u) => steps.has(u)) })),
    deferred,
    idle,
  };
}

function neededUpstream(ctx: PlanContext, t: PipelineNode, busy: ReadonlySet<number>): Set<number> | 'busy' {
  const tolMs = REUSE_SHARE * (t.targetLagS ?? 0) * 1000;
  const need = new Set<number>();
  const seen = new Set<number>();
  const stack = [...t.upstream];
  while (stack.length) {
    const id = stack.pop()!;
    if (seen.has(id)) continue;
    seen.add(id);
    const n = ctx.graph.node(id);
    if (!n || !waveRefreshed(n)) continue;
    if (busy.has(id)) return 'busy';
    const dt = ctx.runtime(id)?.dataTimeMs ?? null;
    if (dt !== null && dt >= ctx.nowMs - tolMs) continue; // fresh enough: read as it is
    need.add(id);
    stack.push(...n.upstream);
  }
  return need;
}

/** Would a refresh of the target alone bring newer data: it reads tables, or an MV newer than it? */
function improvable(ctx: PlanContext, t: PipelineNode): boolean {
  if (t.readsTables) return true;
  const own = ctx.runtime(t.id)?.dataTimeMs ?? null;
  if (own === null) return true;
  return t.upstream.some((u) => (ctx.runtime(u)?.dataTimeMs ?? Number.NEGATIVE_INFINITY) > own);
}

export interface TargetHealth {
  /** Why the target cannot be met now; null when it can. */
  reason: string | null;
  /** Held back by a source waves cannot refresh (then waves come once per target period). */
  blocked: boolean;
}

const secs = (ms: number) => `${Math.round(ms / 100) / 10} s`;

/**
 * Can the target be met? Checked in order: a source waves do not refresh (suspended, on a
 * slower grid, refreshed on demand only, or simply too old), a failing MV of its waves, then
 * waves that take longer than the target allows. Reasons are stable texts (no running ages),
 * so the planner writes one only when it changes.
 */
export function targetHealth(ctx: PlanContext, t: PipelineNode): TargetHealth {
  if (t.status === 'SUSPENDED') return { reason: 'it is SUSPENDED', blocked: true };
  const n = (t.targetLagS ?? 0) * 1000;
  const inWaves = ctx.graph.waveUpstream(t.id);
  const d = waveDurationMs(ctx, t.id);
  const budget = n - d - marginMs(n);
  const outside = new Set<number>();
  for (const x of [t.id, ...inWaves]) for (const u of ctx.graph.upstream(x)) if (!inWaves.has(u)) outside.add(u);
  for (const u of [...outside].sort((a, b) => a - b)) {
    const why = sourceProblem(ctx, ctx.graph.node(u)!, n, budget);
    if (why) return { reason: why, blocked: true };
  }
  for (const id of [...inWaves, t.id]) {
    const r = ctx.runtime(id);
    if (r?.lastResult !== 'FAILED' || r.failures === 0) continue;
    const what = id === t.id ? 'its last refresh failed' : `upstream ${ctx.graph.node(id)!.name} failed, which stops its waves there`;
    return { reason: `${what} (${r.failures} in a row, retried with backoff): ${r.lastFailedReason ?? 'no reason recorded'}`, blocked: false };
  }
  if (d > n / 2) {
    const parts = [t.id, ...inWaves].map((id) => `${ctx.graph.node(id)!.name} ${secs(ctx.stepMs(id))}`).join(', ');
    return { reason: `its waves take about ${secs(d)} (${parts}), more than half its target lag of ${secs(n)}`, blocked: false };
  }
  return { reason: null, blocked: false };
}

/** A source outside the waves that keeps the target from being met, or undefined. */
function sourceProblem(ctx: PlanContext, u: PipelineNode, n: number, budget: number): string | undefined {
  if (u.status === 'SUSPENDED') return `upstream ${u.name} is SUSPENDED: it is not refreshed, so nothing that reads it gets fresher`;
  const r = ctx.runtime(u.id);
  const age = r?.dataTimeMs === null || r?.dataTimeMs === undefined ? Number.POSITIVE_INFINITY : ctx.nowMs - r.dataTimeMs;
  if (u.kind === 'FIXED' && u.intervalS !== null) {
    // Its data ages up to an interval plus a run before it moves; the target's waves come on top.
    const worst = u.intervalS * 1000 + ctx.stepMs(u.id);
    if (worst > budget) {
      return `upstream ${u.name} refreshes every ${u.intervalS} s (NEXT ${u.intervalS}): its data can be about ${secs(worst)} old, more than a target lag of ${secs(n)} allows`;
    }
  }
  if (age <= Math.max(0, budget)) return undefined;
  if (u.kind === 'MANUAL' || (u.kind === 'FIXED' && u.intervalS === null)) {
    return `upstream ${u.name} is refreshed only on demand, and its data is older than the target lag of ${secs(n)} allows`;
  }
  const failing = r?.lastResult === 'FAILED' ? `: its refreshes fail (${r.lastFailedReason ?? 'no reason recorded'})` : '';
  return `upstream ${u.name} is behind: its data is older than the target lag of ${secs(n)} allows${failing}`;
}
