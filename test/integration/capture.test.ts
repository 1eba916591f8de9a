import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CaptureProcess } from '../../src/capture/capture.js';
import { readPosition } from '../../src/capture/positionStore.js';
import { createDb, parseDatabaseUrl } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { createRedis, closeRedis } from '../../src/queue/redis.js';
import { createTestLog, logByKey, logCount } from '../support/binlogLogs.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';
import type { Redis } from 'ioredis';

// Binlog capture in this process against the real MariaDB (binary log on): the BINLOG log of a
// table must hold exactly what the triggers write into the log of its twin, fed the same
// statements in the same transactions.

let t: TestEnv;
let redis: Redis;
const running: Array<{ close(): Promise<void> }> = [];

beforeAll(async () => {
  t = await createTestEnv('capture');
  await migrateLatest(t.db);
  redis = createRedis(t.redisUrl);
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.close()));
});
afterAll(async () => {
  await closeRedis(redis);
  await t?.close();
});

function newCapture(): CaptureProcess {
  const commitDb = createDb(t.databaseUrl, { poolMax: 1 });
  const c = new CaptureProcess({
    db: t.db,
    commitDb,
    redis,
    connection: parseDatabaseUrl(t.databaseUrl),
    metaSchema: t.database,
    prefix: t.prefix,
    logger: t.logger,
    serverId: 3_000_000_000 + Math.floor(Math.random() * 1_000_000),
    leaseTtlMs: 2000,
    statusIntervalMs: 200,
  });
  running.push({ close: async () => {
    await c.close();
    await commitDb.destroy();
  } });
  return c;
}

async function startCapture(): Promise<CaptureProcess> {
  const c = newCapture();
  await c.start();
  await waitFor(() => c.active, { what: 'capture active' });
  return c;
}

const COLUMNS = `id INT NOT NULL PRIMARY KEY, a VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci, b DECIMAL(10,2),
  c DATETIME(6), d BIGINT UNSIGNED, e VARBINARY(8), f DOUBLE, g TIMESTAMP(3) NULL, h ENUM('x','y,z'), j JSON, u INT`;
const TRACKED = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'j'];

/** A table with a BINLOG log and its twin with a trigger log. */
async function twins(name: string, tracked = TRACKED, columns = COLUMNS): Promise<{ binlogId: number; twinId: number }> {
  await t.db.raw(`CREATE TABLE ${name} (${columns})`);
  await t.db.raw(`CREATE TABLE ${name}_tw (${columns})`);
  const binlogId = await createTestLog(t.db, { metaSchema: t.database, schema: t.database, table: name, columns: tracked, mode: 'BINLOG' });
  const twinId = await createTestLog(t.db, { metaSchema: t.database, schema: t.database, table: `${name}_tw`, columns: tracked, mode: 'TRIGGERS' });
  return { binlogId, twinId };
}

/** Run each statement (`$` stands for the table) on the table and on its twin, in one transaction. */
async function both(name: string, statements: string[], opts: { rollback?: boolean } = {}): Promise<void> {
  await t.db.transaction(async (trx) => {
    for (const s of statements) {
      await trx.raw(s.replaceAll('$', name));
      await trx.raw(s.replaceAll('$', `${name}_tw`));
    }
    if (opts.rollback) throw new Error('rollback');
  }).catch((err: Error) => {
    if (err.message !== 'rollback') throw err;
  });
}

async function orderedLog(table: string): Promise<string[]> {
  const byKey = await logByKey(t.db, t.database, table, []);
  return byKey.get('[]') ?? [];
}

/** The BINLOG log equals the twin's trigger log, row for row and in order (one writer). */
async function expectSameAsTwin(name: string): Promise<void> {
  const want = await orderedLog(`${name}_tw`);
  await waitFor(async () => (await logCount(t.db, t.database, name)) >= want.length, { what: `capture of ${name} to catch up`, timeoutMs: 20_000 });
  expect(await orderedLog(name)).toEqual(want);
}

