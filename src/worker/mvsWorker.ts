import { Redlock } from '@sesamecare-oss/redlock';
import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { MvsError, ValidationError, NotFoundError, errorMessage } from '../errors.js';
import { isRequestJobName, parsePayload } from '../jobs/schemas.js';
import type { Logger } from '../log.js';
import { NodeHeartbeat } from '../membership/nodeHeartbeat.js';
import { MembershipRegistry } from '../membership/registry.js';
import { RingView } from '../membership/ringView.js';
import { displayName, parseDottedName } from '../mv/identifiers.js';
import { findMviewByName } from '../mv/repository.js';
import { JobPlacer } from '../queue/jobPlacer.js';
import { mviewRingKey, nodeQueueName, REPAIR_QUEUE, REQUESTS_QUEUE, type ScheduledRefreshData } from '../queue/names.js';
import {
  chainRetryDelayMs,
  MAX_CHAIN_WAITS,
  RECREATE_MVIEW,
  REPAIR_MVIEW,
  type RecreateMviewData,
  type RepairMviewData,
} from '../jobs/internal.js';
import { Repairer } from '../repair/repairer.js';
import { storeVersionReport } from '../versions/reports.js';
import { dependentMviews } from '../versions/repository.js';
import type { RepairInfo, TableRef } from '../versions/types.js';
import { RefreshRunner, type RefreshOutcome } from '../refresh/runner.js';

export interface MvsWorkerDeps {
  db: Knex;
  redis: Redis;
  subscriber: Redis;
  logger: Logger;
  clock: Clock;
  prefix: string;
  nodeId: string;
  concurrency: number;
  nodeTtlMs: number;
  defaultSchema: string;
  vnodes?: number;
  /** How long close() lets running jobs finish before abandoning them to stalled-job recovery. */
  shutdownGraceMs?: number;
}

/**
 * A transient database error (deadlock, lock wait timeout, lost connection) must not fail a
 * repair for good: the rest of its chain would wait for it and be dropped.
 */
const REPAIR_JOB_OPTS = {
  removeOnComplete: 1000,
  removeOnFail: 5000,
  attempts: 5,
  backoff: { type: 'exponential', delay: 500 },
} as const;

/** Retry delay of a scheduled job whose run failed for reasons other than the refresh itself. */
const SCHEDULED_ERROR_RETRY_MS = 5_000;

