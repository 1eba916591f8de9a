import type { Knex } from 'knex';
import { isDeadlock, isLockNotGranted, isStatementTimeout } from '../db/errors.js';
import { serverFlavor, type ServerFlavor } from '../db/flavor.js';
import { quoteIdent } from '../mv/identifiers.js';
import type { FilePosition } from './binlogPos.js';
import { binlogHighWater, openMatchedSnapshot, waitForCapture, withTablesReadLocked, type BinlogCutLog, type CaptureWaitOptions } from './binlogCut.js';
import { CutTimeoutError } from './cutErrors.js';
import { SEQ_COLUMN } from './names.js';

export { CaptureLagError, CutTimeoutError } from './cutErrors.js';
export type { CaptureWaitOptions } from './binlogCut.js';

/** An MV log as a cut needs it (how it is captured is read from mvs_mlogs at the cut). */
export interface CutLog {
  mlog_id: number;
  table_schema: string;
  mlog_name: string;
}

/**
 * A consistent cut of one or more MV logs (DESIGN.md §2): for each log, every row with seq <=
 * its high-water mark was committed before the cut, none after; `snapshot` is a read-only
 * transaction that sees the base tables and the logs exactly as of the cut. The caller must end
 * the snapshot. For BINLOG logs the snapshot does not see the log rows (capture writes them
 * later): read them as committed, up to the high-water mark.
 */
export interface Cut {
  highWater: Map<number, number>;
  snapshot: Knex.Transaction;
  /** The database's clock at the snapshot's read: the data time of what is read through it. */
  at: Date;
  /** With BINLOG logs: the binary-log position the snapshot is matched to. */
  binlogPosition?: FilePosition;
  /**
   * More snapshots that see exactly what `snapshot` sees (asked for with `parallel`), for
   * reading at the cut on several connections at once. The caller ends them too (endCut).
   */
  also: Knex.Transaction[];
}

/** End every snapshot of a cut. */
export async function endCut(cut: Cut): Promise<void> {
  await Promise.all([cut.snapshot, ...cut.also].map((s) => s.rollback().catch(() => {})));
}

export const DEFAULT_CUT_WAIT_MS = 2_000;

/**
 * How long the server lets the gate transaction sit idle (no statement running) before it kills
 * the connection and so releases the gate. The gate is normally held for well under a
 * millisecond; this bounds it when the process holding it freezes (GC pause, SIGSTOP, a VM
 * pause) or loses the network: whole seconds, the server's granularity.
 */
export const GATE_IDLE_BOUND_S = 1;

interface Classified {
  triggers: CutLog[];
  binlog: BinlogCutLog[];
}

/** Which logs are filled by capture: as mvs_mlogs says now (a re-created log may change mode). */
async function classify(db: Knex, logs: CutLog[]): Promise<Classified> {
  const ids = logs.map((l) => Number(l.mlog_id));
  const rows = (await db('mvs_mlogs').whereIn('mlog_id', ids).select('mlog_id', 'capture_mode', 'base_table_name')) as Array<{
    mlog_id: number | string;
    capture_mode: string | null;
    base_table_name: string;
  }>;
  const binlog = new Map(rows.filter((r) => r.capture_mode === 'BINLOG').map((r) => [Number(r.mlog_id), String(r.base_table_name)]));
  return {
    triggers: logs.filter((l) => !binlog.has(Number(l.mlog_id))),
    binlog: logs.filter((l) => binlog.has(Number(l.mlog_id))).map((l) => ({ ...l, base_table_name: binlog.get(Number(l.mlog_id))! })),
  };
}

/** How a log is filled and its base table, as the caller read it (under the MV's lock). */
export interface KnownMode {
  captureMode: string;
  baseTable: string;
}

/**
 * The classification from what the caller knows, or undefined when it does not know every log.
 * The caller checks after the cut that the modes still hold (the logs' identity check reads them).
 */
