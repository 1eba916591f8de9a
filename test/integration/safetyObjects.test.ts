import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { ValidationError } from '../../src/errors.js';
import { listMviewStatus } from '../../src/mv/status.js';
import type { RefreshOutcome, RefreshRunner } from '../../src/refresh/runner.js';
import { forgetVersions } from '../../src/versions/forget.js';
import { storeVersionReport } from '../../src/versions/reports.js';
import { snapshot } from '../support/snapshot.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// What mvsched does to objects it does not own, and how it cleans up after objects vanished
// (issue "Safety first": a user's __mvs_<id>_old dropped; DROP DATABASE leaving orphans; a
// single version report making an ordinary table's MVs SKIPPED forever).

let t: TestEnv;
let ddl: DdlExecutor;
let runner: RefreshRunner;
let other: string;

beforeAll(async () => {
  t = await createTestEnv('safety_objects');
  await migrateLatest(t.db);
  ({ runner, ddl } = inProcessRefresh(t, { ddlWaitMs: 1000 }));
  other = `${t.database}_app`;
});

afterAll(async () => {
  await t?.db.raw(`DROP DATABASE IF EXISTS \`${other}\``).catch(() => {});
  await t?.close();
});

type Row = Record<string, unknown>;
async function rows(sql: string): Promise<string[]> {
  const [r] = (await t.db.raw(sql)) as [Row[]];
  return r.map((x) => JSON.stringify(x)).sort();
}
const mvId = async (name: string, schema = t.database) =>
  Number((await t.db('mvs_mviews').where({ table_schema: schema, mview_name: name }).first('mview_id')).mview_id);
function expectKind<K extends RefreshOutcome['kind']>(o: RefreshOutcome, kind: K): Extract<RefreshOutcome, { kind: K }> {
  expect(o.kind, JSON.stringify(o)).toBe(kind);
  return o as Extract<RefreshOutcome, { kind: K }>;
}

describe("tables named like mvsched's own", () => {
  it("a user's __mvs_<id>_old / _new survive every refresh and the DROP; the MV is refreshed beside them", async () => {
    await t.db.raw('CREATE TABLE src (id INT PRIMARY KEY, v INT)');
    await t.db.raw('INSERT INTO src VALUES (1, 1), (2, 2)');
    await ddl.execute('CREATE MATERIALIZED VIEW mv_shadow AS SELECT id, v FROM src');
    const id = await mvId('mv_shadow');
    for (const suffix of ['old', 'new']) {
      await t.db.raw(`CREATE TABLE __mvs_${id}_${suffix} (k INT PRIMARY KEY, note VARCHAR(20))`);
      await t.db.raw(`INSERT INTO __mvs_${id}_${suffix} VALUES (1, 'keep me')`);
    }
    for (let i = 0; i < 3; i++) {
      await t.db.raw(`INSERT INTO src VALUES (${10 + i}, ${i})`);
      expectKind(await runner.run({ mviewId: id, trigger: 'MANUAL' }), 'SUCCESS');
      expect(await rows('SELECT * FROM mv_shadow')).toEqual(await rows('SELECT id, v FROM src'));
    }
    await ddl.execute('DROP MATERIALIZED VIEW mv_shadow');
    for (const suffix of ['old', 'new']) expect(await rows(`SELECT * FROM __mvs_${id}_${suffix}`)).toEqual(['{"k":1,"note":"keep me"}']);
  });

  it('a leftover build table of a run that died (it carries the MV comment) is cleaned up', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW mv_left AS SELECT id, v FROM src');
    const id = await mvId('mv_left');
    await t.db.raw(`CREATE TABLE __mvs_${id}_new COMMENT='mvsched:mv:${id}' AS SELECT * FROM src`);
    expectKind(await runner.run({ mviewId: id, trigger: 'MANUAL' }), 'SUCCESS');
    const left = await t.db('information_schema.tables').where({ table_schema: t.database }).where('table_name', 'like', `\\_\\_mvs\\_${id}\\_%`).pluck('table_name');
    expect(left).toEqual([]);
  });

  it('an MV may not take a name of that kind, and the refusal writes nothing', async () => {
    const before = await snapshot(t.db, t.database);
    for (const name of ['__mvs_8_new', 'mlog$src']) {
      const err = await ddl.execute(`CREATE MATERIALIZED VIEW \`${name}\` AS SELECT id FROM src`).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ValidationError);
      expect((err as Error).message).toMatch(/reserved/);
    }
    expect(await snapshot(t.db, t.database)).toEqual(before);
  });
});

