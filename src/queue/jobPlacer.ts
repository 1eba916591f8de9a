import { Queue } from 'bullmq';
import type { Logger } from '../log.js';
import { bullQueueName, SCHEDULED_JOB_LOG_KEEP, taskJob, taskJobDisplayName, taskJobId, taskOfJob, type TaskId } from './names.js';
import { isCluster, type RedisClient } from './redis.js';
import type { TaskNames } from './taskNames.js';

export type PlaceResult = 'added' | 'rescheduled' | 'kept' | 'active';

export interface QueueSnapshot {
  /** task -> due time (epoch ms, the slot: PROMOTE_LEAD_MS after the job wakes) of delayed jobs (tasks: see TaskId in names.ts). */
  delayed: Map<number, number>;
  /** MVs whose job is ready to run (waiting, prioritized, paused). */
  ready: Set<number>;
  /** MVs whose job is running now. */
  active: Set<number>;
}

const JOB_OPTS = { removeOnComplete: true, removeOnFail: true, keepLogs: SCHEDULED_JOB_LOG_KEEP } as const;

/** BullMQ stores delayed jobs scored by timestamp * 4096 + a counter. */
const DELAY_SCORE_FACTOR = 0x1000;

/**
 * Scheduled jobs become ready this long before their slot. BullMQ's delayed jobs wake a worker
 * through a blocking Redis command whose timeout Redis checks every 1000/hz ms (100 ms at the
 * default hz 10), so a job delayed to its slot starts 0-100 ms late; ready early, it is in the
 * worker when the slot comes, and the worker starts it on time (src/worker/slotGate.ts).
 */
export const PROMOTE_LEAD_MS = 250;

/** When a scheduled job due at `dueAt` becomes ready. */
export function promoteAt(dueAt: number): number {
  return dueAt - PROMOTE_LEAD_MS;
}

const delayUntil = (dueAt: number, now: number) => Math.max(0, promoteAt(dueAt) - now);

/**
 * Puts scheduled-refresh jobs into node queues and takes them out. Shared by the planner (which
 * reconciles) and workers (which schedule an MV's next run when they finish one). Every write is
 * idempotent by job id, so a planner and a worker placing the same job at once agree.
 *
 * Callers name queues as mvsched does (`node-<id>`); on a Redis Cluster the BullMQ queue behind
 * the name is `{node-<id>}` (bullQueueName), so each node queue sits in one slot of its own.
 */
export class JobPlacer {
  private readonly queues = new Map<string, Queue>();
  private readonly cluster: boolean;

  constructor(
    private readonly connection: RedisClient,
    private readonly prefix: string,
    private readonly logger: Logger,
    /** Puts each MV's / log's display name in its job's data, for Bull Board. */
    private readonly names?: TaskNames,
  ) {
    this.cluster = isCluster(connection);
  }

  /** Display names of tasks; a failed lookup only leaves names out (the ids are what counts). */
  private async lookupNames(tasks: TaskId[]): Promise<Map<TaskId, string>> {
    if (!this.names || tasks.length === 0) return new Map();
    try {
      return await this.names(tasks);
    } catch (err) {
      this.logger.warn({ err }, 'could not read names for job data');
      return new Map();
    }
  }

  /** A scheduled job's data: the name it already carried (`known`), else looked up. */
  async jobData(task: TaskId, dueAt: number, known?: string): Promise<ReturnType<typeof taskJob>['data']> {
    return taskJob(task, dueAt, known ?? (await this.lookupNames([task])).get(task)).data;
  }

  queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(bullQueueName(name, this.cluster), { connection: this.connection, prefix: this.prefix });
      q.on('error', (err) => this.logger.warn({ err, queue: name }, 'queue error'));
      this.queues.set(name, q);
    }
    return q;
  }

  /**
   * Make `queueName` hold the MV's job, delayed to dueAt. `confirmDue` re-reads the MV's
   * next_time when the queued job disagrees: a worker may have advanced the job after the
   * caller's read, and moving it back to a past slot would only make it fire for nothing.
   */
  async ensure(
    queueName: string,
    task: TaskId,
    dueAt: number,
    now = Date.now(),
    confirmDue?: () => Promise<number | null>,
  ): Promise<PlaceResult> {
    const q = this.queue(queueName);
    const jobId = taskJobId(task);
    const { name } = taskJob(task, dueAt);
    const job = await q.getJob(jobId);
    if (!job) {
      await q.add(name, await this.jobData(task, dueAt), { ...JOB_OPTS, jobId, timestamp: now, delay: delayUntil(dueAt, now) });
      return 'added';
    }
    const known = taskJobDisplayName(job.data);
    const state = await job.getState();
    if (state === 'delayed') {
      const queued = (job.data as { dueAt: number }).dueAt;
      if (queued === dueAt) return 'kept';
      if (confirmDue) {
        const fresh = await confirmDue();
        if (fresh === null || fresh === queued) return 'kept';
        dueAt = fresh;
      }
      await job.updateData(await this.jobData(task, dueAt, known));
      await job.changeDelay(delayUntil(dueAt, now));
      return 'rescheduled';
    }
    if (state === 'active') return 'active';
    if (state === 'completed' || state === 'failed' || state === 'unknown') {
      await q.remove(jobId).catch(() => 0);
      await q.add(name, await this.jobData(task, dueAt, known), { ...JOB_OPTS, jobId, timestamp: now, delay: delayUntil(dueAt, now) });
      return 'added';
    }
    // waiting / prioritized: it runs soon; the worker re-checks next_time when it does.
    return 'kept';
  }

  async addMany(queueName: string, items: Array<{ task: TaskId; dueAt: number }>, now = Date.now()): Promise<void> {
    const q = this.queue(queueName);
    for (let i = 0; i < items.length; i += 1000) {
      const batch = items.slice(i, i + 1000);
      const names = await this.lookupNames(batch.map((b) => b.task));
      await q.addBulk(
        batch.map(({ task, dueAt }) => ({
          ...taskJob(task, dueAt, names.get(task)),
          opts: { ...JOB_OPTS, jobId: taskJobId(task), timestamp: now, delay: delayUntil(dueAt, now) },
        })),
      );
    }
  }

  /** Remove the task's job unless it is running; true when nothing is left behind. */
  async remove(queueName: string, task: TaskId): Promise<boolean> {
    const removed = await this.queue(queueName).remove(taskJobId(task));
    if (removed === 1) return true;
    const job = await this.queue(queueName).getJob(taskJobId(task));
    return !job;
  }

  /**
   * Read a node queue's scheduled jobs straight from its Redis structures (one round trip; on a
   * cluster the queue's keys share its hash tag, so the MULTI stays within one slot).
   */
  async snapshot(queueName: string): Promise<QueueSnapshot> {
    const keys = this.queue(queueName).keys;
    const res = await this.connection
      .multi()
      .zrange(keys.delayed!, 0, -1, 'WITHSCORES')
      .lrange(keys.wait!, 0, -1)
      .lrange(keys.paused!, 0, -1)
      .zrange(keys.prioritized!, 0, -1)
      .lrange(keys.active!, 0, -1)
      .exec();
    const out: QueueSnapshot = { delayed: new Map(), ready: new Set(), active: new Set() };
    if (!res) return out;
    const delayed = (res[0]?.[1] as string[]) ?? [];
    for (let i = 0; i < delayed.length; i += 2) {
      const id = taskOfJob(delayed[i]);
      if (id !== undefined) out.delayed.set(id, Math.floor(Number(delayed[i + 1]) / DELAY_SCORE_FACTOR) + PROMOTE_LEAD_MS);
    }
    for (const idx of [1, 2, 3]) {
      for (const jid of (res[idx]?.[1] as string[]) ?? []) {
        const id = taskOfJob(jid);
        if (id !== undefined) out.ready.add(id);
      }
    }
    for (const jid of (res[4]?.[1] as string[]) ?? []) {
      const id = taskOfJob(jid);
      if (id !== undefined) out.active.add(id);
    }
    return out;
  }

  /** Drop a dead node's queue entirely, running jobs included (their worker is gone). */
  async obliterate(queueName: string): Promise<void> {
    await this.queue(queueName).obliterate({ force: true });
    await this.queue(queueName).close();
    this.queues.delete(queueName);
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}
