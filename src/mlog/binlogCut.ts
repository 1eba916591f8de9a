import type { Knex } from 'knex';
import type { ServerFlavor } from '../db/flavor.js';
import { quoteIdent } from '../mv/identifiers.js';
import { compareBinlogPos, encodeBinlogPos, showPos, type FilePosition } from './binlogPos.js';
import { CaptureLagError } from './cutErrors.js';
import { BPOS_COLUMN, SEQ_COLUMN } from './names.js';

// The consistent cut of BINLOG logs (DESIGN.md §2 "Change capture from the binary log"): a
// snapshot matched to a binlog position P, then a wait until `mvsched capture` has stored a
// position past P (so every log row of a transaction up to P is committed), then per log the
// largest seq among the rows of transactions ending at or before P. Capture writes in commit
// order, so those are exactly the rows below the first one past P.

export interface CaptureWaitOptions {
  /** Give up when capture has not passed the cut's position after this long (ms). */
  maxWaitMs?: number;
  /** Give up sooner when capture's stored position has not moved for this long (ms): it is down. */
  staleMs?: number;
}

export const DEFAULT_CAPTURE_WAIT_MS = 30_000;
export const DEFAULT_CAPTURE_STALE_MS = 10_000;

/** A BINLOG log as its cut needs it. */
export interface BinlogCutLog {
  mlog_id: number;
  table_schema: string;
  mlog_name: string;
  base_table_name: string;
}

/**
 * Turn the snapshot's (empty) transaction into a consistent snapshot and return the binlog
 * position matched to it: MariaDB reports it for the snapshot itself (binlog_snapshot_file /
 * _position), so every transaction ending at or before it is in the snapshot and none after.
 * Elsewhere (MySQL) the caller holds read locks on the logged tables (withTablesReadLocked), so
 * no transaction on them commits between the snapshot and the server's current position.
 */
