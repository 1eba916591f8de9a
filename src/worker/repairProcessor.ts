import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Clock } from '../clock.js';
import { chainRetryDelayMs, MAX_CHAIN_WAITS, RECREATE_MVIEW, REPAIR_MVIEW, type RecreateMviewData, type RepairMviewData } from '../jobs/internal.js';
import type { Logger } from '../log.js';
import type { Repairer } from '../repair/repairer.js';
import type { RunObserver } from '../metrics/runMetrics.js';
import { deferDelayMs, delayJob } from './delay.js';

/**
 * Jobs of the `repair` queue: one MV each, applied under the MV's Redlock with a meta_version
 * compare-and-set (see Repairer); infos waiting for an earlier link of their chain come back.
 */
export class RepairProcessor {
  constructor(private readonly deps: { log: Logger; clock: Clock; repairer: Repairer; metrics?: Pick<RunObserver, 'repaired'> }) {}

  async process(job: Job, token: string | undefined): Promise<unknown> {
    const log = this.deps.log.child({ job_id: job.id, job_name: job.name });
    try {
      if (job.name === RECREATE_MVIEW) {
        const d = job.data as RecreateMviewData;
        const moved = await this.deps.repairer.moveToNewIdentifier(d.mviewId, d.table, d);
        log.info({ mview_id: d.mviewId, moved }, 'external base table recreated: MV moved to the new identifier');
        return { moved };
      }
      if (job.name !== REPAIR_MVIEW) throw new UnrecoverableError(`unknown repair job ${JSON.stringify(job.name)}`);
      const d = job.data as RepairMviewData;
      const out = await this.deps.repairer.repair(d.mviewId, d.table, d.partitions);
      log.info({ mview_id: d.mviewId, applied: out.applied, skipped: out.skipped, waiting: out.waiting.length, cas_retries: out.casRetries }, 'repair done');
      this.deps.metrics?.repaired?.('applied', out.applied);
      this.deps.metrics?.repaired?.('skipped', Object.values(out.skipped).reduce((a, b) => a + (b ?? 0), 0));
      this.deps.metrics?.repaired?.('waiting', out.waiting.length);
      if (out.waiting.length > 0) {
        const attempt = (d.attempt ?? 0) + 1;
        if (attempt > MAX_CHAIN_WAITS) {
          log.warn({ mview_id: d.mviewId, infos: out.waiting }, 'repair infos still ahead of the version map: dropped');
          this.deps.metrics?.repaired?.('dropped', out.waiting.length);
          return { ...out, dropped: out.waiting.length };
        }
        await job.updateData({ ...d, partitions: out.waiting, attempt } satisfies RepairMviewData);
        return await delayJob(job, token, this.deps.clock.now() + chainRetryDelayMs(attempt));
      }
      return out;
    } catch (err) {
      if (err instanceof DelayedError || err instanceof UnrecoverableError) throw err;
      // Redlock busy for too long (another worker holds the MV): come back shortly.
      if ((err as Error).name === 'ExecutionError') return delayJob(job, token, this.deps.clock.now() + deferDelayMs());
      throw err;
    }
  }
}
