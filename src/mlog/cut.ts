import type { Knex } from 'knex';
import { isDeadlock, isLockNotGranted, isStatementTimeout } from '../db/errors.js';
import { serverFlavor } from '../db/flavor.js';
import { RetryableError } from '../errors.js';
import { quoteIdent } from '../mv/identifiers.js';
import { SEQ_COLUMN } from './names.js';

/** An MV log as a cut needs it. */
export interface CutLog {
  mlog_id: number;
  table_schema: string;
  mlog_name: string;
}

/**
 * A consistent cut of one or more MV logs (DESIGN.md §2): for each log, every row with seq <=
 * its high-water mark was committed before the cut, none after; `snapshot` is a read-only
 * transaction that sees the base tables and the logs exactly as of the cut. The caller must end
 * the snapshot.
 */
export interface Cut {
  highWater: Map<number, number>;
  snapshot: Knex.Transaction;
  /** The database's clock at the snapshot's read: the data time of what is read through it. */
  at: Date;
}

/** The cut gave up waiting for writer transactions in flight (MVS_CUT_WAIT_MS). */
export class CutTimeoutError extends RetryableError {}

export const DEFAULT_CUT_WAIT_MS = 2_000;

/**
 * How long the server lets the gate transaction sit idle (no statement running) before it kills
 * the connection and so releases the gate. The gate is normally held for well under a
 * millisecond; this bounds it when the process holding it freezes (GC pause, SIGSTOP, a VM
 * pause) or loses the network: whole seconds, the server's granularity.
 */
export const GATE_IDLE_BOUND_S = 1;

/**
 * Auto-increment order is not commit order: a transaction can take seq 10, and commit after
 * another took and committed seq 11. So the cut takes each log's gate row exclusively, which
 * waits for every writer transaction in flight (their triggers hold it shared until they end)
 * and holds new writers at their first logged row. With no writer in flight, the snapshot's
 * first read sees exactly what is committed, and the highest seq in it is the high-water mark.
 *
 * What this may cost writers is bounded by the server, whatever happens to this process: the
 * gate request gives up after `waitMs` (max_statement_time / innodb_lock_wait_timeout), and once
 * granted the gate transaction is killed if it sits idle for GATE_IDLE_BOUND_S (the snapshot read
 * and COMMIT normally follow within a millisecond). Gates of several logs are taken in one
 * statement in mlog_id order, so two cuts never wait for each other in opposite orders.
 */
export async function takeCut(db: Knex, logs: CutLog[], waitMs = DEFAULT_CUT_WAIT_MS): Promise<Cut> {
  if (logs.length === 0) throw new Error('takeCut needs at least one log');
  const sorted = [...logs].sort((a, b) => a.mlog_id - b.mlog_id);
  const flavor = await serverFlavor(db);
  let deadline = Date.now() + waitMs;
  let regained = false;
  for (;;) {
    const snapshot = await db.transaction({ isolationLevel: 'repeatable read' });
    let ok = false;
    try {
      const read = await gatedRead(db, snapshot, sorted, { flavor, deadline, waitMs });
      if (read === 'lost') {
        // The server took the gate back because this process stalled (a pause, a freeze) after it
        // was granted: that time was not spent waiting for writers, so it gets one more full wait.
        if (!regained) deadline = Date.now() + waitMs;
        regained = true;
      } else if (read) {
        ok = true;
        return { ...read, snapshot };
      }
    } catch (err) {
      if (err instanceof CutTimeoutError) throw new CutTimeoutError(`${err.message}${await oldestTransaction(db)}`);
      throw err;
    } finally {
      if (!ok && !snapshot.isCompleted()) await snapshot.rollback().catch(() => {});
    }
    if (Date.now() >= deadline) throw new CutTimeoutError(`${timeoutText(sorted, waitMs)}${await oldestTransaction(db)}`);
    // A deadlock victim, or a gate the server took back before our COMMIT: let writers through.
    await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
  }
}

function timeoutText(logs: CutLog[], waitMs: number): string {
  const names = logs.map((l) => `${l.table_schema}.${l.mlog_name}`).join(', ');
  return (
    `could not take a consistent cut of ${names} within ${waitMs} ms: a transaction kept the log's gate ` +
    '(a writer transaction on the base table still open, or another refresh taking its cut)'
  );
}

