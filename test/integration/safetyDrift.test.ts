import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { DriftChecker } from '../../src/drift/driftChecker.js';
import { ValidationError } from '../../src/errors.js';
import type { RefreshOutcome, RefreshRunner } from '../../src/refresh/runner.js';
import { snapshot } from '../support/snapshot.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// Changes made behind mvsched's back (DESIGN.md §2; issue "Safety first"): a base table with an
// MV log dropped and re-created, renamed, truncated, a tracked column dropped or retyped, a
// cascading foreign key. The FAST MV must never report SUCCESS on data its log cannot have
// captured; writes must work again once the drift check ran; re-creating the log heals it.

let t: TestEnv;
let ddl: DdlExecutor;
let runner: RefreshRunner;
let drift: DriftChecker;
const systemRequests: Array<{ mviewId: number; key: string; reason: string }> = [];

beforeAll(async () => {
  t = await createTestEnv('safety_drift');
  await migrateLatest(t.db);
  ({ runner, ddl } = inProcessRefresh(t, { cutWaitMs: 2000, ddlWaitMs: 2000 }));
  drift = new DriftChecker({
    db: t.db,
    logger: t.logger,
    clock: systemClock,
    ddlWaitMs: 2000,
    requestSystemRefresh: async (mviewId, key, reason) => {
      systemRequests.push({ mviewId, key, reason });
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
const logOf = (table: string) => t.db('mvs_mlogs').where({ base_table_name: table }).first('mlog_id', 'state', 'broken_reason');
const triggersOn = async (table: string) =>
  (await t.db('information_schema.triggers').where({ trigger_schema: t.database, event_object_table: table }).pluck('trigger_name')).sort();
const refresh = (name: string, method?: 'COMPLETE' | 'FAST') =>
  mvId(name).then((id) => runner.run({ mviewId: id, trigger: 'MANUAL', ...(method ? { method } : {}) }));
function expectKind<K extends RefreshOutcome['kind']>(o: RefreshOutcome, kind: K): Extract<RefreshOutcome, { kind: K }> {
  expect(o.kind, JSON.stringify(o)).toBe(kind);
  return o as Extract<RefreshOutcome, { kind: K }>;
}
const DEF = (tbl: string) => `SELECT g, COUNT(*) AS n, SUM(x) AS sx FROM ${tbl} GROUP BY g`;

async function setUp(tbl: string, extraCols = '') {
  await t.db.raw(`CREATE TABLE ${tbl} (id INT PRIMARY KEY, g INT, x INT${extraCols})`);
  await t.db.raw(`INSERT INTO ${tbl} (id, g, x) VALUES (1, 1, 10), (2, 1, 20), (3, 2, 5)`);
  await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${tbl} (g, x${extraCols ? ', extra' : ''})`);
  await ddl.execute(`CREATE MATERIALIZED VIEW ${tbl}_fast REFRESH FAST AS ${DEF(tbl)}`);
  await ddl.execute(`CREATE MATERIALIZED VIEW ${tbl}_force REFRESH FORCE AS ${DEF(tbl)}`);
}

describe('a base table dropped and re-created under its log', () => {
  it('the FAST MV fails (never SUCCESS on the old groups), the log is BROKEN, and re-creating the log heals it', async () => {
    await setUp('rc');
    await t.db.raw('INSERT INTO rc VALUES (4, 3, 1)');
    expectKind(await refresh('rc_fast'), 'SUCCESS');
    await t.db.raw('DROP TABLE rc');
    await t.db.raw('CREATE TABLE rc (id INT PRIMARY KEY, g INT, x INT)');
    await t.db.raw('INSERT INTO rc VALUES (10, 7, 100), (11, 7, 1)');

    // Before any drift check: the run itself sees the log's triggers are not on the table.
    const f1 = expectKind(await refresh('rc_fast'), 'FAILED');
    expect(f1.error).toMatch(/materialized view log on .*\.rc is broken \(base table .*\.rc was dropped and re-created/);
    expect(f1.error).toMatch(/re-create it with CREATE MATERIALIZED VIEW LOG ON/);
    expect(await rows('SELECT * FROM rc_fast')).not.toEqual(await rows(DEF('rc')));

    const report = await drift.check();
    expect(report.broken).toEqual([{ mlogId: Number((await logOf('rc')).mlog_id), reason: expect.stringMatching(/rc was dropped and re-created/) }]);
    expect(await logOf('rc')).toMatchObject({ state: 'BROKEN' });
    expectKind(await refresh('rc_fast'), 'FAILED');
    // FORCE refreshes COMPLETE from the definition.
    const force = expectKind(await refresh('rc_force'), 'SUCCESS');
    expect(force.method).toBe('COMPLETE');
    expect(await rows('SELECT * FROM rc_force')).toEqual(await rows(DEF('rc')));

    const re = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON rc (g, x)');
    expect(re.message).toMatch(/re-created materialized view log .* \(2 materialized views get one complete refresh, then FAST again\)/);
    expect(await logOf('rc')).toMatchObject({ state: 'OK', broken_reason: null });
    expect(await triggersOn('rc')).toHaveLength(3);
    systemRequests.length = 0;
    const r2 = await drift.check();
    expect(r2.broken).toEqual([]);
    expect(systemRequests.map((s) => s.mviewId).sort()).toEqual([await mvId('rc_fast'), await mvId('rc_force')].sort());
    expect(systemRequests[0]!.reason).toMatch(/re-created/);
    for (const name of ['rc_fast', 'rc_force']) {
      const id = await mvId(name);
      expect(expectKind(await runner.run({ mviewId: id, trigger: 'SYSTEM', method: 'COMPLETE' }), 'SUCCESS').method).toBe('COMPLETE');
    }
    expect((await t.db('mvs_mview_refresh_hist').where({ mview_id: await mvId('rc_fast'), refresh_trigger: 'SYSTEM' })).length).toBe(1);
    await t.db.raw('INSERT INTO rc VALUES (12, 8, 3)');
    await t.db.raw('UPDATE rc SET g = 8 WHERE id = 10');
    for (const name of ['rc_fast', 'rc_force']) {
      expect(expectKind(await refresh(name), 'SUCCESS').method).toBe('FAST');
      expect(await rows(`SELECT * FROM ${name}`)).toEqual(await rows(DEF('rc')));
    }
    expect((await drift.check()).systemRefreshes).toEqual([]);
  });
});

describe('a base table renamed', () => {
  it('is detected by identity: the triggers it took along are dropped, the log BROKEN', async () => {
    await setUp('rn');
    await t.db.raw('RENAME TABLE rn TO rn_old');
    expectKind(await refresh('rn_fast'), 'FAILED');
    const report = await drift.check();
    expect(report.broken.map((b) => b.reason)).toContain(`base table ${t.database}.rn was renamed to ${t.database}.rn_old`);
    expect(await triggersOn('rn_old')).toEqual([]);
    // Writes to the renamed table work and log nothing.
    await t.db.raw('INSERT INTO rn_old VALUES (50, 1, 1)');
    expect(await rows('SELECT COUNT(*) AS n FROM `mlog$rn` WHERE id = 50')).toEqual(['{"n":0}']);
  });
});

describe('a tracked column dropped, renamed or retyped', () => {
  it('writes fail only until the drift check drops the triggers; FAST MVs fail with the reason from then on', async () => {
    await setUp('dc', ', extra INT');
    await t.db.raw('ALTER TABLE dc DROP COLUMN extra');
    // The drift-check window: the trigger names a column that no longer exists.
    await expect(t.db.raw('INSERT INTO dc (id, g, x) VALUES (20, 1, 1)')).rejects.toThrow(/Unknown column 'extra'/);
    const report = await drift.check();
    expect(report.broken.map((b) => b.reason)).toContain(`column extra of ${t.database}.dc, which its log tracks, was dropped or renamed`);
    await t.db.raw('INSERT INTO dc (id, g, x) VALUES (20, 1, 1)');
    await t.db.raw('UPDATE dc SET x = x + 1');
    await t.db.raw('DELETE FROM dc WHERE id = 1');
    const f = expectKind(await refresh('dc_fast'), 'FAILED');
    expect(f.error).toMatch(/broken \(column extra of .*dc, which its log tracks, was dropped or renamed\)/);
    expect(expectKind(await refresh('dc_force'), 'SUCCESS').method).toBe('COMPLETE');
    expect(await rows('SELECT * FROM dc_force')).toEqual(await rows(DEF('dc')));
    const st = await t.db('mvs_mview_refresh_info').where({ mview_id: await mvId('dc_fast') }).first('last_refresh_result', 'last_failed_reason');
    expect(st.last_refresh_result).toBe('FAILED');
  });

  it('a renamed column and a widened type are caught the same way', async () => {
    await t.db.raw('CREATE TABLE rcol (id INT PRIMARY KEY, g INT, s VARCHAR(5))');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON rcol (g, s)');
    await t.db.raw('ALTER TABLE rcol MODIFY s VARCHAR(50)');
    // The log keeps VARCHAR(5): a longer value would fail every write in strict mode.
    await expect(t.db.raw("INSERT INTO rcol VALUES (1, 1, 'a value longer than five')")).rejects.toThrow(/too long/);
    expect((await drift.check()).broken.map((b) => b.reason)).toContain(`column s of ${t.database}.rcol changed type from varchar(5) to varchar(50)`);
    await t.db.raw("INSERT INTO rcol VALUES (1, 1, 'a value longer than five')");

    await t.db.raw('CREATE TABLE rcol2 (id INT PRIMARY KEY, g INT)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON rcol2 (g)');
    await t.db.raw('ALTER TABLE rcol2 RENAME COLUMN g TO g2');
    await expect(t.db.raw('INSERT INTO rcol2 VALUES (1, 1)')).rejects.toThrow(/Unknown column 'g'/);
    expect((await drift.check()).broken.map((b) => b.reason)).toContain(`column g of ${t.database}.rcol2, which its log tracks, was dropped or renamed`);
    await t.db.raw('INSERT INTO rcol2 VALUES (1, 1)');
  });
});

describe('a table truncated behind the log', () => {
  it('forces a complete refresh: the run that meets it refreshes COMPLETE, the drift check asks for the others (SYSTEM)', async () => {
    await setUp('tr');
    expectKind(await refresh('tr_fast'), 'SUCCESS'); // records the table's identity
    expectKind(await refresh('tr_force'), 'SUCCESS');
    await t.db.raw('TRUNCATE TABLE tr');
    await t.db.raw('INSERT INTO tr VALUES (30, 5, 5)');
    const o = expectKind(await refresh('tr_fast'), 'SUCCESS');
    expect(o.method).toBe('COMPLETE');
    expect(await rows('SELECT * FROM tr_fast')).toEqual(await rows(DEF('tr')));
    systemRequests.length = 0;
    const report = await drift.check();
    expect(report.broken).toEqual([]);
    expect(systemRequests.map((s) => s.mviewId)).toEqual([await mvId('tr_force')]);
    expect(systemRequests[0]!.reason).toMatch(/truncated or rebuilt/);
    expect(systemRequests[0]!.key).toMatch(new RegExp(`^system-${await mvId('tr_force')}-\\d+$`));
    await runner.run({ mviewId: await mvId('tr_force'), trigger: 'SYSTEM', method: 'COMPLETE' });
    expect(await rows('SELECT * FROM tr_force')).toEqual(await rows(DEF('tr')));
    systemRequests.length = 0;
    await drift.check();
    expect(systemRequests).toEqual([]);
  });
});

describe('cascading foreign keys', () => {
  it('a log on a child of ON DELETE CASCADE is refused, and nothing is written', async () => {
    await t.db.raw('CREATE TABLE parent (id INT PRIMARY KEY)');
    await t.db.raw('CREATE TABLE child (id INT PRIMARY KEY, p INT, CONSTRAINT fk_child FOREIGN KEY (p) REFERENCES parent (id) ON DELETE CASCADE)');
    const before = await snapshot(t.db, t.database);
    const err = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON child (p)').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toMatch(/child of foreign key fk_child \(ON DELETE CASCADE\) on parent: the rows that key changes fire no triggers/);
    expect(await snapshot(t.db, t.database)).toEqual(before);
  });

  it('a cascading key added later makes the log BROKEN', async () => {
    await t.db.raw('CREATE TABLE child2 (id INT PRIMARY KEY, p INT)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON child2 (p)');
    await t.db.raw('ALTER TABLE child2 ADD CONSTRAINT fk_child2 FOREIGN KEY (p) REFERENCES parent (id) ON UPDATE SET NULL');
    expect((await drift.check()).broken.map((b) => b.reason)).toContain(
      `${t.database}.child2 became the child of foreign key fk_child2 (ON UPDATE SET NULL) on parent: the rows it changes fire no triggers`,
    );
  });
});

describe('the drift check', () => {
  it('leaves a log that is being created alone, and breaks one whose creation died half-way', async () => {
    await t.db.raw('CREATE TABLE mk (id INT PRIMARY KEY, v INT)');
    // The state a CREATE MATERIALIZED VIEW LOG is in between its metadata and its triggers.
    const [id] = (await t.db('mvs_mlogs').insert({
      table_schema: t.database,
      base_table_name: 'mk',
      mlog_name: 'mlog$mk',
      mlog_columns: '["v"]',
      pk_columns: '["id"]',
      purge_method: 'MANUAL',
      created_at: new Date(),
      mlog_modify_time: new Date(),
      state: 'CREATING',
    })) as number[];
    expect((await drift.check()).broken.map((b) => b.mlogId)).not.toContain(id);
    expect((await t.db('mvs_mlogs').where({ mlog_id: id }).first('state')).state).toBe('CREATING');
    await t.db('mvs_mlogs').where({ mlog_id: id }).update({ mlog_modify_time: new Date(Date.now() - 120_000) });
    expect((await drift.check()).broken.map((b) => b.mlogId)).toContain(id);
    expect(await t.db('mvs_mlogs').where({ mlog_id: id }).first('state', 'broken_reason')).toEqual({ state: 'BROKEN', broken_reason: expect.stringMatching(/creation did not finish/) });
    // A broken log is replaced by CREATE.
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON mk (v)');
    expect((await t.db('mvs_mlogs').where({ mlog_id: id }).first('state')).state).toBe('OK');
    expect(await triggersOn('mk')).toHaveLength(3);
  });

  it('puts back a deleted gate row, and costs a fixed number of queries whatever the number of logs', async () => {
    const before = await drift.check();
    const ok = await t.db('mvs_mlogs').where({ state: 'OK' }).first('mlog_id');
    await t.db('mvs_mlog_gates').where({ mlog_id: ok.mlog_id }).delete();
    await drift.check();
    expect(await t.db('mvs_mlog_gates').where({ mlog_id: ok.mlog_id }).first()).toBeDefined();
    for (let i = 0; i < 12; i++) {
      await t.db.raw(`CREATE TABLE many_${i} (id INT PRIMARY KEY, v INT)`);
      await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON many_${i} (v)`);
    }
    const after = await drift.check();
    expect(after.checked).toBe(before.checked + 12);
    expect(after.queries).toBe(before.queries);
    expect(after.broken).toEqual([]);
  });
});
