import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import { ConflictError, NotFoundError, ValidationError } from '../../src/errors.js';
import { createRunners } from '../../src/app/runtime.js';
import { snapshot } from '../support/snapshot.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
let ddl: DdlExecutor;

beforeAll(async () => {
  t = await createTestEnv('mlog');
  await migrateLatest(t.db);
  const { runner, purger } = createRunners({ db: t.db, logger: t.logger, clock: systemClock, purgeBatch: 3 }, 'test-node');
  ddl = new DdlExecutor({ db: t.db, logger: t.logger, clock: systemClock, runner, purger, defaultSchema: t.database, notify: async () => {} });
});

afterAll(async () => {
  await t?.close();
});

type Row = Record<string, unknown>;
const canon = (rows: Row[]) => rows.map((r) => JSON.stringify(r)).sort();
async function rows(sql: string): Promise<Row[]> {
  const [r] = (await t.db.raw(sql)) as [Row[]];
  return r.map((x) => ({ ...x }));
}
async function logRows(table: string): Promise<Row[]> {
  return rows(`SELECT * FROM \`mlog$${table}\` ORDER BY \`_mlog$seq\``);
}

describe('MV log DDL and trigger capture', () => {
  beforeAll(async () => {
    await t.db.raw('CREATE TABLE cap (id INT PRIMARY KEY, a VARCHAR(10) COLLATE utf8mb4_general_ci NULL, b INT NULL, untracked INT NULL)');
  });

  it('captures inserts, updates (old and new image) and deletes; untracked updates write nothing', async () => {
    const res = await ddl.execute('CREATE MATERIALIZED VIEW LOG ON cap (a, b)');
    expect(res.mlogId).toBeGreaterThan(0);
    await t.db('cap').insert([
      { id: 1, a: 'x', b: 1, untracked: 0 },
      { id: 2, a: null, b: 2, untracked: 0 },
    ]);
    await t.db('cap').where({ id: 1 }).update({ untracked: 5 });
    await t.db('cap').where({ id: 1 }).update({ a: 'X' }); // case-only change is a change
    await t.db('cap').update({ b: t.db.raw('b + 10') }); // multi-row statement
    await t.db('cap').where({ id: 2 }).delete();
    const got = (await logRows('cap')).map(({ ['_mlog$seq']: _s, ...r }) => r);
    expect(got).toEqual([
      { id: 1, a: 'x', b: 1, dml_type: 'I', old_new: 1 },
      { id: 2, a: null, b: 2, dml_type: 'I', old_new: 1 },
      { id: 1, a: 'x', b: 1, dml_type: 'U', old_new: -1 },
      { id: 1, a: 'X', b: 1, dml_type: 'U', old_new: 1 },
      { id: 1, a: 'X', b: 1, dml_type: 'U', old_new: -1 },
      { id: 1, a: 'X', b: 11, dml_type: 'U', old_new: 1 },
      { id: 2, a: null, b: 2, dml_type: 'U', old_new: -1 },
      { id: 2, a: null, b: 12, dml_type: 'U', old_new: 1 },
      { id: 2, a: null, b: 12, dml_type: 'D', old_new: -1 },
    ]);
  });

  it('rolled-back writes leave nothing in the log', async () => {
    const before = (await logRows('cap')).length;
    await t.db.transaction(async (trx) => {
      await trx('cap').insert({ id: 50, a: 'r', b: 1 });
      await trx.rollback();
    }).catch(() => {});
    expect((await logRows('cap')).length).toBe(before);
  });

  it('error paths change nothing', async () => {
    await t.db.raw('CREATE TABLE nopk (x INT)');
    await t.db.raw('CREATE TABLE reserved (id INT PRIMARY KEY, dml_type INT, `_mlog$x` INT, ok INT)');
    await t.db.raw('CREATE VIEW aview AS SELECT 1 AS x');
    const cases: Array<[string, new (...a: never[]) => Error, RegExp]> = [
      ['CREATE MATERIALIZED VIEW LOG ON nopk (x)', ValidationError, /no primary key/],
      ['CREATE MATERIALIZED VIEW LOG ON cap (nope)', ValidationError, /column nope does not exist/],
      ['CREATE MATERIALIZED VIEW LOG ON reserved (dml_type)', ValidationError, /reserved/],
      ['CREATE MATERIALIZED VIEW LOG ON reserved (`_mlog$x`)', ValidationError, /reserved/],
      ['CREATE MATERIALIZED VIEW LOG ON cap (a)', ConflictError, /already exists/],
      ['CREATE MATERIALIZED VIEW LOG ON missing_table (a)', NotFoundError, /does not exist/],
      ['CREATE MATERIALIZED VIEW LOG ON aview (x)', ValidationError, /not a base table/],
      ['CREATE MATERIALIZED VIEW LOG ON nopk (x) PURGE NEXT 0', ValidationError, /no primary key/],
      ['DROP MATERIALIZED VIEW LOG ON nopk', NotFoundError, /no materialized view log/],
      ['PURGE MATERIALIZED VIEW LOG ON nopk', NotFoundError, /no materialized view log/],
    ];
    for (const [sql, cls, msg] of cases) {
      const before = await snapshot(t.db, t.database);
      const err = await ddl.execute(sql).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, sql).toBeInstanceOf(cls);
      expect((err as Error).message, sql).toMatch(msg);
      expect(await snapshot(t.db, t.database), sql).toEqual(before);
    }
  });
});

