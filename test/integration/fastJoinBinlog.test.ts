import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCapture } from '../../src/app/processes.js';
import { getMview, type RefreshInfoRow } from '../../src/mv/repository.js';
import { LoggedRefresh } from '../../src/refresh/logged.js';
import { mlogLinks } from '../../src/refresh/method.js';
import { createRunners } from '../../src/app/runtime.js';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import type { Closeable } from '../../src/process/lifecycle.js';
import { JoinOracle, type LogModes } from '../support/joinOracle.js';
import { emptyStats, type Stats } from '../support/joinWorkload.js';
import { testSeed } from '../support/prng.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// The join oracle (test/support/joinOracle.ts) over logs filled from the binary log (DESIGN.md
// §2 "Change capture from the binary log"), with `mvsched capture` running in this process: the
// fact table's log BINLOG and the dimensions' TRIGGERS (one cut over both kinds), then every log
// BINLOG. Capture writes a BINLOG log's rows after the cut's snapshot was opened, so the delta,
// which reads the base tables in that snapshot, must not read those logs through it.
//
// MVS_JOIN_BINLOG_SEEDS seeds per mix (default 3); MVS_TEST_SEED replays a failure.

const SEEDS = Number(process.env.MVS_JOIN_BINLOG_SEEDS ?? 3);

let t: TestEnv;
let ddl: DdlExecutor;
let capture: Closeable[] = [];
let conns: Connection[] = [];
const base = testSeed();

beforeAll(async () => {
  t = await createTestEnv('fast_join_binlog');
  await migrateLatest(t.db);
  const { runner, purger } = createRunners({ db: t.db, logger: t.logger, clock: systemClock, purgeBatch: 1000 }, 'join-binlog-node');
  ddl = new DdlExecutor({ db: t.db, logger: t.logger, clock: systemClock, runner, purger, defaultSchema: t.database, notify: async () => {} });
  capture = await startCapture(t.config, t.logger);
  conns = await new JoinOracle(t, ddl, base).writerConnections();
});

afterAll(async () => {
  await Promise.allSettled(conns.map((c) => c.end()));
  for (const c of capture.reverse()) await c.close();
  await t?.close();
});

async function seeds(modes: LogModes, firstIndex: number): Promise<Stats> {
  const oracle = new JoinOracle(t, ddl, base, modes);
  const total = emptyStats();
  for (let i = 0; i < SEEDS; i++) {
    const index = firstIndex + i;
    const seed = (base + index * 7919) >>> 0;
    const stats = await oracle.runSeed(seed, index, conns).catch((e: unknown) => {
      if (e instanceof Error && !e.message.includes(oracle.label(seed, index))) e.message = `${oracle.label(seed, index)} ${e.message}`;
      throw e;
    });
    for (const k of Object.keys(total) as Array<keyof Stats>) total[k] += stats[k];
  }
  return total;
}

type Row = Record<string, unknown>;

/**
 * `write` with capture down, then REFRESH `mv`: its run opens the cut's snapshot and waits for
 * capture, which is started again only then, so capture writes the log rows after the snapshot
 * was opened. Returns the REFRESH's message.
 */
async function refreshWhileCaptureDown(mv: string, write: () => Promise<void>): Promise<string> {
  for (const c of capture.reverse()) await c.close();
  capture = [];
  try {
    await write();
    const refresh = ddl.execute(`REFRESH MATERIALIZED VIEW ${mv}`);
    await waitFor(
      async () => {
        const [r] = (await t.db.raw("SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX WHERE trx_isolation_level = 'REPEATABLE READ'")) as [Array<{ n: number }>];
        return Number(r[0]!.n) > 0;
      },
      // InnoDB refreshes its INNODB_TRX snapshot only when nobody read it for 100 ms: poll slower.
      { timeoutMs: 15_000, intervalMs: 150, what: "the refresh's snapshot open while capture is down" },
    );
    capture = await startCapture(t.config, t.logger);
    return (await refresh).message;
  } finally {
    if (!capture.length) capture = await startCapture(t.config, t.logger);
  }
}
async function mviewIdOf(name: string): Promise<number> {
  return Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);
}
async function rows(sql: string): Promise<string[]> {
  const [r] = (await t.db.raw(sql)) as [Row[]];
  return r.map((x) => JSON.stringify(x)).sort();
}

