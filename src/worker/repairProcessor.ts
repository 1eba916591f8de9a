import { UnrecoverableError, type Job, type Queue } from 'bullmq';
import type { RedisClient } from '../queue/redis.js';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import {
  chainRetryDelayMs,
  chainWaitOver,
  RECREATE_MVIEW,
  REPAIR_MVIEWS,
  repairGroupOf,
  type RecreateMviewData,
  type RepairMviewsData,
} from '../jobs/internal.js';
import type { Logger } from '../log.js';
import type { RunObserver } from '../metrics/runMetrics.js';
import { BatcherClosed, RepairBusy, type RepairBatcher } from '../repair/batcher.js';
import { DependentsLookup } from '../repair/dependents.js';
import type { Repairer } from '../repair/repairer.js';
import type { RepairInfo, TableRef } from '../versions/types.js';
import { deferDelayMs, delayJob } from './delay.js';

/**
 * A transient database error (deadlock, lock wait timeout, lost connection) must not fail a
 * repair for good: the rest of its chain would wait for it and be dropped.
 */
export const REPAIR_JOB_OPTS = {
  removeOnComplete: 1000,
  removeOnFail: 5000,
  attempts: 5,
  backoff: { type: 'exponential', delay: 500 },
} as const;

/**
 * Repair jobs (requests and repair-queue jobs) a worker holds at once per queue. They wait for a
 * batch (src/repair/batcher.ts), not for a run slot, and the more are in flight, the more one
 * batch carries: a batch costs about ten round trips whatever its size, so when the host is busy
 * and round trips are slow, throughput follows the batch size (1 worker on this 2-core host under
 * 1.5 cores of foreign load: 64 in flight 284 repairs/s, 192 in flight 465/s).
 */
export const REPAIRS_IN_FLIGHT = 192;

/** MVs per group: a fan-out to more MVs than this is split into jobs of the repair queue. */
export const GROUP_MVS = 100;

/** A group to run again later; `waits`: its infos wait for an earlier link (woken when the MV moves). */
interface Retry {
  data: RepairMviewsData;
  delayMs: number;
  waits?: boolean;
}

/** What one pass over a group left to do. */
interface GroupRun {
  /** Groups to try again later: infos waiting for an earlier link, MVs whose lock stayed busy. */
  retries: Retry[];
  /** MVs whose batch failed with `error` (a database error): nothing of theirs was written. */
  failed: number[];
  error?: unknown;
}

export interface RepairProcessorDeps {
  db: Knex;
  log: Logger;
  clock: Clock;
  repairer: Repairer;
  batcher: RepairBatcher;
  repairQueue: Queue;
  /** For the index of jobs waiting on each MV (keys under `prefix`). */
  redis: RedisClient;
  prefix: string;
  metrics?: Pick<RunObserver, 'repaired'>;
}

/** Waiting jobs are indexed per MV for this long at most (longer than any chain wait). */
const WAITING_INDEX_TTL_S = 600;

/** KEYS[1] = index of MVs with waiting jobs, KEYS[1 + i] = jobs waiting on ARGV[i]: take them all. */
const TAKE_WAITING = `
local out = {}
for i, id in ipairs(ARGV) do
  if redis.call('srem', KEYS[1], id) == 1 then
    for _, job in ipairs(redis.call('smembers', KEYS[i + 1])) do out[#out + 1] = job end
    redis.call('del', KEYS[i + 1])
  end
end
return out`;

/**
 * Version repairs (DESIGN.md §2). A repair request fans out to the MVs that read the table; the
 * first group of them is applied at once through the batcher (with whatever other requests are
 * in flight: one transaction, one compare-and-set per MV), and larger fan-outs, infos that wait
 * for an earlier link of their chain and MVs busy elsewhere go to the `repair` queue as groups,
 * whose jobs this class also runs.
 */
export class RepairProcessor {
  private readonly lookup: DependentsLookup;

  constructor(private readonly deps: RepairProcessorDeps) {
    this.lookup = new DependentsLookup(deps.db);
  }

