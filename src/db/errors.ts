/** Server error numbers we act on. */
const ER_LOCK_WAIT_TIMEOUT = 1205; // MariaDB answers NOWAIT / WAIT 0 with this
const ER_LOCK_NOWAIT = 3572; // MySQL 8 and TiDB
const ER_LOCK_DEADLOCK = 1213;
const ER_DUP_ENTRY = 1062;
const ER_NO_SUCH_TABLE = 1146;
const ER_STATEMENT_TIMEOUT = 1969; // MariaDB: max_statement_time exceeded
const ER_QUERY_TIMEOUT = 3024; // MySQL: MAX_EXECUTION_TIME exceeded
// MariaDB with innodb_snapshot_isolation=ON (the default from 11.6): a locking read or write of a
// row that another transaction changed after this one's snapshot was taken.
const ER_CHECKREAD = 1020;

function errno(err: unknown): number | undefined {
  const n = (err as { errno?: unknown } | null)?.errno;
  return typeof n === 'number' ? n : undefined;
}

/** The row was locked by someone else and we asked not to wait (FOR UPDATE NOWAIT). */
export function isLockNotGranted(err: unknown): boolean {
  const n = errno(err);
  return n === ER_LOCK_NOWAIT || n === ER_LOCK_WAIT_TIMEOUT;
}

export function isDeadlock(err: unknown): boolean {
  return errno(err) === ER_LOCK_DEADLOCK;
}

export function isNoSuchTable(err: unknown): boolean {
  return errno(err) === ER_NO_SUCH_TABLE;
}

export function isDuplicateKey(err: unknown): boolean {
  return errno(err) === ER_DUP_ENTRY;
}

/** The row changed after this transaction's snapshot (MariaDB innodb_snapshot_isolation=ON). */
export function isRecordChangedSinceRead(err: unknown): boolean {
  return errno(err) === ER_CHECKREAD;
}

/** The statement ran past its time limit (MariaDB max_statement_time, MySQL MAX_EXECUTION_TIME). */
export function isStatementTimeout(err: unknown): boolean {
  const n = errno(err);
  return n === ER_STATEMENT_TIMEOUT || n === ER_QUERY_TIMEOUT;
}
