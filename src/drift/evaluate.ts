import { BPOS_COLUMN, DML_TYPE_COLUMN, OLD_NEW_COLUMN, SEQ_COLUMN } from '../mlog/names.js';

// The rules of the drift check (driftChecker.ts), as a pure function of what the catalog says,
// so that each can be tested on its own.

export interface LogUnderCheck {
  mlogId: number;
  schema: string;
  table: string;
  logTable: string;
  /** Tracked columns (without the primary key). */
  columns: string[];
  pk: string[];
  /** Identity token the log last saw. */
  token: number | null;
  /**
   * TRIGGERS (the default) or BINLOG. A BINLOG log has no triggers to check: capture follows its
   * table in the binary log (a drop, rename or re-creation there marks it BROKEN); the catalog
   * rules are the same.
   */
  captureMode?: string;
}

export interface CatalogView {
  table(schema: string, table: string): { type: string; comment: string } | undefined;
  createTime(schema: string, table: string): Date | null;
  /** Columns by lower-cased name. */
  columns(schema: string, table: string): Map<string, { type: string; cs: string | null }> | undefined;
  primaryKey(schema: string, table: string): string[];
  /** The log's own triggers (by name and body) anywhere in its schema, with the table each is on. */
  ownTriggers(m: LogUnderCheck): Array<{ name: string; t: string }>;
  cascadingKeys(schema: string, table: string): Array<{ name: string; parent: string; onDelete: string; onUpdate: string }>;
  logTableComment(mlogId: number): string;
  gates: Set<number>;
  consumers: Map<number, Array<{ mviewId: number; token: number | null }>>;
  /** InnoDB table id by `schema.table`. */
  tableIds: Map<string, number>;
}

const plural = (n: number, word: string) => `${word}${n > 1 ? 's' : ''}`;

/** Why the log can no longer capture its table's changes, or nothing when it can. */
export function evaluateLog(m: LogUnderCheck, c: CatalogView): { problem?: string } {
  const t = `${m.schema}.${m.table}`;
  const base = c.table(m.schema, m.table);
  if (m.captureMode === 'BINLOG') {
    if (!base || base.type !== 'BASE TABLE') return { problem: `base table ${t} was dropped or renamed` };
    return catalogProblem(m, c);
  }
  const triggers = c.ownTriggers(m);
  const onBase = triggers.filter((x) => x.t === m.table);
  const elsewhere = triggers.find((x) => x.t !== m.table);
  if (!base || base.type !== 'BASE TABLE') {
    return { problem: elsewhere ? `base table ${t} was renamed to ${m.schema}.${elsewhere.t}` : `base table ${t} was dropped` };
  }
  if (onBase.length === 0) {
    return {
      problem: elsewhere
        ? `base table ${t} was renamed to ${m.schema}.${elsewhere.t} and another table took its name`
        : `base table ${t} was dropped and re-created (the log's triggers are not on it)`,
    };
  }
  if (onBase.length < 3) {
    const have = new Set(onBase.map((x) => x.name));
    const missing = ['ins', 'upd', 'del'].map((s) => `mvs_mlog_${m.mlogId}_${s}`).filter((n) => !have.has(n));
    return { problem: `${plural(missing.length, 'trigger')} ${missing.join(', ')} of the log on ${t} dropped` };
  }
  return catalogProblem(m, c);
}

/** The rules trigger and BINLOG logs share: the log table, the tracked columns, the key. */
function catalogProblem(m: LogUnderCheck, c: CatalogView): { problem?: string } {
  const logT = `${m.schema}.${m.logTable}`;
  const log = c.table(m.schema, m.logTable);
  if (!log) return { problem: `log table ${logT} was dropped` };
  if (log.comment !== '' && log.comment !== c.logTableComment(m.mlogId)) {
    return { problem: `log table ${logT} was replaced by a table mvsched did not make` };
  }
  const problem = columnProblem(m, c) ?? keyProblem(m, c);
  return problem ? { problem } : {};
}

function columnProblem(m: LogUnderCheck, c: CatalogView): string | undefined {
  const t = `${m.schema}.${m.table}`;
  const logT = `${m.schema}.${m.logTable}`;
  const baseCols = c.columns(m.schema, m.table) ?? new Map();
  const logCols = c.columns(m.schema, m.logTable) ?? new Map();
  const internals = [SEQ_COLUMN, DML_TYPE_COLUMN, OLD_NEW_COLUMN, ...(m.captureMode === 'BINLOG' ? [BPOS_COLUMN] : [])];
  for (const internal of internals) {
    if (!logCols.has(internal.toLowerCase())) return `column ${internal} of log table ${logT} was dropped or renamed`;
  }
  for (const col of [...m.pk, ...m.columns]) {
    const b = baseCols.get(col.toLowerCase());
    const l = logCols.get(col.toLowerCase());
    if (!b) return `column ${col} of ${t}, which its log tracks, was dropped or renamed`;
    if (!l) return `column ${col} of log table ${logT} was dropped or renamed`;
    if (b.type.toLowerCase() !== l.type.toLowerCase()) return `column ${col} of ${t} changed type from ${l.type} to ${b.type}`;
    if ((b.cs ?? '') !== (l.cs ?? '')) return `column ${col} of ${t} changed character set from ${l.cs} to ${b.cs}`;
  }
  return undefined;
}

function keyProblem(m: LogUnderCheck, c: CatalogView): string | undefined {
  const t = `${m.schema}.${m.table}`;
  const pk = c.primaryKey(m.schema, m.table);
  const same = pk.length === m.pk.length && pk.every((x, i) => x.toLowerCase() === m.pk[i]!.toLowerCase());
  if (!same) return `the primary key of ${t} changed from (${m.pk.join(', ')}) to (${pk.join(', ') || 'none'})`;
  const fk = c.cascadingKeys(m.schema, m.table)[0];
  if (fk) {
    const rule = /CASCADE|SET NULL|SET DEFAULT/.test(fk.onDelete) ? `ON DELETE ${fk.onDelete}` : `ON UPDATE ${fk.onUpdate}`;
    const unseen = m.captureMode === 'BINLOG' ? 'are not in the row binary log' : 'fire no triggers';
    return `${t} became the child of foreign key ${fk.name} (${rule}) on ${fk.parent}: the rows it changes ${unseen}`;
  }
  return undefined;
}
