import { createConnection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { parseDatabaseUrl } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { DriftChecker } from '../../src/drift/driftChecker.js';
import { explainMv } from '../../src/fast/explain.js';
import type { RefreshOutcome, RefreshRunner } from '../../src/refresh/runner.js';
import { snapshot } from '../support/snapshot.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// Everything that holds for one-table logs holds per log for an MV over a join (DESIGN.md §2
// "FAST refresh over joins", "Changes made behind mvsched's back"): an MV over several logs is
// FAST only while every one of them is OK and its table unmoved; a broken log, a truncated
// table, a cut that keeps timing out, a dropped or re-created log on ANY of its tables is
// handled as for a one-table MV, and purge keeps every row some consumer still needs.

const CUT_WAIT_MS = 400;
let t: TestEnv;
let ddl: DdlExecutor;
let runner: RefreshRunner;
let drift: DriftChecker;
const systemRequests: Array<{ mviewId: number; reason: string }> = [];

beforeAll(async () => {
  t = await createTestEnv('fast_join_safety');
  await migrateLatest(t.db);
  ({ runner, ddl } = inProcessRefresh(t, { cutWaitMs: CUT_WAIT_MS, ddlWaitMs: 2000 }));
  drift = new DriftChecker({
    db: t.db,
    logger: t.logger,
    clock: systemClock,
    ddlWaitMs: 2000,
    requestSystemRefresh: async (mviewId, _key, reason) => {
      systemRequests.push({ mviewId, reason });
    },
  });
});

afterAll(async () => {
  await t?.close();
});

type Row = Record<string, unknown>;
async function rows(sql: string): Promise<string[]> {
  const [r] = (await t.db.raw(sql)) as [Row[]];
  return r.map((x) => JSON.stringify(x)).sort();
}
const mvId = async (name: string) => Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);
const refresh = (name: string, method?: 'COMPLETE' | 'FAST') => mvId(name).then((id) => runner.run({ mviewId: id, trigger: 'MANUAL', ...(method ? { method } : {}) }));
function expectKind<K extends RefreshOutcome['kind']>(o: RefreshOutcome, kind: K): Extract<RefreshOutcome, { kind: K }> {
  expect(o.kind, JSON.stringify(o)).toBe(kind);
  return o as Extract<RefreshOutcome, { kind: K }>;
}
const links = async (name: string) =>
  (await t.db('mvs_mview_base_tables').where({ mview_id: await mvId(name) }).whereNotNull('mlog_id').orderBy('base_table_name').select('base_table_name', 'consumed_watermark')).map(
    (r: Row) => [String(r.base_table_name), Number(r.consumed_watermark)],
  );

const AGG = (p: string) => `SELECT d.region, COUNT(*) AS n, SUM(f.x) AS sx FROM ${p}_f f JOIN ${p}_d d ON f.d = d.id GROUP BY d.region`;
const SPJ = (p: string) => `SELECT f.id, d.id AS did, f.x, d.region FROM ${p}_f f, ${p}_d d WHERE f.d = d.id`;

/** A fact and a dimension with logs, a REFRESH FAST aggregate join MV and a REFRESH FORCE SPJ join MV. */
async function star(p: string): Promise<void> {
  await t.db.raw(`CREATE TABLE ${p}_f (id INT PRIMARY KEY, d INT NULL, x INT NULL, KEY (d))`);
  await t.db.raw(`CREATE TABLE ${p}_d (id INT PRIMARY KEY, region VARCHAR(8) NULL)`);
  await t.db.raw(`INSERT INTO ${p}_d VALUES (1, 'eu'), (2, 'us'), (3, 'asia')`);
  await t.db.raw(`INSERT INTO ${p}_f VALUES (1, 1, 10), (2, 1, 20), (3, 2, 5), (4, 3, 1), (5, NULL, 7)`);
  await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${p}_f (d, x)`);
  await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${p}_d (region)`);
  await ddl.execute(`CREATE MATERIALIZED VIEW ${p}_fast REFRESH FAST AS ${AGG(p)}`);
  await ddl.execute(`CREATE MATERIALIZED VIEW ${p}_force REFRESH FORCE AS ${SPJ(p)}`);
}

async function expectRight(p: string): Promise<void> {
  expect(await rows(`SELECT * FROM ${p}_fast`)).toEqual(await rows(AGG(p)));
  expect(await rows(`SELECT * FROM ${p}_force`)).toEqual(await rows(SPJ(p)));
}

