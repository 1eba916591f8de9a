import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { dbNowMs } from '../../src/mv/lag.js';
import { listMviewStatus, type MviewStatus } from '../../src/mv/status.js';
import { storeVersionReport } from '../../src/versions/reports.js';
import { Cluster } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// Lag as an operator sees it (DESIGN.md §2 "Data time and lag"; issue 11), with a real planner
// and worker: an MV on NEXT 2 stays within two intervals; a suspended or failing MV's lag grows
// (and comes back when it runs again); SKIPPED runs and FAST runs with nothing to apply advance
// the data time, so an MV that is up to date does not look stale.

const INTERVAL_S = 2;

let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let cluster: Cluster;

beforeAll(async () => {
  t = await createTestEnv('lag', { MVS_NODE_TTL_S: '5', MVS_RECONCILE_S: '5' });
  await migrateLatest(t.db);
  rt = createRuntime(t.config, t.logger);
  ddl = createDdlExecutor(rt, 'test');
  await t.db.raw('CREATE TABLE plain (id INT PRIMARY KEY, v INT)');
  await t.db.raw('CREATE TABLE flaky (id INT PRIMARY KEY, v INT)');
  await t.db.raw('CREATE TABLE vt (id INT PRIMARY KEY, v INT)');
  await t.db.raw('CREATE TABLE lg (id INT PRIMARY KEY, g INT, x INT)');
  for (const table of ['plain', 'flaky', 'vt', 'lg']) await t.db.raw('INSERT INTO ?? VALUES (1, 1' + (table === 'lg' ? ', 1)' : ')'), [table]);
  await storeVersionReport(
    t.db,
    { schema: t.database, name: 'vt' },
    { table: `${t.database}.vt`, partitions: [{ partitionName: 'p', partitionId: 1, version: 1, versionTime: Date.now() }], dataChanged: true },
    systemClock,
  );
  await ddl.execute('CREATE MATERIALIZED VIEW LOG ON lg (g, x)');
  await ddl.execute(`CREATE MATERIALIZED VIEW grid NEXT ${INTERVAL_S} AS SELECT SUM(v) AS s FROM plain`);
  await ddl.execute(`CREATE MATERIALIZED VIEW skipper NEXT ${INTERVAL_S} AS SELECT SUM(v) AS s FROM vt`);
  await ddl.execute(`CREATE MATERIALIZED VIEW idle_fast REFRESH FAST NEXT ${INTERVAL_S} AS SELECT g, SUM(x) AS s, COUNT(*) AS n FROM lg GROUP BY g`);
  cluster = new Cluster(t);
  cluster.planner();
  cluster.worker('w1');
});

afterAll(async () => {
  await cluster?.closeAll();
  await rt?.close();
  await t?.close();
});

async function status(name: string): Promise<MviewStatus> {
  const [s] = await listMviewStatus(t.db, undefined, { schema: t.database, name });
  return s!;
}

async function scheduledRuns(name: string, outcome: string): Promise<Array<Record<string, unknown>>> {
  return t.db('mvs_mview_refresh_hist as h')
    .join('mvs_mviews as m', 'm.mview_id', 'h.mview_id')
    .where({ 'm.mview_name': name, 'h.refresh_trigger': 'SCHEDULED', 'h.refresh_status': outcome })
    .orderBy('h.refresh_id')
    .select('h.*');
}

interface Watch {
  maxLag: number;
  dataTimes: Set<string>;
  lastResults: Set<string>;
  lastSuccess: Set<string | null>;
}