describe('a CREATE that fails half-way', () => {
  it('removes what it made and leaves a trigger that was there before alone', async () => {
    await t.db.raw('CREATE TABLE half (id INT PRIMARY KEY, a INT NULL)');
    await t.db.raw('CREATE TABLE decoy (id INT PRIMARY KEY)');
    // The update trigger's name is taken (by the next ids), so the third statement fails after
    // the log table and the insert trigger were made.
    const [[status]] = (await t.db.raw("SHOW TABLE STATUS LIKE 'mvs_mlogs'")) as [[{ Auto_increment: number }]];
    const next = Number(status!.Auto_increment);
    for (let id = next; id < next + 5; id++) {
      await t.db.raw(`CREATE TRIGGER mvs_mlog_${id}_upd AFTER UPDATE ON decoy FOR EACH ROW SET @decoy = 1`);
    }
    const before = await snapshot(t.db, t.database);
    await expect(ddl.execute('CREATE MATERIALIZED VIEW LOG ON half (a)')).rejects.toThrow(/could not create the materialized view log on .*half: .*already exists/);
    expect(await snapshot(t.db, t.database)).toEqual(before);
    expect(before.triggers[t.database]).toContain(`mvs_mlog_${next}_upd UPDATE ON decoy`);
    await t.db('half').insert({ id: 1, a: 1 }); // no trigger left on the base table
    for (let id = next; id < next + 5; id++) await t.db.raw(`DROP TRIGGER mvs_mlog_${id}_upd`);
  });
});