describe('links: one per (MV, table), one watermark per log', () => {
  it('a join MV consumes every log it reads; a self-join one log; ALTER COMPLETE releases them all, FORCE takes them again', async () => {
    await star('ln');
    expect((await links('ln_fast')).map((l) => l[0])).toEqual(['ln_d', 'ln_f']);
    await ddl.execute('CREATE MATERIALIZED VIEW ln_self REFRESH FAST AS SELECT a.id, b.id AS bid FROM ln_f a JOIN ln_f b ON a.d = b.d AND a.id < b.id');
    expect((await links('ln_self')).map((l) => l[0])).toEqual(['ln_f']);
    await t.db.raw('INSERT INTO ln_f VALUES (6, 1, 3)');
    expect(expectKind(await refresh('ln_self'), 'SUCCESS').method).toBe('FAST');
    expect(await rows('SELECT * FROM ln_self')).toEqual(await rows('SELECT a.id, b.id AS bid FROM ln_f a JOIN ln_f b ON a.d = b.d AND a.id < b.id'));

    await ddl.execute('ALTER MATERIALIZED VIEW ln_force REFRESH COMPLETE');
    expect(await links('ln_force')).toEqual([]);
    await ddl.execute('ALTER MATERIALIZED VIEW ln_force REFRESH FORCE');
    expect((await links('ln_force')).map((l) => l[0])).toEqual(['ln_d', 'ln_f']);
    expect(expectKind(await refresh('ln_force'), 'SUCCESS').method).toBe('COMPLETE'); // records the watermarks
    await t.db.raw("UPDATE ln_d SET region = 'eu' WHERE id = 2");
    expect(expectKind(await refresh('ln_force'), 'SUCCESS').method).toBe('FAST');
    expect(expectKind(await refresh('ln_fast'), 'SUCCESS').method).toBe('FAST');
    await expectRight('ln');
  });
});

describe('history of a join FAST run', () => {
  const hist = async (refreshId: number) => (await t.db('mvs_mview_refresh_hist').where({ refresh_id: refreshId }).first()) as Row & { data_time: Date };
  const dbNow = async () => ((await t.db.raw('SELECT NOW(3) AS n')) as [Array<{ n: Date }>])[0][0]!.n.getTime();

  it('data time of the cut over every log, rows in and out; the log range only for an MV over one log (a self-join)', async () => {
    await star('hj');
    await ddl.execute('CREATE MATERIALIZED VIEW hj_self REFRESH FAST AS SELECT a.id, b.id AS bid, a.x + b.x AS s FROM hj_f a JOIN hj_f b ON a.d = b.d AND a.id < b.id');
    const selfFrom = Number((await links('hj_self'))[0]![1]);
    await t.db.raw('INSERT INTO hj_f VALUES (6, 2, 4)'); // group us grows; a new pair (3, 6)
    await t.db.raw("UPDATE hj_d SET region = 'eu' WHERE id = 3"); // group asia goes, eu grows
    const before = await dbNow();
    const agg = expectKind(await refresh('hj_fast'), 'SUCCESS');
    const spj = expectKind(await refresh('hj_force'), 'SUCCESS');
    const self = expectKind(await refresh('hj_self'), 'SUCCESS');
    const after = await dbNow();
    await expectRight('hj');

    // Two groups updated (each one row out, one in), one deleted.
    const ha = await hist(agg.refreshId);
    expect(ha).toMatchObject({ refresh_method: 'FAST', rows_inserted: 2, rows_deleted: 3, watermark_from: null, watermark_to: null });
    // (4, 3, 1, asia) leaves, (4, 3, 1, eu) and (6, 2, 4, us) arrive.
    expect(await hist(spj.refreshId)).toMatchObject({ refresh_method: 'FAST', rows_inserted: 2, rows_deleted: 1, watermark_from: null, watermark_to: null });
    const hs = await hist(self.refreshId);
    const selfTo = Number((await links('hj_self'))[0]![1]);
    expect(selfTo).toBeGreaterThan(selfFrom);
    expect(hs).toMatchObject({ refresh_method: 'FAST', rows_inserted: 1, rows_deleted: 0, watermark_from: selfFrom, watermark_to: selfTo });
    for (const h of [ha, hs]) {
      expect(h.data_time.getTime()).toBeGreaterThanOrEqual(before);
      expect(h.data_time.getTime()).toBeLessThanOrEqual(after);
    }
    const info = await t.db('mvs_mview_refresh_info').where({ mview_id: await mvId('hj_fast') }).first('data_time');
    expect((info.data_time as Date).getTime()).toBe(ha.data_time.getTime());
  });
});

