// Turn the row images of a binlog row event into MV-log rows with the same columns and meaning
// as the trigger path (src/mlog/logObjects.ts): 'I' +1 for an insert, 'D' -1 for a delete, and
// for an update 'U' -1 (old image) then 'U' +1 (new image), unless no logged column changed.

export type RowImage = Record<string, unknown>;
export type RowChangeKind = 'insert' | 'update' | 'delete';

/** One row of a log table in insert order: the log's columns, then dml_type and old_new. */
export type LogRow = unknown[];

/**
 * Map the log's columns to the names a table map gives them (MySQL column names are
 * case-insensitive). Returns the first log column the table no longer has when one is missing:
 * it was dropped or renamed, and the log cannot be filled any more.
 */
export function resolveImageKeys(logColumns: readonly string[], tableColumns: readonly string[]): { keys: string[] } | { missing: string } {
  const byLower = new Map(tableColumns.map((c) => [c.toLowerCase(), c]));
  const keys: string[] = [];
  for (const c of logColumns) {
    const k = byLower.get(c.toLowerCase());
    if (k === undefined) return { missing: c };
    keys.push(k);
  }
  return { keys };
}

/**
 * Equal as the trigger compares them: strings as bytes (`BINARY a <=> BINARY b`: 'a' and 'A'
 * differ even under a case-insensitive collation), NULL equal to NULL only. The binlog reader
 * decodes each column the same way in both images, so equal bytes give equal values.
 */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || a === undefined || b === undefined) return false;
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  if (typeof a === 'object' && typeof b === 'object') return JSON.stringify(a) === JSON.stringify(b);
  return false;
}

function image(row: RowImage, keys: readonly string[], dml: 'I' | 'U' | 'D', sign: 1 | -1): LogRow {
  const out: unknown[] = new Array(keys.length + 2);
  for (let i = 0; i < keys.length; i++) {
    const v = row[keys[i]!];
    // A JSON column decoded to an object goes back as its JSON text.
    out[i] = v !== null && typeof v === 'object' && !Buffer.isBuffer(v) && !(v instanceof Date) ? JSON.stringify(v) : v ?? null;
  }
  out[keys.length] = dml;
  out[keys.length + 1] = sign;
  return out;
}

/** Log rows for the rows of one event, in event order. */
export function logRowsFor(kind: RowChangeKind, rows: readonly unknown[], keys: readonly string[]): LogRow[] {
  const out: LogRow[] = [];
  switch (kind) {
    case 'insert':
      for (const r of rows) out.push(image(r as RowImage, keys, 'I', 1));
      break;
    case 'delete':
      for (const r of rows) out.push(image(r as RowImage, keys, 'D', -1));
      break;
    case 'update':
      for (const r of rows as Array<{ before: RowImage; after: RowImage }>) {
        if (keys.every((k) => sameValue(r.before[k], r.after[k]))) continue; // no logged column changed
        out.push(image(r.before, keys, 'U', -1), image(r.after, keys, 'U', 1));
      }
      break;
  }
  return out;
}
