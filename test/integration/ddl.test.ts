import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor, type DdlEvent } from '../../src/ddl/executor.js';
import { DdlSyntaxError } from '../../src/ddl/parser.js';
import { ConflictError, MvsError, NotFoundError, ValidationError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import type { MviewRow, RefreshHistRow, RefreshInfoRow } from '../../src/mv/repository.js';
import { RefreshRunner, type RefreshOutcome, type RefreshRequest } from '../../src/refresh/runner.js';
import { nextExecTime } from '../../src/schedule/nextTime.js';
import { listTables, snapshot } from '../support/snapshot.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';
import { prng } from '../support/prng.js';

let t: TestEnv;
let other: string; // a second database, for schema-qualified MVs outside DATABASE_URL's
let ddl: DdlExecutor;
let runner: RefreshRunner;
const events: DdlEvent[] = [];

beforeAll(async () => {
  t = await createTestEnv('ddl');
  await migrateLatest(t.db);
  other = `${t.database}_o`;
  await t.db.raw('CREATE DATABASE ??', [other]);
  const logger = createLogger({ level: 'warn', pretty: false });
  runner = new RefreshRunner({ db: t.db, logger, clock: systemClock, nodeId: 'test-node' });
  ddl = new DdlExecutor({
    db: t.db,
    logger,
    clock: systemClock,
    runner,
    defaultSchema: t.database,
    notify: async (e) => {
      events.push(e);
    },
  });
  await t.db.raw('CREATE TABLE base (id INT PRIMARY KEY, grp VARCHAR(8) NULL, v INT NOT NULL)');
  await t.db('base').insert([
    { id: 1, grp: 'a', v: 10 },
    { id: 2, grp: 'a', v: 20 },
    { id: 3, grp: 'b', v: 5 },
    { id: 4, grp: null, v: 7 },
  ]);
  await t.db.raw('CREATE TABLE plain_tbl (x INT)');
});

afterAll(async () => {
  if (other) await t?.db.raw('DROP DATABASE IF EXISTS ??', [other]).catch(() => {});
  await t?.close();
});

// ---- helpers ----

const ms = (d: Date | null | undefined): number | null => (d ? d.getTime() : null);

/** Rows as sorted JSON, so a table and a query compare whatever order the server picks. */
function canon(rows: Array<Record<string, unknown>>): string[] {
  return rows.map((r) => JSON.stringify(r)).sort();
}

async function tableRows(schema: string, name: string): Promise<string[]> {
  const [rows] = (await t.db.raw('SELECT * FROM ??.??', [schema, name])) as [Array<Record<string, unknown>>];
  return canon(rows);
}

async function queryRows(select: string): Promise<string[]> {
  const [rows] = (await t.db.raw(select)) as [Array<Record<string, unknown>>];
  return canon(rows);
}

async function tableExists(schema: string, name: string): Promise<boolean> {
  return (await listTables(t.db, schema)).includes(name);
}

interface Meta {
  mv: MviewRow | undefined;
  infos: RefreshInfoRow[];
  base: Array<{ base_table_schema: string; base_table_name: string }>;
  hist: RefreshHistRow[];
}

async function meta(name: string, schema = t.database): Promise<Meta> {
  const mv = (await t.db('mvs_mviews').where({ table_schema: schema, mview_name: name }).first()) as MviewRow | undefined;
  if (!mv) return { mv, infos: [], base: [], hist: [] };
  const id = Number(mv.mview_id);
  return {
    mv,
    infos: (await t.db('mvs_mview_refresh_info').where({ mview_id: id })) as RefreshInfoRow[],
    base: (await t.db('mvs_mview_base_tables')
      .where({ mview_id: id })
      .orderBy(['base_table_schema', 'base_table_name'])
      .select('base_table_schema', 'base_table_name')) as Meta['base'],
    hist: (await t.db('mvs_mview_refresh_hist').where({ mview_id: id }).orderBy('refresh_id')) as RefreshHistRow[],
  };
}

async function info(id: number): Promise<RefreshInfoRow> {
  const row = (await t.db('mvs_mview_refresh_info').where({ mview_id: id }).first()) as RefreshInfoRow | undefined;
  expect(row, `refresh_info of mview ${id}`).toBeDefined();
  return row!;
}

/** What the server itself evaluates `expr` to, as epoch ms (for bracketing START WITH NOW()...). */
async function dbTime(expr: string): Promise<number> {
  const [rows] = (await t.db.raw(`SELECT CAST((${expr}) AS DATETIME(3)) AS v`)) as [Array<{ v: Date }>];
  return rows[0]!.v.getTime();
}

function expectSingleSuccessfulBuild(m: Meta, rows: number): void {
  expect(m.infos).toHaveLength(1);
  expect(m.hist).toHaveLength(1);
  const h = m.hist[0]!;
  expect(h).toMatchObject({ refresh_status: 'SUCCESS', refresh_trigger: 'MANUAL', refresh_method: 'COMPLETE', node_id: 'test-node' });
  expect(Number(h.rows_changed)).toBe(rows);
  expect(h.end_time!.getTime()).toBeGreaterThanOrEqual(h.start_time.getTime());
  // Created (metadata written) before the build started.
  expect(h.start_time.getTime()).toBeGreaterThanOrEqual(m.mv!.created_at.getTime());
  expect(m.infos[0]).toMatchObject({ last_refresh_result: 'SUCCESS', last_refresh_trigger: 'MANUAL', consecutive_failures: 0 });
  expect(Number(m.infos[0]!.refresh_count)).toBe(1);
}

function lastEvent(): DdlEvent | undefined {
  return events[events.length - 1];
}

// ---- round trips ----

describe('CREATE MATERIALIZED VIEW', () => {
  it('unqualified, no REFRESH clause, no schedule: built before returning, manual refresh only', async () => {
    const select = 'SELECT id, grp, v FROM base';
    const res = await ddl.execute(`CREATE MATERIALIZED VIEW mv_plain AS ${select}`);
    expect(res).toMatchObject({ statement: 'createMview', name: `${t.database}.mv_plain`, rows: 4 });
    expect(await tableRows(t.database, 'mv_plain')).toEqual(await queryRows(select));

    const m = await meta('mv_plain');
    expect(m.mv).toMatchObject({
      mview_definition: select,
      refresh_method: 'COMPLETE',
      status: 'ACTIVE',
      refresh_start: null,
      refresh_interval: null,
    });
    expect(Number(m.mv!.mview_id)).toBe(res.mviewId);
    expect(m.base).toEqual([{ base_table_schema: t.database, base_table_name: 'base' }]);
    expectSingleSuccessfulBuild(m, 4);
    expect(m.infos[0]!.next_time).toBeNull();
    expect(Number(m.hist[0]!.refresh_id)).toBe(res.refreshId);
    expect(lastEvent()).toEqual({ kind: 'mview', id: res.mviewId, change: 'created' });
  });

  it('schema-qualified, REFRESH FORCE, NEXT n alone: next_time = creation + n s, truncated to the second', async () => {
    const select = 'SELECT grp, COUNT(*) AS n, SUM(v) AS total FROM base GROUP BY grp';
    const res = await ddl.execute(`CREATE MATERIALIZED VIEW \`${t.database}\`.mv_next REFRESH FORCE NEXT 90 AS ${select}`);
    expect(res.rows).toBe(3);
    expect(await tableRows(t.database, 'mv_next')).toEqual(await queryRows(select));

    const m = await meta('mv_next');
    expect(m.mv).toMatchObject({ refresh_method: 'FORCE', refresh_interval: 90, status: 'ACTIVE' });
    expectSingleSuccessfulBuild(m, 3);
    const created = m.mv!.created_at.getTime();
    // The grid anchor is creation + NEXT ...
    expect(ms(m.mv!.refresh_start)).toBe(created + 90_000);
    // ... and the first run is that anchor truncated to whole seconds.
    const next = ms(m.infos[0]!.next_time)!;
    expect(next).toBe(Math.floor((created + 90_000) / 1000) * 1000);
    expect(next % 1000).toBe(0);
    expect(next).toBeGreaterThan(created + 89_000);
    expect(next).toBeLessThanOrEqual(created + 90_000);
    expect(next).toBe(nextExecTime(created + 90_000, 90, null));
    expect(lastEvent()).toEqual({ kind: 'mview', id: res.mviewId, change: 'created' });
  });

  it('REFRESH COMPLETE with START WITH alone: next_time = START WITH (truncated), no recurring interval', async () => {
    const res = await ddl.execute(
      "CREATE MATERIALIZED VIEW mv_start REFRESH COMPLETE START WITH '2030-01-02 03:04:05' AS SELECT id FROM base WHERE v >= 10",
    );
    expect(res.rows).toBe(2);
    const m = await meta('mv_start');
    expectSingleSuccessfulBuild(m, 2);
    expect(m.mv).toMatchObject({ refresh_method: 'COMPLETE', refresh_interval: null });
    expect(ms(m.mv!.refresh_start)).toBe(Date.UTC(2030, 0, 2, 3, 4, 5));
    expect(ms(m.infos[0]!.next_time)).toBe(Date.UTC(2030, 0, 2, 3, 4, 5));

    // Fractions of a second are kept in the anchor and truncated in next_time.
    await ddl.execute("CREATE MATERIALIZED VIEW mv_start_frac START WITH '2030-01-02 03:04:05.678' AS SELECT id FROM base");
    const f = await meta('mv_start_frac');
    expect(ms(f.mv!.refresh_start)).toBe(Date.UTC(2030, 0, 2, 3, 4, 5, 678));
    expect(ms(f.infos[0]!.next_time)).toBe(Date.UTC(2030, 0, 2, 3, 4, 5));
    expect(await tableRows(t.database, 'mv_start_frac')).toEqual(await queryRows('SELECT id FROM base'));
  });

  it('START WITH an expression evaluated by the database (UTC) and NEXT an expression', async () => {
    const lo = await dbTime('NOW() + INTERVAL 1 HOUR');
    await ddl.execute('CREATE MATERIALIZED VIEW mv_both START WITH NOW() + INTERVAL 1 HOUR NEXT 60*5 AS SELECT grp, MAX(v) AS mx FROM base GROUP BY grp');
    const hi = await dbTime('NOW() + INTERVAL 1 HOUR');
    const m = await meta('mv_both');
    expectSingleSuccessfulBuild(m, 3);
    expect(m.mv!.refresh_interval).toBe(300);
    const start = ms(m.mv!.refresh_start)!;
    expect(start).toBeGreaterThanOrEqual(lo);
    expect(start).toBeLessThanOrEqual(hi);
    expect(ms(m.infos[0]!.next_time)).toBe(Math.floor(start / 1000) * 1000);

    // A START WITH in the past: one catch-up run at the anchor (no run yet), then the grid.
    await ddl.execute("CREATE MATERIALIZED VIEW mv_past START WITH '2020-01-01 00:00:00' NEXT '60' AS SELECT id, v FROM base");
    const p = await meta('mv_past');
    expect(p.mv!.refresh_interval).toBe(60);
    expect(ms(p.infos[0]!.next_time)).toBe(Date.UTC(2020, 0, 1));
  });

  it('an MV in another database reads base tables of the default one', async () => {
    const select = 'SELECT id, v FROM base WHERE grp IS NOT NULL';
    const res = await ddl.execute(`CREATE MATERIALIZED VIEW ${other}.mv_other AS ${select}`);
    expect(res.name).toBe(`${other}.mv_other`);
    expect(await tableExists(other, 'mv_other')).toBe(true);
    expect(await tableExists(t.database, 'mv_other')).toBe(false);
    expect(await tableRows(other, 'mv_other')).toEqual(await queryRows(select));
    const m = await meta('mv_other', other);
    expectSingleSuccessfulBuild(m, 3);
    expect(m.base).toEqual([{ base_table_schema: t.database, base_table_name: 'base' }]);
  });
});

describe('names that need quoting', () => {
  it('a backquoted name with a space and a backquote round-trips through create, refresh and drop', async () => {
    const odd = 'odd `name` mv';
    const quoted = '`odd ``name`` mv`';
    const res = await ddl.execute(`CREATE MATERIALIZED VIEW \`${t.database}\`.${quoted} NEXT 30 AS SELECT id, v AS \`the v\`, 'why? -- not a comment' AS q FROM base`);
    expect(res.name).toBe(`${t.database}.${odd}`);
    expect(await tableExists(t.database, odd)).toBe(true);
    expect(await tableRows(t.database, odd)).toEqual(await queryRows("SELECT id, v AS `the v`, 'why? -- not a comment' AS q FROM base"));
    const m = await meta(odd);
    expectSingleSuccessfulBuild(m, 4);
    await t.db('base').insert({ id: 100, grp: 'z', v: 100 });
    try {
      await ddl.execute(`REFRESH MATERIALIZED VIEW ${quoted}`);
      expect(await tableRows(t.database, odd)).toEqual(await queryRows("SELECT id, v AS `the v`, 'why? -- not a comment' AS q FROM base"));
      await ddl.execute(`ALTER MATERIALIZED VIEW ${quoted} SUSPEND`);
      expect((await meta(odd)).mv!.status).toBe('SUSPENDED');
      await ddl.execute(`DROP MATERIALIZED VIEW ${quoted}`);
      expect(await tableExists(t.database, odd)).toBe(false);
      expect((await meta(odd)).mv).toBeUndefined();
    } finally {
      await t.db('base').where({ id: 100 }).delete();
    }
  });
});

describe('two CREATEs of the same name at once', () => {
  it('one wins; the other gets a ConflictError and leaves the winner intact', async () => {
    for (let round = 0; round < 5; round++) {
      const name = `mv_race_${round}`;
      const sql = `CREATE MATERIALIZED VIEW ${name} AS SELECT id, v FROM base`;
      const results = await Promise.allSettled([ddl.execute(sql), ddl.execute(sql)]);
      const ok = results.filter((r) => r.status === 'fulfilled');
      const bad = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(ok, `round ${round}: ${JSON.stringify(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'ok')))}`).toHaveLength(1);
      expect(bad).toHaveLength(1);
      expect(bad[0]!.reason).toBeInstanceOf(ConflictError);
      expect((bad[0]!.reason as Error).message).toMatch(new RegExp(`${name} already exists`));
      const m = await meta(name);
      expectSingleSuccessfulBuild(m, 4);
      expect(await tableRows(t.database, name)).toEqual(await queryRows('SELECT id, v FROM base'));
      await ddl.execute(`DROP MATERIALIZED VIEW ${name}`);
    }
  });
});

describe('a refresh request that races the first build of a new MV', () => {
  it('CREATE waits for it instead of failing and tearing the MV down under it', async () => {
    await t.db.raw('CREATE TABLE race_src (id INT PRIMARY KEY)');
    await t.db('race_src').insert({ id: 1 });
    const kinds: string[] = [];
    let raced: Promise<RefreshOutcome> | undefined;
    // Between the metadata commit and the first build, another worker serves a request for the
    // new MV (its name resolves as soon as the metadata is committed) and holds the lock.
    class RacedRunner extends RefreshRunner {
      override async run(req: RefreshRequest): Promise<RefreshOutcome> {
        if (!raced) {
          raced = runner.run({ mviewId: req.mviewId, trigger: 'REQUEST', requestedAt: Date.now() });
          await waitFor(
            async () => t.db('mvs_mview_refresh_hist').where({ mview_id: req.mviewId, refresh_trigger: 'REQUEST', refresh_status: 'RUNNING' }).first(),
            { intervalMs: 10, what: 'the racing request to start' },
          );
        }
        const o = await super.run(req);
        kinds.push(o.kind);
        return o;
      }
    }
    const racedDdl = new DdlExecutor({
      db: t.db,
      logger: t.logger,
      clock: systemClock,
      runner: new RacedRunner({ db: t.db, logger: t.logger, clock: systemClock, nodeId: 'test-node' }),
      defaultSchema: t.database,
      notify: async () => {},
    });
    const res = await racedDdl.execute('CREATE MATERIALIZED VIEW mv_raced AS SELECT id, SLEEP(0.5) AS z FROM race_src');
    expect((await raced!).kind).toBe('SUCCESS');
    expect(kinds[0]).toBe('DEFERRED');
    expect(kinds[kinds.length - 1]).toBe('SUCCESS');
    const m = await meta('mv_raced');
    expect(Number(m.mv!.mview_id)).toBe(res.mviewId);
    expect(m.infos).toHaveLength(1);
    expect(m.hist.map((h) => `${h.refresh_trigger}:${h.refresh_status}`)).toEqual(['REQUEST:SUCCESS', 'MANUAL:SUCCESS']);
    expect(await tableRows(t.database, 'mv_raced')).toEqual(['{"id":1,"z":0}']);
    await ddl.execute('DROP MATERIALIZED VIEW mv_raced');
    expect(await tableExists(t.database, 'mv_raced')).toBe(false);
  });
});

describe('ALTER MATERIALIZED VIEW', () => {
  it('REFRESH NEXT n sets a schedule anchored at alter time + n', async () => {
    const before = await meta('mv_plain');
    const id = Number(before.mv!.mview_id);
    const n = events.length;
    await ddl.execute('ALTER MATERIALIZED VIEW mv_plain REFRESH NEXT 120');
    const m = await meta('mv_plain');
    expect(m.mv!.refresh_interval).toBe(120);
    const modified = m.mv!.mview_modify_time.getTime();
    expect(modified).toBeGreaterThanOrEqual(before.mv!.mview_modify_time.getTime());
    expect(ms(m.mv!.refresh_start)).toBe(modified + 120_000);
    expect(ms(m.infos[0]!.next_time)).toBe(Math.floor((modified + 120_000) / 1000) * 1000);
    expect(m.mv!.refresh_method).toBe('COMPLETE');
    expect(m.hist).toHaveLength(1); // ALTER does not refresh
    expect(events.slice(n)).toEqual([{ kind: 'mview', id, change: 'altered' }]);
  });

  it('REFRESH START WITH alone replaces the schedule with a single run', async () => {
    await ddl.execute("ALTER MATERIALIZED VIEW mv_plain REFRESH START WITH '2031-05-06 07:08:09'");
    const m = await meta('mv_plain');
    expect(m.mv!.refresh_interval).toBeNull();
    expect(ms(m.mv!.refresh_start)).toBe(Date.UTC(2031, 4, 6, 7, 8, 9));
    expect(ms(m.infos[0]!.next_time)).toBe(Date.UTC(2031, 4, 6, 7, 8, 9));
  });

  it('REFRESH <method> START WITH ... NEXT ... changes method and schedule together', async () => {
    await ddl.execute(`ALTER MATERIALIZED VIEW \`${t.database}\`.mv_plain REFRESH FORCE START WITH '2031-05-06 07:08:09' NEXT 30`);
    const m = await meta('mv_plain');
    expect(m.mv).toMatchObject({ refresh_method: 'FORCE', refresh_interval: 30 });
    expect(ms(m.mv!.refresh_start)).toBe(Date.UTC(2031, 4, 6, 7, 8, 9));
    expect(ms(m.infos[0]!.next_time)).toBe(Date.UTC(2031, 4, 6, 7, 8, 9));
  });

  it('REFRESH <method> alone leaves the schedule as it is', async () => {
    const before = await meta('mv_plain');
    await ddl.execute('ALTER MATERIALIZED VIEW mv_plain REFRESH COMPLETE');
    const m = await meta('mv_plain');
    expect(m.mv!.refresh_method).toBe('COMPLETE');
    expect(m.mv!.refresh_start).toEqual(before.mv!.refresh_start);
    expect(m.mv!.refresh_interval).toBe(before.mv!.refresh_interval);
    expect(m.infos[0]!.next_time).toEqual(before.infos[0]!.next_time);
  });

  it('SUSPEND and RESUME flip the status; RESUME puts next_time back on the grid after the last success', async () => {
    const before = await meta('mv_past');
    const id = Number(before.mv!.mview_id);
    const n = events.length;
    await ddl.execute('ALTER MATERIALIZED VIEW mv_past SUSPEND');
    const s = await meta('mv_past');
    expect(s.mv!.status).toBe('SUSPENDED');
    expect(s.infos[0]!.next_time).toEqual(before.infos[0]!.next_time);

    await ddl.execute('ALTER MATERIALIZED VIEW mv_past RESUME');
    const r = await meta('mv_past');
    expect(r.mv!.status).toBe('ACTIVE');
    const start = ms(r.mv!.refresh_start)!;
    const lastOk = ms(r.infos[0]!.last_success_endtime)!;
    const next = ms(r.infos[0]!.next_time)!;
    expect(next).toBe(nextExecTime(start, 60, lastOk));
    // Recomputed (not the 2020 catch-up slot any more): the first grid point after the last success.
    expect(next).toBeGreaterThan(lastOk);
    expect((next - start) % 60_000).toBe(0);
    expect(r.infos[0]!.consecutive_failures).toBe(0);
    expect(events.slice(n)).toEqual([
      { kind: 'mview', id, change: 'altered' },
      { kind: 'mview', id, change: 'altered' },
    ]);
  });
});

describe('REFRESH MATERIALIZED VIEW', () => {
  it('re-reads the base tables, writes a MANUAL history row and leaves next_time alone', async () => {
    const select = 'SELECT grp, COUNT(*) AS n, SUM(v) AS total FROM base GROUP BY grp';
    const before = await meta('mv_next');
    const id = Number(before.mv!.mview_id);
    await t.db('base').insert([
      { id: 5, grp: 'c', v: 1 },
      { id: 6, grp: 'a', v: 2 },
    ]);
    // Nothing refreshes by itself: the MV still shows the old contents.
    expect(await tableRows(t.database, 'mv_next')).not.toEqual(await queryRows(select));

    const n = events.length;
    const res = await ddl.execute('REFRESH MATERIALIZED VIEW mv_next');
    expect(res).toMatchObject({ statement: 'refreshMview', mviewId: id, rows: 4 });
    expect(await tableRows(t.database, 'mv_next')).toEqual(await queryRows(select));

    const m = await meta('mv_next');
    expect(m.hist).toHaveLength(2);
    expect(m.hist[1]).toMatchObject({ refresh_status: 'SUCCESS', refresh_trigger: 'MANUAL', refresh_method: 'COMPLETE' });
    expect(Number(m.hist[1]!.refresh_id)).toBe(res.refreshId);
    expect(m.hist[1]!.start_time.getTime()).toBeGreaterThanOrEqual(m.hist[0]!.end_time!.getTime());
    expect(Number(m.infos[0]!.refresh_count)).toBe(2);
    expect(m.infos[0]!.next_time).toEqual(before.infos[0]!.next_time);
    expect(m.infos[0]!.next_time).not.toBeNull();
    expect(events.slice(n)).toEqual([{ kind: 'mview', id, change: 'refreshed' }]);

    // REFRESH ... COMPLETE names the method explicitly.
    await ddl.execute(`REFRESH MATERIALIZED VIEW \`${t.database}\`.mv_next COMPLETE`);
    expect((await meta('mv_next')).hist).toHaveLength(3);
  });
});

describe('REFRESH MATERIALIZED VIEW while another run holds the lock', () => {
  it('waits for the running refresh instead of failing or running alongside it', async () => {
    await t.db.raw('CREATE TABLE slow_one (id INT PRIMARY KEY)');
    await t.db('slow_one').insert({ id: 1 });
    await ddl.execute('CREATE MATERIALIZED VIEW mv_slow AS SELECT id, SLEEP(0.5) AS z FROM slow_one');
    const id = Number((await meta('mv_slow')).mv!.mview_id);
    const first = runner.run({ mviewId: id, trigger: 'MANUAL' });
    // Wait until that run is under way (its RUNNING history row is committed first).
    await waitFor(async () => t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_status: 'RUNNING' }).first(), {
      what: 'the first refresh to start',
    });
    const res = await ddl.execute('REFRESH MATERIALIZED VIEW mv_slow');
    const o = await first;
    expect(o.kind).toBe('SUCCESS');
    const h = (await meta('mv_slow')).hist;
    expect(h.map((r) => r.refresh_status)).toEqual(['SUCCESS', 'SUCCESS', 'SUCCESS']);
    // The statement's own run started after the other one ended.
    expect(Number(h[2]!.refresh_id)).toBe(res.refreshId);
    expect(h[2]!.start_time.getTime()).toBeGreaterThanOrEqual(h[1]!.end_time!.getTime());
    await ddl.execute('DROP MATERIALIZED VIEW mv_slow');
  });
});