  /** The MVs that read a base table (read together with other requests' tables). */
  dependents(table: TableRef): Promise<number[]> {
    return this.lookup.of(table);
  }

  /** The request side: returns once every MV's repair is applied or queued. */
  async fanOut(table: TableRef, mviewIds: number[], partitions: RepairInfo[], log: Logger): Promise<void> {
    if (mviewIds.length === 0) return;
    const groups: number[][] = [];
    for (let i = 0; i < mviewIds.length; i += GROUP_MVS) groups.push(mviewIds.slice(i, i + GROUP_MVS));
    const [now, ...later] = groups;
    if (later.length) await this.enqueue(later.map((ids) => ({ data: { table, mviewIds: ids, partitions }, delayMs: 0 })));
    const run = await this.applyGroup({ table, mviewIds: now!, partitions }, log);
    const retries = [...run.retries];
    if (run.failed.length) {
      log.warn({ err: run.error, mview_ids: run.failed }, 'repair failed; queued to be retried');
      retries.push({ data: { table, mviewIds: run.failed, partitions }, delayMs: 0 });
    }
    await this.enqueue(retries);
  }

  /** Jobs of the `repair` queue. */
  async process(job: Job, token: string | undefined): Promise<unknown> {
    const log = this.deps.log.child({ job_id: job.id, job_name: job.name });
    if (job.name === RECREATE_MVIEW) {
      const d = job.data as RecreateMviewData;
      try {
        const moved = await this.deps.repairer.moveToNewIdentifier(d.mviewId, d.table, d);
        log.info({ mview_id: d.mviewId, moved }, 'external base table recreated: MV moved to the new identifier');
        return { moved };
      } catch (err) {
        // Redlock busy for too long (another worker holds the MV): come back shortly.
        if ((err as Error).name === 'ExecutionError') return delayJob(job, token, this.deps.clock.now() + deferDelayMs());
        throw err;
      }
    }
    const group = repairGroupOf(job.name, job.data);
    if (!group) throw new UnrecoverableError(`unknown repair job ${JSON.stringify(job.name)}`);
    const run = await this.applyGroup(group, log);
    const retries = run.retries;
    if (run.failed.length) {
      // BullMQ retries this job with back-off: narrowed to the MVs that still need it.
      await this.enqueue(retries);
      if (job.name === REPAIR_MVIEWS && run.failed.length < group.mviewIds.length) await job.updateData({ ...group, mviewIds: run.failed });
      throw run.error instanceof Error ? run.error : new Error(String(run.error));
    }
    if (retries.length === 0) return { mviews: group.mviewIds.length };
    // The first retry keeps this job (re-delayed), the others become jobs of their own.
    if (job.name === REPAIR_MVIEWS) {
      const [first, ...rest] = retries;
      await this.enqueue(rest);
      await job.updateData(first!.data);
      if (first!.waits) await this.noteWaiting([[job.id!, first!.data.mviewIds]]);
      return delayJob(job, token, this.deps.clock.now() + first!.delayMs);
    }
    await this.enqueue(retries);
    return { mviews: group.mviewIds.length, requeued: true };
  }

  private async enqueue(retries: Retry[]): Promise<void> {
    if (retries.length === 0) return;
    const jobs = await this.deps.repairQueue.addBulk(
      retries.map((r) => ({ name: REPAIR_MVIEWS, data: r.data, opts: { ...REPAIR_JOB_OPTS, ...(r.delayMs > 0 ? { delay: r.delayMs } : {}) } })),
    );
    await this.noteWaiting(jobs.flatMap((j, k) => (retries[k]!.waits ? [[j.id!, retries[k]!.data.mviewIds] as [string, number[]]] : [])));
  }

  /** Jobs waiting on an MV; `index` lists the MVs that have any (one hash tag: one Cluster slot). */
  private waitingKeys(mviewIds: number[]): { index: string; perMv: string[] } {
    const base = `${this.deps.prefix}:mvs:{repair-waiting}`;
    return { index: base, perMv: mviewIds.map((id) => `${base}:${id}`) };
  }

