import type { Knex } from 'knex';
import type { Executor } from '../mv/repository.js';
import { toNumber } from '../mv/repository.js';
import { quoteIdent } from '../mv/identifiers.js';
import { BPOS_COLUMN, DML_TYPE_COLUMN, OLD_NEW_COLUMN } from '../mlog/names.js';
import type { LogRow } from './rowImages.js';
import type { CapturedLog } from './logRegistry.js';

// Capture's position in the binary log, kept in one row of mvs_capture_position and moved in the
// same transaction as the log rows read up to it, so after a crash capture resumes exactly where
// its last commit left off. The row also fences: a capture that takes over bumps `epoch`, and a
// commit whose epoch is no longer current fails instead of writing (a process that lost its
// lease while frozen cannot add rows behind its successor's back).

export const POSITION_TABLE = 'mvs_capture_position';

export interface BinlogPosition {
  /** MariaDB `domain-server-seq[,...]` or a MySQL GTID set; '' is "the oldest binlog there is". */
  gtid: string | null;
  file: string | null;
  pos: number | null;
}

export interface StoredPosition extends BinlogPosition {
  /** The BINLOG logs being captured at this position. */
  activeMlogs: number[];
  epoch: number;
  owner: string | null;
  eventTime: Date | null;
}

export class FencedError extends Error {
  constructor(readonly mine: number, readonly current: number) {
    super(`capture position was taken over (epoch ${current}, this process holds ${mine})`);
  }
}

interface RawPosition {
  gtid_pos: string | null;
  binlog_file: string | null;
  binlog_pos: number | string | null;
  active_mlogs: string;
  epoch: number | string;
  owner: string | null;
  event_time: Date | null;
}

function normalize(r: RawPosition): StoredPosition {
  return {
    gtid: r.gtid_pos,
    file: r.binlog_file,
    pos: r.binlog_pos === null ? null : toNumber(r.binlog_pos),
    activeMlogs: (JSON.parse(r.active_mlogs) as number[]).map(Number),
    epoch: toNumber(r.epoch),
    owner: r.owner,
    eventTime: r.event_time,
  };
}

/**
 * Become the capture that writes: a new epoch, and the position to resume from. A predecessor
 * frozen in the middle of a commit holds the position row; once this process has the lease,
 * that connection is killed (its transaction rolls back) rather than waited for.
 */
export async function takeOverPosition(db: Knex, owner: string, opts: { lockWaitS?: number; onKill?: (connId: number) => void } = {}): Promise<StoredPosition> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await takeOverOnce(db, owner, opts.lockWaitS ?? 5);
    } catch (err) {
      if ((err as { errno?: number }).errno !== 1205 || attempt >= 3) throw err;
      const [row] = (await db(POSITION_TABLE).where({ id: 1 }).select('owner_conn')) as Array<{ owner_conn: number | string | null }>;
      if (row?.owner_conn === null || row?.owner_conn === undefined) continue;
      opts.onKill?.(toNumber(row.owner_conn));
      await db.raw('KILL CONNECTION ?', [toNumber(row.owner_conn)]).catch(() => {}); // gone already
    }
  }
}

async function takeOverOnce(db: Knex, owner: string, lockWaitS: number): Promise<StoredPosition> {
  return db.transaction(async (trx) => {
    await trx.raw('SET SESSION innodb_lock_wait_timeout = ?', [lockWaitS]);
    let rows: RawPosition[];
    try {
      rows = (await trx(POSITION_TABLE).where({ id: 1 }).forUpdate().select('*')) as RawPosition[];
    } finally {
      await trx.raw('SET SESSION innodb_lock_wait_timeout = DEFAULT').catch(() => {});
    }
    const [row] = rows;
    if (!row) {
      // Migrations create the row; a deployment that deleted it starts from the server's position.
      await trx(POSITION_TABLE).insert({ id: 1, gtid_pos: null, active_mlogs: '[]', epoch: 1, owner, updated_at: trx.fn.now(6) });
      return { gtid: null, file: null, pos: null, activeMlogs: [], epoch: 1, owner, eventTime: null };
    }
    const epoch = toNumber(row.epoch) + 1;
    await trx(POSITION_TABLE).where({ id: 1 }).update({ epoch, owner, updated_at: trx.fn.now(6) });
    return { ...normalize(row), epoch, owner };
  });
}

