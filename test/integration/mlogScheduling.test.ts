import { Queue, QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { mlogJobId, mlogTask } from '../../src/queue/names.js';
import { Cluster, collectJobs, inspector, invariant1Violations, type QueueInspector } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// MV-log purges driven by real `mvsched planner` / `mvsched worker` processes: a purge schedule
// gets one job per log in its owner's node queue (invariant 1), runs on its grid, and PURGE
// IMMEDIATE runs after each successful refresh of a dependent MV; purge requests from the
// `requests` queue work too.

let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let cluster: Cluster;
let ins: QueueInspector;

beforeAll(async () => {
  t = await createTestEnv('mlogsched', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '5', MVS_PURGE_BATCH: '7' });
  await migrateLatest(t.db);
  for (const name of ['s1', 's2', 'imm']) {
    await t.db.raw(`CREATE TABLE ${name} (id INT PRIMARY KEY, g INT NULL, v INT NULL)`);
  }
  rt = createRuntime(t.config, t.logger);
  ddl = createDdlExecutor(rt, 'test');
  ins = inspector(t);
  cluster = new Cluster(t);
  cluster.planner();
  cluster.worker('w1');
  cluster.worker('w2');
  await waitFor(async () => (await ins.registry.live()).length === 2, { timeoutMs: 30_000, what: 'two workers live' });
});

afterAll(async () => {
  await cluster?.closeAll();
  await ins?.close();
  await rt?.close();
  await t?.close();
});

const purgeHist = async (mlogId: number) =>
  (await t.db('mvs_mlog_purge_hist').where({ mlog_id: mlogId }).orderBy('purge_id')) as Array<{
    purge_trigger: string;
    purge_status: string;
    purge_rows: number;
    start_time: Date;
    purge_watermark: number;
  }>;
const logCount = async (table: string) => Number(((await t.db(`mlog$${table}`).count({ n: '*' }).first()) as { n: number }).n);

