import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import { loadConfig, type Config } from '../../src/config.js';
import { createDb, type Db } from '../../src/db/connect.js';
import { createLogger, type Logger } from '../../src/log.js';

export interface TestEnv {
  /** A database of its own for this file: `DATABASE_URL` points at it. */
  databaseUrl: string;
  database: string;
  /** The run's single Redis; a file on a Redis Cluster must not use it (see redisClusterNodes). */
  redisUrl: string;
  /** Set when the file runs on a Redis Cluster (REDIS_CLUSTER_NODES in `env`, no REDIS_URL). */
  redisClusterNodes: string | undefined;
  /** A BullMQ prefix of its own for this file. */
  prefix: string;
  env: Record<string, string>;
  config: Config;
  db: Db;
  logger: Logger;
  close(): Promise<void>;
}

/** Server URL with the database part replaced. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/**
 * Create an isolated database + Redis prefix for one test file. Call in beforeAll and close in
 * afterAll; the database is dropped on close. With `redisClusterNodes` (a cluster the file
 * started, test/support/redisCluster.ts) everything runs on that Redis Cluster instead.
 */
export async function createTestEnv(
  name: string,
  extraEnv: Record<string, string> = {},
  opts: { redisClusterNodes?: string } = {},
): Promise<TestEnv> {
  const suffix = randomBytes(4).toString('hex');
  const database = `t_${name.replace(/[^a-z0-9_]/gi, '_').slice(0, 40)}_${suffix}`.toLowerCase();
  const serverUrl = inject('databaseUrl');
  const redisUrl = inject('redisUrl');
  const admin = createDb(serverUrl, { poolMax: 1 });
  try {
    await admin.raw('CREATE DATABASE ??', [database]);
  } finally {
    await admin.destroy();
  }
  const databaseUrl = withDatabase(serverUrl, database);
  const prefix = `t${suffix}`;
  const redisEnv: Record<string, string> = opts.redisClusterNodes ? { REDIS_CLUSTER_NODES: opts.redisClusterNodes } : { REDIS_URL: redisUrl };
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    ...redisEnv,
    MVS_PREFIX: prefix,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    ...extraEnv,
  };
  const config = loadConfig(env, { database: true, redis: true });
  const db = createDb(databaseUrl);
  const logger = createLogger({ level: config.logLevel, pretty: false, base: { test: name } });
  return {
    databaseUrl,
    database,
    redisUrl,
    redisClusterNodes: opts.redisClusterNodes,
    prefix,
    env,
    config,
    db,
    logger,
    async close() {
      await db.raw('DROP DATABASE IF EXISTS ??', [database]).catch(() => {});
      await db.destroy();
    },
  };
}

/** Poll `fn` until it returns a truthy value or the deadline passes; returns that value. */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  { timeoutMs = 10_000, intervalMs = 50, what = 'condition' }: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
