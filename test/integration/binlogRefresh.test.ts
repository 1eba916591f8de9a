import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCapture } from '../../src/app/processes.js';
import { systemClock } from '../../src/clock.js';
import { createDb } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { DriftChecker } from '../../src/drift/driftChecker.js';
import { CaptureLagError, takeCut, type CutLog } from '../../src/mlog/cut.js';
import type { Closeable } from '../../src/process/lifecycle.js';
import type { RefreshOutcome, RefreshRunner } from '../../src/refresh/runner.js';
import { prng, testSeed } from '../support/prng.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// MV logs filled from the binary log (DESIGN.md §2 "Change capture from the binary log"): made by
// CREATE ... USING BINLOG, refreshed FAST and COMPLETE through a cut matched to a binlog
// position, with `mvsched capture` running in this process (started and stopped by the tests);
// what happens when capture is down or behind, DDL on captured tables, and the drift check.

let t: TestEnv;
let ddl: DdlExecutor;
let runner: RefreshRunner;
let drift: DriftChecker;
let capture: Closeable[] = [];
const systemRequests: number[] = [];

beforeAll(async () => {
  t = await createTestEnv('binlog_refresh', { MVS_NODE_TTL_S: '2' });
  await migrateLatest(t.db);
  ({ runner, ddl } = inProcessRefresh(t, { cutWaitMs: 2000, ddlWaitMs: 2000 }));
  drift = new DriftChecker({
    db: t.db,
    logger: t.logger,
    clock: systemClock,
    ddlWaitMs: 2000,
    requestSystemRefresh: async (mviewId) => {
      systemRequests.push(mviewId);
    },
  });
  await startCap();
});

afterAll(async () => {
  await stopCap();
  await t?.close();
});

async function startCap(): Promise<void> {
  capture = await startCapture(t.config, t.logger);
}
async function stopCap(): Promise<void> {
  for (const c of capture.reverse()) await c.close();
  capture = [];
}

type Row = Record<string, unknown>;
async function rows(sql: string, db = t.db): Promise<string[]> {
  const [r] = (await db.raw(sql)) as [Row[]];
  return r.map((x) => JSON.stringify(x)).sort();
}
const mvId = async (name: string) => Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);
const logOf = (table: string) =>
  t.db('mvs_mlogs').where({ base_table_name: table }).first('mlog_id', 'state', 'broken_reason', 'capture_mode', 'table_schema', 'mlog_name') as Promise<
    { mlog_id: number; state: string; broken_reason: string | null; capture_mode: string; table_schema: string; mlog_name: string } | undefined
  >;
const refresh = (name: string, method?: 'COMPLETE' | 'FAST') => mvId(name).then((id) => runner.run({ mviewId: id, trigger: 'MANUAL', ...(method ? { method } : {}) }));
function expectKind<K extends RefreshOutcome['kind']>(o: RefreshOutcome, kind: K): Extract<RefreshOutcome, { kind: K }> {
  expect(o.kind, JSON.stringify(o)).toBe(kind);
  return o as Extract<RefreshOutcome, { kind: K }>;
}
const DEF = (tbl: string) => `SELECT g, COUNT(*) AS n, SUM(x) AS sx, MAX(x) AS mx FROM ${tbl} GROUP BY g`;
const cutLog = async (table: string): Promise<CutLog> => {
  const l = (await logOf(table))!;
  return { mlog_id: Number(l.mlog_id), table_schema: l.table_schema, mlog_name: l.mlog_name };
};

