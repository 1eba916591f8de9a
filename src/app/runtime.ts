import type { Config } from '../config.js';
import { createDb, parseDatabaseUrl, type Db } from '../db/connect.js';
import type { DdlEvent } from '../ddl/executor.js';
import { DdlExecutor } from '../ddl/executor.js';
import { systemClock, type Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { closeRedis, createRedisClient, isCluster, redisTarget, type RedisClient } from '../queue/redis.js';
import { redisKeys } from '../queue/names.js';
import { watchClusterTopology } from '../queue/clusterTopology.js';
import { RefreshRunner } from '../refresh/runner.js';
import { PurgeRunner } from '../purge/purgeRunner.js';
import type { RunObserver } from '../metrics/runMetrics.js';

/** Connections a process needs, built from the config once and closed in reverse order. */
export interface Runtime {
  config: Config;
  logger: Logger;
  clock: Clock;
  db: Db;
  /** A single Redis (REDIS_URL) or a Redis Cluster (REDIS_CLUSTER_NODES); the code is the same. */
  redis: RedisClient;
  defaultSchema: string;
  /** Publish a DDL event so the planner wakes (DESIGN.md §1, channel "ddl" under the prefix). */
  publishDdl(event: DdlEvent): Promise<void>;
  /** A new connection for pub/sub; closed with the runtime. */
  newSubscriber(): RedisClient;
  /** A new connection for a blocking reader (QueueEvents); closed with the runtime. */
  newConnection(): RedisClient;
  /**
   * Call `fn` when the set of Redis Cluster masters changes (a failover): writes the old master
   * took but had not yet replicated are gone. Never called on a single Redis.
   */
  onTopologyChange(fn: () => void): void;
  close(): Promise<void>;
}

export function createRuntime(config: Config, logger: Logger, opts: { poolMax?: number } = {}): Runtime {
  // A running refresh holds its lock connection, and a FAST one a cut snapshot (a join's delta
  // is read on two, logged.ts JOIN_DELTA_READERS) and the gate for an instant besides, plus one
  // for its statements; a worker runs up to 2 x concurrency jobs (node queue + requests), so
  // the pool covers four connections for each.
  const db = createDb(config.databaseUrl!, { poolMax: opts.poolMax ?? config.workerConcurrency * 8 + 2, logger });
  // Errors are logged, not thrown: ioredis reconnects by itself, and an 'error' event without a
  // listener would print a stack trace for every reconnect attempt.
  const onError = (err: Error) => logger.warn({ err: err.message }, 'redis connection error');
  const target = redisTarget(config);
  for (const warning of config.warnings) logger.warn(warning);
  const redis = createRedisClient(target);
  redis.on('error', onError);
  const extra: RedisClient[] = [];
  const keys = redisKeys(config.prefix, isCluster(redis));
  const topologyListeners: Array<() => void> = [];
  let stopWatching: (() => void) | undefined;
  let closed: Promise<void> | undefined;
  return {
    config,
    logger,
    clock: systemClock,
    db,
    redis,
    defaultSchema: parseDatabaseUrl(config.databaseUrl!).database,
    async publishDdl(event) {
      await redis.publish(keys.ddlChannel, JSON.stringify(event));
    },
    newSubscriber() {
      // No INFO ready-check: it is not allowed once the connection is in subscriber mode and
      // would fail on every reconnect.
      const r = createRedisClient(target, { enableReadyCheck: false });
      r.on('error', onError);
      extra.push(r);
      return r;
    },
    newConnection() {
      const r = createRedisClient(target);
      r.on('error', onError);
      extra.push(r);
      return r;
    },
    onTopologyChange(fn) {
      if (!isCluster(redis)) return;
      topologyListeners.push(fn);
      stopWatching ??= watchClusterTopology(redis, (masters, previous) => {
        logger.warn({ masters, previous }, 'Redis Cluster masters changed (failover)');
        for (const l of topologyListeners) l();
      });
    },
    close() {
      closed ??= (async () => {
        stopWatching?.();
        await Promise.allSettled(extra.map(closeRedis));
        await closeRedis(redis);
        await db.destroy();
      })();
      return closed;
    },
  };
}

/** The refresh and purge runners of one process; a refresh triggers its log's IMMEDIATE purge. */
export function createRunners(
  deps: { db: Db; logger: Logger; clock: Clock; purgeBatch: number; cutWaitMs?: number; observer?: RunObserver },
  nodeId: string,
): { runner: RefreshRunner; purger: PurgeRunner } {
  const observer = deps.observer ? { observer: deps.observer } : {};
  const purger = new PurgeRunner({ db: deps.db, logger: deps.logger, clock: deps.clock, nodeId, batchSize: deps.purgeBatch, ...observer });
  const runner = new RefreshRunner({
    db: deps.db,
    logger: deps.logger,
    clock: deps.clock,
    nodeId,
    ...observer,
    ...(deps.cutWaitMs !== undefined ? { cutWaitMs: deps.cutWaitMs } : {}),
    purgeImmediate: async (mlogId) => {
      await purger.run({ mlogId, trigger: 'IMMEDIATE' });
    },
  });
  return { runner, purger };
}

export function createDdlExecutor(rt: Runtime, nodeId = 'cli', observer?: RunObserver): DdlExecutor {
  const { runner, purger } = createRunners(
    { ...rt, purgeBatch: rt.config.purgeBatch, cutWaitMs: rt.config.cutWaitMs, ...(observer ? { observer } : {}) },
    nodeId,
  );
  return new DdlExecutor({
    db: rt.db,
    logger: rt.logger,
    clock: rt.clock,
    runner,
    purger,
    defaultSchema: rt.defaultSchema,
    ddlWaitMs: rt.config.cutWaitMs,
    notify: (e) => rt.publishDdl(e),
  });
}
