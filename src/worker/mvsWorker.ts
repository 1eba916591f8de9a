import { Redlock } from '@sesamecare-oss/redlock';
import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { NodeHeartbeat } from '../membership/nodeHeartbeat.js';
import { MembershipRegistry } from '../membership/registry.js';
import { RingView } from '../membership/ringView.js';
import { JobPlacer, promoteAt } from '../queue/jobPlacer.js';
import { isCluster, type RedisClient } from '../queue/redis.js';
import { taskNamesFromDb } from '../queue/taskNames.js';
import {
  bullQueueName,
  mlogTask,
  mviewTask,
  nodeQueueName,
  REPAIR_QUEUE,
  REQUESTS_QUEUE,
  SCHEDULED_PURGE,
  taskJobDisplayName,
  type ScheduledPurgeData,
  type ScheduledRefreshData,
  type TaskId,
} from '../queue/names.js';
import { RepairBatcher } from '../repair/batcher.js';
import { Repairer } from '../repair/repairer.js';
import type { RefreshRunner, RefreshOutcome } from '../refresh/runner.js';
import type { PurgeRunner } from '../purge/purgeRunner.js';
import { createRunners } from '../app/runtime.js';
import { metricsKey, RunMetrics } from '../metrics/runMetrics.js';
import { deferDelayMs, delayJob } from './delay.js';
import { appendJobLog, purgeLogLine, refreshLogLine } from './jobLog.js';
import { RepairProcessor, REPAIRS_IN_FLIGHT } from './repairProcessor.js';
import { RequestProcessor } from './requestProcessor.js';
import { releasePreviousLife } from './previousLife.js';
import { handOver } from './handOver.js';
import { WAVE_STEP } from '../pipeline/waveJobs.js';
import { WaveStepProcessor } from '../pipeline/waveStep.js';
import { WaveLedger } from '../pipeline/ledger.js';
import { FixedScheduleOrder } from '../pipeline/fixedOrder.js';
import { EARLY_JOBS, EARLY_HOLD_MAX_MS, runGated, SlotGate } from './slotGate.js';

export interface MvsWorkerDeps {
  db: Knex;
  redis: RedisClient;
  subscriber: RedisClient;
  logger: Logger;
  clock: Clock;
  prefix: string;
  nodeId: string;
  concurrency: number;
  nodeTtlMs: number;
  defaultSchema: string;
  /** Rows per DELETE of an MV-log purge (MVS_PURGE_BATCH). */
  purgeBatch?: number;
  /** How long a consistent cut waits for writer transactions in flight (MVS_CUT_WAIT_MS). */
  cutWaitMs?: number;
  /** How often this worker publishes its metrics for the server's /metrics (ms). */
  metricsPublishMs?: number;
  vnodes?: number;
  /** How long close() lets running jobs finish before abandoning them to stalled-job recovery. */
  shutdownGraceMs?: number;
}

/** Retry delay of a scheduled job whose run failed for reasons other than the refresh itself. */
const SCHEDULED_ERROR_RETRY_MS = 5_000;


/**
 * A worker replica: joins the ring, consumes its node queue (scheduled refreshes) and the shared
 * `requests` queue, and schedules each MV's next run itself when it finishes one, in the queue
 * of the MV's owner, without waiting for the planner.
 */
export class MvsWorker {
  private readonly log: Logger;
  private readonly registry: MembershipRegistry;
  private readonly heartbeat: NodeHeartbeat;
  private readonly ringView: RingView;
  private readonly placer: JobPlacer;
  private readonly runner: RefreshRunner;
  private readonly purger: PurgeRunner;
  readonly metrics: RunMetrics;
  private nodeWorker: Worker | undefined;
  private requestsWorker: Worker | undefined;
  private repairWorker: Worker | undefined;
  private readonly repairQueue: Queue;
  private readonly requests: RequestProcessor;
  private readonly repairs: RepairProcessor;
  private readonly waveSteps: WaveStepProcessor;
  private readonly order: FixedScheduleOrder;
  private readonly batcher: RepairBatcher;
  /** Run slots of scheduled jobs and of refresh / purge requests (jobs held beyond them wait). */
  private readonly scheduledSlots: SlotGate;
  private readonly requestSlots: SlotGate;
  private closing: Promise<void> | undefined;
  /** On a Redis Cluster, BullMQ queue names carry their own hash tags (bullQueueName). */
  private readonly cluster: boolean;