  /** Index delayed jobs whose infos wait for an earlier link, by MV, so the batch that moves the MV wakes them. */
  private async noteWaiting(jobs: Array<[string, number[]]>): Promise<void> {
    if (jobs.length === 0) return;
    const m = this.deps.redis.multi();
    for (const [jobId, ids] of jobs) {
      const { index, perMv } = this.waitingKeys(ids);
      ids.forEach((id, i) => m.sadd(perMv[i]!, jobId).expire(perMv[i]!, WAITING_INDEX_TTL_S).sadd(index, String(id)));
      m.expire(index, WAITING_INDEX_TTL_S);
    }
    await m.exec();
  }

  /**
   * Some batch moved these MVs' maps: the earlier link that jobs waiting on them wait for may
   * have landed, so they run now rather than after their back-off (a job that is not delayed any
   * more is left alone; one that still waits indexes itself again). One script call per batch.
   */
  async wake(mviewIds: number[]): Promise<void> {
    const { index, perMv } = this.waitingKeys(mviewIds);
    const jobIds = (await this.deps.redis.eval(TAKE_WAITING, perMv.length + 1, index, ...perMv, ...mviewIds.map(String))) as string[];
    await Promise.all(
      [...new Set(jobIds)].map(async (id) => {
        const job = await this.deps.repairQueue.getJob(id);
        await job?.promote().catch(() => {});
      }),
    );
  }

  /** Submit every MV of the group to the batcher and sort the outcomes into what is left to do. */
  private async applyGroup(group: RepairMviewsData, log: Logger): Promise<GroupRun> {
    const { table, partitions } = group;
    const attempt = group.attempt ?? 0;
    const settled = await Promise.allSettled(group.mviewIds.map((mviewId) => this.deps.batcher.submit({ mviewId, table, infos: partitions })));
    const now = this.deps.clock.now();
    const waitingSince = group.waitingSince ?? now;
    const run: GroupRun = { retries: [], failed: [] };
    const waiting = new Map<string, { infos: RepairInfo[]; ids: number[] }>();
    const busy: number[] = [];
    const tally = { applied: 0, skipped: 0, waiting: 0, dropped: 0 };
    settled.forEach((r, k) => {
      const mviewId = group.mviewIds[k]!;
      if (r.status === 'rejected') {
        if (r.reason instanceof RepairBusy || r.reason instanceof BatcherClosed) busy.push(mviewId);
        else {
          run.failed.push(mviewId);
          run.error ??= r.reason;
        }
        return;
      }
      const out = r.value;
      tally.applied += out.applied;
      tally.skipped += Object.values(out.skipped).reduce((a, b) => a + (b ?? 0), 0);
      if (out.waiting.length === 0) return;
      tally.waiting += out.waiting.length;
      if (chainWaitOver(group, now)) {
        log.warn({ mview_id: mviewId, infos: out.waiting }, 'repair infos still ahead of the version map: dropped');
        tally.dropped += out.waiting.length;
        return;
      }
      // MVs refreshed from the same versions wait for the same links: one group for them.
      const key = JSON.stringify(out.waiting);
      const w = waiting.get(key) ?? { infos: out.waiting, ids: [] };
      w.ids.push(mviewId);
      waiting.set(key, w);
    });
    for (const w of waiting.values()) {
      run.retries.push({ data: { table, mviewIds: w.ids, partitions: w.infos, attempt: attempt + 1, waitingSince }, delayMs: chainRetryDelayMs(attempt + 1), waits: true });
    }
    if (busy.length) {
      const { attempt: a, waitingSince: since } = group;
      run.retries.push({ data: { table, mviewIds: busy, partitions, ...(a ? { attempt: a } : {}), ...(since ? { waitingSince: since } : {}) }, delayMs: deferDelayMs() });
    }
    for (const [k, n] of Object.entries(tally)) this.deps.metrics?.repaired?.(k as keyof typeof tally, n);
    log.info(
      { table: `${table.schema}.${table.name}`, mviews: group.mviewIds.length, ...tally, busy: busy.length, failed: run.failed.length, attempt },
      'repair done',
    );
    return run;
  }
}
