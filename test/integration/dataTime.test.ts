import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import type { RefreshOutcome, RefreshRunner } from '../../src/refresh/runner.js';
import { storeVersionReport } from '../../src/versions/reports.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// DESIGN.md §2 "Data time and lag" and "History and retention": every SUCCESS or SKIPPED run
// records the database time of the snapshot the MV now reflects; history rows say how many rows
// went in and out, and which log range a FAST run consumed; SKIPPED rows say why; a FAILED run
// leaves the MV's data time where it was.

let t: TestEnv;
let ddl: DdlExecutor;
let runner: RefreshRunner;

beforeAll(async () => {
  t = await createTestEnv('data_time');
  await migrateLatest(t.db);
  ({ runner, ddl } = inProcessRefresh(t));
});

afterAll(async () => {
  await t?.close();
});

const mvId = async (name: string) => Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);
const hist = (refreshId: number) => t.db('mvs_mview_refresh_hist').where({ refresh_id: refreshId }).first();
const infoTime = async (id: number) => ((await t.db('mvs_mview_refresh_info').where({ mview_id: id }).first('data_time')).data_time as Date | null)?.getTime() ?? null;
const dbNow = async () => ((await t.db.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>])[0][0]!.t.getTime();
function ok(o: RefreshOutcome): Extract<RefreshOutcome, { kind: 'SUCCESS' }> {
  expect(o.kind, JSON.stringify(o)).toBe('SUCCESS');
  return o as Extract<RefreshOutcome, { kind: 'SUCCESS' }>;
}

describe('data time and history fields', () => {
  it('COMPLETE: data time at the start of the read; rows inserted = new rows, deleted = the rows replaced', async () => {
    await t.db.raw('CREATE TABLE c (id INT PRIMARY KEY, v INT)');
    await t.db.raw('INSERT INTO c VALUES (1, 1), (2, 2), (3, 3)');
    await ddl.execute('CREATE MATERIALIZED VIEW c_mv AS SELECT id, v FROM c');
    const id = await mvId('c_mv');
    await t.db.raw('DELETE FROM c WHERE id = 3');
    const before = await dbNow();
    const o = ok(await runner.run({ mviewId: id, trigger: 'MANUAL' }));
    const after = await dbNow();
    const h = await hist(o.refreshId);
    expect(h).toMatchObject({ refresh_method: 'COMPLETE', rows_inserted: 2, rows_deleted: 3, watermark_from: null, watermark_to: null });
    expect(h.data_time.getTime()).toBeGreaterThanOrEqual(before);
    expect(h.data_time.getTime()).toBeLessThanOrEqual(after);
    expect(await infoTime(id)).toBe(h.data_time.getTime());
  });

  it('FAST: data time of its cut, the log range consumed, rows in and out; with nothing to apply it still advances', async () => {
    await t.db.raw('CREATE TABLE f (id INT PRIMARY KEY, g INT, x INT)');
    await t.db.raw('INSERT INTO f VALUES (1, 1, 1), (2, 2, 2)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON f (g, x)');
    await ddl.execute('CREATE MATERIALIZED VIEW f_mv REFRESH FAST AS SELECT g, SUM(x) AS s, COUNT(*) AS n FROM f GROUP BY g');
    const id = await mvId('f_mv');
    await t.db.raw('INSERT INTO f VALUES (3, 3, 3)'); // a new group
    await t.db.raw('UPDATE f SET x = 10 WHERE id = 1'); // a group's values change
    await t.db.raw('DELETE FROM f WHERE id = 2'); // a group goes
    const first = ok(await runner.run({ mviewId: id, trigger: 'MANUAL' }));
    expect(first.method).toBe('FAST');
    const h = await hist(first.refreshId);
    expect(h).toMatchObject({ refresh_method: 'FAST', watermark_from: 0, watermark_to: 4, rows_inserted: 2, rows_deleted: 2 });
    expect(h.data_time.getTime()).toBeGreaterThanOrEqual(h.start_time.getTime() - 1000);

    const idle = ok(await runner.run({ mviewId: id, trigger: 'MANUAL' }));
    const h2 = await hist(idle.refreshId);
    expect(h2).toMatchObject({ rows_inserted: 0, rows_deleted: 0, watermark_from: 4, watermark_to: 4 });
    expect(h2.data_time.getTime()).toBeGreaterThan(h.data_time.getTime());
    expect(await infoTime(id)).toBe(h2.data_time.getTime());
  });

  it('SKIPPED: its check time, and why; FAILED: the data time stays', async () => {
    await t.db.raw('CREATE TABLE v (id INT PRIMARY KEY, x INT)');
    await t.db.raw('INSERT INTO v VALUES (1, 1)');
    await ddl.execute('CREATE MATERIALIZED VIEW v_mv NEXT 600 AS SELECT SUM(x) AS s FROM v');
    const id = await mvId('v_mv');
    await storeVersionReport(
      t.db,
      { schema: t.database, name: 'v' },
      { table: `${t.database}.v`, partitions: [{ partitionName: 'p', partitionId: 1, version: 1, versionTime: Date.now() }], dataChanged: true },
      systemClock,
    );
    const built = await infoTime(id);
    await t.db('mvs_mview_refresh_info').where({ mview_id: id }).update({ next_time: new Date(Date.now() - 1000) });
    const s = await runner.run({ mviewId: id, trigger: 'SCHEDULED' });
    expect(s.kind).toBe('SKIPPED');
    const h = await hist((s as { refreshId: number }).refreshId);
    expect(h.refresh_status).toBe('SKIPPED');
    expect(h.failed_reason).toMatch(/versioned and no reported version moved/);
    expect(h.data_time.getTime()).toBeGreaterThan(built!);
    expect(await infoTime(id)).toBe(h.data_time.getTime());

    await t.db.raw('RENAME TABLE v TO v_away');
    const f = await runner.run({ mviewId: id, trigger: 'MANUAL', method: 'COMPLETE' });
    expect(f.kind).toBe('FAILED');
    expect((await hist((f as { refreshId: number }).refreshId)).data_time).toBeNull();
    expect(await infoTime(id)).toBe(h.data_time.getTime());
    await t.db.raw('RENAME TABLE v_away TO v');
  });
});