function classifyKnown(logs: CutLog[], modes: Map<number, KnownMode> | undefined): Classified | undefined {
  if (!modes || logs.some((l) => !modes.has(Number(l.mlog_id)))) return undefined;
  const mode = (l: CutLog) => modes.get(Number(l.mlog_id))!;
  return {
    triggers: logs.filter((l) => mode(l).captureMode !== 'BINLOG'),
    binlog: logs.filter((l) => mode(l).captureMode === 'BINLOG').map((l) => ({ ...l, base_table_name: mode(l).baseTable })),
  };
}

/**
 * One cut over trigger and BINLOG logs alike. Trigger logs: their gates (below). BINLOG logs: a
 * snapshot matched to a binlog position P (opened while the gates are held when there are
 * both, so one snapshot serves all), then, with the gates released, a wait until capture has
 * passed P, bounded by `capture` (CaptureLagError says why it gave up), and each BINLOG log's
 * high-water mark at P. The gates' bounds are the same whether or not BINLOG logs take part.
 */
export async function takeCut(
  db: Knex,
  logs: CutLog[],
  waitMs = DEFAULT_CUT_WAIT_MS,
  capture: CaptureWaitOptions = {},
  opts: { parallel?: number; modes?: Map<number, KnownMode> } = {},
): Promise<Cut> {
  if (logs.length === 0) throw new Error('takeCut needs at least one log');
  const sorted = [...logs].sort((a, b) => a.mlog_id - b.mlog_id);
  const flavor = await serverFlavor(db);
  // Extra snapshots only where the gates alone make the cut: a BINLOG log's rows are read as
  // committed, and its snapshot is matched to a binlog position, which one snapshot has.
  const extra = Math.max(0, (opts.parallel ?? 1) - 1);
  const { triggers, binlog } = classifyKnown(sorted, opts.modes) ?? (await classify(db, sorted));
  if (binlog.length === 0) return gatedCut(db, triggers, { flavor, waitMs, extra });
  const open = async (): Promise<Cut> => {
    if (triggers.length) return gatedCut(db, triggers, { flavor, waitMs, matched: (snap) => openMatchedSnapshot(db, snap, flavor) });
    return matchedCut(db, flavor);
  };
  const cut = flavor === 'mariadb' ? await open() : await withTablesReadLocked(db, binlog, waitMs, open);
  try {
    await waitForCapture(db, cut.binlogPosition!, capture);
    for (const [id, h] of await binlogHighWater(db, binlog, cut.binlogPosition!)) cut.highWater.set(id, h);
    return cut;
  } catch (err) {
    await endCut(cut);
    throw err;
  }
}

/** BINLOG logs only: a snapshot matched to a binlog position, no gate. */
async function matchedCut(db: Knex, flavor: ServerFlavor): Promise<Cut> {
  const snapshot = await db.transaction({ isolationLevel: 'repeatable read' });
  try {
    const binlogPosition = await openMatchedSnapshot(db, snapshot, flavor);
    const [rows] = (await snapshot.raw('SELECT NOW(3) AS __at')) as [Array<{ __at: Date }>];
    return { highWater: new Map(), snapshot, at: rows[0]!.__at, binlogPosition, also: [] };
  } catch (err) {
    await snapshot.rollback().catch(() => {});
    throw err;
  }
}

/** Opens the snapshot as a consistent snapshot matched to a binlog position (binlogCut.ts). */
type MatchSnapshot = (snapshot: Knex.Transaction) => Promise<FilePosition>;

