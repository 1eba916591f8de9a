import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisClusterConfig } from './clusterSeeds.js';

/** A connection to a single Redis or to a Redis Cluster: everything mvsched does works on both. */
export type RedisClient = Redis | Cluster;

/** Where Redis is: one server (REDIS_URL) or a cluster (REDIS_CLUSTER_NODES). */
export type RedisTarget = { url: string; cluster?: undefined } | { cluster: RedisClusterConfig; url?: undefined };

/** The target a config names; a cluster wins over a URL (config.ts warns when both are set). */
export function redisTarget(config: { redisUrl: string | undefined; redisCluster: RedisClusterConfig | undefined }): RedisTarget {
  if (config.redisCluster) return { cluster: config.redisCluster };
  if (config.redisUrl) return { url: config.redisUrl };
  throw new Error('no Redis configured (REDIS_URL or REDIS_CLUSTER_NODES)');
}

export function isCluster(client: unknown): client is Cluster {
  return (client as { isCluster?: unknown } | null)?.isCluster === true;
}

/**
 * An ioredis connection fit for BullMQ (no per-command retry limit, so blocking commands and
 * reconnects behave) that still fails fast when Redis is unreachable at start-up.
 */
export function createRedis(url: string, opts: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, ...opts });
}

/**
 * Cluster tuning. While a master is down and not yet replaced (cluster-node-timeout, then the
 * replica's election), commands for its slots fail with "connection closed" or CLUSTERDOWN;
 * ioredis retries them after a slot refresh. 40 tries 250 ms apart ride out about 10 s, which
 * covers a failover at a node timeout of a few seconds; past that the command fails and the
 * caller's own retry (heartbeat tick, planner pass, BullMQ's reconnect) takes over.
 */
const CLUSTER_OPTIONS: ClusterOptions = {
  // No CLUSTER INFO ready check: when it finds cluster_state:fail (between a master's death and
  // its replica's promotion) ioredis reconnects but leaves the promise of the connect() that
  // asked pending for ever (ioredis 5.x, cluster/index.js refreshListener). BullMQ awaits that
  // promise when it resets a worker's blocking connection, and the worker then never fetches a
  // job again (seen in test/integration/redisClusterFailover.test.ts, 3 runs in 4). Without the
  // check, commands sent in that window get CLUSTERDOWN and are retried (below).
  enableReadyCheck: false,
  maxRedirections: 40,
  retryDelayOnFailover: 250,
  retryDelayOnClusterDown: 250,
  retryDelayOnTryAgain: 250,
  slotsRefreshTimeout: 2_000,
  // Notice a promoted replica even with no command failing (an idle queue's blocking reader).
  slotsRefreshInterval: 5_000,
};

/** A connection to a Redis Cluster, from its seeds; every node gets the same login and TLS. */
export function createRedisCluster(cluster: RedisClusterConfig, opts: RedisOptions = {}): Cluster {
  const redisOptions: RedisOptions = {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    ...(cluster.username !== undefined ? { username: cluster.username } : {}),
    ...(cluster.password !== undefined ? { password: cluster.password } : {}),
    ...(cluster.tls ? { tls: {} } : {}),
    ...opts,
  };
  return new Cluster(
    cluster.seeds.map((s) => ({ host: s.host, port: s.port })),
    { ...CLUSTER_OPTIONS, redisOptions },
  );
}

/** A connection to wherever the target points. */
export function createRedisClient(target: RedisTarget, opts: RedisOptions = {}): RedisClient {
  return target.cluster ? createRedisCluster(target.cluster, opts) : createRedis(target.url, opts);
}

export async function closeRedis(redis: RedisClient): Promise<void> {
  if (redis.status === 'end') return;
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}

/**
 * The connections that hold data: the masters of a cluster, or the one server. SCAN, FLUSHALL
 * and INFO answer for one node only, so anything that must see every key goes through these.
 */
export function dataNodes(redis: RedisClient): Redis[] {
  return isCluster(redis) ? redis.nodes('master') : [redis];
}

/** SCAN for `pattern` over every data node; returns the keys found. */
export async function scanKeys(redis: RedisClient, pattern: string, count = 500): Promise<string[]> {
  const out: string[] = [];
  for (const node of dataNodes(redis)) {
    let cursor = '0';
    do {
      const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count);
      cursor = next;
      out.push(...batch);
    } while (cursor !== '0');
  }
  return out;
}