describe('a dimension table dropped and re-created under its log', () => {
  it('FAST fails naming the dimension, FORCE refreshes COMPLETE; re-creating that log: one complete refresh, then FAST', async () => {
    await star('rc');
    await t.db.raw('INSERT INTO rc_f VALUES (6, 2, 4)');
    expectKind(await refresh('rc_fast'), 'SUCCESS');
    await t.db.raw('DROP TABLE rc_d');
    await t.db.raw('CREATE TABLE rc_d (id INT PRIMARY KEY, region VARCHAR(8) NULL)');
    await t.db.raw("INSERT INTO rc_d VALUES (1, 'mars'), (2, 'moon')");

    const f1 = expectKind(await refresh('rc_fast'), 'FAILED');
    expect(f1.error).toMatch(/materialized view log on .*\.rc_d is broken \(base table .*\.rc_d was dropped and re-created/);
    expect(expectKind(await refresh('rc_force'), 'SUCCESS').method).toBe('COMPLETE');
    expect(await rows('SELECT * FROM rc_force')).toEqual(await rows(SPJ('rc')));
    const report = await drift.check();
    expect(report.broken.map((b) => b.reason)).toEqual([expect.stringMatching(/rc_d was dropped and re-created/)]);
    expectKind(await refresh('rc_fast'), 'FAILED');

    const re = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON rc_d (region)');
    expect(re.message).toMatch(/\(1 materialized view gets? one complete refresh, then FAST again\)|\(\d materialized views get one complete refresh/);
    systemRequests.length = 0;
    await drift.check();
    expect(systemRequests.map((s) => s.mviewId)).toContain(await mvId('rc_fast'));
    expect(expectKind(await runner.run({ mviewId: await mvId('rc_fast'), trigger: 'SYSTEM', method: 'COMPLETE' }), 'SUCCESS').method).toBe('COMPLETE');
    // The FORCE MV lost FAST when it fell back; ALTER makes it consume the logs again.
    await ddl.execute('ALTER MATERIALIZED VIEW rc_force REFRESH FORCE');
    expectKind(await refresh('rc_force'), 'SUCCESS');
    await t.db.raw("UPDATE rc_d SET region = 'eu' WHERE id = 2");
    await t.db.raw('INSERT INTO rc_f VALUES (7, 1, 100)');
    for (const name of ['rc_fast', 'rc_force']) expect(expectKind(await refresh(name), 'SUCCESS').method).toBe('FAST');
    await expectRight('rc');
  });
});

describe('a dimension truncated behind its log', () => {
  it('the run that meets it refreshes COMPLETE; the drift check asks for the other MV (SYSTEM)', async () => {
    await star('tr');
    expectKind(await refresh('tr_fast'), 'SUCCESS');
    expectKind(await refresh('tr_force'), 'SUCCESS');
    await t.db.raw('TRUNCATE TABLE tr_d');
    await t.db.raw("INSERT INTO tr_d VALUES (1, 'new')");
    expect(expectKind(await refresh('tr_fast'), 'SUCCESS').method).toBe('COMPLETE');
    expect(await rows('SELECT * FROM tr_fast')).toEqual(await rows(AGG('tr')));
    systemRequests.length = 0;
    await drift.check();
    expect(systemRequests.map((s) => s.mviewId)).toEqual([await mvId('tr_force')]);
    expect(systemRequests[0]!.reason).toMatch(/tr_d was truncated or rebuilt/);
    await runner.run({ mviewId: await mvId('tr_force'), trigger: 'SYSTEM', method: 'COMPLETE' });
    await t.db.raw('INSERT INTO tr_f VALUES (9, 1, 9)');
    for (const name of ['tr_fast', 'tr_force']) expect(expectKind(await refresh(name), 'SUCCESS').method).toBe('FAST');
    await expectRight('tr');
  });
});

describe('a cut that keeps timing out on one of the logs', () => {
  it('FAST fails with the reason, FORCE falls back to COMPLETE after repeated give-ups, FAST resumes', async () => {
    await star('ct');
    // A committed change to apply: with nothing past its watermarks a FAST run takes no cut.
    await t.db.raw('UPDATE ct_f SET d = 2 WHERE id = 1');
    const c = parseDatabaseUrl(t.databaseUrl);
    const holder = await createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database });
    try {
      await holder.query('START TRANSACTION');
      await holder.query("UPDATE ct_d SET region = 'held' WHERE id = 3");
      const f = expectKind(await refresh('ct_fast'), 'FAILED');
      expect(f.error).toMatch(new RegExp(`could not take a consistent cut of .*mlog\\$ct_d.* within ${CUT_WAIT_MS} ms`));
      expectKind(await refresh('ct_force'), 'FAILED');
      const fallback = expectKind(await refresh('ct_force'), 'SUCCESS');
      expect(fallback.method).toBe('COMPLETE');
      await holder.query('COMMIT');
    } finally {
      await holder.end();
    }
    expect(expectKind(await refresh('ct_fast'), 'SUCCESS').method).toBe('FAST');
    await ddl.execute('ALTER MATERIALIZED VIEW ct_force REFRESH FORCE');
    await t.db('mvs_mview_refresh_info').where({ mview_id: await mvId('ct_force') }).update({ cut_retry_after: null });
    expectKind(await refresh('ct_force'), 'SUCCESS');
    await t.db.raw('UPDATE ct_f SET d = 3 WHERE id = 1');
    for (const name of ['ct_fast', 'ct_force']) expect(expectKind(await refresh(name), 'SUCCESS').method).toBe('FAST');
    await expectRight('ct');
  });
});