/** How long a refresh that found its MV locked waits before it tries again. */
function deferDelayMs(): number {
  return 300 + Math.floor(Math.random() * 700);
}

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
  private nodeWorker: Worker | undefined;
  private requestsWorker: Worker | undefined;
  private repairWorker: Worker | undefined;
  private readonly repairQueue: Queue;
  private readonly repairer: Repairer;
  private closing: Promise<void> | undefined;

  constructor(private readonly deps: MvsWorkerDeps) {
    this.log = deps.logger.child({ component: 'worker', node_id: deps.nodeId });
    this.registry = new MembershipRegistry(deps.redis, deps.prefix);
    this.heartbeat = new NodeHeartbeat(this.registry, deps.nodeId, deps.nodeTtlMs, this.log);
    this.ringView = new RingView(this.registry, deps.subscriber, this.log, deps.vnodes !== undefined ? { vnodes: deps.vnodes } : {});
    this.placer = new JobPlacer(deps.redis, deps.prefix, this.log);
    this.runner = new RefreshRunner({ db: deps.db, logger: this.log, clock: deps.clock, nodeId: deps.nodeId });
    this.repairQueue = new Queue(REPAIR_QUEUE, { connection: deps.redis, prefix: deps.prefix });
    this.repairer = new Repairer({
      db: deps.db,
      // Waits up to ~3 s for another worker's repair of the same MV; then the job is re-delayed.
      redlock: new Redlock([deps.redis], { retryCount: 30, retryDelay: 100, retryJitter: 50 }),
      prefix: deps.prefix,
      logger: this.log,
      clock: deps.clock,
    });
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
    };
    await this.heartbeat.start();
    await this.ringView.start();
    this.nodeWorker = new Worker(this.queueName, (job, token) => this.processScheduled(job, token), common);
    this.requestsWorker = new Worker(REQUESTS_QUEUE, (job, token) => this.processRequest(job, token), {
      ...common,
      maxStalledCount: 3,
    });
    this.repairWorker = new Worker(REPAIR_QUEUE, (job, token) => this.processRepair(job, token), { ...common, maxStalledCount: 5 });
    for (const w of [this.nodeWorker, this.requestsWorker, this.repairWorker]) {
      w.on('error', (err) => this.log.error({ err }, 'worker error'));
      w.on('failed', (job, err) => this.log.warn({ job_id: job?.id, job_name: job?.name, err: err.message }, 'job failed'));
    }
    await Promise.all([this.nodeWorker.waitUntilReady(), this.requestsWorker.waitUntilReady(), this.repairWorker.waitUntilReady()]);
    this.log.info({ queue: this.queueName, concurrency: this.deps.concurrency }, 'worker started');
  }

  private async delay(job: Job, token: string | undefined, at: number): Promise<never> {
    await job.moveToDelayed(at, token);
    throw new DelayedError();
  }

  private async processScheduled(job: Job, token: string | undefined): Promise<unknown> {
    const data = job.data as ScheduledRefreshData;
    const log = this.log.child({ job_id: job.id, mview_id: data.mviewId });
    let outcome: RefreshOutcome;
    try {
      outcome = await this.runner.run({
        mviewId: data.mviewId,
        trigger: 'SCHEDULED',
        jobId: job.id!,
        scheduledFor: data.dueAt,
      });
    } catch (err) {
      // Not a refresh failure (those are recorded and rescheduled) but one around it: lost
      // connection, deadlock on metadata. A failed job would be deleted and the MV would stop
      // refreshing, so keep the job and try again shortly.
      log.error({ err }, 'scheduled run could not be carried out; retrying shortly');
      return this.delay(job, token, this.deps.clock.now() + SCHEDULED_ERROR_RETRY_MS);
    }
    switch (outcome.kind) {
      case 'DEFERRED':
        return this.delay(job, token, this.deps.clock.now() + deferDelayMs());
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
        return this.scheduleNext(job, token, data.mviewId, outcome.nextTime, outcome);
      case 'SUCCESS':
      case 'FAILED':
      case 'SKIPPED':
        if (outcome.nextTime === null) return { outcome: outcome.kind };
        return this.scheduleNext(job, token, data.mviewId, outcome.nextTime, outcome);
    }
  }

  /**
   * Put the MV's next run in place at once: this same job re-delayed when we still own the MV,
   * otherwise a job in the owner's queue (this one then completes and disappears).
   */
  private async scheduleNext(job: Job, token: string | undefined, mviewId: number, dueAt: number, outcome: RefreshOutcome): Promise<unknown> {
    const owner = this.ringView.ownerOf(mviewRingKey(mviewId));
    if (owner !== undefined && owner !== this.deps.nodeId) {
      // Our view of the ring may be up to a poll interval old: the owner may have just expired
      // and had its queue drained. Registering the queue first lets the planner's sweep after
      // that membership change find this job and move it, instead of it sitting there unseen.
      await this.registry.registerNodeQueue(nodeQueueName(owner));
      await this.placer.ensure(nodeQueueName(owner), mviewId, dueAt, this.deps.clock.now());
      return { outcome: outcome.kind, handedTo: owner };
    }
    await job.updateData({ mviewId, dueAt } satisfies ScheduledRefreshData);
    return this.delay(job, token, dueAt);
  }

  private async processRequest(job: Job, token: string | undefined): Promise<unknown> {
    const log = this.log.child({ job_id: job.id, job_name: job.name });
    if (!isRequestJobName(job.name)) {
      throw new UnrecoverableError(`unknown job name ${JSON.stringify(job.name)}; expected refresh, purge, report-versions or repair`);
    }
    try {
      switch (job.name) {
        case 'refresh': {
          const p = parsePayload('refresh', job.data);
          const name = parseDottedName(p.mview, this.deps.defaultSchema, 'mview');
          const mv = await findMviewByName(this.deps.db, name.schema, name.name);
          if (!mv) throw new NotFoundError(`materialized view ${displayName(name)} does not exist`);
          const outcome = await this.runner.run({
            mviewId: mv.mview_id,
            trigger: p.trigger ?? 'REQUEST',
            jobId: job.id!,
            requestedAt: job.timestamp,
            ...(p.method ? { method: p.method } : {}),
          });
          if (outcome.kind === 'DEFERRED') return this.delay(job, token, this.deps.clock.now() + deferDelayMs());
          if (outcome.kind === 'FAILED') throw new MvsError(`refresh of ${displayName(name)} failed: ${outcome.error}`);
          if (outcome.kind === 'GONE') throw new NotFoundError(`materialized view ${displayName(name)} does not exist`);
          log.info({ mview_id: mv.mview_id, outcome: outcome.kind }, 'refresh request done');
          return outcome.kind === 'SUCCESS'
            ? { outcome: outcome.kind, refreshId: outcome.refreshId, rows: outcome.rows, method: outcome.method }
            : { outcome: outcome.kind };
        }
        case 'report-versions': {
          const p = parsePayload('report-versions', job.data);
          const table = this.table(p.table);
          const out = await storeVersionReport(this.deps.db, table, p, this.deps.clock);
          if (out.recreated) {
            await this.repairQueue.addBulk(
              out.dependents.map((mviewId) => ({
                name: RECREATE_MVIEW,
                data: { mviewId, table, ...out.recreated! } satisfies RecreateMviewData,
                opts: REPAIR_JOB_OPTS,
              })),
            );
          }
          const repairs = out.repairInfos.length ? await this.enqueueRepairs(table, out.dependents, out.repairInfos) : 0;
          log.info({ table: `${table.schema}.${table.name}`, data_changed: p.dataChanged, dependents: out.dependents.length, repairs, recreated: Boolean(out.recreated) }, 'versions reported');
          return { dependents: out.dependents.length, repairs, recreated: Boolean(out.recreated) };
        }
        case 'repair': {
          const p = parsePayload('repair', job.data);
          const table = this.table(p.table);
          const dependents = await dependentMviews(this.deps.db, table);
          const repairs = await this.enqueueRepairs(table, dependents, p.partitions);
          return { dependents: dependents.length, repairs };
        }
        default:
          parsePayload(job.name, job.data);
          throw new UnrecoverableError(`${job.name} jobs are not supported by this version yet`);
      }
    } catch (err) {
      if (err instanceof DelayedError || err instanceof UnrecoverableError) throw err;
      // Bad input will be just as bad next time: fail it for good, naming what was wrong.
      if (err instanceof ValidationError || err instanceof NotFoundError) throw new UnrecoverableError(err.message);
      throw err instanceof Error ? err : new Error(errorMessage(err));
    }
  }

  private table(text: string): TableRef {
    const n = parseDottedName(text, this.deps.defaultSchema, 'table');
    return { schema: n.schema, name: n.name };
  }

  /** One repair job per dependent MV, in the order given (chains stay in order per MV). */
  private async enqueueRepairs(table: TableRef, mviewIds: number[], partitions: RepairInfo[]): Promise<number> {
    if (mviewIds.length === 0) return 0;
    await this.repairQueue.addBulk(
      mviewIds.map((mviewId) => ({
        name: REPAIR_MVIEW,
        data: { mviewId, table, partitions } satisfies RepairMviewData,
        opts: REPAIR_JOB_OPTS,
      })),
    );
    return mviewIds.length;
  }

  private async processRepair(job: Job, token: string | undefined): Promise<unknown> {
    const log = this.log.child({ job_id: job.id, job_name: job.name });
    try {
      if (job.name === RECREATE_MVIEW) {
        const d = job.data as RecreateMviewData;
        const moved = await this.repairer.moveToNewIdentifier(d.mviewId, d.table, d);
        log.info({ mview_id: d.mviewId, moved }, 'external base table recreated: MV moved to the new identifier');
        return { moved };
      }
      if (job.name !== REPAIR_MVIEW) throw new UnrecoverableError(`unknown repair job ${JSON.stringify(job.name)}`);
      const d = job.data as RepairMviewData;
      const out = await this.repairer.repair(d.mviewId, d.table, d.partitions);
      log.info({ mview_id: d.mviewId, applied: out.applied, skipped: out.skipped, waiting: out.waiting.length, cas_retries: out.casRetries }, 'repair done');
      if (out.waiting.length > 0) {
        const attempt = (d.attempt ?? 0) + 1;
        if (attempt > MAX_CHAIN_WAITS) {
          log.warn({ mview_id: d.mviewId, infos: out.waiting }, 'repair infos still ahead of the version map: dropped');
          return { ...out, dropped: out.waiting.length };
        }
        await job.updateData({ ...d, partitions: out.waiting, attempt } satisfies RepairMviewData);
        return await this.delay(job, token, this.deps.clock.now() + chainRetryDelayMs(attempt));
      }
      return out;
    } catch (err) {
      if (err instanceof DelayedError || err instanceof UnrecoverableError) throw err;
      // Redlock busy for too long (another worker holds the MV): come back shortly.
      if ((err as Error).name === 'ExecutionError') return this.delay(job, token, this.deps.clock.now() + deferDelayMs());
      throw err;
    }
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
    await this.heartbeat.close().catch((err: unknown) => this.log.warn({ err }, 'could not leave the ring'));
    await this.ringView.close();
    await this.placer.close();
    await this.repairQueue.close();
    this.log.info('worker stopped');
  }
}
