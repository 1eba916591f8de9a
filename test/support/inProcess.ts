import { createRunners } from '../../src/app/runtime.js';
import { systemClock } from '../../src/clock.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import type { TestEnv } from './testEnv.js';

/** Refresh and purge runners and a DDL executor in the test's own process, on its database. */
export function inProcessRefresh(t: TestEnv, opts: { cutWaitMs?: number; ddlWaitMs?: number; nodeId?: string } = {}) {
  const runners = createRunners(
    { db: t.db, logger: t.logger, clock: systemClock, purgeBatch: 1000, ...(opts.cutWaitMs !== undefined ? { cutWaitMs: opts.cutWaitMs } : {}) },
    opts.nodeId ?? 'test-node',
  );
  const ddl = new DdlExecutor({
    db: t.db,
    logger: t.logger,
    clock: systemClock,
    ...runners,
    defaultSchema: t.database,
    ...(opts.ddlWaitMs !== undefined ? { ddlWaitMs: opts.ddlWaitMs } : {}),
    notify: async () => {},
  });
  return { ...runners, ddl };
}
