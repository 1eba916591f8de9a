import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateLatest } from '../../src/db/migrate.js';
import { mlogTask, mviewTask } from '../../src/queue/names.js';
import { taskNamesFromDb } from '../../src/queue/taskNames.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// Names for the data of scheduled jobs: read once, then from memory, so placing thousands of
// jobs (a membership change) costs no query per job.

let t: TestEnv;
const now = new Date();

const mview = (id: number, name: string) => ({
  mview_id: id, table_schema: 'app', mview_name: name, mview_definition: 'SELECT 1', created_at: now, mview_modify_time: now,
});

beforeAll(async () => {
  t = await createTestEnv('task_names');
  await migrateLatest(t.db);
  await t.db('mvs_mviews').insert([mview(1, 'sales'), mview(2, 'a.b')]);
  await t.db('mvs_mlogs').insert({
    mlog_id: 5, table_schema: 'app', base_table_name: 'orders', mlog_name: 'mlog$orders', mlog_columns: '[]', pk_columns: '["id"]', created_at: now, mlog_modify_time: now,
  });
});

afterAll(async () => {
  await t?.close();
});

describe('task names', () => {
  it('name MVs and logs by display name; with preload, one read of everything, then only what is new', async () => {
    let queries = 0;
    const count = () => queries++;
    t.db.on('query', count);
    try {
      const names = taskNamesFromDb(t.db, { preload: true });
      expect(await names([mviewTask(1), mlogTask(5), mviewTask(99)])).toEqual(
        new Map([
          [mviewTask(1), 'app.sales'],
          [mlogTask(5), 'app.orders'],
        ]),
      );
      const afterFirst = queries;
      expect(afterFirst).toBeLessThanOrEqual(3); // MVs, logs, and the unknown id 99
      expect((await names([mviewTask(2), mviewTask(1)])).get(mviewTask(2))).toBe('app.a.b');
      expect(queries).toBe(afterFirst);
      await t.db('mvs_mviews').insert(mview(3, 'fresh'));
      expect((await names([mviewTask(3)])).get(mviewTask(3))).toBe('app.fresh');
      expect(queries).toBe(afterFirst + 2); // the insert and one lookup
    } finally {
      t.db.off('query', count);
    }
  });

  it('without preload, reads only the ids asked for', async () => {
    const names = taskNamesFromDb(t.db);
    expect(await names([mlogTask(5)])).toEqual(new Map([[mlogTask(5), 'app.orders']]));
  });
});