describe('dropping the log of one of the tables', () => {
  it('is refused while a FAST join MV reads it; a FORCE join MV lets go of every log and no longer holds purges', async () => {
    await star('dl');
    await ddl.execute('DROP MATERIALIZED VIEW dl_fast');
    await t.db.raw('INSERT INTO dl_f VALUES (6, 1, 1)');
    await ddl.execute('CREATE MATERIALIZED VIEW dl_fast2 REFRESH FAST AS ' + AGG('dl'));
    await expect(ddl.execute('DROP MATERIALIZED VIEW LOG ON dl_d')).rejects.toThrow(/REFRESH FAST materialized view .*dl_fast2 depends on it/);
    await ddl.execute('DROP MATERIALIZED VIEW dl_fast2');
    await ddl.execute('DROP MATERIALIZED VIEW LOG ON dl_d');
    expect(await links('dl_force')).toEqual([]);
    await t.db.raw('INSERT INTO dl_f VALUES (7, 2, 2)');
    expect(expectKind(await refresh('dl_force'), 'SUCCESS').method).toBe('COMPLETE');
    expect(await rows('SELECT * FROM dl_force')).toEqual(await rows(SPJ('dl')));
    const purged = await ddl.execute('PURGE MATERIALIZED VIEW LOG ON dl_f');
    expect(purged.message).toMatch(/purged .* \(\d+ rows/);
    expect(await rows('SELECT COUNT(*) AS n FROM `mlog$dl_f`')).toEqual(['{"n":0}']);
  });
});

describe('purge of a log shared by a one-table MV and join MVs', () => {
  it('goes to the lowest watermark over all of them; every MV stays right', async () => {
    await star('pg');
    await ddl.execute('CREATE MATERIALIZED VIEW pg_one REFRESH FAST AS SELECT d, COUNT(*) AS n, SUM(x) AS sx FROM pg_f GROUP BY d');
    await t.db.raw('INSERT INTO pg_f VALUES (10, 1, 1), (11, 2, 2)');
    await t.db.raw("UPDATE pg_d SET region = 'xx' WHERE id = 1");
    expectKind(await refresh('pg_one'), 'SUCCESS');
    expectKind(await refresh('pg_fast'), 'SUCCESS');
    // pg_force has not consumed the new rows: its watermark on pg_f holds them.
    const held = Math.min(...(await Promise.all(['pg_one', 'pg_fast', 'pg_force'].map(async (n) => (await links(n)).find((l) => l[0] === 'pg_f')![1] as number))));
    const out = await ddl.execute('PURGE MATERIALIZED VIEW LOG ON pg_f');
    expect(out.message).toMatch(new RegExp(`up to ${held}\\)`));
    expect(await rows('SELECT COUNT(*) AS n FROM `mlog$pg_f` WHERE `_mlog$seq` > ' + held)).not.toEqual(['{"n":0}']);
    await ddl.execute('PURGE MATERIALIZED VIEW LOG ON pg_d');
    for (const name of ['pg_force', 'pg_fast']) expect(expectKind(await refresh(name), 'SUCCESS').method).toBe('FAST');
    await expectRight('pg');
    expect(await rows('SELECT * FROM pg_one')).toEqual(await rows('SELECT d, COUNT(*) AS n, SUM(x) AS sx FROM pg_f GROUP BY d'));
    await ddl.execute('PURGE MATERIALIZED VIEW LOG ON pg_f');
    expect(await rows('SELECT COUNT(*) AS n FROM `mlog$pg_f`')).toEqual(['{"n":0}']);
  });
});

describe('foreign keys', () => {
  it('the child of a cascading key can have no log, so a join over it is not fast-refreshable, and says why', async () => {
    await t.db.raw('CREATE TABLE fk_p (id INT PRIMARY KEY, name VARCHAR(8))');
    await t.db.raw('CREATE TABLE fk_c (id INT PRIMARY KEY, p INT, v INT, CONSTRAINT fk_cascade FOREIGN KEY (p) REFERENCES fk_p (id) ON DELETE CASCADE)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON fk_p (name)');
    await expect(ddl.execute('CREATE MATERIALIZED VIEW LOG ON fk_c (p, v)')).rejects.toThrow(/child of foreign key fk_cascade \(ON DELETE CASCADE\)/);
    const def = 'SELECT p.name, SUM(c.v) AS s, COUNT(*) AS n FROM fk_c c JOIN fk_p p ON c.p = p.id GROUP BY p.name';
    expect(await explainMv(t.db, def, t.database)).toEqual({ fastRefreshable: false, reason: expect.stringMatching(/\.fk_c has no materialized view log/) });
    const before = await snapshot(t.db, t.database);
    await expect(ddl.execute(`CREATE MATERIALIZED VIEW fk_mv REFRESH FAST AS ${def}`)).rejects.toThrow(/fk_c has no materialized view log/);
    expect(await snapshot(t.db, t.database)).toEqual(before);
  });

  it('without a cascade, deleting a dimension row many fact rows use is an ordinary delete: their joined rows go', async () => {
    await star('dd');
    await t.db.raw('INSERT INTO dd_f SELECT id + 100, 1, id FROM dd_f');
    await t.db.raw('DELETE FROM dd_d WHERE id = 1');
    for (const name of ['dd_fast', 'dd_force']) expect(expectKind(await refresh(name), 'SUCCESS').method).toBe('FAST');
    await expectRight('dd');
    expect(await rows("SELECT COUNT(*) AS n FROM dd_fast WHERE region = 'eu'")).toEqual(['{"n":0}']);
    await t.db.raw("INSERT INTO dd_d VALUES (1, 'eu')");
    for (const name of ['dd_fast', 'dd_force']) expect(expectKind(await refresh(name), 'SUCCESS').method).toBe('FAST');
    await expectRight('dd');
  });
});

describe('explain-mv for joins', () => {
  it('describes the join, its logs and the rules a refresh follows; names a missing column per table', async () => {
    await t.db.raw('CREATE TABLE ex_f (id INT PRIMARY KEY, d INT, x INT, secret INT)');
    await t.db.raw('CREATE TABLE ex_d (id INT PRIMARY KEY, region VARCHAR(8))');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON ex_f (d, x)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON ex_d (region)');
    const r = await explainMv(t.db, 'SELECT d.region, COUNT(*) AS n FROM ex_f f JOIN ex_d d ON f.d = d.id GROUP BY d.region', t.database);
    expect(r).toMatchObject({
      fastRefreshable: true,
      kind: 'aggregate',
      join: [
        { alias: 'f', table: `${t.database}.ex_f`, mlog: `${t.database}.mlog$ex_f` },
        { alias: 'd', table: `${t.database}.ex_d`, mlog: `${t.database}.mlog$ex_d` },
      ],
    });
    expect(r.rules!.join('\n')).toMatch(/one consistent cut of all 2 logs/);
    expect(r.rules!.join('\n')).toMatch(/before it as they are at the cut and the tables after it as they were before the changes/);
    expect(await explainMv(t.db, 'SELECT f.id, d.id AS did, f.secret FROM ex_f f JOIN ex_d d ON f.d = d.id', t.database)).toEqual({
      fastRefreshable: false,
      reason: `column secret of ${t.database}.ex_f is not in its materialized view log`,
    });
    expect(await explainMv(t.db, 'SELECT f.id, d.region FROM ex_f f JOIN ex_d d ON f.d = d.id', t.database)).toEqual({
      fastRefreshable: false,
      reason: expect.stringMatching(/must include the primary key column d\.id of .*ex_d as a plain column/),
    });
  });
});