/**
 * One attempt on a connection of its own: gate, snapshot read, release. Returns the high-water
 * marks, or what to do again: undefined after a deadlock, 'lost' when the server took the gate
 * back before our COMMIT.
 */
async function gatedRead(
  db: Knex,
  snapshot: Knex.Transaction,
  logs: CutLog[],
  { flavor, deadline, waitMs }: { flavor: 'mariadb' | 'mysql'; deadline: number; waitMs: number },
): Promise<Omit<Cut, 'snapshot'> | 'lost' | undefined> {
  const remainingMs = Math.max(1, deadline - Date.now());
  const conn: unknown = await db.client.acquireConnection();
  const on = (sql: string, bindings: readonly unknown[] = []) => db.raw(sql, bindings as never).connection(conn as never);
  try {
    const lockWaitS = Math.max(1, Math.ceil(remainingMs / 1000));
    await on(
      flavor === 'mariadb'
        ? `SET SESSION idle_transaction_timeout = ${GATE_IDLE_BOUND_S}, innodb_lock_wait_timeout = ${lockWaitS}`
        : `SET SESSION wait_timeout = ${GATE_IDLE_BOUND_S}, innodb_lock_wait_timeout = ${lockWaitS}`,
    );
    await on('START TRANSACTION');
    const ids = logs.map((l) => Number(l.mlog_id));
    const select = `SELECT mlog_id FROM mvs_mlog_gates WHERE mlog_id IN (${ids.map(() => '?').join(', ')}) ORDER BY mlog_id FOR UPDATE`;
    try {
      await on(
        flavor === 'mariadb'
          ? `SET STATEMENT max_statement_time = ${(remainingMs / 1000).toFixed(3)} FOR ${select}`
          : select.replace(/^SELECT/, `SELECT /*+ MAX_EXECUTION_TIME(${remainingMs}) */`),
        ids,
      );
    } catch (err) {
      if (isLockNotGranted(err) || isStatementTimeout(err)) throw new CutTimeoutError(timeoutText(logs, waitMs));
      // Our waiting exclusive request holds back writers that have not yet taken the gate; when
      // a writer holding it waits for a row such a writer has, that is a deadlock, and the
      // server picks the gate (it has written nothing) as the victim. Let them through, retry.
      if (isDeadlock(err)) return undefined;
      throw err;
    }
    // The snapshot's first read: its read view is created here, while no writer is in flight.
    const cols = logs.map(
      (l, i) => `(SELECT COALESCE(MAX(${quoteIdent(SEQ_COLUMN)}), 0) FROM ${quoteIdent(l.table_schema)}.${quoteIdent(l.mlog_name)}) AS h${i}`,
    );
    const [rows] = (await snapshot.raw(`SELECT NOW(3) AS __at, ${cols.join(', ')}`)) as [Array<Record<string, number | string | Date>>];
    try {
      await on('COMMIT');
    } catch {
      // The server ended the gate transaction before our COMMIT (we were idle too long): the
      // gate may have been released before the snapshot read, so this cut proves nothing.
      return 'lost';
    }
    return { highWater: new Map(logs.map((l, i) => [Number(l.mlog_id), Number(rows[0]![`h${i}`])])), at: rows[0]!.__at as Date };
  } finally {
    // A no-op after COMMIT. A connection the server killed fails these at once, and the pool
    // discards it (knex validates connections on checkout).
    await on('ROLLBACK').catch(() => {});
    await on(
      flavor === 'mariadb'
        ? 'SET SESSION idle_transaction_timeout = DEFAULT, innodb_lock_wait_timeout = DEFAULT'
        : 'SET SESSION wait_timeout = DEFAULT, innodb_lock_wait_timeout = DEFAULT',
    ).catch(() => {});
    await db.client.releaseConnection(conn as never);
  }
}

/** Best effort: who is probably holding the gate, for the failure reason. */
async function oldestTransaction(db: Knex): Promise<string> {
  try {
    const [rows] = (await db.raw(
      'SELECT trx_mysql_thread_id AS thread, TIMESTAMPDIFF(SECOND, trx_started, NOW()) AS age FROM information_schema.INNODB_TRX ' +
        'WHERE trx_mysql_thread_id <> CONNECTION_ID() ORDER BY trx_started LIMIT 1',
    )) as [Array<{ thread: number; age: number }>];
    const r = rows[0];
    return r ? `; the oldest open transaction is MySQL thread ${r.thread}, open for ${r.age} s` : '';
  } catch {
    return '';
  }
}
