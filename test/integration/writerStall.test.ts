import { createConnection, type Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { parseDatabaseUrl } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { Cluster, type Proc } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// Invariant 8 (DESIGN.md §4): nothing mvsched holds blocks a user's writers for longer than
// MVS_CUT_WAIT_MS plus a small margin, whatever happens to mvsched's processes, and mvsched
// never makes a write fail. Two ways a consistent cut could hold writers: its process freezes
// (GC pause, SIGSTOP, a VM pause, a partition) while it holds the log's gate, and a writer
// transaction stays open while a cut waits for it. A writer inserting without pause measures
// every stall.

const CUT_WAIT_MS = 2_000;
/** The server ends a frozen gate after 1 s idle; scheduling on a loaded 2-core host adds some. */
const MARGIN_MS = 1_500;

let t: TestEnv;
let rt: Runtime;
let cluster: Cluster;
let worker: Proc;

beforeAll(async () => {
  t = await createTestEnv('writer_stall', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '1', MVS_CUT_WAIT_MS: String(CUT_WAIT_MS) });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE w (id INT AUTO_INCREMENT PRIMARY KEY, g INT NOT NULL, x INT NOT NULL)');
  await t.db.raw('INSERT INTO w (g, x) VALUES (1, 1), (2, 2)');
  rt = createRuntime(t.config, t.logger);
  const ddl = createDdlExecutor(rt);
  await ddl.execute('CREATE MATERIALIZED VIEW LOG ON w (g, x)');
  await ddl.execute('CREATE MATERIALIZED VIEW w_fast REFRESH FAST NEXT 1 AS SELECT g, COUNT(*) AS n, SUM(x) AS s FROM w GROUP BY g');
  cluster = new Cluster(t);
  worker = cluster.worker('s1');
  cluster.planner();
  await waitFor(async () => (await t.db('mvs_mview_refresh_hist').where({ refresh_trigger: 'SCHEDULED', refresh_status: 'SUCCESS' })).length >= 2, {
    timeoutMs: 60_000,
    what: 'scheduled FAST refreshes',
  });
});

afterAll(async () => {
  if (worker?.child.exitCode === null) worker.child.kill('SIGCONT');
  await cluster?.closeAll();
  await rt?.close();
  await t?.close();
});

async function connect(): Promise<Connection> {
  const c = parseDatabaseUrl(t.databaseUrl);
  return createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database });
}

/** A writer inserting one row per statement, without pause, recording each statement's latency. */
function startWriter(conn: Connection) {
  let stop = false;
  let longest = 0;
  let writes = 0;
  const failures: string[] = [];
  const done = (async () => {
    while (!stop) {
      const t0 = Date.now();
      try {
        await conn.query('INSERT INTO w (g, x) VALUES (?, ?)', [1 + (writes % 5), writes % 7]);
        writes++;
      } catch (err) {
        failures.push((err as Error).message);
      }
      longest = Math.max(longest, Date.now() - t0);
    }
  })();
  return {
    get longest() {
      return longest;
    },
    get writes() {
      return writes;
    },
    failures,
    reset() {
      longest = 0;
    },
    async stop() {
      stop = true;
      await done;
    },
  };
}

const gateWait = async (db: TestEnv['db']) => {
  const [r] = (await db.raw(
    "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '%mvs_mlog_gates%FOR UPDATE%'",
  )) as [Array<{ n: number }>];
  return Number(r[0]!.n) > 0;
};

describe('a refresher frozen while it holds the gate', () => {
  it('stalls writers no longer than MVS_CUT_WAIT_MS + margin; the refresh carries on once thawed', async () => {
    const writerConn = await connect();
    const holderConn = await connect();
    const writer = startWriter(writerConn);
    try {
      // A writer transaction in flight makes the next cut wait for it: then we know the worker is
      // inside its cut, between asking for the gate and getting it.
      await holderConn.query('BEGIN');
      await holderConn.query('INSERT INTO w (g, x) VALUES (9, 9)');
      // InnoDB refreshes its INNODB_TRX snapshot only when nobody read it for 100 ms: poll slower.
      await waitFor(() => gateWait(t.db), { timeoutMs: 15_000, intervalMs: 150, what: "the worker's cut waiting for the gate" });
      worker.child.kill('SIGSTOP');
      writer.reset();
      // Let the frozen process's request through: the server grants it the gate while it cannot
      // run a single instruction. Without a server-side bound, writers now wait for the thaw.
      await holderConn.query('COMMIT');
      const frozenAt = Date.now();
      const writesBefore = writer.writes;
      await waitFor(() => Date.now() - frozenAt > 8_000 && writer.writes > writesBefore + 50, {
        timeoutMs: 20_000,
        intervalMs: 100,
        what: 'eight seconds of freeze with writers committing',
      });
      const longest = writer.longest;
      console.log(`[frozen refresher] longest writer stall during an 8 s freeze: ${longest} ms (bound ${CUT_WAIT_MS} + ${MARGIN_MS})`);
      expect(longest).toBeLessThan(CUT_WAIT_MS + MARGIN_MS);
      worker.child.kill('SIGCONT');
      const since = new Date(Date.now());
      await waitFor(
        async () => t.db('mvs_mview_refresh_hist').where({ refresh_status: 'SUCCESS' }).where('start_time', '>', since).first(),
        { timeoutMs: 30_000, what: 'a successful refresh after the thaw' },
      );
    } finally {
      worker.child.kill('SIGCONT');
      await writer.stop();
      await writerConn.end();
      await holderConn.end();
    }
    expect(writer.failures).toEqual([]);
  });
});