describe('objects gone behind our back', () => {
  it("an MV's table dropped by hand: a FAST MV builds it again; DROP works when it is gone", async () => {
    await t.db.raw('CREATE TABLE f (id INT PRIMARY KEY, g INT, x INT)');
    await t.db.raw('INSERT INTO f VALUES (1, 1, 1), (2, 1, 2)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON f (g, x)');
    await ddl.execute('CREATE MATERIALIZED VIEW f_sum REFRESH FAST AS SELECT g, SUM(x) AS s, COUNT(*) AS n FROM f GROUP BY g');
    await t.db.raw('DROP TABLE f_sum');
    await t.db.raw('INSERT INTO f VALUES (3, 2, 5)');
    const o = expectKind(await runner.run({ mviewId: await mvId('f_sum'), trigger: 'MANUAL' }), 'SUCCESS');
    expect(o.method).toBe('COMPLETE');
    expect(await rows('SELECT * FROM f_sum')).toEqual(await rows('SELECT g, SUM(x) AS s, COUNT(*) AS n FROM f GROUP BY g'));
    await t.db.raw('INSERT INTO f VALUES (4, 2, 1)');
    expect(expectKind(await runner.run({ mviewId: await mvId('f_sum'), trigger: 'MANUAL' }), 'SUCCESS').method).toBe('FAST');
    await t.db.raw('DROP TABLE f_sum');
    await ddl.execute('DROP MATERIALIZED VIEW f_sum');
    await ddl.execute('DROP MATERIALIZED VIEW LOG ON f');
    expect(await t.db('mvs_mlogs').where({ base_table_name: 'f' }).first()).toBeUndefined();
  });

  it('DROP DATABASE: the MV and its log can be dropped, or the log re-created on the new table and the MV refreshed again', async () => {
    const setUp = async () => {
      await t.db.raw(`CREATE DATABASE \`${other}\``);
      await t.db.raw(`CREATE TABLE \`${other}\`.o (id INT PRIMARY KEY, g INT, x INT)`);
      await t.db.raw(`INSERT INTO \`${other}\`.o VALUES (1, 1, 1)`);
    };
    const def = `SELECT g, COUNT(*) AS n FROM \`${other}\`.o GROUP BY g`;
    await setUp();
    await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON \`${other}\`.o (g, x)`);
    await ddl.execute(`CREATE MATERIALIZED VIEW \`${other}\`.mv REFRESH FAST AS ${def}`);
    await t.db.raw(`DROP DATABASE \`${other}\``);
    // Clean-up works with everything already gone.
    await ddl.execute(`DROP MATERIALIZED VIEW \`${other}\`.mv`);
    await ddl.execute(`DROP MATERIALIZED VIEW LOG ON \`${other}\`.o`);
    expect(await t.db('mvs_mviews').where({ table_schema: other }).first()).toBeUndefined();

    // Again, but this time the database comes back and the orphaned log is replaced.
    await setUp();
    await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON \`${other}\`.o (g, x)`);
    await ddl.execute(`CREATE MATERIALIZED VIEW \`${other}\`.mv REFRESH FAST AS ${def}`);
    await t.db.raw(`DROP DATABASE \`${other}\``);
    await setUp();
    await t.db.raw(`INSERT INTO \`${other}\`.o VALUES (2, 2, 2)`);
    const re = await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON \`${other}\`.o (g, x)`);
    expect(re.message).toMatch(/re-created/);
    const id = await mvId('mv', other);
    expect(expectKind(await runner.run({ mviewId: id, trigger: 'SYSTEM', method: 'COMPLETE' }), 'SUCCESS').method).toBe('COMPLETE');
    await t.db.raw(`INSERT INTO \`${other}\`.o VALUES (3, 2, 3)`);
    expect(expectKind(await runner.run({ mviewId: id, trigger: 'MANUAL' }), 'SUCCESS').method).toBe('FAST');
    expect(await rows(`SELECT * FROM \`${other}\`.mv`)).toEqual(await rows(def));
  });
});