  constructor(private readonly deps: MvsWorkerDeps) {
    this.cluster = isCluster(deps.redis);
    this.log = deps.logger.child({ component: 'worker', node_id: deps.nodeId });
    this.registry = new MembershipRegistry(deps.redis, deps.prefix);
    this.heartbeat = new NodeHeartbeat(this.registry, deps.nodeId, deps.nodeTtlMs, this.log);
    this.ringView = new RingView(this.registry, deps.subscriber, this.log, deps.vnodes !== undefined ? { vnodes: deps.vnodes } : {});
    this.placer = new JobPlacer(deps.redis, deps.prefix, this.log, taskNamesFromDb(deps.db));
    this.metrics = new RunMetrics({ node: deps.nodeId });
    const runners = createRunners(
      {
        db: deps.db,
        logger: this.log,
        clock: deps.clock,
        purgeBatch: deps.purgeBatch ?? 10_000,
        observer: this.metrics,
        ...(deps.cutWaitMs !== undefined ? { cutWaitMs: deps.cutWaitMs } : {}),
      },
      deps.nodeId,
    );
    this.runner = runners.runner;
    this.purger = runners.purger;
    this.repairQueue = new Queue(bullQueueName(REPAIR_QUEUE, this.cluster), { connection: deps.redis, prefix: deps.prefix });
    // Waits up to ~3 s for another worker's repair of the same MV; then the job is re-delayed.
    const redlock = new Redlock([deps.redis], { retryCount: 30, retryDelay: 100, retryJitter: 50 });
    const locking = { db: deps.db, redlock, prefix: deps.prefix, logger: this.log, clock: deps.clock };
    this.batcher = new RepairBatcher({ ...locking, redis: deps.redis, onMoved: (ids) => this.repairs.wake(ids) });
    const pipeline = { db: deps.db, runner: this.runner, clock: deps.clock, logger: this.log };
    this.waveSteps = new WaveStepProcessor({ ...pipeline, ledger: new WaveLedger(deps.redis, deps.prefix), placer: this.placer });
    this.order = new FixedScheduleOrder(pipeline);
    this.repairs = new RepairProcessor({
      db: deps.db,
      log: this.log,
      clock: deps.clock,
      metrics: this.metrics,
      repairer: new Repairer(locking),
      batcher: this.batcher,
      repairQueue: this.repairQueue,
      redis: deps.redis,
      prefix: deps.prefix,
    });
    this.requests = new RequestProcessor({ ...deps, log: this.log, runner: this.runner, purger: this.purger, repairQueue: this.repairQueue, repairs: this.repairs });
    this.scheduledSlots = new SlotGate(deps.concurrency, deps.clock);
    this.requestSlots = new SlotGate(deps.concurrency, deps.clock);
  }

  get queueName(): string {
    return nodeQueueName(this.deps.nodeId);
  }

