import { createConnection, type Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { parseDatabaseUrl } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { endCut, GATE_IDLE_BOUND_S, takeCut, type CutLog } from '../../src/mlog/cut.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// A cut asked for several snapshots (a join's delta is read in parts on them at once,
// fast/joinRefresh.ts) must give snapshots that all see the same base tables and logs: their
// read views are taken while the gates hold every writer of those tables back. Writers commit
// to both tables without pause meanwhile; a read view taken a moment later would see more.

let t: TestEnv;
let rt: Runtime;
let logs: CutLog[];
const conns: Connection[] = [];

beforeAll(async () => {
  t = await createTestEnv('cut_snapshots');
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE ca (id INT AUTO_INCREMENT PRIMARY KEY, g INT NOT NULL, x INT NOT NULL)');
  await t.db.raw('CREATE TABLE cb (id INT PRIMARY KEY, y INT NOT NULL)');
  for (let i = 1; i <= 8; i++) await t.db.raw('INSERT INTO cb VALUES (?, 0)', [i]);
  rt = createRuntime(t.config, t.logger);
  const ddl = createDdlExecutor(rt);
  await ddl.execute('CREATE MATERIALIZED VIEW LOG ON ca (g, x)');
  await ddl.execute('CREATE MATERIALIZED VIEW LOG ON cb (y)');
  logs = (await t.db('mvs_mlogs').select('mlog_id', 'table_schema', 'mlog_name')).map((r: CutLog) => ({ ...r, mlog_id: Number(r.mlog_id) }));
  const c = parseDatabaseUrl(t.databaseUrl);
  for (let i = 0; i < 3; i++) conns.push(await createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database }));
});

afterAll(async () => {
  for (const c of conns) await c.end().catch(() => {});
  await rt?.close();
  await t?.close();
});

const STATE =
  'SELECT (SELECT COUNT(*) FROM ca) AS a_rows, (SELECT COALESCE(SUM(x), 0) FROM ca) AS a_sum, (SELECT SUM(y) FROM cb) AS b_sum, ' +
  '(SELECT COUNT(*) FROM `mlog$ca`) AS a_log, (SELECT COUNT(*) FROM `mlog$cb`) AS b_log';

describe('a cut with several snapshots', () => {
  it('gives snapshots that see the same rows of every table and log while writers commit to both', async () => {
    let stop = false;
    let commits = 0;
    const writers = conns.map(async (conn, w) => {
      for (let i = 0; !stop; i++) {
        await conn.query('START TRANSACTION');
        await conn.query('INSERT INTO ca (g, x) VALUES (?, ?)', [w, i % 5]);
        await conn.query('UPDATE cb SET y = y + 1 WHERE id = ?', [1 + ((i + w) % 8)]);
        await conn.query('COMMIT');
        commits++;
      }
    });
    try {
      let compared = 0;
      for (let n = 0; n < 30; n++) {
        const before = commits;
        const cut = await takeCut(t.db, logs, 2_000, {}, { parallel: 3 });
        try {
          expect(cut.also, 'two more snapshots').toHaveLength(2);
          // Let writers commit after the cut, then read: every snapshot must still see the cut.
          while (commits < before + 3) await new Promise((r) => setTimeout(r, 2));
          const states = await Promise.all([cut.snapshot, ...cut.also].map(async (s) => JSON.stringify(((await s.raw(STATE)) as [unknown[]])[0][0])));
          expect(new Set(states).size, `snapshots disagree: ${states.join(' / ')}`).toBe(1);
          const [[hw]] = (await cut.snapshot.raw('SELECT (SELECT MAX(`_mlog$seq`) FROM `mlog$ca`) AS a')) as [[{ a: number }]];
          expect(Number(hw.a)).toBe(cut.highWater.get(logs.find((l) => l.mlog_name === 'mlog$ca')!.mlog_id));
          compared++;
        } finally {
          await endCut(cut);
        }
      }
      expect(compared).toBe(30);
      // The writers went on between cuts: the snapshots were not of an idle database.
      expect(commits).toBeGreaterThan(90);
    } finally {
      stop = true;
      await Promise.all(writers);
    }
  });

  it('makes another attempt when the server ended the gate transaction while a snapshot was slow to open', async () => {
    // The gate's transaction is started beside the snapshots' (cut.ts openAttempt); one that
    // waits longer than the gate's idle bound (GATE_IDLE_BOUND_S) is ended by the server.
    let slowed = 0;
    const slow = new Proxy(t.db, {
      get(target, prop, receiver) {
        if (prop !== 'transaction') return Reflect.get(target, prop, receiver) as unknown;
        return async (...args: Parameters<typeof t.db.transaction>) => {
          if (slowed++ === 0) await new Promise((r) => setTimeout(r, (GATE_IDLE_BOUND_S + 1) * 1000));
          return target.transaction(...args);
        };
      },
    });
    const before = await gateKills();
    const cut = await takeCut(slow, logs, 10_000, {}, { parallel: 2 });
    try {
      expect(await gateKills(), 'the server ended the first gate transaction').toBeGreaterThan(before);
      expect(slowed, 'a second attempt opened its snapshots again').toBeGreaterThanOrEqual(4);
      const [[hw]] = (await cut.snapshot.raw('SELECT (SELECT MAX(`_mlog$seq`) FROM `mlog$ca`) AS a')) as [[{ a: number | null }]];
      expect(Number(hw.a ?? 0)).toBe(cut.highWater.get(logs.find((l) => l.mlog_name === 'mlog$ca')!.mlog_id));
      expect(cut.also).toHaveLength(1);
    } finally {
      await endCut(cut);
    }
  });
});

/** Connections the server ended for idling in a transaction (MariaDB's idle_transaction_timeout). */
async function gateKills(): Promise<number> {
  const [rows] = (await t.db.raw("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")) as [Array<{ Value: string }>];
  return Number(rows[0]!.Value);
}
