import { ValidationError } from '../errors.js';

// Names of an MV log's objects (DESIGN.md §2): the log table `s.mlog$t` in the base table's
// schema, and its three triggers. Internal column names carry the `_mlog$` prefix, except the two
// the design names outright (`dml_type`, `old_new`); user columns may not use any of them.

export const SEQ_COLUMN = '_mlog$seq';
/**
 * BINLOG logs only: the binary-log position at which the row's transaction ends (file number and
 * offset in one BIGINT, mlog/binlogPos.ts), so a cut at a binlog position takes exactly the rows
 * of transactions up to it.
 */
export const BPOS_COLUMN = '_mlog$bpos';
export const DML_TYPE_COLUMN = 'dml_type';
export const OLD_NEW_COLUMN = 'old_new';
const INTERNAL_PREFIX = '_mlog$';
const LOG_PREFIX = 'mlog$';

export function logTableName(baseTable: string): string {
  const name = `${LOG_PREFIX}${baseTable}`;
  if (name.length > 64) {
    throw new ValidationError(
      `table name ${JSON.stringify(baseTable)} is too long for a materialized view log: ${name} would exceed 64 characters`,
    );
  }
  return name;
}

/** Trigger names are per schema and limited to 64 characters, so they carry the log's id. */
export function triggerNames(mlogId: number): { insert: string; update: string; delete: string } {
  return { insert: `mvs_mlog_${mlogId}_ins`, update: `mvs_mlog_${mlogId}_upd`, delete: `mvs_mlog_${mlogId}_del` };
}

/** Column names a base table may not track (compared case-insensitively, like MySQL columns). */
export function isReservedColumn(name: string): boolean {
  const n = name.toLowerCase();
  return n === DML_TYPE_COLUMN || n === OLD_NEW_COLUMN || n.startsWith(INTERNAL_PREFIX);
}