export async function openMatchedSnapshot(db: Knex, snapshot: Knex.Transaction, flavor: ServerFlavor): Promise<FilePosition> {
  // knex began the transaction with BEGIN; its read view is made by the first read, not here.
  await snapshot.raw('COMMIT');
  await snapshot.raw('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
  await snapshot.raw('START TRANSACTION WITH CONSISTENT SNAPSHOT');
  let file: string | undefined;
  let pos: number | undefined;
  if (flavor === 'mariadb') {
    const [rows] = (await snapshot.raw("SHOW STATUS LIKE 'binlog\\_snapshot\\_%'")) as [Array<{ Variable_name: string; Value: string }>];
    const v = new Map(rows.map((r) => [r.Variable_name.toLowerCase(), r.Value]));
    file = v.get('binlog_snapshot_file') || undefined;
    pos = v.has('binlog_snapshot_position') ? Number(v.get('binlog_snapshot_position')) : undefined;
  } else {
    const [rows] = (await db.raw('SHOW MASTER STATUS').catch(() => db.raw('SHOW BINARY LOG STATUS'))) as [Array<{ File: string; Position: number | string }>];
    file = rows[0]?.File;
    pos = rows[0] ? Number(rows[0].Position) : undefined;
  }
  if (!file || pos === undefined || encodeBinlogPos(file, pos) === undefined) {
    throw new CaptureLagError('the server reports no binary-log position for a consistent snapshot (is the binary log on?): BINLOG logs cannot be cut');
  }
  return { file, pos };
}

/**
 * MySQL (no binlog_snapshot_* variables): hold a brief read lock on the BINLOG logs' base tables
 * while `fn` opens the snapshot and reads the position, so no transaction on them commits in
 * between. The lock waits for their writers at most `waitMs` (lock_wait_timeout), and writers
 * queued behind it no longer. Written for MySQL 8; not tested here (no MySQL server).
 */
export async function withTablesReadLocked<T>(db: Knex, logs: BinlogCutLog[], waitMs: number, fn: () => Promise<T>): Promise<T> {
  const conn: unknown = await db.client.acquireConnection();
  const on = (sql: string) => db.raw(sql).connection(conn as never);
  try {
    await on(`SET SESSION lock_wait_timeout = ${Math.max(1, Math.ceil(waitMs / 1000))}`);
    const tables = [...new Set(logs.map((l) => `${quoteIdent(l.table_schema)}.${quoteIdent(l.base_table_name)} READ`))];
    await on(`LOCK TABLES ${tables.join(', ')}`);
    try {
      return await fn();
    } finally {
      await on('UNLOCK TABLES').catch(() => {});
    }
  } finally {
    await on('SET SESSION lock_wait_timeout = DEFAULT').catch(() => {});
    await db.client.releaseConnection(conn as never);
  }
}

interface StoredCapture {
  file: string | null;
  pos: number | null;
  owner: string | null;
  eventTime: Date | null;
  /** Milliseconds since capture last stored its position (database clock). */
  ageMs: number | null;
}

async function readCapture(db: Knex): Promise<StoredCapture | undefined> {
  const [rows] = (await db.raw(
    'SELECT binlog_file AS file, binlog_pos AS pos, owner, event_time AS et, TIMESTAMPDIFF(MICROSECOND, updated_at, NOW(6)) AS age ' +
      'FROM mvs_capture_position WHERE id = 1',
  )) as [Array<{ file: string | null; pos: number | string | null; owner: string | null; et: Date | null; age: number | string | null }>];
  const r = rows[0];
  if (!r) return undefined;
  return { file: r.file, pos: r.pos === null ? null : Number(r.pos), owner: r.owner, eventTime: r.et, ageMs: r.age === null ? null : Number(r.age) / 1000 };
}

const passed = (c: StoredCapture | undefined, p: FilePosition): boolean =>
  Boolean(c && c.file !== null && c.pos !== null && compareBinlogPos({ file: c.file, pos: c.pos }, p) >= 0);

/**
 * Wait until capture has stored a position at or past `p`. Capture stores a position moved only
 * by other tables' transactions, never one moved by its own commits alone, so when nothing but
 * capture's own commit precedes `p` one small write of another table (mvs_capture_ping) gives it
 * a transaction past `p` to store. Fails with the reason when capture is down (its position
 * still for `staleMs`) or still behind after `maxWaitMs`, saying how far.
 */
export async function waitForCapture(db: Knex, p: FilePosition, opts: CaptureWaitOptions = {}): Promise<void> {
  const maxWaitMs = opts.maxWaitMs ?? DEFAULT_CAPTURE_WAIT_MS;
  const staleMs = opts.staleMs ?? DEFAULT_CAPTURE_STALE_MS;
  const start = Date.now();
  let pinged = false;
  let seen: string | undefined;
  let movedAt = start;
  for (let delay = 1; ; delay = Math.min(20, delay * 2)) {
    const c = await readCapture(db);
    if (passed(c, p)) return;
    if (!pinged) {
      await db.raw('UPDATE mvs_capture_ping SET pings = pings + 1 WHERE id = 1');
      pinged = true;
    }
    const now = Date.now();
    const key = c ? showPos(c) : 'none';
    if (seen !== undefined && key !== seen) movedAt = now;
    seen = key;
    const quietMs = Math.min(now - movedAt, c?.ageMs ?? Number.POSITIVE_INFINITY);
    if (quietMs >= staleMs) throw new CaptureLagError(await downText(db, c, p, quietMs));
    if (now - start >= maxWaitMs) throw new CaptureLagError(await behindText(db, c, p, now - start));
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function downText(db: Knex, c: StoredCapture | undefined, p: FilePosition, quietMs: number): Promise<string> {
  const where = c ? `it stopped at ${showPos(c)}, ${await distance(db, c, p)} before the cut's binlog position ${showPos(p)}` : 'it has never run';
  const who = c?.owner ? ` (last held by ${c.owner}, which stopped without saying so)` : c ? ' (the last capture was stopped)' : '';
  return (
    `binlog capture is not running: its position has not moved for ${Math.round(quietMs / 1000)} s${who}; ${where}. ` +
    'Start `mvsched capture` (BINLOG logs are filled by it)'
  );
}

async function behindText(db: Knex, c: StoredCapture | undefined, p: FilePosition, waitedMs: number): Promise<string> {
  const reading = c?.eventTime ? `; it is reading transactions committed ${Math.max(0, Math.round((Date.now() - c.eventTime.getTime()) / 1000))} s ago` : '';
  return (
    `binlog capture is behind: after waiting ${Math.round(waitedMs / 1000)} s it has reached ${c ? showPos(c) : 'nothing'}, ` +
    `${c ? await distance(db, c, p) : 'an unknown distance'} short of the cut's binlog position ${showPos(p)}${reading}`
  );
}

/** Bytes of binary log from capture's position to `p` (best effort: needs BINLOG MONITOR across files). */
async function distance(db: Knex, c: StoredCapture, p: FilePosition): Promise<string> {
  if (c.file === null || c.pos === null) return 'an unknown distance';
  if (c.file === p.file) return `${Math.max(0, p.pos - c.pos)} bytes`;
  try {
    const [rows] = (await db.raw('SHOW BINARY LOGS')) as [Array<{ Log_name: string; File_size: number | string }>];
    const i = rows.findIndex((r) => r.Log_name === c.file);
    const j = rows.findIndex((r) => r.Log_name === p.file);
    if (i < 0 || j < i) return `binlog files ${c.file} to ${p.file}`;
    let n = Number(rows[i]!.File_size) - c.pos + p.pos;
    for (const r of rows.slice(i + 1, j)) n += Number(r.File_size);
    return `${Math.max(0, n)} bytes`;
  } catch {
    return `binlog files ${c.file} to ${p.file}`;
  }
}

/**
 * Per log, the largest seq among rows of transactions ending at or before `p`, read as
 * committed (capture wrote them after the snapshot was taken, so the snapshot cannot see them).
 */
export async function binlogHighWater(db: Knex, logs: BinlogCutLog[], p: FilePosition): Promise<Map<number, number>> {
  const limit = encodeBinlogPos(p.file, p.pos)!;
  const seq = quoteIdent(SEQ_COLUMN);
  const bpos = quoteIdent(BPOS_COLUMN);
  const cols = logs.map(
    (l, i) =>
      `COALESCE((SELECT ${seq} FROM ${quoteIdent(l.table_schema)}.${quoteIdent(l.mlog_name)} WHERE ${bpos} <= ? ` +
      `ORDER BY ${bpos} DESC, ${seq} DESC LIMIT 1), 0) AS h${i}`,
  );
  const [rows] = (await db.raw(`SELECT ${cols.join(', ')}`, logs.map(() => limit))) as [Array<Record<string, number | string>>];
  return new Map(logs.map((l, i) => [Number(l.mlog_id), Number(rows[0]![`h${i}`])]));
}
