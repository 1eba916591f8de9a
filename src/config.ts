import { hostname } from 'node:os';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { parseClusterNodes, type RedisClusterConfig } from './queue/clusterSeeds.js';

// Every setting of DESIGN.md §3 is read here, once; the rest of the code receives a Config.

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const wholeNumber = (min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, { message: 'expected a whole number' })
    .transform(Number)
    .pipe(
      z
        .number()
        .min(min, { message: `must be >= ${min}` })
        .max(max, { message: `must be <= ${max}` }),
    );

const databaseUrl = z
  .string()
  .trim()
  .refine(
    (s) => {
      try {
        const u = new URL(s);
        return u.protocol === 'mysql:' || u.protocol === 'mariadb:';
      } catch {
        return false;
      }
    },
    { message: 'expected a URL like mysql://user:password@host:3306/database' },
  )
  .refine((s) => URL.canParse(s) && new URL(s).pathname.replace(/^\//, '') !== '', {
    message: 'the URL must name a database (mysql://host:3306/<database>)',
  });

const redisUrl = z
  .string()
  .trim()
  .refine(
    (s) => {
      try {
        const u = new URL(s);
        return u.protocol === 'redis:' || u.protocol === 'rediss:';
      } catch {
        return false;
      }
    },
    { message: 'expected a URL like redis://host:6379' },
  );

const clusterNodes = z.string().transform((s, ctx) => {
  try {
    return parseClusterNodes(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

const envSchema = z.object({
  DATABASE_URL: databaseUrl.optional(),
  REDIS_URL: redisUrl.optional(),
  REDIS_CLUSTER_NODES: clusterNodes.optional(),
  // BullMQ prefix; braces are allowed so `{mvs}` pins all keys to one Redis Cluster slot.
  MVS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.{}-]{1,64}$/, {
      message: 'expected 1-64 characters from A-Z a-z 0-9 _ . - { }',
    })
    .default('mvs'),
  // Node ids end up in queue names, which BullMQ forbids to contain ':'.
  MVS_NODE_ID: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, { message: 'expected 1-64 characters from A-Z a-z 0-9 _ . -' })
    .optional(),
  MVS_WORKER_CONCURRENCY: wholeNumber(1, 256).default(4),
  MVS_HTTP_PORT: wholeNumber(0, 65535).default(8080),
  MVS_API_TOKEN: z.string().min(16, { message: 'must be at least 16 characters' }).optional(),
  // Where `mvsched server` listens; the default depends on MVS_API_TOKEN (see httpHost below).
  MVS_HTTP_HOST: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9.:_-]{1,253}$/, { message: 'expected a host name or an IP address' })
    .optional(),
  MVS_RECONCILE_S: wholeNumber(1, 86_400).default(30),
  MVS_NODE_TTL_S: wholeNumber(2, 3_600).default(10),
  MVS_PURGE_BATCH: wholeNumber(1, 1_000_000).default(10_000),
  MVS_DRIFT_CHECK_S: wholeNumber(1, 3_600).default(2),
  MVS_CUT_WAIT_MS: wholeNumber(100, 600_000).default(2_000),
  MVS_HISTORY_KEEP_DAYS: wholeNumber(1, 36_500).default(30),
  MVS_HISTORY_KEEP_RUNS: wholeNumber(1, 10_000_000).default(1_000),
  MVS_METRICS_MAX_MVIEWS: wholeNumber(0, 1_000_000).default(10_000),
  MVS_VNODES: wholeNumber(1, 4_096).optional(),
  // The replica id `mvsched capture` gives the server (unique among its replicas; default random).
  MVS_CAPTURE_SERVER_ID: wholeNumber(1, 4_294_967_295).optional(),
  MVS_BOARD_WRITE: z
    .enum(['0', '1', 'true', 'false'], { message: 'expected 0, 1, true or false' })
    .default('0'),
  LOG_LEVEL: z.enum(LOG_LEVELS, { message: `expected one of ${LOG_LEVELS.join(', ')}` }).default('info'),
});

export type LogLevel = (typeof LOG_LEVELS)[number];
export type { RedisClusterConfig };