describe('DROP MATERIALIZED VIEW', () => {
  it('removes the metadata rows and the MV table', async () => {
    for (const [schema, name] of [
      [t.database, 'mv_start'],
      [other, 'mv_other'],
    ] as const) {
      const before = await meta(name, schema);
      const id = Number(before.mv!.mview_id);
      const n = events.length;
      const res = await ddl.execute(`DROP MATERIALIZED VIEW ${schema === t.database ? '' : `${schema}.`}${name}`);
      expect(res).toMatchObject({ statement: 'dropMview', mviewId: id });
      expect(await tableExists(schema, name)).toBe(false);
      expect((await meta(name, schema)).mv).toBeUndefined();
      for (const table of ['mvs_mviews', 'mvs_mview_refresh_info', 'mvs_mview_base_tables', 'mvs_mview_version_map']) {
        expect(await t.db(table).where({ mview_id: id }), table).toEqual([]);
      }
      expect((await listTables(t.db, schema)).filter((x) => x.startsWith(`__mvs_${id}_`))).toEqual([]);
      expect(events.slice(n)).toEqual([{ kind: 'mview', id, change: 'dropped' }]);
    }
    // The other MVs are untouched.
    expect((await meta('mv_plain')).mv).toBeDefined();
    expect(await tableExists(t.database, 'mv_plain')).toBe(true);
  });

  it('the name can be used again after a drop', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW mv_start AS SELECT 1 AS one');
    expect(await tableRows(t.database, 'mv_start')).toEqual(['{"one":1}']);
    await ddl.execute('DROP MATERIALIZED VIEW mv_start');
    expect(await tableExists(t.database, 'mv_start')).toBe(false);
  });
});