describe('binlog capture writes what the triggers would have written', () => {
  it('inserts, updates, deletes, multi-row statements and transactions, with the same values and order', async () => {
    await twins('t1');
    await startCapture();
    await both('t1', [
      "INSERT INTO $ VALUES (1, 'x', 1.50, '2026-01-02 03:04:05.123456', 18446744073709551615, x'00ff', 0.1, '2026-01-02 03:04:05.678', 'y,z', '{\"k\": [1, 2]}', 7)",
      "INSERT INTO $ (id, a) VALUES (2, 'b'), (3, 'c'), (4, NULL)",
    ]);
    await both('t1', ["UPDATE $ SET a = 'X' WHERE id = 1"]); // case only: a change, compared as bytes
    await both('t1', ['UPDATE $ SET u = u + 1 WHERE id = 1']); // untracked column only: nothing
    await both('t1', ["UPDATE $ SET a = 'X' WHERE id = 1"]); // no change at all: nothing
    await both('t1', ["UPDATE $ SET a = 'X ' WHERE id = 1"]); // trailing space: a change in bytes
    await both('t1', ['UPDATE $ SET b = 2, id = id + 10 WHERE id IN (2, 3)', 'DELETE FROM $ WHERE id = 4']);
    await both('t1', ["INSERT INTO $ (id, a) VALUES (5, 'gone')", 'DELETE FROM $ WHERE id = 1'], { rollback: true });
    await both('t1', ["INSERT INTO $ (id, a) VALUES (6, 'é😀'), (7, NULL)", "UPDATE $ SET a = 'after' WHERE id = 7", 'DELETE FROM $ WHERE id = 6']);
    await both('t1', ["UPDATE $ SET h = 'x', j = '[]', e = x'01', g = NULL WHERE id = 1"]);
    await expectSameAsTwin('t1');
    expect((await orderedLog('t1')).length).toBe(20);
  });

  it('resumes from its stored position after a restart, across binlog rotations, without gaps or duplicates', async () => {
    await twins('t2', ['a']);
    let c = await startCapture();
    for (let i = 0; i < 20; i++) await both('t2', [`INSERT INTO $ (id, a) VALUES (${i}, 'v${i}')`]);
    await t.db.raw('FLUSH BINARY LOGS');
    for (let i = 0; i < 20; i++) await both('t2', [`UPDATE $ SET a = 'w${i}' WHERE id = ${i}`]);
    await expectSameAsTwin('t2');
    await c.close();
    // Written while no capture runs, with a rotation in between.
    for (let i = 20; i < 30; i++) await both('t2', [`INSERT INTO $ (id, a) VALUES (${i}, 'v${i}')`]);
    await t.db.raw('FLUSH BINARY LOGS');
    await both('t2', ['DELETE FROM $ WHERE id < 5']);
    c = await startCapture();
    await expectSameAsTwin('t2');
    const stored = await readPosition(t.db);
    expect(stored?.gtid).toMatch(/^\d+-\d+-\d+/);
    expect(stored?.file).toMatch(/^binlog\.\d+$/);
    await c.close();
  });

  it('starts filling a log created while it runs with the first transaction after the creation', async () => {
    await t.db.raw('CREATE TABLE t3 (id INT PRIMARY KEY, a INT)');
    await t.db.raw('CREATE TABLE t3_tw (id INT PRIMARY KEY, a INT)');
    await startCapture();
    await both('t3', ['INSERT INTO $ VALUES (1, 1)']); // before the logs: not logged
    await twins3();
    await both('t3', ['INSERT INTO $ VALUES (2, 2)', 'UPDATE $ SET a = 10 WHERE id = 1']);
    await expectSameAsTwin('t3');
    expect(await orderedLog('t3')).toHaveLength(3);
  });

  it('DDL: an added column is ignored; a dropped tracked column breaks that log only, and writes go on', async () => {
    const { binlogId } = await twins('t4', ['a', 'b'], 'id INT PRIMARY KEY, a INT, b INT');
    await twins('t5', ['a'], 'id INT PRIMARY KEY, a INT');
    await startCapture();
    await both('t4', ['INSERT INTO $ VALUES (1, 1, 1)']);
    await both('t4', ['ALTER TABLE $ ADD COLUMN n INT', 'INSERT INTO $ (id, a, b, n) VALUES (2, 2, 2, 2)', 'UPDATE $ SET n = 5 WHERE id = 1']);
    await expectSameAsTwin('t4');
    await t.db.raw('ALTER TABLE t4 DROP COLUMN b');
    await t.db.raw('INSERT INTO t4 (id, a) VALUES (3, 3)'); // the write itself is unaffected
    const row = await waitFor(
      async () => (await t.db('mvs_mlogs').where({ mlog_id: binlogId, state: 'BROKEN' }).first()) as { broken_reason: string } | undefined,
      { what: 't4 log BROKEN' },
    );
    expect(row.broken_reason).toMatch(/column b of .*t4 was dropped/);
    // Other tables are still captured.
    await both('t5', ['INSERT INTO $ VALUES (1, 1)', 'UPDATE $ SET a = 2 WHERE id = 1']);
    await expectSameAsTwin('t5');
    // A renamed tracked column breaks its log too.
    const t5 = (await t.db('mvs_mlogs').where({ base_table_name: 't5' }).first()) as { mlog_id: number };
    await t.db.raw('ALTER TABLE t5 RENAME COLUMN a TO aa');
    const r5 = await waitFor(
      async () => (await t.db('mvs_mlogs').where({ mlog_id: t5.mlog_id, state: 'BROKEN' }).first()) as { broken_reason: string } | undefined,
      { what: 't5 log BROKEN' },
    );
    expect(r5.broken_reason).toMatch(/column a of .*t5 was renamed to aa/);
  });

  it('takes the position over from a predecessor frozen in the middle of a commit', async () => {
    // A capture's commit connection: its last commit recorded it, then it froze in the middle
    // of the next commit, holding the position row.
    const frozen = await t.db.client.acquireConnection();
    const q = (sql: string) => new Promise((resolve, reject) => frozen.query(sql, (err: Error | null, r: unknown) => (err ? reject(err) : resolve(r))));
    await q('UPDATE mvs_capture_position SET owner_conn = CONNECTION_ID() WHERE id = 1');
    await q('BEGIN');
    await q('UPDATE mvs_capture_position SET updated_at = NOW(6) WHERE id = 1');
    await startCapture();
    // Its connection was killed, so its transaction is gone.
    await expect(q('SELECT 1')).rejects.toThrow();
    await t.db.client.releaseConnection(frozen).catch(() => {});
    await twins('t7', ['a'], 'id INT PRIMARY KEY, a INT');
    await both('t7', ['INSERT INTO $ VALUES (1, 1)']);
    await expectSameAsTwin('t7');
  });

  it('publishes its lag, zero once it has caught up', async () => {
    const c = await startCapture();
    await t.db.raw('CREATE TABLE t6 (id INT PRIMARY KEY)');
    await t.db.raw('INSERT INTO t6 VALUES (1)');
    const s = await waitFor(() => (c.status().lagBytes === 0 ? c.status() : undefined), { what: 'lag 0' });
    expect(s).toMatchObject({ active: true, lagSeconds: 0, lagBytes: 0 });
    expect(s.gtid).toMatch(/^\d+-\d+-\d+/);
  });
});

async function twins3(): Promise<void> {
  await createTestLog(t.db, { metaSchema: t.database, schema: t.database, table: 't3', columns: ['a'], mode: 'BINLOG' });
  await createTestLog(t.db, { metaSchema: t.database, schema: t.database, table: 't3_tw', columns: ['a'], mode: 'TRIGGERS' });
}