export interface Config {
  readonly databaseUrl: string | undefined;
  readonly redisUrl: string | undefined;
  /** REDIS_CLUSTER_NODES: when set, every connection goes to this Redis Cluster (redisUrl is unset). */
  readonly redisCluster: RedisClusterConfig | undefined;
  readonly prefix: string;
  /** Explicit MVS_NODE_ID, or a per-process default (host name + pid). */
  readonly nodeId: string;
  readonly nodeIdExplicit: boolean;
  readonly workerConcurrency: number;
  readonly httpPort: number;
  readonly apiToken: string | undefined;
  /** MVS_HTTP_HOST as given; undefined means "0.0.0.0 with a token, else 127.0.0.1". */
  readonly httpHost: string | undefined;
  readonly reconcileIntervalS: number;
  readonly nodeTtlS: number;
  readonly purgeBatch: number;
  /** How often the planner checks MV logs for changes made behind mvsched's back (s). */
  readonly driftCheckS: number;
  /** How long a consistent cut waits for writer transactions in flight (ms). */
  readonly cutWaitMs: number;
  /** Refresh / purge history and the edit log older than this go (days). */
  readonly historyKeepDays: number;
  /** At most this many history rows per MV and per MV log. */
  readonly historyKeepRuns: number;
  /** Per-MV series on /metrics: at most this many (the worst by lag); 0 turns them off. */
  readonly metricsMaxMviews: number;
  readonly vnodes: number | undefined;
  readonly captureServerId: number | undefined;
  readonly boardWrite: boolean;
  readonly logLevel: LogLevel;
  /** LOG_LEVEL was set: one-shot commands then log at that level instead of warn. */
  readonly logLevelExplicit: boolean;
  /** Settings that work but are probably not what was meant; logged once by each process. */
  readonly warnings: readonly string[];
}

export interface ConfigNeeds {
  database?: boolean;
  redis?: boolean;
}

/**
 * Parse the environment into a frozen Config. Empty strings count as unset, so `FOO=` in a
 * compose file means "use the default". Throws ConfigError with one line naming the variable.
 */
export function loadConfig(
  env: Record<string, string | undefined>,
  needs: ConfigNeeds = {},
): Config {
  const raw: Record<string, string> = {};
  for (const key of Object.keys(envSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v.trim() !== '') raw[key] = v;
  }
  // Ignored, so not judged either: a stale REDIS_URL must not stop a cluster deployment.
  const ignoredRedisUrl = raw.REDIS_CLUSTER_NODES !== undefined && raw.REDIS_URL !== undefined;
  if (ignoredRedisUrl) delete raw.REDIS_URL;
  const parsed = envSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = String(issue.path[0] ?? 'environment');
    const secret = name === 'MVS_API_TOKEN' || name === 'REDIS_CLUSTER_NODES';
    const shown = name in raw && !secret ? ` (got ${JSON.stringify(raw[name])})` : '';
    throw new ConfigError(`invalid ${name}: ${issue.message}${shown}`, { variable: name });
  }
  const e = parsed.data;
  if (needs.database && !e.DATABASE_URL) {
    throw new ConfigError(
      'missing DATABASE_URL: set it to mysql://user:password@host:3306/database',
      { variable: 'DATABASE_URL' },
    );
  }
  if (needs.redis && !e.REDIS_URL && !e.REDIS_CLUSTER_NODES) {
    throw new ConfigError('missing REDIS_URL: set it to redis://host:6379 (or REDIS_CLUSTER_NODES to host:port,... for a Redis Cluster)', {
      variable: 'REDIS_URL',
    });
  }
  const warnings: string[] = [];
  if (ignoredRedisUrl) warnings.push('REDIS_CLUSTER_NODES is set: REDIS_URL is ignored');
  if (e.REDIS_CLUSTER_NODES && /[{}]/.test(e.MVS_PREFIX)) {
    warnings.push(
      `MVS_PREFIX ${JSON.stringify(e.MVS_PREFIX)} has braces: on a Redis Cluster its hash tag puts every queue in one slot; a plain prefix lets each queue carry its own`,
    );
  }
  const defaultNodeId = `${hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 40)}-${process.pid}`;
  return Object.freeze({
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    redisCluster: e.REDIS_CLUSTER_NODES,
    prefix: e.MVS_PREFIX,
    nodeId: e.MVS_NODE_ID ?? defaultNodeId,
    nodeIdExplicit: e.MVS_NODE_ID !== undefined,
    workerConcurrency: e.MVS_WORKER_CONCURRENCY,
    httpPort: e.MVS_HTTP_PORT,
    apiToken: e.MVS_API_TOKEN,
    httpHost: e.MVS_HTTP_HOST,
    reconcileIntervalS: e.MVS_RECONCILE_S,
    nodeTtlS: e.MVS_NODE_TTL_S,
    purgeBatch: e.MVS_PURGE_BATCH,
    driftCheckS: e.MVS_DRIFT_CHECK_S,
    cutWaitMs: e.MVS_CUT_WAIT_MS,
    historyKeepDays: e.MVS_HISTORY_KEEP_DAYS,
    historyKeepRuns: e.MVS_HISTORY_KEEP_RUNS,
    metricsMaxMviews: e.MVS_METRICS_MAX_MVIEWS,
    vnodes: e.MVS_VNODES,
    captureServerId: e.MVS_CAPTURE_SERVER_ID,
    boardWrite: e.MVS_BOARD_WRITE === '1' || e.MVS_BOARD_WRITE === 'true',
    logLevel: e.LOG_LEVEL,
    logLevelExplicit: 'LOG_LEVEL' in raw,
    warnings: Object.freeze(warnings),
  });
}

/** Names of all variables the config reads, for docs and tests. */
export const CONFIG_VARIABLES = Object.freeze(Object.keys(envSchema.shape));
