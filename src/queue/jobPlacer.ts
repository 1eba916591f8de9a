import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { SCHEDULED_JOB_LOG_KEEP, taskJob, taskJobDisplayName, taskJobId, taskOfJob, type TaskId } from './names.js';
import type { TaskNames } from './taskNames.js';

export type PlaceResult = 'added' | 'rescheduled' | 'kept' | 'active';

export interface QueueSnapshot {
  /** task -> due time (epoch ms) of delayed jobs (tasks: see TaskId in names.ts). */
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
 * Puts scheduled-refresh jobs into node queues and takes them out. Shared by the planner (which
 * reconciles) and workers (which schedule an MV's next run when they finish one). Every write is
 * idempotent by job id, so a planner and a worker placing the same job at once agree.
 */
export class JobPlacer {
  private readonly queues = new Map<string, Queue>();

  constructor(
    private readonly connection: Redis,
    private readonly prefix: string,
    private readonly logger: Logger,
    /** Puts each MV's / log's display name in its job's data, for Bull Board. */
    private readonly names?: TaskNames,
  ) {}

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
      q = new Queue(name, { connection: this.connection, prefix: this.prefix });
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
      await q.add(name, await this.jobData(task, dueAt), { ...JOB_OPTS, jobId, timestamp: now, delay: Math.max(0, dueAt - now) });
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
      await job.changeDelay(Math.max(0, dueAt - now));
      return 'rescheduled';
    }
    if (state === 'active') return 'active';
    if (state === 'completed' || state === 'failed' || state === 'unknown') {
      await q.remove(jobId).catch(() => 0);
      await q.add(name, await this.jobData(task, dueAt, known), { ...JOB_OPTS, jobId, timestamp: now, delay: Math.max(0, dueAt - now) });
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
          opts: { ...JOB_OPTS, jobId: taskJobId(task), timestamp: now, delay: Math.max(0, dueAt - now) },
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

  /** Read a node queue's scheduled jobs straight from its Redis structures (one round trip). */
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
      if (id !== undefined) out.delayed.set(id, Math.floor(Number(delayed[i + 1]) / DELAY_SCORE_FACTOR));
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