describe('capture behind at the cut', () => {
  it('rows capture writes after the snapshot was opened are applied: the delta does not read BINLOG logs through the snapshot', async () => {
    await t.db.raw('CREATE TABLE cb_f (id INT PRIMARY KEY, d INT NULL, x INT NULL, KEY (d))');
    await t.db.raw('CREATE TABLE cb_d (id INT PRIMARY KEY, region VARCHAR(8) NULL)');
    await t.db.raw("INSERT INTO cb_d VALUES (1, 'eu'), (2, 'us'), (3, 'asia')");
    await t.db.raw('INSERT INTO cb_f VALUES (1, 1, 10), (2, 1, 20), (3, 2, 5), (4, 3, 1)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON cb_f (d, x) USING BINLOG');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON cb_d (region)');
    const agg = 'SELECT d.region, COUNT(*) AS n, SUM(f.x) AS sx, MAX(f.x) AS mx FROM cb_f f JOIN cb_d d ON f.d = d.id GROUP BY d.region';
    const spj = 'SELECT f.id, d.id AS did, f.x, d.region FROM cb_f f, cb_d d WHERE f.d = d.id';
    await ddl.execute(`CREATE MATERIALIZED VIEW cb_agg REFRESH FAST AS ${agg}`);
    await ddl.execute(`CREATE MATERIALIZED VIEW cb_spj REFRESH FAST AS ${spj}`);

    for (const [k, mv] of ['cb_agg', 'cb_spj'].entries()) {
      // A write capture has just stored: the refresh below counts capture as down only once its
      // position has been still for a while (10 s), so it waits for capture meanwhile.
      await t.db.raw('INSERT INTO cb_f VALUES (?, 1, 1)', [100 + k]);
      await waitFor(
        async () => {
          const [r] = (await t.db.raw('SELECT COUNT(*) AS n FROM `mlog$cb_f` WHERE id = ?', [100 + k])) as [Array<{ n: number }>];
          return Number(r[0]!.n) > 0;
        },
        { timeoutMs: 30_000, intervalMs: 50, what: 'capture writing the log row' },
      );
      const message = await refreshWhileCaptureDown(mv, async () => {
        await t.db.transaction(async (trx) => {
          await trx.raw('INSERT INTO cb_f VALUES (?, 2, 7)', [mv === 'cb_agg' ? 10 : 11]);
          await trx.raw('UPDATE cb_f SET d = 3 WHERE id = 1'); // a join-key update
          await trx.raw(`UPDATE cb_d SET region = ? WHERE id = 2`, [mv === 'cb_agg' ? 'moon' : 'mars']);
        });
        await t.db.raw('DELETE FROM cb_f WHERE id = 4');
      });
      expect(message).toMatch(/\(FAST,/);
      expect(await rows(`SELECT * FROM ${mv}`), mv).toEqual(await rows(mv === 'cb_agg' ? agg : spj));
    }
  }, 120_000);
});

describe('a log re-created in place as BINLOG', () => {
  it("is read as BINLOG by the next FAST run of a process that had planned the MV over its TRIGGERS log", async () => {
    await t.db.raw('CREATE TABLE rc_f (id INT PRIMARY KEY, d INT NULL, x INT NULL, KEY (d))');
    await t.db.raw('CREATE TABLE rc_d (id INT PRIMARY KEY, region VARCHAR(8) NULL)');
    await t.db.raw("INSERT INTO rc_d VALUES (1, 'eu'), (2, 'us')");
    await t.db.raw('INSERT INTO rc_f VALUES (1, 1, 10), (2, 2, 20)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON rc_f (d, x)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON rc_d (region)');
    const agg = 'SELECT d.region, COUNT(*) AS n, SUM(f.x) AS sx FROM rc_f f JOIN rc_d d ON f.d = d.id GROUP BY d.region';
    await ddl.execute(`CREATE MATERIALIZED VIEW rc_agg REFRESH FAST AS ${agg}`);
    // A FAST run plans the MV over the TRIGGERS log (the runner keeps that plan).
    await t.db.raw('INSERT INTO rc_f VALUES (3, 1, 5)');
    expect((await ddl.execute('REFRESH MATERIALIZED VIEW rc_agg')).message).toMatch(/\(FAST,/);
    // The log breaks (a trigger dropped) and is re-created in place, filled from the binary log.
    const [trg] = (await t.db.raw("SELECT TRIGGER_NAME AS n FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = 'rc_f' LIMIT 1")) as [Array<{ n: string }>];
    await t.db.raw(`DROP TRIGGER \`${trg[0]!.n}\``);
    const id = Number((await t.db('mvs_mlogs').where({ base_table_name: 'rc_f' }).first('mlog_id')).mlog_id);
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON rc_f (d, x) USING BINLOG');
    expect(Number((await t.db('mvs_mlogs').where({ base_table_name: 'rc_f' }).first('mlog_id')).mlog_id), 'the same log id').toBe(id);
    expect((await ddl.execute('REFRESH MATERIALIZED VIEW rc_agg')).message).toMatch(/\(COMPLETE,/);
    // Rows capture writes after the next FAST run opened its snapshot: read as BINLOG, they are applied.
    const message = await refreshWhileCaptureDown('rc_agg', async () => {
      await t.db.raw('INSERT INTO rc_f VALUES (4, 2, 7)');
      await t.db.raw('UPDATE rc_f SET d = 2 WHERE id = 1');
    });
    expect(message).toMatch(/\(FAST,/);
    expect(await rows('SELECT * FROM rc_agg')).toEqual(await rows(agg));
  }, 120_000);

  it('a FAST run whose cut was taken for a capture mode the log no longer has fails with the reason, changing nothing', async () => {
    // As if the log had been re-created between the run's reads and its cut: the links (read
    // under the MV's lock) still say TRIGGERS, the log is BINLOG by the time of the check.
    await t.db.raw('INSERT INTO rc_f VALUES (5, 1, 3)');
    await waitFor(async () => Number(((await t.db.raw('SELECT COUNT(*) AS n FROM `mlog$rc_f` WHERE id = 5')) as [Array<{ n: number }>])[0][0]!.n) > 0, {
      timeoutMs: 30_000,
      what: 'capture writing the log row',
    });
    const mv = (await getMview(t.db, await mviewIdOf('rc_agg')))!;
    const before = await rows('SELECT * FROM rc_agg');
    const lock = await t.db.transaction({ isolationLevel: 'read committed' });
    try {
      const [info] = (await lock('mvs_mview_refresh_info').where({ mview_id: mv.mview_id }).forUpdate()) as RefreshInfoRow[];
      const links = (await mlogLinks(t.db, mv.mview_id)).map((l) => (l.table.name === 'rc_f' ? { ...l, captureMode: 'TRIGGERS' } : l));
      await expect(new LoggedRefresh({ db: t.db }).refresh(lock, mv, info!, links, 'FAST', true, Date.now(), t.logger)).rejects.toThrow(
        /log on .*rc_f was re-created \(now filled by BINLOG\) during the refresh/,
      );
    } finally {
      await lock.rollback();
    }
    expect(await rows('SELECT * FROM rc_agg')).toEqual(before);
  });
});

describe('FAST refresh over joins of BINLOG logs: oracle', () => {
  it('fact table BINLOG, dimensions TRIGGERS: every MV equals its definition at every cut', async () => {
    const s = await seeds({ f: 'BINLOG' }, 0);
    console.info(`join oracle, f BINLOG: ${SEEDS} seeds from MVS_TEST_SEED=${base}`, s);
    expect(s.multiLogRefreshes, `MVS_TEST_SEED=${base}`).toBeGreaterThan(0);
  }, 600_000);

  it('every table BINLOG: every MV equals its definition at every cut', async () => {
    const s = await seeds({ f: 'BINLOG', a: 'BINLOG', b: 'BINLOG' }, 100);
    console.info(`join oracle, all BINLOG: ${SEEDS} seeds from MVS_TEST_SEED=${base}`, s);
    expect(s.multiLogRefreshes, `MVS_TEST_SEED=${base}`).toBeGreaterThan(0);
  }, 600_000);
});