  async start(): Promise<void> {
    const common = {
      connection: this.deps.redis,
      prefix: this.deps.prefix,
      concurrency: this.deps.concurrency,
      // Scheduled jobs live for the MV's whole life; never let a few crashes fail one for good.
      maxStalledCount: 1000,
      // Recorded on each job it takes (processedBy): how a next life of this node finds them.
      name: this.deps.nodeId,
    };
    const bullName = (q: string) => bullQueueName(q, this.cluster);
    await releasePreviousLife(this.deps.redis, this.deps.prefix, this.deps.nodeId, { own: bullName(this.queueName), shared: [REQUESTS_QUEUE, REPAIR_QUEUE].map(bullName) }, this.log);
    await this.heartbeat.start();
    await this.ringView.start();
    this.metrics.startPublishing(this.deps.redis, metricsKey(this.deps.prefix, this.deps.nodeId, this.cluster), this.log, this.deps.metricsPublishMs);
    // Scheduled jobs arrive up to PROMOTE_LEAD_MS early and wait for their slot beside the runs.
    this.nodeWorker = new Worker(bullName(this.queueName), (job, token) => this.onTime(job, token), { ...common, concurrency: common.concurrency + EARLY_JOBS });
    // Repair requests wait for a repair batch, not for a run slot: many may be in flight. A
    // refresh or purge request that would queue behind `concurrency` others goes back for any worker.
    const elsewhere = () => this.deps.clock.now() + deferDelayMs();
    this.requestsWorker = new Worker(
      bullName(REQUESTS_QUEUE),
      (job, token) =>
        job.name === 'refresh' || job.name === 'purge'
          ? runGated(this.requestSlots, job, token, () => this.requests.process(job, token), { back: elsewhere, maxWaiting: this.deps.concurrency })
          : this.requests.process(job, token),
      { ...common, concurrency: common.concurrency + REPAIRS_IN_FLIGHT, maxStalledCount: 3 },
    );
    this.repairWorker = new Worker(bullName(REPAIR_QUEUE), (job, token) => this.repairs.process(job, token), {
      ...common,
      concurrency: REPAIRS_IN_FLIGHT,
      maxStalledCount: 5,
    });
    for (const w of [this.nodeWorker, this.requestsWorker, this.repairWorker]) {
      w.on('error', (err) => this.log.error({ err }, 'worker error'));
      w.on('failed', (job, err) => this.log.warn({ job_id: job?.id, job_name: job?.name, err: err.message }, 'job failed'));
    }
    await Promise.all([this.nodeWorker.waitUntilReady(), this.requestsWorker.waitUntilReady(), this.repairWorker.waitUntilReady()]);
    this.log.info({ queue: this.queueName, concurrency: this.deps.concurrency }, 'worker started');
  }

  /** A scheduled job starts at its slot (data.dueAt), in a run slot; one that came far too early goes back. */
  private onTime(job: Job, token: string | undefined): Promise<unknown> {
    const dueAt = (job.data as { dueAt: number }).dueAt;
    if (dueAt > this.deps.clock.now() + EARLY_HOLD_MAX_MS) return delayJob(job, token, promoteAt(dueAt));
    return runGated(this.scheduledSlots, job, token, () => this.processScheduled(job, token), { at: dueAt, back: () => promoteAt(dueAt) });
  }

  private async processScheduled(job: Job, token: string | undefined): Promise<unknown> {
    if (job.name === SCHEDULED_PURGE) return this.processScheduledPurge(job, token);
    if (job.name === WAVE_STEP) return this.waveSteps.process(job, token);
    const data = job.data as ScheduledRefreshData;
    const log = this.log.child({ job_id: job.id, mview_id: data.mviewId });
    const started = this.deps.clock.now();
    let outcome: RefreshOutcome;
    try {
      // Upstream MVs due in the same slot first (pipeline/fixedOrder.ts).
      const gate = await this.order.before(data.mviewId, data.dueAt, job.id!);
      if (gate.wait) return delayJob(job, token, this.deps.clock.now() + gate.delayMs);
      outcome = await this.runner.run({
        mviewId: data.mviewId,
        trigger: 'SCHEDULED',
        jobId: job.id!,
        scheduledFor: data.dueAt,
      });
    } catch (err) {
      if (err instanceof DelayedError) throw err;
      // Not a refresh failure (those are recorded and rescheduled) but one around it: lost
      // connection, deadlock on metadata. A failed job would be deleted and the MV would stop
      // refreshing, so keep the job and try again shortly.
      log.error({ err }, 'scheduled run could not be carried out; retrying shortly');
      await appendJobLog(job, `ERROR, retrying in ${SCHEDULED_ERROR_RETRY_MS} ms: ${String(err)}`, log);
      return delayJob(job, token, this.deps.clock.now() + SCHEDULED_ERROR_RETRY_MS);
    }
    await appendJobLog(job, refreshLogLine(outcome, this.deps.clock.now() - started), log);
    switch (outcome.kind) {
      case 'DEFERRED':
        return delayJob(job, token, this.deps.clock.now() + deferDelayMs());
      case 'GONE':
        log.info('materialized view dropped: job dropped');
        return { outcome: outcome.kind };
      case 'SUSPENDED':
        log.info('materialized view suspended: job dropped');
        return { outcome: outcome.kind };
      case 'COALESCED':
        return { outcome: outcome.kind };
      case 'NOT_DUE':
        if (outcome.nextTime === null) {
          log.info('materialized view has no schedule any more: job dropped');
          return { outcome: outcome.kind };
        }
        log.info({ next_time: outcome.nextTime }, 'schedule moved: job rescheduled');
        return this.scheduleNext(job, token, mviewTask(data.mviewId), outcome.nextTime, outcome.kind);
      case 'SUCCESS':
      case 'FAILED':
      case 'SKIPPED':
        if (outcome.nextTime === null) return { outcome: outcome.kind };
        return this.scheduleNext(job, token, mviewTask(data.mviewId), outcome.nextTime, outcome.kind);
    }
  }

