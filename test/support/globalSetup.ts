import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { ensureServerPackages, startMariadb, startRedis } from '../../scripts/localServers.mjs';

interface Started {
  url: string;
  stop(): Promise<void>;
}

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    redisUrl: string;
  }
}

/**
 * One real Redis and one real MariaDB for the whole run (unless REDIS_URL / DATABASE_URL point
 * at servers already). Test files isolate themselves by schema and key prefix.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started: Started[] = [];
  ensureServerPackages({ redis: !process.env.REDIS_URL, mariadb: !process.env.DATABASE_URL });
  try {
    // Only the Bull Board browser test needs chromium, and only the alert-rule tests promtool
    // (Debian's prometheus package); without them those tests fail and say why.
    ensureServerPackages({ redis: false, mariadb: false, chromium: true, prometheus: true });
  } catch (err) {
    console.warn(`[mvsched] ${(err as Error).message}`);
  }
  const baseDir = join(tmpdir(), `mvsched-test-${process.pid}`);
  const [redis, db] = (await Promise.all([
    process.env.REDIS_URL ? undefined : startRedis({ baseDir }),
    process.env.DATABASE_URL ? undefined : startMariadb({ baseDir }),
  ])) as [Started | undefined, Started | undefined];
  if (redis) started.push(redis);
  if (db) started.push(db);
  project.provide('redisUrl', redis?.url ?? process.env.REDIS_URL!);
  project.provide('databaseUrl', db?.url ?? process.env.DATABASE_URL!);
  return async () => {
    await Promise.allSettled(started.map((s) => s.stop()));
  };
}
