import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import type { RefreshHistRow } from '../../src/mv/repository.js';
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

/** A history row with its MV's name (and its data time, which RefreshHistRow leaves out). */
export type NamedHist = RefreshHistRow & { mview_name: string; data_time: Date | null };

/** The MV id of `name` in the test's database. */
export async function mviewIdOf(t: TestEnv, name: string): Promise<number> {
  return Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);
}

/** Refresh history of the named MVs after refresh id `sinceId`, oldest first. */
export async function historyOf(t: TestEnv, names: string[], sinceId = 0): Promise<NamedHist[]> {
  return (await t.db('mvs_mview_refresh_hist as h')
    .join('mvs_mviews as m', 'm.mview_id', 'h.mview_id')
    .whereIn('m.mview_name', names)
    .where('h.refresh_id', '>', sinceId)
    .orderBy('h.refresh_id')
    .select('h.*', 'm.mview_name')) as NamedHist[];
}

/** The newest refresh id so far (0 before any). */
export async function lastRefreshIdOf(t: TestEnv): Promise<number> {
  return Number((await t.db('mvs_mview_refresh_hist').max({ m: 'refresh_id' }).first())!.m ?? 0);
}