describe('FAST refresh', () => {
  beforeAll(async () => {
    await t.db.raw('CREATE TABLE sales (id INT PRIMARY KEY, g VARCHAR(5) NULL, x INT NULL, y DECIMAL(10,2) NULL, note INT NULL)');
    await t.db('sales').insert([
      { id: 1, g: 'a', x: 1, y: '1.50' },
      { id: 2, g: 'a', x: null, y: '2.25' },
      { id: 3, g: null, x: 3, y: null },
      { id: 4, g: 'b', x: 4, y: '4.00' },
    ]);
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON sales (g, x, y)');
  });

  const aggDef =
    'SELECT g, COUNT(*) AS c, COUNT(x) AS cx, SUM(x) AS sx, AVG(y) AS ay, MIN(x) AS mn, MAX(y) AS mx FROM sales WHERE id < 1000 GROUP BY g';
  const spjDef = 'SELECT id, g, x + 1 AS x1 FROM sales WHERE x IS NULL OR x > 1';

  it('keeps an aggregate MV and an SPJ MV equal to their definitions', async () => {
    await ddl.execute(`CREATE MATERIALIZED VIEW agg_mv REFRESH FAST AS ${aggDef}`);
    await ddl.execute(`CREATE MATERIALIZED VIEW spj_mv REFRESH FAST AS ${spjDef}`);
    const mv = await t.db('mvs_mviews').where({ mview_name: 'agg_mv' }).first();
    expect(mv.fast_refreshable).toBe(1);
    const check = async () => {
      expect(canon(await rows('SELECT * FROM agg_mv'))).toEqual(canon(await rows(aggDef)));
      expect(canon(await rows('SELECT * FROM spj_mv'))).toEqual(canon(await rows(spjDef)));
    };
    await check();
    const steps: Array<() => Promise<unknown>> = [
      () => t.db('sales').insert({ id: 5, g: 'c', x: 9, y: '0.10' }), // new group
      () => t.db('sales').where({ id: 1 }).update({ g: 'b' }), // moves a row between groups
      () => t.db('sales').where({ id: 4 }).delete(), // removes a MAX / MIN
      () => t.db('sales').where({ id: 3 }).update({ g: 'a', x: null }), // NULL group -> a; NULL value
      () => t.db('sales').insert({ id: 6, g: null, x: null, y: null }), // NULL group reappears
      () => t.db('sales').whereIn('id', [5]).delete(), // group c vanishes
      () => t.db('sales').insert({ id: 7, g: 'c', x: 1, y: '9.99' }), // and comes back
      () => t.db('sales').where({ id: 2 }).update({ id: 20 }), // primary key change
      () => t.db('sales').where({ id: 20 }).update({ note: 1 }), // untracked column
    ];
    for (const step of steps) {
      await step();
      const r1 = await ddl.execute('REFRESH MATERIALIZED VIEW agg_mv');
      const r2 = await ddl.execute('REFRESH MATERIALIZED VIEW spj_mv');
      expect(r1.message).toMatch(/FAST/);
      expect(r2.message).toMatch(/FAST/);
      await check();
    }
    // The hidden helper columns are invisible to SELECT *.
    const cols = Object.keys((await rows('SELECT * FROM agg_mv LIMIT 1'))[0]!);
    expect(cols).toEqual(['g', 'c', 'cx', 'sx', 'ay', 'mn', 'mx']);
  });

  it('groups by a TEXT column and by a DECIMAL expression (delta tables that cannot live in memory, exact keys)', async () => {
    await t.db.raw('CREATE TABLE notes (id INT PRIMARY KEY, body TEXT NULL, price DECIMAL(30,10) NULL)');
    await t.db('notes').insert([
      { id: 1, body: 'long text a', price: '12345678901234567890.0000000001' },
      { id: 2, body: null, price: '12345678901234567890.0000000002' },
    ]);
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON notes (body, price)');
    const byBody = 'SELECT body, COUNT(*) AS n, MAX(price) AS top FROM notes GROUP BY body';
    const byPrice = 'SELECT price * 1 AS p, COUNT(*) AS n, MIN(id) AS first_id FROM notes GROUP BY price * 1';
    await ddl.execute(`CREATE MATERIALIZED VIEW notes_by_body REFRESH FAST AS ${byBody}`);
    await ddl.execute(`CREATE MATERIALIZED VIEW notes_by_price REFRESH FAST AS ${byPrice}`);
    await t.db('notes').insert({ id: 3, body: 'long text a', price: '12345678901234567890.0000000002' });
    await t.db('notes').where({ id: 1 }).delete(); // MAX of 'long text a' and MIN of a price group leave
    await t.db('notes').where({ id: 2 }).update({ body: 'other' });
    for (const [mv, def] of [
      ['notes_by_body', byBody],
      ['notes_by_price', byPrice],
    ] as const) {
      expect((await ddl.execute(`REFRESH MATERIALIZED VIEW ${mv}`)).message).toMatch(/FAST/);
      expect(canon(await rows(`SELECT * FROM ${mv}`)), mv).toEqual(canon(await rows(def)));
    }
  });

  it('purge stops at the slowest consumer, and a DROP of the log names the FAST MVs', async () => {
    const logT = 'mlog$sales';
    await t.db('sales').insert({ id: 100, g: 'z', x: 1, y: '1.00' });
    await ddl.execute('REFRESH MATERIALIZED VIEW agg_mv'); // spj_mv lags behind
    const wm = async (name: string) =>
      Number(
        (
          await t.db('mvs_mview_base_tables as b').join('mvs_mviews as m', 'm.mview_id', 'b.mview_id').where('m.mview_name', name).first('b.consumed_watermark')
        ).consumed_watermark,
      );
    const slow = await wm('spj_mv');
    expect(await wm('agg_mv')).toBeGreaterThan(slow);
    const res = await ddl.execute('PURGE MATERIALIZED VIEW LOG ON sales');
    expect(res.rows).toBeGreaterThan(0);
    const left = (await rows(`SELECT MIN(\`_mlog$seq\`) AS s FROM \`${logT}\``))[0]!.s as number;
    expect(left).toBe(slow + 1);
    await expect(ddl.execute('DROP MATERIALIZED VIEW LOG ON sales')).rejects.toThrow(/agg_mv, .*spj_mv|spj_mv, .*agg_mv/);
    const hist = await t.db('mvs_mlog_purge_hist').orderBy('purge_id', 'desc').first();
    expect(hist.purge_status).toBe('SUCCESS');
    expect(Number(hist.purge_watermark)).toBe(slow);
  });
});