async function setUp(tbl: string, opts: { purge?: string } = {}): Promise<void> {
  await t.db.raw(`CREATE TABLE ${tbl} (id INT PRIMARY KEY, g INT, x INT, other INT)`);
  await t.db.raw(`INSERT INTO ${tbl} (id, g, x) VALUES (1, 1, 10), (2, 1, 20), (3, 2, 5)`);
  await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${tbl} (g, x) ${opts.purge ?? ''} USING BINLOG`);
  await ddl.execute(`CREATE MATERIALIZED VIEW ${tbl}_fast REFRESH FAST AS ${DEF(tbl)}`);
  await ddl.execute(`CREATE MATERIALIZED VIEW ${tbl}_force REFRESH FORCE AS ${DEF(tbl)}`);
}

describe('CREATE MATERIALIZED VIEW LOG ... USING BINLOG', () => {
  it('makes the log table only; FAST refreshes apply exactly the rows up to each cut; purge and DROP work as for trigger logs', async () => {
    await t.db.raw('CREATE TABLE o (id INT PRIMARY KEY, g INT, x INT)');
    await t.db.raw('INSERT INTO o VALUES (1, 1, 10), (2, 2, 20)');
    const made = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON o (g, x) PURGE IMMEDIATE USING BINLOG');
    expect(made.message).toMatch(/filled from the binary log by mvsched capture/);
    expect(await logOf('o')).toMatchObject({ capture_mode: 'BINLOG', state: 'OK' });
    expect(await t.db('information_schema.triggers').where({ event_object_schema: t.database, event_object_table: 'o' }).count({ n: '*' }).first()).toEqual({ n: 0 });
    const cols = await t.db('information_schema.columns').where({ table_schema: t.database, table_name: 'mlog$o' }).orderBy('ordinal_position').pluck('column_name');
    expect(cols).toEqual(['_mlog$seq', 'id', 'g', 'x', 'dml_type', 'old_new', '_mlog$bpos']);

    await ddl.execute(`CREATE MATERIALIZED VIEW o_fast REFRESH FAST AS ${DEF('o')}`);
    for (let round = 0; round < 3; round++) {
      await t.db.transaction(async (trx) => {
        await trx.raw('INSERT INTO o VALUES (?, ?, ?)', [10 + round, round % 2, round * 3]);
        await trx.raw('UPDATE o SET x = x + 1 WHERE id = 1');
      });
      await t.db.raw('DELETE FROM o WHERE id = 2');
      const res = await ddl.execute('REFRESH MATERIALIZED VIEW o_fast');
      expect(res.message).toMatch(/\(FAST,/);
      expect(await rows('SELECT * FROM o_fast')).toEqual(await rows(DEF('o')));
    }
    // The consumed rows went with PURGE IMMEDIATE: the log holds nothing the MV has applied.
    const [[left]] = (await t.db.raw('SELECT COUNT(*) AS n FROM `mlog$o`')) as [Array<{ n: number }>];
    expect(Number(left!.n)).toBe(0);

    await ddl.execute('DROP MATERIALIZED VIEW o_fast');
    await ddl.execute('DROP MATERIALIZED VIEW LOG ON o');
    expect(await logOf('o')).toBeUndefined();
    expect(await t.db('information_schema.tables').where({ table_schema: t.database, table_name: 'mlog$o' }).first()).toBeUndefined();
    await t.db.raw('INSERT INTO o VALUES (100, 1, 1)'); // writes go on; capture no longer follows the table
  });

  it('switching a log to TRIGGERS and back: FAST MVs to FORCE, DROP and re-CREATE the log, MVs back to FAST', async () => {
    await setUp('sw');
    await expect(ddl.execute('DROP MATERIALIZED VIEW LOG ON sw')).rejects.toThrow(/sw_fast depends on it/);
    await ddl.execute('ALTER MATERIALIZED VIEW sw_fast REFRESH FORCE');
    await ddl.execute('DROP MATERIALIZED VIEW LOG ON sw');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON sw (g, x) USING TRIGGERS');
    expect(await logOf('sw')).toMatchObject({ capture_mode: 'TRIGGERS' });
    await switchBack('TRIGGERS', 9);
    // And back to BINLOG the same way.
    await ddl.execute('ALTER MATERIALIZED VIEW sw_fast REFRESH FORCE');
    await ddl.execute('DROP MATERIALIZED VIEW LOG ON sw');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON sw (g, x) USING BINLOG');
    expect(await logOf('sw')).toMatchObject({ capture_mode: 'BINLOG', state: 'OK' });
    expect(await t.db('information_schema.triggers').where({ event_object_schema: t.database, event_object_table: 'sw' }).count({ n: '*' }).first()).toEqual({ n: 0 });
    await switchBack('BINLOG', 19);
  });

  /** ALTER ... REFRESH FAST after the log was re-made: one COMPLETE records the new log's watermark, then FAST. */
  async function switchBack(mode: string, id: number): Promise<void> {
    await ddl.execute('ALTER MATERIALIZED VIEW sw_fast REFRESH FAST');
    await t.db.raw('INSERT INTO sw VALUES (?, 9, 9, 0)', [id]);
    expect((await ddl.execute('REFRESH MATERIALIZED VIEW sw_fast')).message, mode).toMatch(/\(COMPLETE,/);
    await t.db.raw('UPDATE sw SET x = x + 1 WHERE id = ?', [id]);
    await t.db.raw('INSERT INTO sw VALUES (?, 2, 7, 0)', [id + 1]);
    expect((await ddl.execute('REFRESH MATERIALIZED VIEW sw_fast')).message, mode).toMatch(/\(FAST,/);
    expect(await rows('SELECT * FROM sw_fast'), mode).toEqual(await rows(DEF('sw')));
  }
});

describe('the cut of BINLOG logs', () => {
  it('over a trigger log and a BINLOG log at once: one snapshot, each log exactly up to it, under writers spanning both', async () => {
    await t.db.raw('CREATE TABLE ma (id INT PRIMARY KEY, v INT)');
    await t.db.raw('CREATE TABLE mb (id INT PRIMARY KEY, v INT)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON ma (v) USING TRIGGERS');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON mb (v) USING BINLOG');
    const logs = [await cutLog('ma'), await cutLog('mb')];
    const seed = testSeed();
    const writerDb = createDb(t.databaseUrl, { poolMax: 4 });
    let stop = false;
    let txns = 0;
    const writer = async (w: number) => {
      const rnd = prng(seed + w);
      while (!stop) {
        const id = 1 + Math.floor(rnd() * 30);
        const v = Math.floor(rnd() * 100);
        try {
          await writerDb.transaction(async (trx) => {
            // Both tables in one transaction, in either order, sometimes held open a moment.
            const [first, second] = rnd() < 0.5 ? ['ma', 'mb'] : ['mb', 'ma'];
            await trx.raw(`INSERT INTO ${first} VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)`, [id, v]);
            if (rnd() < 0.3) await new Promise((r) => setTimeout(r, Math.floor(rnd() * 15)));
            if (rnd() < 0.2) await trx.raw(`DELETE FROM ${second} WHERE id = ?`, [id]);
            else await trx.raw(`INSERT INTO ${second} VALUES (?, ?) ON DUPLICATE KEY UPDATE v = v + 1`, [id, v]);
          });
          txns++;
        } catch (err) {
          if (![1213, 1205].includes((err as { errno?: number }).errno ?? 0)) throw err;
        }
      }
    };
    const writers = [1, 2, 3].map(writer);
    try {
      for (let i = 0; i < 12; i++) {
        await new Promise((r) => setTimeout(r, 30));
        const cut = await takeCut(t.db, logs, 2000);
        try {
          expect(cut.binlogPosition?.file).toMatch(/\.\d+$/);
          for (const [tbl, log] of [['ma', logs[0]!], ['mb', logs[1]!]] as const) {
            const hw = cut.highWater.get(log.mlog_id)!;
            const replayed = await replay(tbl, hw);
            const seen = await rows(`SELECT id, v FROM ${tbl}`, cut.snapshot);
            expect(replayed, `seed ${seed}, cut ${i}, ${tbl} up to seq ${hw}`).toEqual(seen);
          }
        } finally {
          await cut.snapshot.rollback();
        }
      }
    } finally {
      stop = true;
      await Promise.all(writers);
      await writerDb.destroy();
    }
    expect(txns, `seed ${seed}`).toBeGreaterThan(20);
  });

  it('fails saying capture is not running when it is down, how far behind it is when it lags, and goes through once it has caught up', async () => {
    await t.db.raw('CREATE TABLE lag1 (id INT PRIMARY KEY, v INT)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON lag1 (v) USING BINLOG');
    const log = await cutLog('lag1');
    await stopCap();
    try {
      await t.db.raw('INSERT INTO lag1 VALUES (1, 1)');
      const down = await takeCut(t.db, [log], 2000, { staleMs: 600 }).catch((e: unknown) => e);
      expect(down).toBeInstanceOf(CaptureLagError);
      expect(String((down as Error).message)).toMatch(
        /binlog capture is not running: its position has not moved for \d+ s \(the last capture was stopped\); it stopped at binlog\.\d+:\d+, \d+ bytes before the cut's binlog position binlog\.\d+:\d+/,
      );
      // A backlog for capture to work through: many rows of the logged table.
      await t.db.raw('INSERT INTO lag1 SELECT seq + 1, seq FROM seq_1_to_40000');
    } finally {
      await startCap();
    }
    const behind = await takeCut(t.db, [log], 2000, { maxWaitMs: 1, staleMs: 60_000 }).catch((e: unknown) => e);
    expect(behind).toBeInstanceOf(CaptureLagError);
    expect(String((behind as Error).message)).toMatch(/binlog capture is behind: after waiting \d+ s it has reached binlog\.\d+:\d+, \d+ bytes short of the cut's binlog position/);
    const cut = await takeCut(t.db, [log], 2000);
    await cut.snapshot.rollback();
    const [[n]] = (await t.db.raw('SELECT COUNT(*) AS n, MAX(`_mlog$seq`) AS h FROM `mlog$lag1`')) as [Array<{ n: number; h: number }>];
    expect(Number(n!.n)).toBe(40001);
    expect(cut.highWater.get(log.mlog_id)).toBe(Number(n!.h));
  });

  it('a REFRESH while capture is down fails with that reason, and succeeds once capture is back', async () => {
    await setUp('dn');
    await stopCap();
    try {
      await t.db.raw('INSERT INTO dn VALUES (7, 3, 3, 0)');
      const f = expectKind(await refresh('dn_fast'), 'FAILED');
      expect(f.error).toMatch(/binlog capture is not running.*Start `mvsched capture`/);
    } finally {
      await startCap();
    }
    expect(expectKind(await refresh('dn_fast'), 'SUCCESS').method).toBe('FAST');
    expect(await rows('SELECT * FROM dn_fast')).toEqual(await rows(DEF('dn')));
  }, 60_000);
});

describe('DDL on captured tables', () => {
  it('TRUNCATE forces a complete refresh: the run that meets it refreshes COMPLETE, the drift check asks for the others, then FAST again', async () => {
    await setUp('tc');
    expectKind(await refresh('tc_fast'), 'SUCCESS');
    await t.db.raw('TRUNCATE TABLE tc');
    await t.db.raw('INSERT INTO tc VALUES (30, 5, 5, 0)');
    expect(expectKind(await refresh('tc_fast'), 'SUCCESS').method).toBe('COMPLETE');
    expect(await rows('SELECT * FROM tc_fast')).toEqual(await rows(DEF('tc')));
    systemRequests.length = 0;
    const tcLog = Number((await logOf('tc'))!.mlog_id);
    const report = await drift.check();
    expect(report.broken.filter((b) => b.mlogId === tcLog)).toEqual([]);
    expect(systemRequests).toContain(await mvId('tc_force'));
    await t.db.raw('INSERT INTO tc VALUES (31, 5, 6, 0)');
    expect(expectKind(await refresh('tc_fast'), 'SUCCESS').method).toBe('FAST');
    expect(await rows('SELECT * FROM tc_fast')).toEqual(await rows(DEF('tc')));
  });

  it('a tracked column dropped: capture marks the log BROKEN, writes go on, FAST fails with the reason, FORCE refreshes COMPLETE; re-creating the log heals it', async () => {
    await setUp('dc');
    const before = (await logOf('dc'))!;
    await t.db.raw('ALTER TABLE dc DROP COLUMN x');
    await t.db.raw('INSERT INTO dc (id, g) VALUES (40, 1)');
    const broken = await waitFor(async () => {
      const l = await logOf('dc');
      return l?.state === 'BROKEN' ? l : undefined;
    }, { what: 'dc log BROKEN' });
    expect(broken.broken_reason).toMatch(/column x of .*\.dc was dropped \(binlog /);
    const f = expectKind(await refresh('dc_fast'), 'FAILED');
    expect(f.error).toMatch(/materialized view log on .*\.dc is broken \(column x of .*dc was dropped/);
    await t.db.raw('ALTER TABLE dc ADD COLUMN x INT');
    expect(expectKind(await refresh('dc_force'), 'SUCCESS').method).toBe('COMPLETE');

    const res = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON dc (g, x) USING BINLOG');
    expect(res.message).toMatch(/re-created .* \(2 materialized views get one complete refresh, then FAST again\)/);
    expect(await logOf('dc')).toMatchObject({ mlog_id: before.mlog_id, state: 'OK', capture_mode: 'BINLOG' });
    expect(expectKind(await refresh('dc_fast'), 'SUCCESS').method).toBe('COMPLETE');
    await t.db.raw('UPDATE dc SET x = 7 WHERE id = 40');
    expect(expectKind(await refresh('dc_fast'), 'SUCCESS').method).toBe('FAST');
    expect(await rows('SELECT * FROM dc_fast')).toEqual(await rows(DEF('dc')));
  });

  it('the drift check leaves healthy BINLOG logs alone, and agrees with capture: the first reason stays, capture stops filling the log, other logs go on', async () => {
    await setUp('ag');
    await setUp('ag2');
    const ids = [Number((await logOf('ag'))!.mlog_id), Number((await logOf('ag2'))!.mlog_id)];
    const report = await drift.check();
    expect(report.broken.filter((b) => ids.includes(b.mlogId))).toEqual([]);
    expect((await logOf('ag'))!.state).toBe('OK');
    await stopCap();
    try {
      // While capture is down the catalog shows the drop first: the drift check breaks the log.
      await t.db.raw('ALTER TABLE ag DROP COLUMN x');
      await drift.check();
      const l = (await logOf('ag'))!;
      expect(l.state).toBe('BROKEN');
      expect(l.broken_reason).toMatch(/column x of .*\.ag, which its log tracks, was dropped or renamed/);
      await t.db.raw('INSERT INTO ag2 VALUES (50, 1, 1, 0)');
    } finally {
      await startCap();
    }
    // Capture reads the same ALTER afterwards: the drift check's reason stays.
    expect(expectKind(await refresh('ag2_fast'), 'SUCCESS').method).toBe('FAST');
    expect(await rows('SELECT * FROM ag2_fast')).toEqual(await rows(DEF('ag2')));
    expect((await logOf('ag'))!.broken_reason).toMatch(/which its log tracks/);
    const [[n]] = (await t.db.raw('SELECT COUNT(*) AS n FROM `mlog$ag`')) as [Array<{ n: number }>];
    await t.db.raw('INSERT INTO ag (id, g) VALUES (60, 1)');
    await refresh('ag2_fast'); // capture has passed the insert into ag by now
    const [[m]] = (await t.db.raw('SELECT COUNT(*) AS n FROM `mlog$ag`')) as [Array<{ n: number }>];
    expect(Number(m!.n)).toBe(Number(n!.n));
  });

  it('a database dropped with a captured table marks its log BROKEN; DROP MATERIALIZED VIEW LOG then cleans up', async () => {
    const other = `${t.database}_x`;
    await t.db.raw(`CREATE DATABASE \`${other}\``);
    try {
      await t.db.raw(`CREATE TABLE \`${other}\`.dd (id INT PRIMARY KEY, v INT)`);
      await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON \`${other}\`.dd (v) USING BINLOG`);
      await t.db.raw(`INSERT INTO \`${other}\`.dd VALUES (1, 1)`);
    } finally {
      await t.db.raw(`DROP DATABASE \`${other}\``);
    }
    const l = await waitFor(async () => {
      const r = (await t.db('mvs_mlogs').where({ table_schema: other, base_table_name: 'dd' }).first('state', 'broken_reason')) as Row | undefined;
      return r?.state === 'BROKEN' ? r : undefined;
    }, { what: 'log of the dropped database BROKEN' });
    expect(String(l.broken_reason)).toMatch(/database .*_x was dropped with base table/);
    await ddl.execute(`DROP MATERIALIZED VIEW LOG ON \`${other}\`.dd`);
    expect(await t.db('mvs_mlogs').where({ table_schema: other }).first()).toBeUndefined();
  });
});

/** The rows of `tbl` as its log up to `hw` says (the table was empty when its log was made). */
async function replay(tbl: string, hw: number): Promise<string[]> {
  const [log] = (await t.db.raw(`SELECT id, v, old_new FROM \`mlog$${tbl}\` WHERE \`_mlog$seq\` <= ? ORDER BY \`_mlog$seq\``, [hw])) as [
    Array<{ id: number; v: number; old_new: number }>,
  ];
  const state = new Map<number, Row>();
  for (const r of log) {
    if (Number(r.old_new) === -1) state.delete(r.id);
    else state.set(r.id, { id: r.id, v: r.v });
  }
  return [...state.values()].map((x) => JSON.stringify(x)).sort();
}