describe('scheduled and immediate purges', () => {
  it('keeps one job per scheduled log in its owner queue, purges on the grid, and drops the job when the schedule goes', async () => {
    const r = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON s1 (g, v) PURGE START WITH NOW() NEXT 2');
    const id = r.mlogId!;
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON s2 (g, v)'); // manual purge: no job
    await waitFor(async () => (await invariant1Violations(t.db, ins)).length === 0 && (await collectJobs(ins)).has(mlogTask(id)), {
      timeoutMs: 15_000,
      what: 'the purge job in its owner queue',
    });
    const jobs = await collectJobs(ins);
    expect([...jobs.keys()].filter((k) => k < 0)).toEqual([mlogTask(id)]);

    // No dependent MV: each scheduled purge removes whatever is in the log.
    await t.db('s1').insert(Array.from({ length: 20 }, (_, i) => ({ id: i, g: i % 3, v: i })));
    await waitFor(async () => (await logCount('s1')) === 0, { timeoutMs: 15_000, what: 'a scheduled purge to empty the log' });
    await waitFor(async () => (await purgeHist(id)).filter((h) => h.purge_status === 'SUCCESS').length >= 2, {
      timeoutMs: 15_000,
      what: 'two scheduled purges',
    });
    const runs = (await purgeHist(id)).filter((h) => h.purge_trigger === 'SCHEDULED');
    expect(runs.every((h) => h.purge_status === 'SUCCESS')).toBe(true);
    const info = await t.db('mvs_mlog_purge_info').where({ mlog_id: id }).first();
    expect(info.last_purge_result).toBe('SUCCESS');
    // Back on the 2 s grid anchored at START WITH after each run.
    const log = await t.db('mvs_mlogs').where({ mlog_id: id }).first('purge_start');
    expect((info.next_time.getTime() - log.purge_start.getTime()) % 2000).toBe(0);

    await ddl.execute('ALTER MATERIALIZED VIEW LOG ON s1 PURGE IMMEDIATE');
    await waitFor(async () => !(await collectJobs(ins)).has(mlogTask(id)) && (await invariant1Violations(t.db, ins)).length === 0, {
      timeoutMs: 15_000,
      what: 'the purge job removed once the log has no schedule',
    });
    await ddl.execute('ALTER MATERIALIZED VIEW LOG ON s1 PURGE NEXT 3600');
    await waitFor(async () => (await collectJobs(ins)).has(mlogTask(id)), { timeoutMs: 15_000, what: 'the job back' });
    await ddl.execute('DROP MATERIALIZED VIEW LOG ON s1');
    await waitFor(async () => !(await collectJobs(ins)).has(mlogTask(id)) && (await invariant1Violations(t.db, ins)).length === 0, {
      timeoutMs: 15_000,
      what: 'the job gone with the log',
    });
  });

  it('PURGE IMMEDIATE purges after each refresh of a dependent MV, up to what it consumed', async () => {
    const r = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON imm (g, v) PURGE IMMEDIATE');
    const id = r.mlogId!;
    await ddl.execute('CREATE MATERIALIZED VIEW imm_mv REFRESH FAST NEXT 1 AS SELECT g, COUNT(*) AS c, SUM(v) AS s FROM imm GROUP BY g');
    await t.db('imm').insert(Array.from({ length: 30 }, (_, i) => ({ id: i, g: i % 4, v: i })));
    await waitFor(async () => (await logCount('imm')) === 0 && (await purgeHist(id)).some((h) => h.purge_trigger === 'IMMEDIATE' && h.purge_rows > 0), {
      timeoutMs: 20_000,
      what: 'an immediate purge after a scheduled FAST refresh',
    });
    const [mv] = (await t.db.raw('SELECT g, c, s FROM imm_mv ORDER BY g')) as [Array<Record<string, unknown>>];
    const [want] = (await t.db.raw('SELECT g, COUNT(*) AS c, SUM(v) AS s FROM imm GROUP BY g ORDER BY g')) as [Array<Record<string, unknown>>];
    expect(mv.map((x) => ({ ...x }))).toEqual(want.map((x) => ({ ...x })));
    const hist = await t.db('mvs_mview_refresh_hist').join('mvs_mviews', 'mvs_mviews.mview_id', 'mvs_mview_refresh_hist.mview_id').where('mview_name', 'imm_mv').select('mvs_mview_refresh_hist.refresh_method');
    expect(hist.some((h: { refresh_method: string }) => h.refresh_method === 'FAST')).toBe(true);
    // With nothing new in the log, a FAST run applies nothing and purges nothing (no cut, no
    // purge, no history row for it). A purge held back by another consumer removes nothing:
    // counted, not written as a row.
    await ddl.execute('CREATE MATERIALIZED VIEW imm_hold REFRESH FAST AS SELECT g, COUNT(*) AS c FROM imm GROUP BY g');
    for (const batch of [100, 200]) {
      await t.db('imm').insert(Array.from({ length: 5 }, (_, i) => ({ id: batch + i, g: i % 4, v: i })));
      await waitFor(async () => Number((await t.db('mvs_mlog_purge_info').where({ mlog_id: id }).first('empty_immediate_purges')).empty_immediate_purges) >= batch / 100, {
        timeoutMs: 20_000,
        what: 'an immediate purge held back by imm_hold, counted',
      });
    }
    expect(await logCount('imm')).toBe(10);
    expect((await purgeHist(id)).filter((h) => h.purge_trigger === 'IMMEDIATE' && Number(h.purge_rows) === 0)).toEqual([]);
  });

  it('a purge request on the requests queue runs, and one for an unknown log fails naming it', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON s1 (g)');
    await t.db('s1').insert({ id: 1000, g: 1, v: 1 });
    const q = new Queue('requests', { connection: ins.redis, prefix: t.prefix });
    const events = new QueueEvents('requests', { connection: ins.redis.duplicate(), prefix: t.prefix });
    await events.waitUntilReady();
    try {
    const ok = await q.add('purge', { mlog: `${t.database}.s1` });
    expect(await ok.waitUntilFinished(events, 20_000)).toMatchObject({ outcome: 'SUCCESS', rows: 1 });
    const bad = await q.add('purge', { mlog: `${t.database}.no_such` });
    await expect(bad.waitUntilFinished(events, 20_000)).rejects.toThrow(/no materialized view log on .*no_such/);
    const malformed = await q.add('purge', { mlog: 42 });
    await expect(malformed.waitUntilFinished(events, 20_000)).rejects.toThrow(/mlog/);
    expect(mlogJobId(1)).toBe('mlog-1');
    } finally {
      await events.close();
      await q.close();
    }
  });
});
