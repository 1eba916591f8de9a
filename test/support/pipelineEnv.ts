import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { redisKeys } from '../../src/queue/names.js';
import { Cluster, inspector, type Proc, type QueueInspector } from './cluster.js';
import { createTestEnv, waitFor, type TestEnv } from './testEnv.js';

/** A leading planner and two workers (w1, w2) as processes, with DDL and a queue inspector. */
export interface PipelineEnv {
  t: TestEnv;
  rt: Runtime;
  ddl: DdlExecutor;
  cluster: Cluster;
  ins: QueueInspector;
  planner: Proc;
  close(): Promise<void>;
}

export async function startPipelineEnv(name: string, env: Record<string, string>): Promise<PipelineEnv> {
  const t = await createTestEnv(name, env);
  await migrateLatest(t.db);
  const rt = createRuntime(t.config, t.logger);
  const ddl = createDdlExecutor(rt, 'test');
  const ins = inspector(t);
  const cluster = new Cluster(t);
  const planner = cluster.planner();
  cluster.worker('w1');
  cluster.worker('w2');
  await waitFor(async () => (await ins.registry.live()).length === 2, { timeoutMs: 60_000, what: 'two workers in the ring' });
  await waitFor(async () => ins.redis.exists(redisKeys(t.prefix, false).plannerEpoch), { timeoutMs: 60_000, what: 'the planner to lead' });
  return {
    t,
    rt,
    ddl,
    cluster,
    ins,
    planner,
    async close() {
      await cluster.closeAll();
      await ins.close();
      await rt.close();
      await t.close();
    },
  };
}
