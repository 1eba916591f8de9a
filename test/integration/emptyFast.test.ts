import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import type { RefreshOutcome, RefreshRunner } from '../../src/refresh/runner.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// A FAST refresh with nothing committed past its watermarks takes no consistent cut (issue 17:
// its fixed cost): it records a SUCCESS with the read's time as data time and moves no
// watermark. What must hold: a writer's uncommitted change is neither applied nor lost nor
// waited for; a log that lost its table or triggers is never taken for an empty one.

let t: TestEnv;
let ddl: DdlExecutor;
let runner: RefreshRunner;

beforeAll(async () => {
  t = await createTestEnv('empty_fast');
  await migrateLatest(t.db);
  // A cut that had to wait for the open writer below would give up after 1.5 s and fail the run.
  ({ runner, ddl } = inProcessRefresh(t, { cutWaitMs: 1500 }));
});

afterAll(async () => {
  await t?.close();
});

const mvId = async (name: string) => Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);
const hist = (refreshId: number) => t.db('mvs_mview_refresh_hist').where({ refresh_id: refreshId }).first();
const watermark = async (id: number) => Number((await t.db('mvs_mview_base_tables').where({ mview_id: id }).first('consumed_watermark')).consumed_watermark);
const dbNow = async () => ((await t.db.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>])[0][0]!.t.getTime();
const sums = async (table: string) => (await t.db.raw(`SELECT g, s FROM ${table} ORDER BY g`))[0] as Array<{ g: number; s: string }>;

function ok(o: RefreshOutcome): Extract<RefreshOutcome, { kind: 'SUCCESS' }> {
  expect(o.kind, JSON.stringify(o)).toBe('SUCCESS');
  return o as Extract<RefreshOutcome, { kind: 'SUCCESS' }>;
}

describe('FAST refresh with nothing to apply', () => {
  it('succeeds beside an open writer without waiting for it, then applies that writer once it commits', async () => {
    await t.db.raw('CREATE TABLE w (id INT PRIMARY KEY, g INT, x INT)');
    await t.db.raw('INSERT INTO w VALUES (1, 1, 10), (2, 2, 20)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON w (g, x)');
    await ddl.execute('CREATE MATERIALIZED VIEW w_mv REFRESH FAST AS SELECT g, SUM(x) AS s, COUNT(*) AS n FROM w GROUP BY g');
    const id = await mvId('w_mv');
    const wm = await watermark(id);

    const writer = await t.db.transaction();
    try {
      await writer.raw('INSERT INTO w VALUES (3, 1, 5)'); // its log row is drawn, not committed
      const before = await dbNow();
      const started = Date.now();
      const idle = ok(await runner.run({ mviewId: id, trigger: 'MANUAL' }));
      // A cut would have waited for the writer's gate for 1.5 s and failed.
      expect(Date.now() - started).toBeLessThan(1500);
      expect(idle.method).toBe('FAST');
      const h = await hist(idle.refreshId);
      expect(h).toMatchObject({ refresh_status: 'SUCCESS', refresh_method: 'FAST', rows_changed: 0, rows_inserted: 0, rows_deleted: 0, watermark_from: wm, watermark_to: wm });
      expect(h.data_time.getTime()).toBeGreaterThanOrEqual(before);
      expect(await watermark(id)).toBe(wm);
      expect(await sums('w_mv')).toEqual([{ g: 1, s: '10' }, { g: 2, s: '20' }]);
      await writer.commit();
    } finally {
      if (!writer.isCompleted()) await writer.rollback();
    }

    const applied = ok(await runner.run({ mviewId: id, trigger: 'MANUAL' }));
    expect(applied.rows).toBeGreaterThan(0);
    expect(await watermark(id)).toBeGreaterThan(wm);
    expect(await sums('w_mv')).toEqual([{ g: 1, s: '15' }, { g: 2, s: '20' }]);
    const info = await t.db('mvs_mview_refresh_info').where({ mview_id: id }).first('refresh_count', 'consecutive_failures');
    expect(Number(info.consecutive_failures)).toBe(0);
  });

  it('a base table re-created with an empty log is not taken for "no changes": the run rebuilds the MV', async () => {
    await t.db.raw('CREATE TABLE r (id INT PRIMARY KEY, g INT, x INT)');
    await t.db.raw('INSERT INTO r VALUES (1, 1, 1)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON r (g, x)');
    await ddl.execute('CREATE MATERIALIZED VIEW r_mv REFRESH FORCE AS SELECT g, SUM(x) AS s, COUNT(*) AS n FROM r GROUP BY g');
    const id = await mvId('r_mv');
    ok(await runner.run({ mviewId: id, trigger: 'MANUAL' })); // records the table's identity
    // Behind mvsched's back: the table and its triggers go, a new one comes with other rows.
    await t.db.raw('DROP TABLE r');
    await t.db.raw('CREATE TABLE r (id INT PRIMARY KEY, g INT, x INT)');
    await t.db.raw('INSERT INTO r VALUES (7, 7, 70)');
    const o = ok(await runner.run({ mviewId: id, trigger: 'MANUAL' }));
    expect(o.method).toBe('COMPLETE');
    expect(await sums('r_mv')).toEqual([{ g: 7, s: '70' }]);
  });

  it('a FAST-only MV over a log whose triggers were dropped fails naming the log, even with nothing in it', async () => {
    await t.db.raw('CREATE TABLE d (id INT PRIMARY KEY, g INT, x INT)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON d (g, x)');
    await ddl.execute('CREATE MATERIALIZED VIEW d_mv REFRESH FAST AS SELECT g, SUM(x) AS s, COUNT(*) AS n FROM d GROUP BY g');
    const id = await mvId('d_mv');
    ok(await runner.run({ mviewId: id, trigger: 'MANUAL' }));
    const [trg] = (await t.db.raw('SELECT TRIGGER_NAME AS n FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?', [t.database, 'd'])) as [
      Array<{ n: string }>,
    ];
    expect(trg.length).toBe(3);
    await t.db.raw(`DROP TRIGGER ${t.database}.${trg[0]!.n}`);
    const o = await runner.run({ mviewId: id, trigger: 'MANUAL' });
    expect(o.kind).toBe('FAILED');
    expect((o as { error: string }).error).toMatch(/materialized view log on .*\.d is broken/);
  });
});
