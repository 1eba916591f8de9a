import { createConnection, type Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { parseDatabaseUrl } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { Cluster, type Proc } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// One consistent cut over several logs (DESIGN.md §2 "FAST refresh over joins", §4 invariant 8):
// writers whose transactions span the two joined tables, in both orders, while a worker process
// refreshes a join MV FAST every second. The cut takes the logs' gates in one statement in id
// order; a writer holding one gate while it waits for the other, behind the cut, is a cycle the
// server breaks by rolling back the cut (it has written nothing) and the cut retries. So: no
// writer ever fails (no deadlock is ever decided against a writer), none waits longer than
// MVS_CUT_WAIT_MS plus a margin, also when the refresher freezes while holding both gates or a
// writer transaction stays open on one table, and the MV ends equal to its definition.

const CUT_WAIT_MS = 2_000;
/** The server ends a frozen gate after 1 s idle; scheduling on a loaded 2-core host adds some. */
const MARGIN_MS = 1_500;
const DEF = 'SELECT jb.k, COUNT(*) AS n, SUM(ja.x) AS sx, SUM(jb.y) AS sy FROM ja JOIN jb ON ja.g = jb.id GROUP BY jb.k';
const DIM_ROWS = 50;

let t: TestEnv;
let rt: Runtime;
let cluster: Cluster;
let worker: Proc;

beforeAll(async () => {
  t = await createTestEnv('join_cut_stall', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '1', MVS_CUT_WAIT_MS: String(CUT_WAIT_MS) });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE ja (id INT AUTO_INCREMENT PRIMARY KEY, g INT NOT NULL, x INT NOT NULL, KEY (g))');
  await t.db.raw('CREATE TABLE jb (id INT PRIMARY KEY, k INT NOT NULL, y INT NOT NULL)');
  await t.db.raw('INSERT INTO ja (g, x) VALUES (1, 1), (2, 2)');
  for (let i = 1; i <= DIM_ROWS; i++) await t.db.raw('INSERT INTO jb (id, k, y) VALUES (?, ?, 0)', [i, i % 5]);
  rt = createRuntime(t.config, t.logger);
  const ddl = createDdlExecutor(rt);
  await ddl.execute('CREATE MATERIALIZED VIEW LOG ON ja (g, x)');
  await ddl.execute('CREATE MATERIALIZED VIEW LOG ON jb (k, y)');
  await ddl.execute(`CREATE MATERIALIZED VIEW j_fast REFRESH FAST NEXT 1 AS ${DEF}`);
  cluster = new Cluster(t);
  worker = cluster.worker('s1');
  cluster.planner();
  await waitFor(async () => (await fastRuns(new Date(0))) >= 2, { timeoutMs: 30_000, what: 'scheduled FAST refreshes of the join MV' });
});

afterAll(async () => {
  if (worker?.child.exitCode === null) worker.child.kill('SIGCONT');
  await cluster?.closeAll();
  await rt?.close();
  await t?.close();
});

async function fastRuns(since: Date): Promise<number> {
  const [r] = (await t.db.raw(
    "SELECT COUNT(*) AS n FROM mvs_mview_refresh_hist WHERE refresh_status = 'SUCCESS' AND refresh_method = 'FAST' AND start_time > ?",
    [since],
  )) as [Array<{ n: number }>];
  return Number(r[0]!.n);
}

async function connect(): Promise<Connection> {
  const c = parseDatabaseUrl(t.databaseUrl);
  return createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database });
}

/**
 * Writers each running transactions that change both tables (a fact row inserted, a dimension
 * row updated; half of them in that order, the others the other way round), without pause,
 * recording the longest statement and every failure.
 */
function startWriters(conns: Connection[]) {
  let stop = false;
  let longest = 0;
  let commits = 0;
  const failures: string[] = [];
  const timed = async (conn: Connection, sql: string, params: unknown[] = []) => {
    const t0 = Date.now();
    try {
      await conn.query(sql, params);
    } finally {
      longest = Math.max(longest, Date.now() - t0);
    }
  };
  const done = conns.map(async (conn, w) => {
    let i = 0;
    while (!stop) {
      const a: [string, unknown[]] = ['INSERT INTO ja (g, x) VALUES (?, ?)', [1 + ((i * 7 + w) % DIM_ROWS), i % 7]];
      // Each writer its own dimension rows: writers do not wait for each other's row locks.
      const b: [string, unknown[]] = ['UPDATE jb SET y = y + 1 WHERE id = ?', [1 + w + 4 * (i % (DIM_ROWS / 4 - 1))]];
      try {
        await timed(conn, 'START TRANSACTION');
        for (const [sql, p] of w % 2 === 0 ? [a, b] : [b, a]) await timed(conn, sql, p);
        await timed(conn, 'COMMIT');
        commits++;
      } catch (err) {
        failures.push(`writer ${w}: ${(err as Error).message}`);
        await conn.query('ROLLBACK').catch(() => {});
      }
      i++;
    }
  });
  return {
    get longest() {
      return longest;
    },
    get commits() {
      return commits;
    },
    failures,
    reset() {
      longest = 0;
    },
    async stop() {
      stop = true;
      await Promise.all(done);
    },
  };
}

