import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { listMviewStatus } from '../../src/mv/status.js';
import { type Cluster, invariant1Violations, waveStepViolations, type QueueInspector } from '../support/cluster.js';
import { historyOf, lastRefreshIdOf, mviewIdOf, startPipelineEnv, type NamedHist, type PipelineEnv } from '../support/pipelineEnv.js';
import { waitFor, type TestEnv } from '../support/testEnv.js';

// Pipelines with real processes (DESIGN.md §2 "Pipelines"): upstream first on fixed schedules,
// ALTER between a grid and a target lag, a suspended upstream and a failing upstream reported
// as unmet targets, a failure stopping the wave below it with backoff.

let env: PipelineEnv;
let t: TestEnv;
let ddl: DdlExecutor;
let cluster: Cluster;
let ins: QueueInspector;

beforeAll(async () => {
  env = await startPipelineEnv('pipeline_waves', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '5' });
  ({ t, ddl, cluster, ins } = env);
});

afterAll(async () => {
  await env?.close();
});

type Hist = NamedHist;

const id = (name: string) => mviewIdOf(t, name);
const history = (names: string[], sinceId = 0) => historyOf(t, names, sinceId);
const lastRefreshId = () => lastRefreshIdOf(t);
const status = async (name: string) => (await listMviewStatus(t.db, undefined)).find((s) => s.mview === name)!;
const isWave = (h: Hist) => /^wave-\d+-/.test(h.refresh_job_id ?? '');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function converge(what: string): Promise<void> {
  let last: string[] = [];
  try {
    await waitFor(async () => {
      last = [...(await invariant1Violations(t.db, ins)), ...(await waveStepViolations(ins))];
      return last.length === 0;
    }, { timeoutMs: 15_000, intervalMs: 200, what });
  } catch {
    expect(last, what).toEqual([]);
  }
}