/**
 * Trigger logs. Auto-increment order is not commit order: a transaction can take seq 10, and commit after
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
async function gatedCut(
  db: Knex,
  sorted: CutLog[],
  opts: { flavor: ServerFlavor; waitMs: number; matched?: MatchSnapshot; extra?: number },
): Promise<Cut> {
  const { flavor, waitMs } = opts;
  let deadline = Date.now() + waitMs;
  let regained = false;
  for (;;) {
    // Every connection is in hand before the gate is asked for: none is waited for holding it.
    const attempt = await openAttempt(db, 1 + (opts.extra ?? 0), flavor, deadline);
    const [snapshot, ...also] = attempt.snapshots;
    let ok = false;
    try {
      const read = await gatedRead(attempt.gate, snapshot, sorted, { flavor, deadline, waitMs, matched: opts.matched, also });
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
      if (!ok) await Promise.all([snapshot, ...also].filter((s) => !s.isCompleted()).map((s) => s.rollback().catch(() => {})));
    }
    if (Date.now() >= deadline) throw new CutTimeoutError(`${timeoutText(sorted, waitMs)}${await oldestTransaction(db)}`);
    // A deadlock victim, or a gate the server took back before our COMMIT: let writers through.
    await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
  }
}

/** The connections of one attempt at a cut: its snapshots, and the gate's connection, set up. */
interface Attempt {
  snapshots: [Knex.Transaction, ...Knex.Transaction[]];
  gate: GateConnection;
}

/** `n` snapshots and the gate's connection, opened at once; nothing is left open when one fails. */
async function openAttempt(db: Knex, n: number, flavor: ServerFlavor, deadline: number): Promise<Attempt> {
  const [snapshots, gate] = await Promise.allSettled([openSnapshots(db, n), openGate(db, flavor, deadline)]);
  if (snapshots.status === 'fulfilled' && gate.status === 'fulfilled') return { snapshots: snapshots.value, gate: gate.value };
  if (snapshots.status === 'fulfilled') await Promise.all(snapshots.value.map((s) => s.rollback().catch(() => {})));
  if (gate.status === 'fulfilled') await gate.value.release(false);
  throw snapshots.status === 'rejected' ? snapshots.reason : (gate as PromiseRejectedResult).reason;
}

/**
 * A pooled connection for the gate transaction, with the server-side bounds set: how long its
 * request for the gates may wait, and how long the transaction may then sit idle. `release`
 * puts the session's settings back and returns it to the pool; `committed`: the gate was
 * released by COMMIT, so that happens while the refresh goes on.
 */
interface GateConnection {
  on(sql: string, bindings?: readonly unknown[]): Knex.Raw;
  release(committed: boolean): Promise<void>;
}

async function openGate(db: Knex, flavor: ServerFlavor, deadline: number): Promise<GateConnection> {
  const conn: unknown = await db.client.acquireConnection();
  const on = (sql: string, bindings: readonly unknown[] = []) => db.raw(sql, bindings as never).connection(conn as never);
  const reset = () =>
    on(
      flavor === 'mariadb'
        ? 'SET SESSION idle_transaction_timeout = DEFAULT, innodb_lock_wait_timeout = DEFAULT'
        : 'SET SESSION wait_timeout = DEFAULT, innodb_lock_wait_timeout = DEFAULT',
    ).catch(() => {});
  const gate: GateConnection = {
    on,
    async release(committed) {
      if (committed) {
        // The connection returns to the pool after the reset (a pool closing waits for it).
        void reset()
          .then(() => db.client.releaseConnection(conn as never))
          .catch(() => {});
        return;
      }
      // A connection the server killed fails these at once, and the pool discards it (knex
      // validates connections on checkout).
      await on('ROLLBACK').catch(() => {});
      await reset();
      await db.client.releaseConnection(conn as never);
    },
  };
  try {
    const lockWaitS = Math.max(1, Math.ceil(Math.max(1, deadline - Date.now()) / 1000));
    await on(
      flavor === 'mariadb'
        ? `SET SESSION idle_transaction_timeout = ${GATE_IDLE_BOUND_S}, innodb_lock_wait_timeout = ${lockWaitS}`
        : `SET SESSION wait_timeout = ${GATE_IDLE_BOUND_S}, innodb_lock_wait_timeout = ${lockWaitS}`,
    );
    // Holds nothing until the gates are asked for; should the snapshots take longer to open than
    // the idle bound, the server ends it and the attempt is made again (gatedRead).
    await on('START TRANSACTION');
  } catch (err) {
    await gate.release(false);
    throw err;
  }
  return gate;
}

