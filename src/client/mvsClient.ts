import { Queue, QueueEvents, type ConnectionOptions } from 'bullmq';
import { parsePayload, type PartitionRepairInfo, type RefreshPayload, type ReportVersionsPayload } from '../jobs/schemas.js';
import { bullQueueName, REQUESTS_QUEUE } from '../queue/names.js';
import { closeRedis, isCluster, type RedisClient } from '../queue/redis.js';
import { jobStatus, type JobStatus } from './jobStatus.js';

export type { JobStatus };

export interface MvsClientOptions {
  /**
   * ioredis connection options or instance, as BullMQ takes them. For a Redis Cluster pass an
   * ioredis `Cluster` (with `redisOptions: { maxRetriesPerRequest: null }`): the client then
   * enqueues to `{requests}`, the queue name mvsched's workers use on a cluster.
   */
  connection: ConnectionOptions;
  /** The deployment's MVS_PREFIX (default `mvs`). */
  prefix?: string;
}

export interface EnqueueResult<R> {
  jobId: string;
  /** Resolves with the job's result once a worker has processed it; rejects if it failed. */
  finished(timeoutMs?: number): Promise<R>;
}

export interface RefreshResult {
  outcome: 'SUCCESS' | 'COALESCED' | 'SKIPPED';
  refreshId?: number;
  rows?: number;
  method?: string;
  /** With `cascade: true`: what was done to the MVs it reads, upstream first. */
  upstream?: Array<{ mviewId: number; name: string; outcome: 'REFRESHED' | 'SKIPPED' | 'FRESH'; method?: string; rows?: number }>;
}

export interface PurgeResult {
  outcome: 'SUCCESS';
  purgeId: number;
  rows: number;
  /** The log was purged up to and including this sequence number. */
  watermark: number;
}

/**
 * Enqueue work for mvsched from another Node service, over BullMQ only (no HTTP). Payloads are
 * validated before they are sent, with the same schemas the workers use.
 */
export class MvsClient {
  /** The BullMQ queue it enqueues to: `requests`, or `{requests}` on a Redis Cluster. */
  readonly queueName: string;
  private readonly queue: Queue;
  private events: QueueEvents | undefined;
  private eventsConnection: RedisClient | undefined;

  constructor(private readonly opts: MvsClientOptions) {
    this.queueName = bullQueueName(REQUESTS_QUEUE, isCluster(opts.connection));
    this.queue = new Queue(this.queueName, { connection: opts.connection, prefix: opts.prefix ?? 'mvs' });
  }

  /** QueueEvents blocks its connection: an instance given to us gets a duplicate for it. */
  private eventsConnectionOptions(): ConnectionOptions {
    const c = this.opts.connection as ConnectionOptions & { duplicate?: () => RedisClient };
    if (typeof c.duplicate !== 'function') return c;
    this.eventsConnection ??= c.duplicate();
    return this.eventsConnection;
  }

  private async enqueue<R>(name: string, payload: unknown): Promise<EnqueueResult<R>> {
    const job = await this.queue.add(name, payload, { removeOnComplete: { age: 3600 }, removeOnFail: { age: 86_400 } });
    return {
      jobId: job.id!,
      finished: async (timeoutMs = 600_000) => {
        this.events ??= new QueueEvents(this.queueName, { connection: this.eventsConnectionOptions(), prefix: this.opts.prefix ?? 'mvs' });
        await this.events.waitUntilReady();
        // QueueEvents reads the event stream from when its first read blocks: a job that ends
        // between the state check inside waitUntilFinished and that read is never told. A slow
        // poll of the job's own state backs the event up.
        const polled = pollUntilFinished<R>(this.queue, job.id!, timeoutMs);
        try {
          return await Promise.race([job.waitUntilFinished(this.events, timeoutMs) as Promise<R>, polled.result]);
        } finally {
          polled.stop();
        }
      },
    };
  }

  /** Ask for a refresh of `schema.mv` (does not move its schedule). */
  async refresh(mview: string, opts: Omit<RefreshPayload, 'mview'> = {}): Promise<EnqueueResult<RefreshResult>> {
    return this.enqueue('refresh', parsePayload('refresh', { mview, ...opts }));
  }

  /** Purge the MV log of a base table. */
  async purge(mlog: string): Promise<EnqueueResult<PurgeResult>> {
    return this.enqueue('purge', parsePayload('purge', { mlog }));
  }

  /** Report partition versions of a versioned base table. */
  async reportVersions(
    table: string,
    partitions: ReportVersionsPayload['partitions'],
    opts: { dataChanged: boolean; tableIdentifier?: string },
  ): Promise<EnqueueResult<{ dependents: number; repairs: number; recreated: boolean }>> {
    return this.enqueue('report-versions', parsePayload('report-versions', { table, partitions, ...opts }));
  }

  /** Repair the version maps of the MVs over a table. */
  async repair(table: string, partitions: PartitionRepairInfo[]): Promise<EnqueueResult<{ dependents: number; repairs: number }>> {
    return this.enqueue('repair', parsePayload('repair', { table, partitions }));
  }

  /** Where a job enqueued earlier stands (finished jobs are kept an hour, failed ones a day). */
  async status(jobId: string): Promise<JobStatus> {
    return jobStatus(this.queue, jobId);
  }

  async close(): Promise<void> {
    await this.events?.close();
    if (this.eventsConnection) await closeRedis(this.eventsConnection);
    await this.queue.close();
  }
}

/** Until the job completes (its return value) or fails (its reason), checked once a second. */
function pollUntilFinished<R>(queue: Queue, jobId: string, timeoutMs: number): { result: Promise<R>; stop: () => void } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const result = new Promise<R>((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const check = async () => {
      if (stopped) return;
      try {
        const job = await queue.getJob(jobId);
        const state = job ? await job.getState() : 'unknown';
        if (state === 'completed') return resolve(job!.returnvalue as R);
        if (state === 'failed') return reject(new Error(job!.failedReason));
      } catch {
        // a transient read error: the next check, or the event, answers
      }
      if (stopped || Date.now() >= deadline) return;
      timer = setTimeout(() => void check(), 1_000);
    };
    timer = setTimeout(() => void check(), 1_000);
  });
  result.catch(() => {}); // a failure is also the event's to report; never unhandled here
  return {
    result,
    stop: () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