describe('FAST eligibility, FORCE, and what holds a purge', () => {
  beforeAll(async () => {
    await t.db.raw('CREATE TABLE ev (id INT PRIMARY KEY, k INT NULL, amt INT NULL, secret INT NULL)');
    await t.db.raw('CREATE TABLE nolog (id INT PRIMARY KEY, k INT NULL)');
    await t.db('ev').insert([
      { id: 1, k: 1, amt: 10 },
      { id: 2, k: 2, amt: 20 },
    ]);
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON ev (k, amt)');
  });

  it('refuses REFRESH FAST with the reason, and changes nothing', async () => {
    const cases: Array<[string, RegExp]> = [
      ['SELECT k, COUNT(*) AS c FROM nolog GROUP BY k', /has no materialized view log/],
      ['SELECT k, SUM(secret) AS s FROM ev GROUP BY k', /column secret .* not in its materialized view log/],
      ['SELECT k, COUNT(DISTINCT amt) AS c FROM ev GROUP BY k', /COUNT\(DISTINCT/],
      ['SELECT k, COUNT(*) AS c FROM ev GROUP BY k HAVING COUNT(*) > 1', /HAVING/],
      // A join is fast-refreshable only when every table it reads has a log (issue 12).
      ['SELECT e.k, COUNT(*) AS c FROM ev e JOIN nolog n ON n.id = e.id GROUP BY e.k', /\.nolog has no materialized view log/],
      ['SELECT k, amt FROM ev', /primary key column id/],
      ['SELECT id, k FROM ev WHERE amt > RAND()', /RAND\(\) is not deterministic/],
      ['SELECT k, COUNT(*) AS c FROM ev WHERE k IN (SELECT id FROM nolog) GROUP BY k', /subqueries/],
      ['SELECT k, GROUP_CONCAT(amt) AS c FROM ev GROUP BY k', /GROUP_CONCAT|not supported/],
      ['SELECT k + 1 AS k1, COUNT(*) AS c FROM ev GROUP BY k', /neither an aggregate nor a GROUP BY/],
      ['SELECT DISTINCT id, k FROM ev', /DISTINCT/],
      ['SELECT id, k FROM ev ORDER BY id LIMIT 1', /ORDER BY|LIMIT/],
    ];
    for (const [select, reason] of cases) {
      const before = await snapshot(t.db, t.database);
      await expect(ddl.execute(`CREATE MATERIALIZED VIEW bad_mv REFRESH FAST AS ${select}`), select).rejects.toThrow(reason);
      expect(await snapshot(t.db, t.database), select).toEqual(before);
    }
  });

  it('FORCE falls back to COMPLETE with the reason recorded, and becomes FAST when allowed', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW force_mv REFRESH FORCE AS SELECT k, COUNT(*) AS c, SUM(secret) AS s FROM ev GROUP BY k');
    const mv = await t.db('mvs_mviews').where({ mview_name: 'force_mv' }).first();
    expect(mv.fast_refreshable).toBe(0);
    expect(mv.fast_reason).toMatch(/secret/);
    expect((await ddl.execute('REFRESH MATERIALIZED VIEW force_mv')).message).toMatch(/COMPLETE/);
    await expect(ddl.execute('REFRESH MATERIALIZED VIEW force_mv FAST')).rejects.toThrow(/secret/);

    // A COMPLETE MV switched to FAST: its next refresh is complete (records the watermark), then FAST.
    await ddl.execute('CREATE MATERIALIZED VIEW switch_mv AS SELECT k, COUNT(*) AS c, MAX(amt) AS m FROM ev GROUP BY k');
    await ddl.execute('ALTER MATERIALIZED VIEW switch_mv REFRESH FAST');
    await t.db('ev').insert({ id: 3, k: 1, amt: 99 });
    expect((await ddl.execute('REFRESH MATERIALIZED VIEW switch_mv')).message).toMatch(/COMPLETE/);
    await t.db('ev').where({ id: 3 }).delete();
    expect((await ddl.execute('REFRESH MATERIALIZED VIEW switch_mv')).message).toMatch(/FAST/);
    expect(canon(await rows('SELECT * FROM switch_mv'))).toEqual(canon(await rows('SELECT k, COUNT(*) AS c, MAX(amt) AS m FROM ev GROUP BY k')));
    // Back to COMPLETE: it no longer holds the log.
    await ddl.execute('ALTER MATERIALIZED VIEW switch_mv REFRESH COMPLETE');
    const link = await t.db('mvs_mview_base_tables as b').join('mvs_mviews as m', 'm.mview_id', 'b.mview_id').where('m.mview_name', 'switch_mv').first('b.mlog_id');
    expect(link.mlog_id).toBeNull();
  });

  it('an MV that never consumed the log holds the purge at 0; dropping it releases the log; with no consumer everything goes', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW hold_mv REFRESH FAST AS SELECT id, k FROM ev');
    const mvId = (await t.db('mvs_mviews').where({ mview_name: 'hold_mv' }).first()).mview_id as number;
    // As if its first build had not happened yet: linked, watermark 0.
    await t.db('mvs_mview_base_tables').where({ mview_id: mvId }).update({ consumed_watermark: 0 });
    await t.db('ev').insert({ id: 10, k: 5, amt: 1 });
    const before = (await logRows('ev')).length;
    expect(before).toBeGreaterThan(0);
    const r1 = await ddl.execute('PURGE MATERIALIZED VIEW LOG ON ev');
    expect(r1.rows).toBe(0);
    expect((await logRows('ev')).length).toBe(before);

    await ddl.execute('DROP MATERIALIZED VIEW hold_mv');
    await ddl.execute('DROP MATERIALIZED VIEW force_mv');
    await ddl.execute('DROP MATERIALIZED VIEW switch_mv');
    const r2 = await ddl.execute('PURGE MATERIALIZED VIEW LOG ON ev');
    expect(r2.rows).toBe(before);
    expect(await logRows('ev')).toEqual([]);
    // Nothing depends on it any more: it can be dropped, and it takes its table and triggers along.
    await ddl.execute('DROP MATERIALIZED VIEW LOG ON ev');
    const [trg] = (await t.db.raw('SELECT trigger_name FROM information_schema.triggers WHERE event_object_schema = ? AND event_object_table = ?', [t.database, 'ev'])) as [unknown[]];
    expect(trg).toEqual([]);
    expect(await t.db.schema.hasTable('mlog$ev')).toBe(false);
    await t.db('ev').insert({ id: 11, k: 1, amt: 1 }); // writes still work
  });
});