/** `n` repeatable-read transactions, opened at once; none is left open when one fails to open. */
async function openSnapshots(db: Knex, n: number): Promise<[Knex.Transaction, ...Knex.Transaction[]]> {
  const opened = await Promise.allSettled(Array.from({ length: n }, () => db.transaction({ isolationLevel: 'repeatable read' })));
  const got = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
  const failed = opened.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed) {
    await Promise.all(got.map((s) => s.rollback().catch(() => {})));
    throw failed.reason;
  }
  return got as [Knex.Transaction, ...Knex.Transaction[]];
}

function timeoutText(logs: CutLog[], waitMs: number): string {
  const names = logs.map((l) => `${l.table_schema}.${l.mlog_name}`).join(', ');
  return (
    `could not take a consistent cut of ${names} within ${waitMs} ms: a transaction kept the log's gate ` +
    '(a writer transaction on the base table still open, or another refresh taking its cut)'
  );
}

/**
 * One attempt on the gate's connection: gate, snapshot read, release. Returns the high-water
 * marks, or what to do again: undefined after a deadlock or a gate transaction the server ended
 * before the gates were asked for, 'lost' when the server took the gate back before our COMMIT.
 */
async function gatedRead(
  gate: GateConnection,
  snapshot: Knex.Transaction,
  logs: CutLog[],
  {
    flavor,
    deadline,
    waitMs,
    matched,
    also,
  }: { flavor: ServerFlavor; deadline: number; waitMs: number; matched?: MatchSnapshot | undefined; also: Knex.Transaction[] },
): Promise<Omit<Cut, 'snapshot'> | 'lost' | undefined> {
  const remainingMs = Math.max(1, deadline - Date.now());
  const { on } = gate;
  let committed = false;
  try {
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
      // The server ended the gate's transaction while it waited for the snapshots to open (its
      // idle bound): no gate was held, so nothing was cut; another attempt on a new connection.
      if ((err as { fatal?: boolean }).fatal) return undefined;
      throw err;
    }
    // With BINLOG logs in the cut too, the snapshot is made now, matched to a binlog position.
    const binlogPosition = matched ? await matched(snapshot) : undefined;
    // The snapshot's first read: its read view is created here, while no writer is in flight.
    const cols = logs.map(
      (l, i) => `(SELECT COALESCE(MAX(${quoteIdent(SEQ_COLUMN)}), 0) FROM ${quoteIdent(l.table_schema)}.${quoteIdent(l.mlog_name)}) AS h${i}`,
    );
    // Extra snapshots take their read views in the same instant, on connections of their own:
    // with no writer of these tables in flight, they see what the snapshot sees.
    const read = `SELECT NOW(3) AS __at, ${cols.join(', ')}`;
    const results = (await Promise.all([snapshot, ...also].map((s) => s.raw(read)))) as Array<[Array<Record<string, number | string | Date>>]>;
    const rows = results[0]![0];
    const others = results.slice(1);
    try {
      await on('COMMIT');
      committed = true;
    } catch {
      // The server ended the gate transaction before our COMMIT (we were idle too long): the
      // gate may have been released before the snapshot read, so this cut proves nothing.
      return 'lost';
    }
    const marks = (r: Record<string, number | string | Date>) => logs.map((_, i) => Number(r[`h${i}`]));
    const mine = marks(rows[0]!).join(',');
    // They must agree on every high-water mark; one that does not (it cannot, short of a writer
    // that bypassed the gates) is not used.
    const same = others.every(([r]) => marks(r[0]!).join(',') === mine);
    if (!same) await Promise.all(also.map((s) => s.rollback().catch(() => {})));
    return {
      highWater: new Map(logs.map((l, i) => [Number(l.mlog_id), Number(rows[0]![`h${i}`])])),
      at: rows[0]!.__at as Date,
      ...(binlogPosition ? { binlogPosition } : {}),
      also: same ? also : [],
    };
  } finally {
    await gate.release(committed);
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