describe('DDL on a table with a long transaction open', () => {
  it('CREATE MATERIALIZED VIEW LOG gives up after the bound instead of stalling writers, and leaves nothing', async () => {
    await t.db.raw('CREATE TABLE busy (id INT PRIMARY KEY, v INT)');
    const holder = await t.db.transaction();
    await holder.raw('INSERT INTO busy VALUES (1, 1)');
    const before = await snapshot(t.db, t.database);
    const started = Date.now();
    // A second writer tries while the CREATE waits: it may wait behind it, but not longer.
    const writer = (async () => {
      await new Promise((r) => setTimeout(r, 200));
      const w0 = Date.now();
      await t.db.raw('INSERT INTO busy VALUES (2, 2)');
      return Date.now() - w0;
    })();
    const err = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON busy (v)').catch((e: unknown) => e);
    const took = Date.now() - started;
    expect((err as Error).message).toMatch(/could not create the materialized view log on .*busy: Lock wait timeout/);
    expect(took).toBeLessThan(10_000);
    expect(await writer).toBeLessThan(5_000);
    await holder.commit();
    const after = await snapshot(t.db, t.database);
    expect(after.triggers).toEqual(before.triggers);
    expect(after.rows.mvs_mlogs).toEqual(before.rows.mvs_mlogs);
  });
});

describe('versioned tables are explicit', () => {
  it('a report makes an ordinary table versioned (SKIPPED, "fresh per versions reported at"); --forget makes it ordinary again', async () => {
    await t.db.raw('CREATE TABLE plain (id INT PRIMARY KEY, v INT)');
    await t.db.raw('INSERT INTO plain VALUES (1, 5)');
    await ddl.execute('CREATE MATERIALIZED VIEW plain_sum NEXT 60 AS SELECT SUM(v) AS s FROM plain');
    const id = await mvId('plain_sum');
    const report = { table: `${t.database}.plain`, partitions: [{ partitionName: 'p', partitionId: 1, version: 1, versionTime: Date.now() }], dataChanged: true };
    await storeVersionReport(t.db, { schema: t.database, name: 'plain' }, report, systemClock);
    const due = async () => t.db('mvs_mview_refresh_info').where({ mview_id: id }).update({ next_time: new Date(Date.now() - 1000) });
    await due();
    // Version 1 with no entry counts as fresh: the scheduled run is SKIPPED although the data moved.
    await t.db.raw('UPDATE plain SET v = 100');
    expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED' }), 'SKIPPED');
    const st = (await listMviewStatus(t.db, undefined, { schema: t.database, name: 'plain_sum' }))[0]!;
    expect(st).toMatchObject({ freshness: 'fresh', versionsReportedAt: expect.stringMatching(/^\d{4}-/), schema: t.database, mview: 'plain_sum' });

    const out = await forgetVersions(t.db, { schema: t.database, name: 'plain' }, systemClock);
    expect(out.partitions).toBe(1);
    await due();
    expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED' }), 'SUCCESS');
    expect(await rows('SELECT * FROM plain_sum')).toEqual(['{"s":"100"}']);
    expect((await listMviewStatus(t.db, undefined, { schema: t.database, name: 'plain_sum' }))[0]).toMatchObject({ freshness: 'unversioned', versionsReportedAt: null });
  });

  it('an MV whose log has rows past its watermark is never SKIPPED', async () => {
    await t.db.raw('CREATE TABLE vl (id INT PRIMARY KEY, v INT)');
    await t.db.raw('INSERT INTO vl VALUES (1, 1)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON vl (v)');
    await ddl.execute('CREATE MATERIALIZED VIEW vl_sum REFRESH FAST NEXT 60 AS SELECT SUM(v) AS s, COUNT(*) AS n FROM vl');
    const id = await mvId('vl_sum');
    await storeVersionReport(
      t.db,
      { schema: t.database, name: 'vl' },
      { table: `${t.database}.vl`, partitions: [{ partitionName: 'p', partitionId: 1, version: 1, versionTime: Date.now() }], dataChanged: true },
      systemClock,
    );
    await t.db.raw('INSERT INTO vl VALUES (2, 41)');
    await t.db('mvs_mview_refresh_info').where({ mview_id: id }).update({ next_time: new Date(Date.now() - 1000) });
    expect(expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED' }), 'SUCCESS').method).toBe('FAST');
    expect(await rows('SELECT * FROM vl_sum')).toEqual(['{"s":"42","n":2}']);
    // Nothing new in the log: now it may be SKIPPED.
    await t.db('mvs_mview_refresh_info').where({ mview_id: id }).update({ next_time: new Date(Date.now() - 1000) });
    expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED' }), 'SKIPPED');
  });
});
