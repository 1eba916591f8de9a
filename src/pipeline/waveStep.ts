import type { Job } from 'bullmq';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { JobPlacer } from '../queue/jobPlacer.js';
import type { RefreshOutcome, RefreshRunner } from '../refresh/runner.js';
import { deferDelayMs, delayJob } from '../worker/delay.js';
import type { StepResult, WaveLedger } from './ledger.js';
import { waveStepJobId, type WaveStepData } from './waveJobs.js';

// One step of a wave, run by the worker that took its job. The rule that orders a wave, and
// why it holds on a Redis Cluster: no command, script or BullMQ flow ever spans two queues.
// - A step runs only when the wave's record (one Redis hash, ledger.ts) holds a result for each
//   step it reads. It checks that itself when it starts; a step woken too early (its fallback
//   delay passed) puts itself back to wait.
// - A step that finishes writes its result, then, for each step waiting on it whose inputs are
//   now all recorded, promotes that step's delayed job in its own queue: one command on one
//   queue. Of two inputs finishing at once, each writes before it reads, so the later one sees
//   both and promotes (Redis runs commands on one key in order).
// - Results live in MySQL too (refresh-info), which is what a step reads to see whether another
//   run already did its work since the steps before it ended (then it does not run again).
// - A failed or cancelled input cancels the steps that read it, down the wave; the planner backs
//   the wave's targets off (pipeline/plan.ts).

/**
 * A step that finds an input unfinished looks again this much later: promotion wakes it first;
 * this only covers a promotion lost with a worker that died in between.
 */
export const STEP_POLL_MS = 5_000;
/** A step whose run failed for reasons around the refresh (connection lost) tries again after this. */
const STEP_ERROR_RETRY_MS = 2_000;

export interface WaveStepDeps {
  db: Knex;
  runner: RefreshRunner;
  ledger: WaveLedger;
  placer: JobPlacer;
  clock: Clock;
  logger: Logger;
}

export class WaveStepProcessor {
  constructor(private readonly deps: WaveStepDeps) {}

  async process(job: Job, token: string | undefined): Promise<unknown> {
    const d = job.data as WaveStepData;
    const { ledger, clock } = this.deps;
    const log = this.deps.logger.child({ job_id: job.id, mview_id: d.mviewId, wave_id: d.waveId });
    const state = await ledger.read(d.waveId, [d.mviewId, ...d.preds]);
    if (!state.open || state.cancelled !== null) return { outcome: 'CANCELLED', reason: state.cancelled ?? 'the wave is closed' };
    if (state.steps.has(d.mviewId)) {
      // A second delivery of a step that already finished (its worker died before completing the job).
      await this.promoteNext(d);
      return { outcome: 'DONE_BEFORE' };
    }
    const stopped = d.preds.find((p) => state.steps.has(p) && state.steps.get(p)!.r !== 'done');
    if (stopped !== undefined) return this.finish(d, { r: 'cancelled', reason: `upstream step ${stopped} did not refresh` }, log);
    // Waits as long as the wave is open: the planner calls off a wave that stopped progressing.
    if (d.preds.some((p) => !state.steps.has(p))) return delayJob(job, token, clock.now() + STEP_POLL_MS);
    // It must start after each input ended, so that it reads what they wrote.
    const after = Math.max(d.startMs, ...d.preds.map((p) => (state.steps.get(p) as Extract<StepResult, { r: 'done' }>).end));
    const fresh = await this.freshRun(d.mviewId, after);
    if (fresh) return this.finish(d, { r: 'done', how: 'fresh', ...fresh }, log);

    let outcome: RefreshOutcome;
    try {
      outcome = await this.deps.runner.run({ mviewId: d.mviewId, trigger: d.target ? 'SCHEDULED' : 'UPSTREAM', wave: true, jobId: job.id!, scheduledFor: d.startMs });
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'wave step could not be carried out; retrying shortly');
      return delayJob(job, token, clock.now() + STEP_ERROR_RETRY_MS);
    }
    switch (outcome.kind) {
      case 'DEFERRED':
        // Another run holds the MV; when it is done, the freshness check above may find it did our work.
        return delayJob(job, token, clock.now() + deferDelayMs());
      case 'SUCCESS':
        return this.finish(d, { r: 'done', how: 'ran', start: outcome.startMs, end: outcome.endMs }, log);
      case 'SKIPPED':
      case 'COALESCED':
      case 'NOT_DUE':
        return this.finish(d, { r: 'done', how: 'ran', start: clock.now(), end: clock.now() }, log);
      case 'FAILED':
        return this.finish(d, { r: 'failed', reason: outcome.error }, log);
      case 'GONE':
        return this.finish(d, { r: 'failed', reason: 'the materialized view was dropped' }, log);
      case 'SUSPENDED':
        return this.finish(d, { r: 'failed', reason: 'the materialized view is SUSPENDED' }, log);
    }
  }

  /** A successful run of the MV that started at or after `after`: its times. */
  private async freshRun(mviewId: number, after: number): Promise<{ start: number; end: number } | undefined> {
    const row = (await this.deps.db('mvs_mview_refresh_info')
      .where({ mview_id: mviewId })
      .first('last_refresh_result', 'refresh_time', 'refresh_endtime')) as
      | { last_refresh_result: string | null; refresh_time: Date | null; refresh_endtime: Date | null }
      | undefined;
    if (row?.last_refresh_result !== 'SUCCESS' || !row.refresh_time || !row.refresh_endtime) return undefined;
    const start = row.refresh_time.getTime();
    return start >= after ? { start, end: row.refresh_endtime.getTime() } : undefined;
  }

  private async finish(d: WaveStepData, result: StepResult, log: Logger): Promise<unknown> {
    const open = await this.deps.ledger.record(d.waveId, d.mviewId, result);
    if (result.r !== 'done') log.warn({ result }, 'wave step did not refresh; the steps that read it are called off');
    else log.debug({ how: result.how, ms: result.end - result.start }, 'wave step done');
    if (open) await this.promoteNext(d);
    return { outcome: result.r, ...(result.r === 'done' ? { how: result.how } : { reason: result.reason }) };
  }

  /** Wake each waiting step whose inputs are all recorded now. */
  private async promoteNext(d: WaveStepData): Promise<void> {
    for (const n of d.next) {
      const state = await this.deps.ledger.read(d.waveId, n.preds);
      if (!n.preds.every((p) => state.steps.has(p))) continue;
      const job = await this.deps.placer.queue(n.queue).getJob(waveStepJobId(d.waveId, n.mviewId));
      // Not delayed any more (running, or woken by another input): nothing to do.
      await job?.promote().catch(() => {});
    }
  }
}