export async function readPosition(db: Executor): Promise<StoredPosition | undefined> {
  const [row] = (await db(POSITION_TABLE).where({ id: 1 }).select('*')) as RawPosition[];
  return row ? normalize(row) : undefined;
}

/** A log marked BROKEN in the commit, with the reason. */
export interface BrokenMark {
  mlogId: number;
  reason: string;
}

export interface Batch {
  /** Rows per log, in binlog order. */
  rows: Map<number, { log: CapturedLog; rows: LogRow[] }>;
  broken: BrokenMark[];
  position: BinlogPosition;
  activeMlogs: number[];
  eventTime: Date | null;
}

export const ROWS_PER_INSERT = 1000;

/**
 * Append rows to a log table, in order (the sequence column numbers them). Each row is the log's
 * columns, dml_type, old_new, and the encoded binlog position where its transaction ends.
 */
export async function insertLogRows(trx: Executor, log: CapturedLog, rows: LogRow[]): Promise<void> {
  const cols = [...log.columns, DML_TYPE_COLUMN, OLD_NEW_COLUMN, BPOS_COLUMN].map(quoteIdent).join(', ');
  const one = `(${new Array(log.columns.length + 3).fill('?').join(', ')})`;
  const target = `${quoteIdent(log.schema)}.${quoteIdent(log.logTable)}`;
  for (let i = 0; i < rows.length; i += ROWS_PER_INSERT) {
    const chunk = rows.slice(i, i + ROWS_PER_INSERT);
    await trx.raw(`INSERT INTO ${target} (${cols}) VALUES ${new Array(chunk.length).fill(one).join(', ')}`, chunk.flat() as Knex.RawBinding[]);
  }
}

/** Mark a log BROKEN (only an OK one: the first reason stays). */
export async function markBroken(trx: Executor, mark: BrokenMark): Promise<void> {
  await trx('mvs_mlogs')
    .where({ mlog_id: mark.mlogId, state: 'OK' })
    .update({ state: 'BROKEN', broken_reason: mark.reason.slice(0, 4000), broken_at: trx.fn.now(3) });
}

/**
 * Move the position, if this capture still holds it (its epoch is current); the row stays
 * locked until the commit, so a takeover waits for this transaction. Fails with FencedError
 * otherwise.
 */
export async function lockPosition(trx: Executor, epoch: number, to?: Pick<Batch, 'position' | 'activeMlogs' | 'eventTime'>): Promise<void> {
  if (to) {
    if ((await updatePosition(trx, to, epoch)) === 1) return;
  } else {
    const [row] = (await trx(POSITION_TABLE).where({ id: 1, epoch }).forUpdate().select('epoch')) as unknown[];
    if (row) return;
  }
  const [row] = (await trx(POSITION_TABLE).where({ id: 1 }).select('epoch')) as Array<{ epoch: number | string }>;
  throw new FencedError(epoch, row ? toNumber(row.epoch) : -1);
}

export async function writePosition(trx: Executor, batch: Pick<Batch, 'position' | 'activeMlogs' | 'eventTime'>): Promise<void> {
  await updatePosition(trx, batch);
}

async function updatePosition(trx: Executor, batch: Pick<Batch, 'position' | 'activeMlogs' | 'eventTime'>, epoch?: number): Promise<number> {
  return trx(POSITION_TABLE)
    .where(epoch === undefined ? { id: 1 } : { id: 1, epoch })
    .update({
      gtid_pos: batch.position.gtid,
      binlog_file: batch.position.file,
      binlog_pos: batch.position.pos,
      active_mlogs: JSON.stringify(batch.activeMlogs),
      event_time: batch.eventTime,
      owner_conn: trx.raw('CONNECTION_ID()'),
      updated_at: trx.fn.now(6),
    });
}

/**
 * A capture stopping cleanly says so: the position's owner is cleared (if it is still this
 * capture's), so a refresh waiting for capture can tell "stopped" from "died".
 */
export async function releasePosition(db: Executor, epoch: number): Promise<void> {
  await db(POSITION_TABLE).where({ id: 1, epoch }).update({ owner: null, owner_conn: null });
}
