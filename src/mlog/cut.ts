import type { Knex } from 'knex';
import { isDeadlock, isLockNotGranted } from '../db/errors.js';
import { RetryableError } from '../errors.js';
import { quoteIdent } from '../mv/identifiers.js';
import type { MlogRow } from './repository.js';
import { SEQ_COLUMN } from './names.js';

/**
 * A consistent cut of one MV log (DESIGN.md §2): every log row with seq <= highWater was
 * committed before the cut, none after; `snapshot` is a read-only transaction that sees the
 * base table and the log exactly as of the cut. The caller must end the snapshot.
 */
export interface Cut {
  highWater: number;
  snapshot: Knex.Transaction;
}

/** How long a cut waits for writer transactions in flight before giving up. */
export const DEFAULT_CUT_WAIT_S = 10;

/**
 * Auto-increment order is not commit order: a transaction can take seq 10, and commit after
 * another took and committed seq 11. So the cut takes the log's gate row exclusively, which
 * waits for every writer transaction in flight (their triggers hold it shared until they end)
 * and holds new writers at their first logged row. With no writer in flight, the snapshot's
 * first read sees exactly what is committed, and the highest seq in it is the high-water mark.
 * The gate is held only from the moment in-flight writers finish to that one read.
 */
export async function takeCut(db: Knex, mlog: Pick<MlogRow, 'mlog_id' | 'table_schema' | 'mlog_name'>, waitS = DEFAULT_CUT_WAIT_S): Promise<Cut> {
  const snapshot = await db.transaction({ isolationLevel: 'repeatable read' });
  const deadline = Date.now() + waitS * 1000;
  let ok = false;
  try {
    for (;;) {
      const gate = await db.transaction();
      try {
        const remainingS = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
        await gate.raw('SET SESSION innodb_lock_wait_timeout = ?', [remainingS]);
        try {
          await gate.raw('SELECT mlog_id FROM mvs_mlog_gates WHERE mlog_id = ? FOR UPDATE', [mlog.mlog_id]);
        } catch (err) {
          if (isLockNotGranted(err)) {
            throw new RetryableError(
              `could not take a consistent cut of ${mlog.table_schema}.${mlog.mlog_name}: a writer transaction stayed open longer than ${waitS} s`,
            );
          }
          // Our waiting exclusive request holds back writers that have not yet taken the gate; when
          // a writer holding it waits for a row such a writer has, that is a deadlock, and the
          // server picks the gate (it has written nothing) as the victim. Let them through, retry.
          if (isDeadlock(err) && Date.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
            continue;
          }
          throw err;
        } finally {
          await gate.raw('SET SESSION innodb_lock_wait_timeout = DEFAULT').catch(() => {});
        }
        // The snapshot's first read: its read view is created here, while no writer is in flight.
        const [rows] = (await snapshot.raw(
          `SELECT COALESCE(MAX(${quoteIdent(SEQ_COLUMN)}), 0) AS h FROM ${quoteIdent(mlog.table_schema)}.${quoteIdent(mlog.mlog_name)}`,
        )) as [Array<{ h: number | string }>];
        await gate.commit();
        ok = true;
        return { highWater: Number(rows[0]!.h), snapshot };
      } finally {
        if (!gate.isCompleted()) await gate.rollback().catch(() => {});
      }
    }
  } finally {
    if (!ok && !snapshot.isCompleted()) await snapshot.rollback().catch(() => {});
  }
}