/** Status of the named MVs read every 200 ms for `ms` (what `status` shows over that window). */
async function watch(names: string[], ms: number): Promise<Record<string, Watch>> {
  const out: Record<string, Watch> = Object.fromEntries(names.map((n) => [n, { maxLag: 0, dataTimes: new Set(), lastResults: new Set(), lastSuccess: new Set() }]));
  const end = Date.now() + ms;
  while (Date.now() < end) {
    for (const m of await listMviewStatus(t.db, undefined)) {
      const w = out[m.mview];
      if (!w) continue;
      expect(m.lagSeconds, m.name).not.toBeNull();
      w.maxLag = Math.max(w.maxLag, m.lagSeconds!);
      w.dataTimes.add(m.dataTime!);
      w.lastResults.add(m.lastResult ?? '-');
      w.lastSuccess.add(m.lastSuccessTime);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return out;
}

describe('lag of MVs that keep up', () => {
  it('NEXT 2: a plain MV, one whose runs are SKIPPED and a FAST one with nothing to apply all stay below two intervals', async () => {
    await waitFor(
      async () =>
        (await scheduledRuns('grid', 'SUCCESS')).length >= 2 &&
        (await scheduledRuns('skipper', 'SKIPPED')).length >= 2 &&
        (await scheduledRuns('idle_fast', 'SUCCESS')).length >= 2,
      { timeoutMs: 60_000, intervalMs: 200, what: 'two scheduled runs of each MV' },
    );
    const skippedSuccess = (await status('skipper')).lastSuccessTime;
    const w = await watch(['grid', 'skipper', 'idle_fast'], 12_000);
    for (const [name, x] of Object.entries(w)) {
      expect(x.maxLag, `${name}: lag over 12 s`).toBeLessThan(2 * INTERVAL_S);
      // Its data time moved with the runs: about one per interval in the window.
      expect(x.dataTimes.size, `${name}: data times seen`).toBeGreaterThanOrEqual(4);
    }
    // SKIPPED runs move the data time, not the last success (nothing was refreshed).
    expect([...w.skipper!.lastResults]).toEqual(['SKIPPED']);
    expect([...w.skipper!.lastSuccess]).toEqual([skippedSuccess]);
    // The FAST runs applied nothing: no rows, the same log position, yet newer data times.
    const fast = (await scheduledRuns('idle_fast', 'SUCCESS')).slice(-4);
    for (const h of fast) expect(h).toMatchObject({ refresh_method: 'FAST', rows_changed: 0, watermark_from: h.watermark_to });
    expect(new Set(fast.map((h) => (h.data_time as Date).getTime())).size).toBe(fast.length);
  });
});

describe('lag of MVs that do not run', () => {
  it('a suspended MV: its lag grows with the clock while its data time stays, and shrinks after RESUME', async () => {
    await ddl.execute('ALTER MATERIALIZED VIEW grid SUSPEND');
    // A run in flight as it was suspended may still land: take the data time once it has held
    // for more than two intervals (the sleep is the window observed, not a wait for an event).
    const before = await waitFor(
      async () => {
        const a = await status('grid');
        await new Promise((r) => setTimeout(r, 2.5 * INTERVAL_S * 1000));
        const b = await status('grid');
        return a.dataTime === b.dataTime ? b : undefined;
      },
      { timeoutMs: 30_000, what: 'the data time of the suspended MV to stay put' },
    );
    const grown = await waitFor(
      async () => {
        const s = await status('grid');
        return s.lagSeconds! >= before.lagSeconds! + 3 * INTERVAL_S ? s : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'the lag of the suspended MV to grow by three intervals' },
    );
    expect(grown).toMatchObject({ status: 'SUSPENDED', dataTime: before.dataTime });
    expect(Math.abs(grown.lagSeconds! - ((await dbNowMs(t.db)) - Date.parse(before.dataTime!)) / 1000)).toBeLessThan(2);

    await ddl.execute('ALTER MATERIALIZED VIEW grid RESUME');
    await waitFor(async () => (await status('grid')).lagSeconds! < 2 * INTERVAL_S, {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: 'the resumed MV back within two intervals',
    });
  });

  it('a failing MV: its lag grows past twice its interval while its data time and last success stay, then recovers', async () => {
    await ddl.execute(`CREATE MATERIALIZED VIEW failing NEXT ${INTERVAL_S} AS SELECT SUM(v) AS s FROM flaky`);
    await waitFor(async () => (await scheduledRuns('failing', 'SUCCESS')).length >= 1, { timeoutMs: 30_000, what: 'a scheduled run' });
    await t.db.raw('RENAME TABLE flaky TO flaky_away');
    const first = await waitFor(async () => ((await status('failing')).failures >= 1 ? status('failing') : undefined), {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: 'a failed run',
    });
    const late = await waitFor(
      async () => {
        const s = await status('failing');
        return s.lagSeconds! > 2 * INTERVAL_S + 2 ? s : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'the failing MV past twice its interval' },
    );
    expect(late).toMatchObject({ lastResult: 'FAILED', dataTime: first.dataTime, lastSuccessTime: first.lastSuccessTime });
    expect(late.failures).toBeGreaterThanOrEqual(1);
    expect(late.lagSeconds!).toBeGreaterThan(first.lagSeconds!);

    await t.db.raw('RENAME TABLE flaky_away TO flaky');
    // Retries back off (5 s, then 10 s, ...): the next one succeeds and the lag drops.
    const back = await waitFor(
      async () => {
        const s = await status('failing');
        return s.failures === 0 && s.lagSeconds! < 2 * INTERVAL_S ? s : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200, what: 'the MV refreshing again' },
    );
    expect(Date.parse(back.dataTime!)).toBeGreaterThan(Date.parse(late.dataTime!));
    expect(Date.parse(back.lastSuccessTime!)).toBeGreaterThan(Date.parse(late.lastSuccessTime!));
  });
});