// ---- error paths ----

describe('a rejected statement changes nothing', () => {
  type ErrClass = new (...args: never[]) => Error;
  const cases: Array<[string, () => string, ErrClass, RegExp]> = [
    ['bad grammar', () => 'CREATE MATERIALIZED VIEW x REFRES COMPLETE AS SELECT 1', DdlSyntaxError, /syntax error.*expected REFRESH, START WITH, NEXT, TARGET LAG, ON DEMAND or AS, found "REFRES"/],
    ['unknown column', () => 'CREATE MATERIALIZED VIEW e_col AS SELECT nope FROM base', ValidationError, /invalid SELECT: Unknown column 'nope'/],
    ['unknown table', () => 'CREATE MATERIALIZED VIEW e_tab AS SELECT * FROM no_such_table', ValidationError, /invalid SELECT: Table '.*no_such_table' doesn't exist/],
    // The error quotes the user's SELECT, never the probe mvsched wraps around it.
    ['a syntax error in the SELECT', () => 'CREATE MATERIALIZED VIEW e_syn AS SELECT id, FROM base', ValidationError, /^invalid SELECT: You have an error in your SQL syntax; [^_]* near 'FROM base' at line 1$/],
    ['duplicate MV name', () => 'CREATE MATERIALIZED VIEW mv_plain AS SELECT 1 AS one', ConflictError, /materialized view .*\.mv_plain already exists/],
    ['name of a plain table', () => 'CREATE MATERIALIZED VIEW plain_tbl AS SELECT 1 AS one', ConflictError, /a table or view named .*\.plain_tbl already exists/],
    ['name of the base table', () => 'CREATE MATERIALIZED VIEW base AS SELECT id FROM base', ConflictError, /table or view named .*\.base already exists/],
    ['NEXT 0', () => 'CREATE MATERIALIZED VIEW e_next NEXT 0 AS SELECT id FROM base', ValidationError, /NEXT must be a whole number of seconds > 0, got 0/],
    ['NEXT -5', () => 'CREATE MATERIALIZED VIEW e_next NEXT -5 AS SELECT id FROM base', ValidationError, /NEXT must be a whole number of seconds > 0, got -5/],
    ["NEXT 'abc'", () => "CREATE MATERIALIZED VIEW e_next NEXT 'abc' AS SELECT id FROM base", ValidationError, /NEXT must be a whole number of seconds > 0, got "abc"/],
    ['NEXT 1.5', () => 'CREATE MATERIALIZED VIEW e_next NEXT 1.5 AS SELECT id FROM base', ValidationError, /NEXT must be a whole number/],
    ['NEXT not SQL', () => 'CREATE MATERIALIZED VIEW e_next NEXT 1 +* 2 AS SELECT id FROM base', ValidationError, /invalid NEXT expression/],
    ["START WITH 'garbage'", () => "CREATE MATERIALIZED VIEW e_start START WITH 'garbage' AS SELECT id FROM base", ValidationError, /START WITH must evaluate to a DATETIME.*garbage/],
    ['duplicate column names', () => 'CREATE MATERIALIZED VIEW e_dup AS SELECT id, v AS ID FROM base', ValidationError, /[Dd]uplicate column name .*id/i],
    ['REFRESH FAST at create without a log', () => 'CREATE MATERIALIZED VIEW e_fast REFRESH FAST AS SELECT id FROM base', ValidationError, /REFRESH FAST: .*base has no materialized view log/],
    ['unknown database', () => 'CREATE MATERIALIZED VIEW no_such_db_xyz.e_db AS SELECT 1 AS one', NotFoundError, /database no_such_db_xyz does not exist/],
    ['drop of an unknown MV', () => 'DROP MATERIALIZED VIEW nope_mv', NotFoundError, /materialized view .*\.nope_mv does not exist/],
    ['drop of a plain table', () => 'DROP MATERIALIZED VIEW plain_tbl', NotFoundError, /materialized view .*\.plain_tbl does not exist/],
    ['alter of an unknown MV', () => 'ALTER MATERIALIZED VIEW nope_mv REFRESH NEXT 60', NotFoundError, /nope_mv does not exist/],
    ['suspend of an unknown MV', () => 'ALTER MATERIALIZED VIEW nope_mv SUSPEND', NotFoundError, /nope_mv does not exist/],
    ['resume of an unknown MV', () => 'ALTER MATERIALIZED VIEW nope_mv RESUME', NotFoundError, /nope_mv does not exist/],
    ['refresh of an unknown MV', () => 'REFRESH MATERIALIZED VIEW nope_mv', NotFoundError, /nope_mv does not exist/],
    ['refresh of an MV in an unknown database', () => 'REFRESH MATERIALIZED VIEW no_such_db_xyz.mv_plain', NotFoundError, /no_such_db_xyz\.mv_plain does not exist/],
    ['alter with NEXT 0', () => 'ALTER MATERIALIZED VIEW mv_plain REFRESH NEXT 0', ValidationError, /NEXT must be a whole number of seconds > 0/],
    ["alter with START WITH 'garbage'", () => "ALTER MATERIALIZED VIEW mv_plain REFRESH START WITH 'garbage' NEXT 10", ValidationError, /START WITH must evaluate to a DATETIME/],
    ['alter to REFRESH FAST without a log', () => 'ALTER MATERIALIZED VIEW mv_plain REFRESH FAST', ValidationError, /cannot switch .*mv_plain to REFRESH FAST: .*no materialized view log/],
    ['bare ALTER ... REFRESH', () => 'ALTER MATERIALIZED VIEW mv_plain REFRESH', DdlSyntaxError, /syntax error/],
    ['MV log on an unknown column', () => 'CREATE MATERIALIZED VIEW LOG ON base (nope)', ValidationError, /column nope does not exist in .*base/],
    ['MV log on a table that does not exist', () => `CREATE MATERIALIZED VIEW LOG ON ${other}.nopk (x)`, NotFoundError, /does not exist/],
    // Plans fine (the probe reads no rows), fails while building: strict sql_mode turns the
    // division by zero into an error in INSERT ... SELECT.
    ['a SELECT that fails while building', () => 'CREATE MATERIALIZED VIEW e_boom NEXT 60 AS SELECT id, 1/0 AS boom FROM base', ValidationError, /e_boom could not be built: .*Division by 0/i],
  ];

  it.each(cases)('%s', async (_label, sql, cls, message) => {
    const before = await snapshot(t.db, t.database, [t.database, other]);
    const n = events.length;
    const err = await ddl.execute(sql()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, 'the statement should have failed').toBeInstanceOf(cls);
    expect((err as Error).name).toBe(cls.name);
    expect((err as Error).message).toMatch(message);
    expect(await snapshot(t.db, t.database, [t.database, other])).toEqual(before);
    expect(events.length).toBe(n);
  });

  it('the build-failure case really got as far as writing metadata, and undid it', async () => {
    // The snapshot above compares rows; this pins down that the failed build took an MV id (so
    // metadata was written, then removed) and left nothing of that id behind.
    const [[row]] = (await t.db.raw(
      "SELECT AUTO_INCREMENT AS ai FROM information_schema.tables WHERE table_schema = ? AND table_name = 'mvs_mviews'",
      [t.database],
    )) as [[{ ai: number }]];
    const boomId = Number(row.ai) - 1;
    const maxHistId = Number((await t.db('mvs_mview_refresh_hist').max({ m: 'mview_id' }).first())?.m ?? 0);
    expect(boomId).toBeGreaterThan(maxHistId);
    for (const table of ['mvs_mviews', 'mvs_mview_refresh_info', 'mvs_mview_base_tables', 'mvs_mview_refresh_hist']) {
      expect(await t.db(table).where({ mview_id: boomId }), table).toEqual([]);
    }
    for (const s of [t.database, other]) {
      expect((await listTables(t.db, s)).filter((x) => x.startsWith('__mvs_'))).toEqual([]);
      expect(await tableExists(s, 'e_boom')).toBe(false);
    }
  });
});

// ---- random sequences ----


describe('random DDL sequences', () => {
  it('30 random statements over 6 names keep metadata, tables and contents consistent', async () => {
    const seed = process.env.MVS_TEST_SEED ? Number(process.env.MVS_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
    const rnd = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const log: string[] = [];

    await t.db.raw('CREATE TABLE rb (id INT PRIMARY KEY, grp INT NULL, v INT NOT NULL)');
    await t.db.raw('CREATE TABLE rl (grp INT PRIMARY KEY, label VARCHAR(16) NOT NULL)');
    await t.db('rl').insert([0, 1, 2].map((g) => ({ grp: g, label: `g${g}` })));
    let nextId = 1;
    const addRows = async (k: number) => {
      const rows = Array.from({ length: k }, () => ({ id: nextId++, grp: rnd() < 0.2 ? null : Math.floor(rnd() * 4), v: Math.floor(rnd() * 100) }));
      await t.db('rb').insert(rows);
    };
    await addRows(5);

    const names = ['r0', 'r1', 'r2', 'r3', 'r4', 'r5'];
    const defs = [
      'SELECT id, grp, v FROM rb',
      'SELECT grp, COUNT(*) AS n, SUM(v) AS total, MIN(v) AS lo FROM rb GROUP BY grp',
      'SELECT a.id, a.v, b.label FROM rb a JOIN rl b ON b.grp = a.grp',
      'SELECT id FROM rb WHERE v % 2 = 0',
    ];
    const createSchedules: Array<[string, number | null]> = [
      ['', null],
      ['NEXT 60', 60],
      ["START WITH '2030-01-01 00:00:00'", null],
      ['START WITH NOW() - INTERVAL 1 DAY NEXT 600', 600],
    ];
    const alters: Array<[string, number | null | undefined]> = [
      ['REFRESH NEXT 120', 120],
      ['REFRESH FORCE', undefined],
      ["REFRESH START WITH '2031-01-01 00:00:00'", null],
      ['REFRESH COMPLETE START WITH NOW() NEXT 45', 45],
    ];
    interface Model {
      def: string;
      status: 'ACTIVE' | 'SUSPENDED';
      interval: number | null;
    }
    const model = new Map<string, Model>();
    const everCreated = new Set<string>();

    const expectError = async (sql: string, cls: new (...a: never[]) => Error) => {
      const err = await ddl.execute(sql).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, `${sql} should fail with ${cls.name}`).toBeInstanceOf(cls);
    };

    try {
      for (let step = 0; step < 30; step++) {
        const name = pick(names);
        const m = model.get(name);
        const op = pick(['create', 'create', 'alter', 'suspend', 'resume', 'refresh', 'refresh', 'drop'] as const);
        if (rnd() < 0.3) await addRows(1 + Math.floor(rnd() * 3));
        let sql: string;
        switch (op) {
          case 'create': {
            const def = pick(defs);
            const [sched, interval] = pick(createSchedules);
            const method = pick(['', 'REFRESH COMPLETE', 'REFRESH FORCE']);
            sql = `CREATE MATERIALIZED VIEW ${name} ${method} ${sched} AS ${def}`.replace(/ +/g, ' ');
            log.push(sql);
            if (m) {
              await expectError(sql, ConflictError);
            } else {
              await ddl.execute(sql);
              model.set(name, { def, status: 'ACTIVE', interval });
              everCreated.add(name);
            }
            break;
          }
          case 'alter': {
            const [clause, interval] = pick(alters);
            sql = `ALTER MATERIALIZED VIEW ${name} ${clause}`;
            log.push(sql);
            if (!m) {
              await expectError(sql, NotFoundError);
            } else {
              await ddl.execute(sql);
              if (interval !== undefined) m.interval = interval;
            }
            break;
          }
          case 'suspend':
          case 'resume': {
            sql = `ALTER MATERIALIZED VIEW ${name} ${op.toUpperCase()}`;
            log.push(sql);
            if (!m) {
              await expectError(sql, NotFoundError);
            } else {
              await ddl.execute(sql);
              m.status = op === 'suspend' ? 'SUSPENDED' : 'ACTIVE';
            }
            break;
          }
          case 'refresh': {
            sql = `REFRESH MATERIALIZED VIEW ${name}`;
            log.push(sql);
            if (!m) {
              await expectError(sql, NotFoundError);
            } else {
              await ddl.execute(sql);
              // Right after a refresh the MV equals its definition.
              expect(await tableRows(t.database, name), `contents of ${name} after refresh`).toEqual(await queryRows(m.def));
            }
            break;
          }
          case 'drop': {
            sql = `DROP MATERIALIZED VIEW ${name}`;
            log.push(sql);
            if (!m) {
              await expectError(sql, NotFoundError);
            } else {
              await ddl.execute(sql);
              model.delete(name);
            }
            break;
          }
        }
      }

      // ---- consistency ----
      const mviews = (await t.db('mvs_mviews').where({ table_schema: t.database }).whereIn('mview_name', names)) as MviewRow[];
      expect(mviews.map((r) => r.mview_name).sort()).toEqual([...model.keys()].sort());
      const allIds = (await t.db('mvs_mviews').pluck('mview_id')).map(Number);
      const infoIds = (await t.db('mvs_mview_refresh_info').pluck('mview_id')).map(Number);
      // Exactly one refresh_info row per MV, and none without an MV.
      expect([...infoIds].sort((a, b) => a - b)).toEqual([...allIds].sort((a, b) => a - b));
      const baseOrphans = await t.db('mvs_mview_base_tables').whereNotIn('mview_id', allIds.length ? allIds : [-1]);
      expect(baseOrphans).toEqual([]);
      const tables = await listTables(t.db, t.database);
      expect(tables.filter((x) => x.startsWith('__mvs_'))).toEqual([]);
      for (const mv of mviews) {
        const want = model.get(mv.mview_name)!;
        expect(tables, `table of ${mv.mview_name}`).toContain(mv.mview_name);
        expect(mv.status, `status of ${mv.mview_name}`).toBe(want.status);
        expect(mv.mview_definition).toBe(want.def);
        expect(mv.refresh_interval, `interval of ${mv.mview_name}`).toBe(want.interval);
        const hist = (await t.db('mvs_mview_refresh_hist').where({ mview_id: mv.mview_id })) as RefreshHistRow[];
        expect(hist.length).toBeGreaterThanOrEqual(1);
        expect(hist.every((h) => h.refresh_status === 'SUCCESS' && h.refresh_trigger === 'MANUAL')).toBe(true);
        const base = await t.db('mvs_mview_base_tables').where({ mview_id: mv.mview_id }).pluck('base_table_name');
        expect(base.length).toBeGreaterThanOrEqual(1);
      }
      for (const name of everCreated) {
        if (model.has(name)) continue;
        expect(tables, `dropped ${name} still has a table`).not.toContain(name);
      }
      for (const name of names) {
        if (!model.has(name)) expect(await t.db('mvs_mviews').where({ table_schema: t.database, mview_name: name })).toEqual([]);
      }
    } catch (err) {
      if (err instanceof Error) {
        err.message = `[random DDL seed=${seed}; rerun with MVS_TEST_SEED=${seed}]\n${err.message}\nstatements:\n  ${log.join('\n  ')}`;
      }
      throw err;
    }
  });
});

// Keep the import of MvsError meaningful: a failed REFRESH is an MvsError carrying the refresh id.
describe('REFRESH of an MV whose definition fails at run time', () => {
  it('fails with the reason, records FAILED history, and keeps the previous contents', async () => {
    await t.db.raw('CREATE TABLE fragile (id INT PRIMARY KEY)');
    await t.db('fragile').insert([{ id: 1 }, { id: 2 }]);
    await ddl.execute('CREATE MATERIALIZED VIEW mv_fragile AS SELECT id FROM fragile');
    const before = await meta('mv_fragile');
    await t.db.raw('DROP TABLE fragile');
    const err = await ddl.execute('REFRESH MATERIALIZED VIEW mv_fragile').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MvsError);
    expect((err as Error).message).toMatch(/refresh of .*mv_fragile failed: .*fragile' doesn't exist/);
    const m = await meta('mv_fragile');
    expect(m.hist).toHaveLength(2);
    expect(m.hist[1]).toMatchObject({ refresh_status: 'FAILED', refresh_trigger: 'MANUAL' });
    expect(Number(m.hist[1]!.refresh_id)).toBe((err as MvsError).details?.refreshId);
    expect(m.infos[0]!.next_time).toEqual(before.infos[0]!.next_time);
    expect(await tableRows(t.database, 'mv_fragile')).toEqual(['{"id":1}', '{"id":2}']);
    expect((await listTables(t.db, t.database)).filter((x) => x.startsWith('__mvs_'))).toEqual([]);
  });
});