const gateWait = async () => {
  const [r] = (await t.db.raw(
    "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '%mvs_mlog_gates%FOR UPDATE%'",
  )) as [Array<{ n: number }>];
  return Number(r[0]!.n) > 0;
};

async function expectMvRight(): Promise<void> {
  await waitFor(
    async () => {
      const [a] = (await t.db.raw('SELECT * FROM j_fast ORDER BY k')) as [unknown[]];
      const [b] = (await t.db.raw(`${DEF} ORDER BY k`)) as [unknown[]];
      return JSON.stringify(a) === JSON.stringify(b);
    },
    { timeoutMs: 30_000, what: 'j_fast equal to its definition' },
  );
}

describe('writers spanning both joined tables while the join MV is refreshed every second', () => {
  it('never fail (no deadlock against each other or the cut) and never wait beyond MVS_CUT_WAIT_MS + margin', async () => {
    const conns = await Promise.all(Array.from({ length: 4 }, () => connect()));
    const writers = startWriters(conns);
    const since = new Date(Date.now());
    try {
      await waitFor(async () => (await fastRuns(since)) >= 6 && writers.commits > 200, { timeoutMs: 60_000, intervalMs: 200, what: 'six FAST refreshes among the writers' });
    } finally {
      await writers.stop();
      await Promise.all(conns.map((c) => c.end()));
    }
    console.log(`[two tables] ${writers.commits} transactions, longest statement ${writers.longest} ms (bound ${CUT_WAIT_MS} + ${MARGIN_MS})`);
    expect(writers.failures).toEqual([]);
    expect(writers.longest).toBeLessThan(CUT_WAIT_MS + MARGIN_MS);
    await expectMvRight();
  });
});

describe('the refresher frozen while it holds both gates', () => {
  it('stalls writers of either table no longer than MVS_CUT_WAIT_MS + margin; the refresh carries on once thawed', async () => {
    const conns = await Promise.all(Array.from({ length: 2 }, () => connect()));
    const holder = await connect();
    const writers = startWriters(conns);
    try {
      // A transaction in flight on the second log makes the next cut wait (holding the first
      // gate): then the worker is between asking for the gates and getting them.
      await holder.query('BEGIN');
      await holder.query('UPDATE jb SET y = y + 1 WHERE id = ?', [DIM_ROWS]);
      await waitFor(gateWait, { timeoutMs: 15_000, intervalMs: 150, what: "the worker's cut waiting for the gates" });
      worker.child.kill('SIGSTOP');
      writers.reset();
      await holder.query('COMMIT');
      const frozenAt = Date.now();
      const before = writers.commits;
      await waitFor(() => Date.now() - frozenAt > 6_000 && writers.commits > before + 50, {
        timeoutMs: 20_000,
        intervalMs: 100,
        what: 'six seconds of freeze with writers committing',
      });
      console.log(`[frozen refresher, two gates] longest writer stall: ${writers.longest} ms (bound ${CUT_WAIT_MS} + ${MARGIN_MS})`);
      expect(writers.longest).toBeLessThan(CUT_WAIT_MS + MARGIN_MS);
      worker.child.kill('SIGCONT');
      const since = new Date(Date.now());
      await waitFor(async () => (await fastRuns(since)) >= 1, { timeoutMs: 30_000, what: 'a FAST refresh after the thaw' });
    } finally {
      worker.child.kill('SIGCONT');
      await writers.stop();
      await Promise.all([...conns, holder].map((c) => c.end()));
    }
    expect(writers.failures).toEqual([]);
  });
});

describe('a writer transaction held open on one of the joined tables', () => {
  it('other writers of both tables wait at most MVS_CUT_WAIT_MS + margin; the run fails with the reason; FAST resumes', async () => {
    const conns = await Promise.all(Array.from({ length: 2 }, () => connect()));
    const holder = await connect();
    const writers = startWriters(conns);
    const since = new Date(Date.now());
    try {
      await holder.query('BEGIN');
      await holder.query('INSERT INTO ja (g, x) VALUES (8, 8)');
      writers.reset();
      const failed = await waitFor(
        async () =>
          t.db('mvs_mview_refresh_hist').where({ refresh_status: 'FAILED' }).where('start_time', '>', since).where('failed_reason', 'like', '%consistent cut%').first(),
        { timeoutMs: 30_000, what: 'a refresh that gave up on its cut' },
      );
      expect(failed.failed_reason).toMatch(/could not take a consistent cut of .*mlog\$ja, .*mlog\$jb within 2000 ms/);
      console.log(`[held writer, two tables] longest stall of other writers: ${writers.longest} ms (bound ${CUT_WAIT_MS} + ${MARGIN_MS})`);
      expect(writers.longest).toBeLessThan(CUT_WAIT_MS + MARGIN_MS);
      await holder.query('COMMIT');
      const after = new Date(Date.now());
      await waitFor(async () => (await fastRuns(after)) >= 1, { timeoutMs: 30_000, what: 'FAST again once the transaction ended' });
    } finally {
      await writers.stop();
      await Promise.all([...conns, holder].map((c) => c.end().catch(() => {})));
    }
    expect(writers.failures).toEqual([]);
    await expectMvRight();
  });
});
