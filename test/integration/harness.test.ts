import { Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '../../src/db/connect.js';
import { isLockNotGranted } from '../../src/db/errors.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
beforeAll(async () => {
  t = await createTestEnv('harness');
});
afterAll(async () => {
  await t?.close();
});

describe('the test harness runs real servers', () => {
  it('round-trips a BullMQ job through a real Redis', async () => {
    const connection = new Redis(t.redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue('roundtrip', { connection, prefix: t.prefix });
    const events = new QueueEvents('roundtrip', { connection: connection.duplicate(), prefix: t.prefix });
    const worker = new Worker('roundtrip', async (job) => ({ doubled: (job.data as { n: number }).n * 2 }), {
      connection: connection.duplicate(),
      prefix: t.prefix,
    });
    try {
      await events.waitUntilReady();
      const job = await queue.add('double', { n: 21 });
      const result = await job.waitUntilFinished(events, 10_000);
      expect(result).toEqual({ doubled: 42 });
      // The keys really are in Redis, under this file's prefix.
      const keys = await connection.keys(`${t.prefix}:roundtrip:*`);
      expect(keys.length).toBeGreaterThan(0);
    } finally {
      await worker.close();
      await events.close();
      await queue.obliterate({ force: true });
      await queue.close();
      connection.disconnect();
    }
  });

  it('SELECT ... FOR UPDATE NOWAIT fails at once on a row locked by another transaction', async () => {
    const other = createDb(t.databaseUrl, { poolMax: 2 });
    try {
      await t.db.raw('CREATE TABLE lockme (id INT PRIMARY KEY, v INT)');
      await t.db('lockme').insert({ id: 1, v: 0 });
      const holder = await t.db.transaction();
      try {
        await holder.raw('SELECT * FROM lockme WHERE id = 1 FOR UPDATE');
        const started = Date.now();
        const err = await other
          .transaction(async (trx) => {
            // Were NOWAIT ignored, this session would wait 50 s for the lock.
            await trx.raw('SET SESSION innodb_lock_wait_timeout = 50');
            return trx.raw('SELECT * FROM lockme WHERE id = 1 FOR UPDATE NOWAIT');
          })
          .then(() => undefined, (e: unknown) => e);
        const waitedMs = Date.now() - started;
        expect(err).toBeDefined();
        expect(isLockNotGranted(err)).toBe(true);
        expect(waitedMs).toBeLessThan(25_000);
        // A row nobody holds is still free for the other transaction.
        await t.db('lockme').insert({ id: 2, v: 0 });
        const free = await other.transaction((trx) => trx.raw('SELECT * FROM lockme WHERE id = 2 FOR UPDATE NOWAIT'));
        expect(free[0]).toHaveLength(1);
      } finally {
        await holder.rollback();
      }
    } finally {
      await other.destroy();
    }
  });
});
