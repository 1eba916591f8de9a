import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { RefreshRunner } from '../refresh/runner.js';
import { refreshUpstream, type CascadeStep } from './cascade.js';

// Order on fixed schedules (DESIGN.md §2 "Pipelines"): a scheduled run of an MV that reads other
// MVs first lets the upstream ones due in the same slot finish, so it reads their new contents;
// MVs it does not read never hold it up. And an MV it reads that is TARGET LAG DOWNSTREAM is
// refreshed only for its readers: here, just before this run, in this worker (trigger UPSTREAM).

/** How long a run waits for an upstream MV due in its slot before it reads what is there. */
export const MAX_UPSTREAM_WAIT_MS = 30_000;
/** How often a waiting run looks again. */
export const UPSTREAM_POLL_MS = 200;
/** A DOWNSTREAM upstream refreshed less than this share of the reader's interval before its slot serves it. */
const DOWNSTREAM_REUSE_SHARE = 0.25;

interface UpstreamRow {
  mview_id: number | string;
  status: string;
  refresh_start: Date | null;
  target_lag: number | null;
  target_downstream: number | boolean;
  next_time: Date | null;
}

export type GateDecision = { wait: true; delayMs: number } | { wait: false; upstream: CascadeStep[] };

export class FixedScheduleOrder {
  constructor(
    private readonly deps: { db: Knex; runner: RefreshRunner; clock: Clock; logger: Logger },
  ) {}

  /**
   * Before the scheduled run of `mviewId` for `slot`: wait (re-delay the job) while an MV it
   * reads on a grid is due at or before that slot and has not committed that run yet (its
   * next_time moves only when it does); then refresh the DOWNSTREAM MVs it reads.
   */
  async before(mviewId: number, slot: number, jobId?: string): Promise<GateDecision> {
    const { db, clock } = this.deps;
    const ups = (await db('mvs_mview_base_tables as b')
      .join('mvs_mviews as u', function () {
        this.on('u.table_schema', 'b.base_table_schema').andOn('u.mview_name', 'b.base_table_name');
      })
      .join('mvs_mview_refresh_info as ri', 'ri.mview_id', 'u.mview_id')
      .where('b.mview_id', mviewId)
      .select('u.mview_id', 'u.status', 'u.refresh_start', 'u.target_lag', 'u.target_downstream', 'ri.next_time')) as UpstreamRow[];
    if (ups.length === 0) return { wait: false, upstream: [] };
    const now = clock.now();
    const pending = ups.filter((u) => u.status === 'ACTIVE' && u.refresh_start && u.next_time && u.next_time.getTime() <= slot);
    if (pending.length && now < slot + MAX_UPSTREAM_WAIT_MS) return { wait: true, delayMs: UPSTREAM_POLL_MS };
    if (pending.length) {
      this.deps.logger.warn({ mview_id: mviewId, upstream: pending.map((u) => Number(u.mview_id)) }, 'upstream MVs due in the same slot did not finish in time; refreshing from what they hold');
    }
    if (!ups.some((u) => u.status === 'ACTIVE' && u.target_downstream)) return { wait: false, upstream: [] };
    const own = (await db('mvs_mviews').where({ mview_id: mviewId }).first('refresh_interval')) as { refresh_interval: number | null } | undefined;
    const reuseMs = own?.refresh_interval ? own.refresh_interval * 1000 * DOWNSTREAM_REUSE_SHARE : 0;
    const fresh = new Set(
      (
        await db('mvs_mview_refresh_info')
          .where('last_refresh_result', 'SUCCESS')
          .where('refresh_time', '>=', new Date(slot - reuseMs))
          .whereIn('mview_id', ups.map((u) => Number(u.mview_id)))
          .pluck('mview_id')
      ).map(Number),
    );
    // A failing upstream is recorded in its own history; this MV keeps its grid and reads what is there.
    const upstream = await refreshUpstream(
      { db, runner: this.deps.runner, clock, logger: this.deps.logger, waitMs: MAX_UPSTREAM_WAIT_MS, ...(jobId ? { jobId } : {}) },
      mviewId,
      (n) => n.status === 'ACTIVE' && n.kind === 'DOWNSTREAM' && !fresh.has(n.id),
    ).catch((err: unknown) => {
      this.deps.logger.warn({ mview_id: mviewId, err: errorMessage(err) }, 'refreshing the DOWNSTREAM MVs it reads failed; refreshing from what they hold');
      return [];
    });
    return { wait: false, upstream };
  }
}
