import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { HistoryRetention } from '../../src/planner/retention.js';
import type { RefreshRunner } from '../../src/refresh/runner.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// DESIGN.md §2 "History and retention", §4 invariant 9: refresh and purge history older than
// MVS_HISTORY_KEEP_DAYS goes, at most MVS_HISTORY_KEEP_RUNS rows stay per MV or log, the newest
// row of each is always kept, the edit log follows the age limit; trimming runs beside
// refreshes without holding them up.

let t: TestEnv;
let ddl: DdlExecutor;
let runner: RefreshRunner;

beforeAll(async () => {
  t = await createTestEnv('retention');
  await migrateLatest(t.db);
  ({ runner, ddl } = inProcessRefresh(t));
});

afterAll(async () => {
  await t?.close();
});

const DAY = 86_400_000;

async function fakeHistory(mviewId: number, n: number, ageDays: number): Promise<void> {
  const start = Date.now() - ageDays * DAY;
  const rows = Array.from({ length: n }, (_, i) => ({
    mview_id: mviewId,
    refresh_method: 'COMPLETE',
    refresh_trigger: 'SCHEDULED',
    refresh_status: 'SUCCESS',
    start_time: new Date(start + i * 1000),
    end_time: new Date(start + i * 1000 + 10),
    rows_changed: 1,
  }));
  for (let i = 0; i < rows.length; i += 500) await t.db('mvs_mview_refresh_hist').insert(rows.slice(i, i + 500));
}

const count = async (mviewId: number) => Number((await t.db('mvs_mview_refresh_hist').where({ mview_id: mviewId }).count({ n: '*' }))[0]!.n);

describe('history retention', () => {
  it('trims by age and by count, keeps the newest row of each MV, and trims the edit log, while refreshes run', async () => {
    await t.db.raw('CREATE TABLE b (id INT PRIMARY KEY, v INT)');
    await t.db.raw('INSERT INTO b VALUES (1, 1)');
    const ids: number[] = [];
    for (const name of ['old_only', 'many', 'busy']) {
      await ddl.execute(`CREATE MATERIALIZED VIEW ${name} AS SELECT SUM(v) AS s FROM b`);
      ids.push(Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id));
    }
    const [oldOnly, many, busy] = ids as [number, number, number];
    // old_only: only old rows (its creation run is moved back too): everything but its newest goes.
    await t.db('mvs_mview_refresh_hist').where({ mview_id: oldOnly }).update({ start_time: new Date(Date.now() - 90 * DAY) });
    await fakeHistory(oldOnly, 40, 60);
    // many: 2,500 recent rows and 300 old ones; busy: refreshed while the trim runs.
    await fakeHistory(many, 300, 45);
    await fakeHistory(many, 2500, 0.5);
    await fakeHistory(busy, 1200, 0.5);
    await t.db('mvs_edit_log').insert([
      ...Array.from({ length: 30 }, () => ({ mview_id: many, op_type: 'REPAIR', payload: '{}', created_at: new Date(Date.now() - 40 * DAY) })),
      ...Array.from({ length: 5 }, () => ({ mview_id: many, op_type: 'REPAIR', payload: '{}', created_at: new Date() })),
    ]);
    const newestOld = Number((await t.db('mvs_mview_refresh_hist').where({ mview_id: oldOnly }).max({ m: 'refresh_id' }))[0]!.m);

    const trimmer = new HistoryRetention({ db: t.db, logger: t.logger, clock: systemClock, keepDays: 30, keepRuns: 1000, batch: 200, maxStatements: 40 });
    let stop = false;
    let refreshes = 0;
    const refresher = (async () => {
      while (!stop) {
        const o = await runner.run({ mviewId: busy, trigger: 'MANUAL' });
        expect(o.kind).toBe('SUCCESS');
        refreshes++;
      }
    })();
    const passes: number[] = [];
    for (let i = 0; i < 50; i++) {
      const r = await trimmer.run();
      passes.push(r.statements);
      if (r.refreshRows + r.editLogRows === 0 && (await count(many)) <= 1000 && (await count(busy)) <= 1001) break;
    }
    stop = true;
    await refresher;
    expect(refreshes).toBeGreaterThan(0);
    // Each pass stays within its statement budget: a little at a time.
    expect(Math.max(...passes)).toBeLessThanOrEqual(42);
    expect(passes.length).toBeGreaterThan(1);

    const rowsOld = await t.db('mvs_mview_refresh_hist').where({ mview_id: oldOnly }).pluck('refresh_id');
    expect(rowsOld.map(Number)).toEqual([newestOld]);
    expect(await count(many)).toBe(1000);
    expect(Number((await t.db('mvs_mview_refresh_hist').where({ mview_id: many }).where('start_time', '<', new Date(Date.now() - 30 * DAY)).count({ n: '*' }))[0]!.n)).toBe(0);
    // busy kept refreshing during the trim: at most one more than the cap (a run after the pass).
    expect(await count(busy)).toBeLessThanOrEqual(1000 + refreshes);
    await trimmer.run();
    expect(await count(busy)).toBeLessThanOrEqual(1000);
    expect(Number((await t.db('mvs_edit_log').count({ n: '*' }))[0]!.n)).toBe(5);
  });
});
