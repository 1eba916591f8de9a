import type { Knex } from 'knex';
import { ValidationError } from '../errors.js';
import { SEQ_COLUMN } from '../mlog/names.js';
import { quoteIdent } from '../mv/identifiers.js';
import { toNumber, type MviewRow } from '../mv/repository.js';
import type { ConcreteMethod } from './types.js';

/** An MV log an MV consumes, how far it has consumed it, and what state it is in. */
export interface MlogLink {
  mlogId: number;
  watermark: number;
  purgeMethod: string;
  /** The log's base table. */
  table: { schema: string; name: string };
  /** The log table (in the base table's schema). */
  logTable: string;
  /** BROKEN: the log cannot have captured every change (DESIGN.md §2); with the reason. */
  broken: string | null;
  /** Identity of the base table when the MV last read all of it (null: not known yet). */
  mvToken: number | null;
  /** How the log is filled (TRIGGERS / BINLOG), as read under the MV's lock. */
  captureMode: string;
  /** When the log was last (re-)created: a log re-created in place keeps its id (ms). */
  modifiedMs: number;
}

/**
 * The MV logs an MV consumes (one per base table it reads through a log: an MV over a join has
 * one per table, a self-join one for its table), by mlog_id; empty when it consumes none.
 */
export async function mlogLinks(db: Knex | Knex.Transaction, mviewId: number): Promise<MlogLink[]> {
  const rows = await db('mvs_mview_base_tables as b')
    .join('mvs_mlogs as l', 'l.mlog_id', 'b.mlog_id')
    .where('b.mview_id', mviewId)
    .orderBy('b.mlog_id')
    .select(
      'b.mlog_id',
      'b.consumed_watermark',
      'b.base_table_id',
      'l.purge_method',
      'l.state',
      'l.broken_reason',
      'l.table_schema',
      'l.base_table_name',
      'l.mlog_name',
      'l.capture_mode',
      'l.mlog_modify_time',
    );
  return rows.map((row) => ({
    mlogId: toNumber(row.mlog_id),
    watermark: toNumber(row.consumed_watermark),
    purgeMethod: String(row.purge_method),
    table: { schema: String(row.table_schema), name: String(row.base_table_name) },
    logTable: String(row.mlog_name),
    broken: row.state === 'OK' || !row.state ? null : row.state === 'CREATING' ? 'being created' : String(row.broken_reason ?? 'broken'),
    mvToken: row.base_table_id === null || row.base_table_id === undefined ? null : toNumber(row.base_table_id),
    captureMode: String(row.capture_mode ?? 'TRIGGERS'),
    modifiedMs: row.mlog_modify_time instanceof Date ? row.mlog_modify_time.getTime() : 0,
  }));
}

/** Does any of the logs hold rows past the MV's watermark (changes the MV has not applied)? */
export async function logBacklog(db: Knex | Knex.Transaction, links: MlogLink[]): Promise<boolean> {
  for (const link of links) {
    try {
      const [rows] = (await db.raw(`SELECT 1 AS x FROM ${quoteIdent(link.table.schema)}.${quoteIdent(link.logTable)} WHERE ${quoteIdent(SEQ_COLUMN)} > ? LIMIT 1`, [
        link.watermark,
      ])) as [unknown[]];
      if (rows.length > 0) return true;
    } catch {
      return true; // a log we cannot read proves nothing: do not skip
    }
  }
  return false;
}

/**
 * Pick the concrete method for a run. An MV linked to a log is fast-refreshable once a complete
 * refresh has recorded its watermark (`fast_refreshable`); until then FAST means that complete
 * refresh (it is the only way to get there).
 */
export function chooseMethod(
  mv: Pick<MviewRow, 'refresh_method' | 'fast_refreshable' | 'fast_reason' | 'table_schema' | 'mview_name'>,
  requested?: ConcreteMethod,
  linked = Boolean(mv.fast_refreshable),
): ConcreteMethod {
  const ready = linked && Boolean(mv.fast_refreshable);
  if (requested === 'FAST' || (!requested && mv.refresh_method === 'FAST')) {
    if (!linked) {
      throw new ValidationError(
        `${mv.table_schema}.${mv.mview_name} cannot be fast-refreshed: ${mv.fast_reason ?? 'no materialized view log'}`,
      );
    }
    return ready ? 'FAST' : 'COMPLETE';
  }
  if (requested === 'COMPLETE') return 'COMPLETE';
  return mv.refresh_method === 'FORCE' && ready ? 'FAST' : 'COMPLETE';
}
