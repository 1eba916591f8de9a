import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { mviewJobId, nodeQueueName } from '../../src/queue/names.js';
import { Cluster, inspector, type QueueInspector } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
let rt: Runtime;
let cluster: Cluster;
let ins: QueueInspector;

beforeAll(async () => {
  t = await createTestEnv('worker_resilience', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '1' });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE base (id INT PRIMARY KEY, v INT)');
  await t.db('base').insert({ id: 1, v: 1 });
  rt = createRuntime(t.config, t.logger);
  ins = inspector(t);
  cluster = new Cluster(t);
});

afterAll(async () => {
  await cluster?.closeAll();
  await ins?.close();
  await rt?.close();
  await t?.close();
});

describe('a scheduled job survives errors around its run', () => {
  it('keeps the job when the run fails for a reason other than the refresh, and refreshes once the cause is gone', async () => {
    const worker = cluster.worker('r1');
    cluster.planner();
    const res = await createDdlExecutor(rt).execute('CREATE MATERIALIZED VIEW mv NEXT 3600 AS SELECT SUM(v) AS s FROM base');
    const id = res.mviewId!;
    const queue = ins.placer.queue(nodeQueueName('r1'));
    await waitFor(async () => (await queue.getJobState(mviewJobId(id))) === 'delayed', { timeoutMs: 15_000, what: 'the job placed' });

    // The history table vanishes: the run cannot even record itself. That is not a refresh
    // failure with a reason to store; it is an error around the run.
    await t.db.raw('RENAME TABLE mvs_mview_refresh_hist TO hist_away');
    await t.db('mvs_mview_refresh_info').where({ mview_id: id }).update({ next_time: new Date(), updated_at: t.db.fn.now(6) });
    await waitFor(() => worker.output().includes('scheduled run could not be carried out'), { timeoutMs: 20_000, what: 'the worker to hit the error' });
    // The job is still there, waiting to retry: the MV did not silently lose its schedule.
    expect(await queue.getJobState(mviewJobId(id))).toMatch(/delayed|waiting|active/);

    await t.db.raw('RENAME TABLE hist_away TO mvs_mview_refresh_hist');
    const run = await waitFor(
      async () => t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_trigger: 'SCHEDULED', refresh_status: 'SUCCESS' }).first(),
      { timeoutMs: 20_000, what: 'a scheduled run after the table came back' },
    );
    expect(run.node_id).toBe('r1');
    // And the job went back on the schedule, an hour ahead.
    await waitFor(async () => (await queue.getJobState(mviewJobId(id))) === 'delayed', { timeoutMs: 10_000, what: 'the job re-delayed' });
  });
});