describe('pipelines on fixed schedules and when things go wrong', () => {
  it('runs an upstream due in the same slot first; the downstream reads its new contents', async () => {
    await t.db.raw('CREATE TABLE fx_raw (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)');
    await t.db('fx_raw').insert({ v: 1 });
    const [r] = (await t.db.raw("SELECT DATE_FORMAT(NOW() + INTERVAL 3 SECOND, '%Y-%m-%d %H:%i:%s') AS s")) as [Array<{ s: string }>];
    const start = r[0]!.s;
    // The upstream takes a while (SLEEP): without the ordering both would start at the slot.
    await ddl.execute(`CREATE MATERIALIZED VIEW fx_u START WITH '${start}' NEXT 2 AS SELECT COUNT(*) AS n, SUM(v) AS s, SLEEP(0.3) AS z FROM fx_raw`);
    await ddl.execute(`CREATE MATERIALIZED VIEW fx_d START WITH '${start}' NEXT 2 AS SELECT n, s FROM fx_u`);
    await converge('fixed schedules placed');
    let n = 0;
    const writing = setInterval(() => void t.db('fx_raw').insert({ v: ++n }).catch(() => {}), 100);
    try {
      await waitFor(async () => (await history(['fx_d'])).filter((h) => h.refresh_trigger === 'SCHEDULED' && h.refresh_status === 'SUCCESS').length >= 4, {
        timeoutMs: 60_000,
        intervalMs: 250,
        what: 'four scheduled runs of fx_d',
      });
    } finally {
      clearInterval(writing);
    }
    const runs = (await history(['fx_u', 'fx_d'])).filter((h) => h.refresh_trigger === 'SCHEDULED' && h.refresh_status === 'SUCCESS');
    const uBySlot = new Map(runs.filter((h) => h.mview_name === 'fx_u').map((h) => [h.scheduled_time!.getTime(), h]));
    let shared = 0;
    for (const d of runs.filter((h) => h.mview_name === 'fx_d')) {
      const u = uBySlot.get(d.scheduled_time!.getTime());
      if (!u) continue;
      shared++;
      const what = `slot ${d.scheduled_time!.toISOString()}: fx_d ${d.start_time.toISOString()}, fx_u ended ${u.end_time!.toISOString()}`;
      expect(d.start_time.getTime(), what).toBeGreaterThanOrEqual(u.end_time!.getTime());
      // It read that run's contents: its data time is that run's.
      expect(d.data_time!.getTime(), what).toBe(u.data_time!.getTime());
    }
    expect(shared).toBeGreaterThanOrEqual(3);
    await ddl.execute('DROP MATERIALIZED VIEW fx_u CASCADE');
  });

  it('ALTER moves an MV between a target lag (waves, no scheduled job) and a grid (a scheduled job, its DOWNSTREAM upstream refreshed just before it)', async () => {
    await t.db.raw('CREATE TABLE al_raw (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)');
    await ddl.execute('CREATE MATERIALIZED VIEW al_a TARGET LAG DOWNSTREAM AS SELECT COUNT(*) AS n FROM al_raw');
    await ddl.execute('CREATE MATERIALIZED VIEW al_b TARGET LAG 3 AS SELECT n FROM al_a');
    const b = await id('al_b');
    let since = await lastRefreshId();
    await waitFor(async () => (await history(['al_b'], since)).filter(isWave).length >= 2, { timeoutMs: 30_000, what: 'two waves of al_b' });
    await converge('a target-lag MV has no scheduled job');

    await ddl.execute('ALTER MATERIALIZED VIEW al_b REFRESH NEXT 2');
    await converge('al_b on a grid has its scheduled job');
    await sleep(1_000); // a wave already running may still finish
    since = await lastRefreshId();
    await waitFor(async () => (await history(['al_b'], since)).filter((h) => h.refresh_trigger === 'SCHEDULED' && h.refresh_status === 'SUCCESS').length >= 2, {
      timeoutMs: 30_000,
      what: 'two scheduled runs of al_b on its grid',
    });
    const grid = await history(['al_a', 'al_b'], since);
    expect(grid.filter(isWave), 'no waves while it is on a grid').toEqual([]);
    const aRuns = (await history(['al_a'])).filter((h) => h.refresh_status === 'SUCCESS');
    for (const run of grid.filter((h) => h.mview_name === 'al_b' && h.refresh_status === 'SUCCESS')) {
      // Its DOWNSTREAM upstream was refreshed for it, in the same job, just before; unless a run
      // of it started within a quarter of al_b's interval before the slot (the last wave's, for
      // the first slot after the ALTER): that one is read as it is.
      const up = grid.find((h) => h.mview_name === 'al_a' && h.refresh_job_id === run.refresh_job_id && h.refresh_id < run.refresh_id);
      if (!up) {
        const recent = aRuns.filter((h) => h.refresh_id < run.refresh_id && h.start_time.getTime() >= run.scheduled_time!.getTime() - 500);
        expect(recent.length, `al_a refreshed for run ${run.refresh_id}, or just before its slot`).toBeGreaterThan(0);
        continue;
      }
      expect(up).toMatchObject({ refresh_trigger: 'UPSTREAM', refresh_status: 'SUCCESS' });
      expect(run.start_time.getTime()).toBeGreaterThanOrEqual(up.end_time!.getTime());
    }
    // The reuse is the exception: at least one grid run refreshed al_a in its own job.
    expect(grid.some((h) => h.mview_name === 'al_a' && h.refresh_trigger === 'UPSTREAM' && !isWave(h))).toBe(true);

    await ddl.execute('ALTER MATERIALIZED VIEW al_b REFRESH TARGET LAG 3');
    await converge('al_b back on a target lag has no scheduled job');
    since = await lastRefreshId();
    await waitFor(async () => (await history(['al_b'], since)).filter(isWave).length >= 2, { timeoutMs: 30_000, what: 'waves of al_b again' });
    expect((await t.db('mvs_mview_refresh_info').where({ mview_id: b }).first('next_time')).next_time).toBeNull();
    await ddl.execute('DROP MATERIALIZED VIEW al_a CASCADE');
  });

  it('reports an unmet target while an upstream is SUSPENDED, and stops refreshing what cannot get fresher', async () => {
    await t.db.raw('CREATE TABLE su_raw (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)');
    await ddl.execute('CREATE MATERIALIZED VIEW su_a TARGET LAG DOWNSTREAM AS SELECT COUNT(*) AS n FROM su_raw');
    await ddl.execute('CREATE MATERIALIZED VIEW su_b TARGET LAG 5 AS SELECT n FROM su_a');
    await waitFor(async () => (await history(['su_b'])).filter(isWave).length >= 1, { timeoutMs: 30_000, what: 'a wave of su_b' });
    expect((await status('su_b')).targetUnmetReason).toBeNull();

    await ddl.execute('ALTER MATERIALIZED VIEW su_a SUSPEND');
    const reason = `upstream ${t.database}.su_a is SUSPENDED: it is not refreshed, so nothing that reads it gets fresher`;
    await waitFor(async () => (await status('su_b')).targetUnmetReason === reason, { timeoutMs: 15_000, what: 'su_b to report its suspended upstream' });
    // The CLI's status and the API read the same field.
    await sleep(1_500); // a wave already running may still finish
    const since = await lastRefreshId();
    await sleep(8_000); // more than two periods of its target
    expect(await history(['su_a', 'su_b'], since), 'nothing refreshed: nothing su_b reads can change').toEqual([]);

    await ddl.execute('ALTER MATERIALIZED VIEW su_a RESUME');
    await waitFor(async () => (await status('su_b')).targetUnmetReason === null, { timeoutMs: 15_000, what: 'su_b met again' });
    await waitFor(async () => (await history(['su_a', 'su_b'], since)).filter(isWave).length >= 2, { timeoutMs: 30_000, what: 'waves again after RESUME' });
    await ddl.execute('DROP MATERIALIZED VIEW su_a CASCADE');
  });

  it('stops a wave below a failing upstream, backs off, says why the target is late, and recovers', async () => {
    await t.db.raw('CREATE TABLE fl_raw (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)');
    await ddl.execute('CREATE MATERIALIZED VIEW fl_a TARGET LAG DOWNSTREAM AS SELECT COUNT(*) AS n FROM fl_raw');
    await ddl.execute('CREATE MATERIALIZED VIEW fl_b TARGET LAG 5 AS SELECT n FROM fl_a');
    await waitFor(async () => (await history(['fl_b'])).filter(isWave).length >= 1, { timeoutMs: 30_000, what: 'a wave of fl_b' });

    await t.db.raw('RENAME TABLE fl_raw TO fl_raw_away');
    const since = await lastRefreshId();
    const failures = async () => (await history(['fl_a'], since)).filter((h) => h.refresh_status === 'FAILED');
    await waitFor(async () => (await failures()).length >= 3, { timeoutMs: 60_000, intervalMs: 250, what: 'three failed runs of fl_a' });
    const fails = await failures();
    // Backoff: 5 s after the first failure, then 10 s (DESIGN.md §2 "Next run time").
    const gap = (i: number) => fails[i]!.start_time.getTime() - fails[i - 1]!.end_time!.getTime();
    expect(gap(1)).toBeGreaterThanOrEqual(4_900);
    expect(gap(2)).toBeGreaterThanOrEqual(9_900);
    expect(fails.every((f) => f.refresh_trigger === 'UPSTREAM' && /fl_raw/.test(f.failed_reason ?? ''))).toBe(true);
    // Nothing below the failed step ran: fl_b has no run since the first failure.
    expect((await history(['fl_b'], since)).filter((h) => h.start_time.getTime() >= fails[0]!.start_time.getTime())).toEqual([]);
    const b = await status('fl_b');
    expect(b.targetUnmetReason).toMatch(new RegExp(`^upstream ${t.database}\\.fl_a failed, which stops its waves there \\(\\d+ in a row, retried with backoff\\): .*fl_raw`));
    expect((await status('fl_a')).lastResult).toBe('FAILED');

    await t.db.raw('RENAME TABLE fl_raw_away TO fl_raw');
    await waitFor(async () => (await status('fl_b')).targetUnmetReason === null && (await history(['fl_b'], since)).some((h) => h.refresh_status === 'SUCCESS'), {
      timeoutMs: 60_000,
      what: 'fl_b refreshed again and met',
    });
    await converge('after the failures');
    await ddl.execute('DROP MATERIALIZED VIEW fl_a CASCADE');
  });
});