describe('a writer transaction held open while cuts want the gate', () => {
  it('other writers wait at most MVS_CUT_WAIT_MS + margin; the FAST run fails with the reason, FORCE falls back to COMPLETE, then FAST resumes', async () => {
    await createDdlExecutor(rt).execute('CREATE MATERIALIZED VIEW w_force REFRESH FORCE NEXT 1 AS SELECT g, MAX(x) AS mx FROM w GROUP BY g');
    const writerConn = await connect();
    const holderConn = await connect();
    const writer = startWriter(writerConn);
    const since = new Date(Date.now());
    try {
      await holderConn.query('BEGIN');
      await holderConn.query('INSERT INTO w (g, x) VALUES (8, 8)');
      writer.reset();
      const timedOut = await waitFor(
        async () =>
          t.db('mvs_mview_refresh_hist').where({ refresh_status: 'FAILED' }).where('start_time', '>', since).where('failed_reason', 'like', '%consistent cut%').first(),
        { timeoutMs: 30_000, what: 'a refresh that gave up on its cut' },
      );
      expect(timedOut.failed_reason).toMatch(/could not take a consistent cut of .*mlog\$w within 2000 ms: a transaction kept the log's gate/);
      const fallback = await waitFor(
        async () =>
          t
            .db('mvs_mview_refresh_hist as h')
            .join('mvs_mviews as m', 'm.mview_id', 'h.mview_id')
            .where({ 'm.mview_name': 'w_force', 'h.refresh_status': 'SUCCESS', 'h.refresh_method': 'COMPLETE' })
            .where('h.start_time', '>', since)
            .first('h.refresh_id'),
        { timeoutMs: 40_000, what: 'FORCE falling back to COMPLETE' },
      );
      expect(fallback).toBeDefined();
      const longest = writer.longest;
      console.log(`[long writer] longest stall of another writer while cuts waited: ${longest} ms (bound ${CUT_WAIT_MS} + ${MARGIN_MS})`);
      expect(longest).toBeLessThan(CUT_WAIT_MS + MARGIN_MS);
      await holderConn.query('COMMIT');
      const after = new Date(Date.now());
      await waitFor(
        async () =>
          t
            .db('mvs_mview_refresh_hist as h')
            .join('mvs_mviews as m', 'm.mview_id', 'h.mview_id')
            .where({ 'm.mview_name': 'w_fast', 'h.refresh_status': 'SUCCESS', 'h.refresh_method': 'FAST' })
            .where('h.start_time', '>', after)
            .first('h.refresh_id'),
        { timeoutMs: 40_000, what: 'FAST again once the transaction ended' },
      );
    } finally {
      await writer.stop();
      await writerConn.end();
      await holderConn.end().catch(() => {});
    }
    expect(writer.failures).toEqual([]);
    // Both MVs end equal to their definitions.
    for (const [mv, def] of [
      ['w_fast', 'SELECT g, COUNT(*) AS n, SUM(x) AS s FROM w GROUP BY g'],
      ['w_force', 'SELECT g, MAX(x) AS mx FROM w GROUP BY g'],
    ] as const) {
      await waitFor(
        async () => {
          const [a] = (await t.db.raw(`SELECT * FROM ${mv} ORDER BY g`)) as [unknown[]];
          const [b] = (await t.db.raw(`${def} ORDER BY g`)) as [unknown[]];
          return JSON.stringify(a) === JSON.stringify(b);
        },
        { timeoutMs: 30_000, what: `${mv} equal to its definition` },
      );
    }
  });
});
