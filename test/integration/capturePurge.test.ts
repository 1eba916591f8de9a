import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { startMariadb } from '../../scripts/localServers.mjs';
import { CaptureProcess } from '../../src/capture/capture.js';
import { createDb, parseDatabaseUrl, type Db } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { createLogger } from '../../src/log.js';
import { createRedis, closeRedis } from '../../src/queue/redis.js';
import { createTestLog, logCount } from '../support/binlogLogs.js';
import { waitFor } from '../support/testEnv.js';
import { inject } from 'vitest';

// Binlog files purged while capture is stopped: every BINLOG log it was filling is marked
// BROKEN with the reason (never a silent gap), and logs made afterwards are filled again. On a
// MariaDB of its own: purging the shared server's binlog would pull it from under other files.

let server: { url: string; stop(): Promise<void> };
let db: Db;
let redis: Redis;
const prefix = `tpurge${process.pid}`;
const logger = createLogger({ level: 'silent' });

beforeAll(async () => {
  server = await startMariadb({ baseDir: join(tmpdir(), `mvsched-purge-${process.pid}`) });
  db = createDb(server.url);
  await migrateLatest(db);
  redis = createRedis(inject('redisUrl'));
});
afterAll(async () => {
  await closeRedis(redis);
  await db?.destroy();
  await server?.stop();
});

function newCapture(): CaptureProcess {
  const conn = parseDatabaseUrl(server.url);
  return new CaptureProcess({ db, redis, connection: conn, metaSchema: conn.database, prefix, logger, serverId: 77, leaseTtlMs: 2000 });
}

async function purgeAllButCurrent(): Promise<void> {
  await db.raw('FLUSH BINARY LOGS');
  // The server keeps a file until its transactions are durable in InnoDB; ask until it lets go.
  await waitFor(
    async () => {
      const [[status]] = (await db.raw('SHOW MASTER STATUS')) as [Array<{ File: string }>];
      await db.raw(`PURGE BINARY LOGS TO '${status!.File}'`);
      const [files] = (await db.raw('SHOW BINARY LOGS')) as [unknown[]];
      return files.length === 1;
    },
    { what: 'old binlog files purged', timeoutMs: 20_000, intervalMs: 200 },
  );
}

describe('binlog files purged before capture read them', () => {
  it('marks the logs BROKEN with the reason, and fills logs created afterwards', async () => {
    const schema = parseDatabaseUrl(server.url).database;
    await db.raw('CREATE TABLE p1 (id INT PRIMARY KEY, a INT)');
    await db.raw('CREATE TABLE p2 (id INT PRIMARY KEY, a INT)');
    const id1 = await createTestLog(db, { metaSchema: schema, schema, table: 'p1', columns: ['a'], mode: 'BINLOG' });
    let c = newCapture();
    await c.start();
    await db.raw('INSERT INTO p1 VALUES (1, 1)');
    await waitFor(async () => (await logCount(db, schema, 'p1')) === 1, { what: 'p1 captured' });
    await c.close();

    await db.raw('INSERT INTO p1 VALUES (2, 2)'); // never read: its file goes
    await purgeAllButCurrent();

    c = newCapture();
    await c.start();
    const row = await waitFor(async () => (await db('mvs_mlogs').where({ mlog_id: id1, state: 'BROKEN' }).first()) as { broken_reason: string } | undefined, {
      what: 'p1 log BROKEN',
    });
    expect(row.broken_reason).toMatch(/purged/);
    expect(await logCount(db, schema, 'p1')).toBe(1);

    // Capture goes on from the server's position: a new log is filled.
    await createTestLog(db, { metaSchema: schema, schema, table: 'p2', columns: ['a'], mode: 'BINLOG' });
    await db.raw('INSERT INTO p2 VALUES (1, 1), (2, 2)');
    await waitFor(async () => (await logCount(db, schema, 'p2')) === 2, { what: 'p2 captured' });
    await c.close();
  });
});
