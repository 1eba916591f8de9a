import type { Knex } from 'knex';
import { serverFlavor } from './flavor.js';

/**
 * Run DDL on a user's table (CREATE / DROP TRIGGER, DROP TABLE of a log, RENAME of an MV) with a
 * bounded metadata-lock wait. Such a statement waits for every open transaction that used the
 * table, and every new writer or reader queues behind it: with the server's default
 * lock_wait_timeout (a day) one long transaction would stall them all. Past the bound the
 * statement fails (ER_LOCK_WAIT_TIMEOUT) and the caller retries later.
 */
export async function boundedDdl(db: Knex, sql: string, waitMs: number): Promise<void> {
  const s = Math.max(1, Math.ceil(waitMs / 1000));
  if ((await serverFlavor(db)) === 'mariadb') {
    await db.raw(`SET STATEMENT lock_wait_timeout = ${s} FOR ${sql}`);
    return;
  }
  // MySQL has no SET STATEMENT for DDL: the session variable, on one connection, put back after.
  const conn: unknown = await db.client.acquireConnection();
  const on = (q: string) => db.raw(q).connection(conn as never);
  try {
    await on(`SET SESSION lock_wait_timeout = ${s}`);
    await on(sql);
  } finally {
    await on('SET SESSION lock_wait_timeout = DEFAULT').catch(() => {});
    await db.client.releaseConnection(conn as never);
  }
}