  /** A scheduled MV-log purge: the same life cycle as a scheduled refresh. */
  private async processScheduledPurge(job: Job, token: string | undefined): Promise<unknown> {
    const data = job.data as ScheduledPurgeData;
    const log = this.log.child({ job_id: job.id, mlog_id: data.mlogId });
    const started = this.deps.clock.now();
    let outcome: Awaited<ReturnType<PurgeRunner['run']>>;
    try {
      outcome = await this.purger.run({ mlogId: data.mlogId, trigger: 'SCHEDULED', jobId: job.id!, scheduledFor: data.dueAt });
    } catch (err) {
      log.error({ err }, 'scheduled purge could not be carried out; retrying shortly');
      await appendJobLog(job, `ERROR, retrying in ${SCHEDULED_ERROR_RETRY_MS} ms: ${String(err)}`, log);
      return delayJob(job, token, this.deps.clock.now() + SCHEDULED_ERROR_RETRY_MS);
    }
    await appendJobLog(job, purgeLogLine(outcome, this.deps.clock.now() - started), log);
    switch (outcome.kind) {
      case 'DEFERRED':
        return delayJob(job, token, this.deps.clock.now() + deferDelayMs());
      case 'GONE':
        log.info('materialized view log dropped: job dropped');
        return { outcome: outcome.kind };
      case 'NOT_DUE':
      case 'SUCCESS':
      case 'FAILED':
        if (outcome.nextTime === null) {
          if (outcome.kind === 'NOT_DUE') log.info('materialized view log has no purge schedule any more: job dropped');
          return { outcome: outcome.kind };
        }
        return this.scheduleNext(job, token, mlogTask(data.mlogId), outcome.nextTime, outcome.kind);
    }
  }

  /**
   * Put the task's next run in place at once: this same job re-delayed when we still own the MV,
   * otherwise a job in the owner's queue (this one then completes and disappears).
   */
  private async scheduleNext(job: Job, token: string | undefined, task: TaskId, dueAt: number, outcome: string): Promise<unknown> {
    const { clock, nodeId } = this.deps;
    const handedTo = await handOver({ registry: this.registry, ringView: this.ringView, placer: this.placer, log: this.log, clock, nodeId }, task, dueAt);
    if (handedTo !== undefined) return { outcome, handedTo };
    await job.updateData(await this.placer.jobData(task, dueAt, taskJobDisplayName(job.data)));
    return delayJob(job, token, promoteAt(dueAt));
  }

  /**
   * Stop taking jobs, let running ones finish for up to the grace period (then abandon them:
   * their transactions roll back and BullMQ's stalled-job check or the planner retries them),
   * then leave the ring.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const grace = this.deps.shutdownGraceMs ?? 30_000;
    const workers = [this.nodeWorker, this.requestsWorker, this.repairWorker].filter((w): w is Worker => w !== undefined);
    // Jobs that only wait for their time or a slot go back to their queues at once.
    this.scheduledSlots.close();
    this.requestSlots.close();
    let timer: NodeJS.Timeout | undefined;
    const graceful = Promise.all(workers.map((w) => w.close())).then(() => true);
    const timedOut = new Promise<boolean>((r) => {
      timer = setTimeout(() => r(false), grace);
    });
    if (!(await Promise.race([graceful, timedOut]))) {
      this.log.warn({ grace_ms: grace }, 'running jobs did not finish in time; abandoning them');
      await Promise.all(workers.map((w) => w.close(true)));
    }
    clearTimeout(timer);
    await this.batcher.close();
    await this.heartbeat.close().catch((err: unknown) => this.log.warn({ err }, 'could not leave the ring'));
    await this.metrics.stopPublishing(this.deps.redis, metricsKey(this.deps.prefix, this.deps.nodeId, this.cluster));
    await this.ringView.close();
    await this.placer.close();
    await this.repairQueue.close();
    this.log.info('worker stopped');
  }
}
