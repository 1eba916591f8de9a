import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { ConflictError, MvsError } from '../errors.js';
import type { Logger } from '../log.js';
import type { RefreshOutcome, RefreshRequest, RefreshRunner } from '../refresh/runner.js';
import type { PipelineNode } from './graph.js';
import { loadUpstreamGraph } from './repository.js';

// REFRESH MATERIALIZED VIEW x CASCADE (DESIGN.md §2 "Pipelines"): x's upstream MVs first, in
// dependency order, each once and with its own method (trigger UPSTREAM); the caller then
// refreshes x. Run in one process, one after the other: the order is the program's order.

export interface CascadeDeps {
  db: Knex;
  runner: RefreshRunner;
  clock: Clock;
  logger: Logger;
  /** How long to wait for a running refresh of an upstream MV before giving up. */
  waitMs: number;
  /** Job id written to each run's history (the request's). */
  jobId?: string;
}

export interface CascadeStep {
  mviewId: number;
  name: string;
  /** REFRESHED by this cascade, or FRESH: another run that started after the step before it did it. */
  outcome: 'REFRESHED' | 'SKIPPED' | 'FRESH';
  method?: string;
  rows?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Upstream MVs a cascade refreshes by default: every active one (a suspended MV is left as it is, with what only it reads). */
export const activeUpstream = (n: PipelineNode) => n.status === 'ACTIVE';

/**
 * Refresh the upstream MVs of `mviewId` that `include` accepts (walking up only through them),
 * upstream first. Stops at the first failure, naming the MV. Returns what was done, in order.
 */
export async function refreshUpstream(deps: CascadeDeps, mviewId: number, include: (n: PipelineNode) => boolean = activeUpstream): Promise<CascadeStep[]> {
  const graph = await loadUpstreamGraph(deps.db, mviewId);
  const order = graph.topoOrder(graph.upstreamWhere([mviewId], include));
  const steps: CascadeStep[] = [];
  // Each run must start after the one before it ended, so that it reads that one's contents.
  let after = deps.clock.now();
  for (const id of order) {
    const name = graph.node(id)!.name;
    const step = await refreshOne(deps, id, name, after);
    steps.push(step);
    after = deps.clock.now();
  }
  return steps;
}

async function refreshOne(deps: CascadeDeps, mviewId: number, name: string, after: number): Promise<CascadeStep> {
  const log = deps.logger.child({ mview_id: mviewId, trigger: 'UPSTREAM' });
  const deadline = deps.clock.now() + deps.waitMs;
  for (;;) {
    const outcome = await deps.runner.run({ mviewId, trigger: 'UPSTREAM', ...(deps.jobId ? { jobId: deps.jobId } : {}) });
    switch (outcome.kind) {
      case 'SUCCESS':
        log.debug({ refresh_id: outcome.refreshId, method: outcome.method }, 'upstream refreshed');
        return { mviewId, name, outcome: 'REFRESHED', method: outcome.method, rows: outcome.rows };
      case 'SKIPPED':
        return { mviewId, name, outcome: 'SKIPPED' };
      case 'FAILED':
        throw new MvsError(`upstream ${name} failed: ${outcome.error}`, { refreshId: outcome.refreshId, mview: name });
      case 'GONE':
        throw new MvsError(`upstream ${name} was dropped`);
      case 'DEFERRED':
        // Someone else is refreshing it: wait; a run that started after ours was due serves us.
        if (await freshSince(deps.db, mviewId, after)) return { mviewId, name, outcome: 'FRESH' };
        if (deps.clock.now() > deadline) throw new ConflictError(`a refresh of upstream ${name} has been running too long; try again later`);
        await sleep(100 + Math.random() * 200);
        continue;
      default:
        throw new MvsError(`unexpected refresh outcome ${outcome.kind} for upstream ${name}`);
    }
  }
}

/**
 * The run of the MV itself after its upstream ones, waiting for a running refresh of it rather
 * than handing the whole cascade back to the queue (which would refresh the upstream again).
 */
export async function refreshAfterUpstream(deps: CascadeDeps, req: Omit<RefreshRequest, 'requestedAt'>): Promise<RefreshOutcome> {
  const deadline = deps.clock.now() + deps.waitMs;
  for (;;) {
    const outcome = await deps.runner.run(req);
    if (outcome.kind !== 'DEFERRED') return outcome;
    if (deps.clock.now() > deadline) throw new ConflictError(`a refresh of materialized view ${req.mviewId} has been running too long; try again later`);
    await sleep(100 + Math.random() * 200);
  }
}

/** Has the MV a successful run that started at or after `sinceMs`? */
export async function freshSince(db: Knex, mviewId: number, sinceMs: number): Promise<boolean> {
  const row = (await db('mvs_mview_refresh_info').where({ mview_id: mviewId }).first('last_refresh_result', 'refresh_time')) as
    | { last_refresh_result: string | null; refresh_time: Date | null }
    | undefined;
  return row?.last_refresh_result === 'SUCCESS' && row.refresh_time !== null && row.refresh_time.getTime() >= sinceMs;
}

export function describeSteps(steps: CascadeStep[]): string {
  return steps.map((s) => `${s.name} (${s.outcome === 'REFRESHED' ? s.method : s.outcome.toLowerCase()})`).join(', ');
}
