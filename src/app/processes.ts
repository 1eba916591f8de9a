import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { MvsWorker } from '../worker/mvsWorker.js';
import { Planner } from '../planner/planner.js';
import type { Closeable } from '../process/lifecycle.js';
import { createRuntime } from './runtime.js';
import { systemRefreshRequester } from './systemRefresh.js';
import { DriftChecker } from '../drift/driftChecker.js';
import { HistoryRetention } from '../planner/retention.js';
import { CaptureProcess } from '../capture/capture.js';
import { createDb, parseDatabaseUrl } from '../db/connect.js';

/** Start a planner; returns what to close, in start order. */
export async function startPlanner(config: Config, logger: Logger): Promise<Closeable[]> {
  const rt = createRuntime(config, logger, { poolMax: 4 });
  const requester = systemRefreshRequester(rt, logger);
  const checker = new DriftChecker({
    db: rt.db,
    logger,
    clock: rt.clock,
    ddlWaitMs: config.cutWaitMs,
    requestSystemRefresh: requester.request,
  });
  const planner = new Planner({
    db: rt.db,
    redis: rt.redis,
    subscriber: rt.newSubscriber(),
    logger,
    clock: rt.clock,
    prefix: config.prefix,
    reconcileIntervalS: config.reconcileIntervalS,
    leaseTtlMs: config.nodeTtlS * 1000,
    ...(config.vnodes !== undefined ? { vnodes: config.vnodes } : {}),
    drift: { checker, intervalS: config.driftCheckS },
    retention: {
      trimmer: new HistoryRetention({ db: rt.db, logger, clock: rt.clock, keepDays: config.historyKeepDays, keepRuns: config.historyKeepRuns }),
      intervalS: Math.max(10, Math.min(60, config.reconcileIntervalS)),
    },
  });
  // A failover may have dropped the last writes to a node queue (a job re-delayed or handed
  // over an instant before the master died): compare everything with MySQL once the replica
  // has taken over, instead of waiting for the periodic full pass.
  rt.onTopologyChange(() => planner.wake(true));
  await planner.start();
  return [
    { name: 'runtime', close: () => rt.close() },
    { name: 'requests queue', close: () => requester.close() },
    { name: 'planner', close: () => planner.close() },
  ];
}

/** Start a worker replica; returns what to close, in start order. */
export async function startWorker(config: Config, logger: Logger, opts: { shutdownGraceMs?: number } = {}): Promise<Closeable[]> {
  const rt = createRuntime(config, logger);
  const worker = new MvsWorker({
    db: rt.db,
    redis: rt.redis,
    subscriber: rt.newSubscriber(),
    logger,
    clock: rt.clock,
    prefix: config.prefix,
    nodeId: config.nodeId,
    concurrency: config.workerConcurrency,
    nodeTtlMs: config.nodeTtlS * 1000,
    defaultSchema: rt.defaultSchema,
    purgeBatch: config.purgeBatch,
    cutWaitMs: config.cutWaitMs,
    ...(config.vnodes !== undefined ? { vnodes: config.vnodes } : {}),
    ...(opts.shutdownGraceMs !== undefined ? { shutdownGraceMs: opts.shutdownGraceMs } : {}),
  });
  await worker.start();
  return [
    { name: 'runtime', close: () => rt.close() },
    { name: 'worker', close: () => worker.close() },
  ];
}

/**
 * Start a binlog capture (one captures per deployment, the others stand by); returns what to
 * close, in start order.
 */
export async function startCapture(config: Config, logger: Logger): Promise<Closeable[]> {
  const rt = createRuntime(config, logger, { poolMax: 4 });
  const commitDb = createDb(config.databaseUrl!, { poolMax: 1, logger });
  const capture = new CaptureProcess({
    db: rt.db,
    commitDb,
    redis: rt.redis,
    connection: parseDatabaseUrl(config.databaseUrl!),
    metaSchema: rt.defaultSchema,
    prefix: config.prefix,
    logger,
    // Random in the upper half of the id space, where hand-picked server ids rarely are.
    serverId: config.captureServerId ?? 2 ** 31 + Math.floor(Math.random() * (2 ** 31 - 1)),
    leaseTtlMs: config.nodeTtlS * 1000,
  });
  await capture.start();
  return [
    { name: 'runtime', close: () => rt.close() },
    { name: 'capture commits', close: () => commitDb.destroy() },
    { name: 'capture', close: () => capture.close() },
  ];
}
