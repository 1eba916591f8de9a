import type { Knex } from 'knex';
import { ValidationError, NotFoundError } from '../errors.js';
import { quoteIdent } from '../mv/identifiers.js';
import { boundedDdl } from '../db/boundedDdl.js';
import { BPOS_COLUMN, DML_TYPE_COLUMN, OLD_NEW_COLUMN, SEQ_COLUMN, isReservedColumn, triggerNames } from './names.js';

// The database objects of one MV log: the log table and the AFTER INSERT / UPDATE / DELETE
// triggers that fill it in the writer's own transaction (DESIGN.md §2 MV logs).

export interface BaseColumn {
  name: string;
  dataType: string;
  columnType: string;
  charset: string | null;
  collation: string | null;
}

export interface BaseTableShape {
  columns: BaseColumn[];
  primaryKey: string[];
}

const STRING_TYPES = new Set(['char', 'varchar', 'tinytext', 'text', 'mediumtext', 'longtext', 'enum', 'set', 'json']);

/** Columns and primary key of a base table, from information_schema. */
export async function describeBaseTable(db: Knex, schema: string, table: string): Promise<BaseTableShape> {
  const t = await db('information_schema.tables').where({ table_schema: schema, table_name: table }).first('table_type');
  if (!t) throw new NotFoundError(`table ${schema}.${table} does not exist`);
  if (String(t.table_type ?? t.TABLE_TYPE) !== 'BASE TABLE') {
    throw new ValidationError(`${schema}.${table} is a ${String(t.table_type ?? t.TABLE_TYPE).toLowerCase()}, not a base table`);
  }
  const cols = (await db('information_schema.columns')
    .where({ table_schema: schema, table_name: table })
    .orderBy('ordinal_position')
    .select({
      name: 'column_name',
      dataType: 'data_type',
      columnType: 'column_type',
      charset: 'character_set_name',
      collation: 'collation_name',
    })) as BaseColumn[];
  const pk = (await db('information_schema.key_column_usage')
    .where({ table_schema: schema, table_name: table, constraint_name: 'PRIMARY' })
    .orderBy('ordinal_position')
    .pluck('column_name')) as string[];
  return { columns: cols.map((c) => ({ ...c, dataType: String(c.dataType).toLowerCase() })), primaryKey: pk };
}

/**
 * Check a CREATE MATERIALIZED VIEW LOG column list against the base table. Returns the tracked
 * columns with the table's own spelling, in the order given, without the primary key columns.
 */
export function resolveTrackedColumns(schema: string, table: string, shape: BaseTableShape, listed: string[]): string[] {
  if (shape.primaryKey.length === 0) {
    throw new ValidationError(`${schema}.${table} has no primary key; a materialized view log needs one to identify rows`);
  }
  const byLower = new Map(shape.columns.map((c) => [c.name.toLowerCase(), c.name]));
  for (const c of shape.columns) {
    if (isReservedColumn(c.name) && (shape.primaryKey.includes(c.name) || listed.some((l) => l.toLowerCase() === c.name.toLowerCase()))) {
      throw new ValidationError(
        `column ${c.name} of ${schema}.${table} has a name reserved by the materialized view log (dml_type, old_new, _mlog$*); rename it or leave it out`,
      );
    }
  }
  const pk = new Set(shape.primaryKey.map((c) => c.toLowerCase()));
  const out: string[] = [];
  const seen = new Set<string>();
  for (const l of listed) {
    const real = byLower.get(l.toLowerCase());
    if (!real) throw new ValidationError(`column ${l} does not exist in ${schema}.${table}`);
    if (isReservedColumn(real)) {
      throw new ValidationError(`column ${real} has a name reserved by the materialized view log (dml_type, old_new, _mlog$*)`);
    }
    const key = real.toLowerCase();
    if (seen.has(key)) throw new ValidationError(`column ${real} is listed twice`);
    seen.add(key);
    if (!pk.has(key)) out.push(real);
  }
  return out;
}

function columnDef(c: BaseColumn, notNull: boolean): string {
  const cs = STRING_TYPES.has(c.dataType) && c.dataType !== 'json' && c.charset ? ` CHARACTER SET ${c.charset} COLLATE ${c.collation}` : '';
  return `${quoteIdent(c.name)} ${c.columnType}${cs} ${notNull ? 'NOT NULL' : 'NULL'}`;
}

export interface LogObjectsSpec {
  mlogId: number;
  schema: string;
  table: string;
  logTable: string;
  /** Schema of mvsched's metadata (the gate table lives there). */
  metaSchema: string;
  shape: BaseTableShape;
  tracked: string[];
  /** BINLOG: the log table only; `mvsched capture` fills it from the binary log (no triggers). */
  captureMode?: 'TRIGGERS' | 'BINLOG';
}

function gateStatement(spec: LogObjectsSpec): string {
  return (
    `SELECT mlog_id INTO __mvs_gate FROM ${quoteIdent(spec.metaSchema)}.mvs_mlog_gates ` +
    `WHERE mlog_id = ${Number(spec.mlogId)} LOCK IN SHARE MODE;`
  );
}

export interface LogStatement {
  sql: string;
  /** Undoes this statement once it has succeeded. */
  undo: string;
}

/** The statements that create the log table and (unless BINLOG) its triggers, in order, each with its undo. */
export function createLogStatements(spec: LogObjectsSpec): LogStatement[] {
  const byName = new Map(spec.shape.columns.map((c) => [c.name, c]));
  const cols = [...spec.shape.primaryKey, ...spec.tracked];
  const base = `${quoteIdent(spec.schema)}.${quoteIdent(spec.table)}`;
  const log = `${quoteIdent(spec.schema)}.${quoteIdent(spec.logTable)}`;
  const pkSet = new Set(spec.shape.primaryKey);
  const binlog = spec.captureMode === 'BINLOG';
  // BINLOG: where each row's transaction ends in the binary log, indexed for the cut's
  // "largest seq of a transaction up to position P" (mlog/binlogCut.ts).
  const bpos = binlog ? `  ${quoteIdent(BPOS_COLUMN)} BIGINT UNSIGNED NOT NULL,\n` : '';
  const bposKey = binlog ? `,\n  KEY ${quoteIdent(BPOS_COLUMN)} (${quoteIdent(BPOS_COLUMN)})` : '';
  const table =
    `CREATE TABLE ${log} (\n` +
    `  ${quoteIdent(SEQ_COLUMN)} BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,\n` +
    cols.map((c) => `  ${columnDef(byName.get(c)!, pkSet.has(c))},\n`).join('') +
    `  ${quoteIdent(DML_TYPE_COLUMN)} CHAR(1) NOT NULL,\n` +
    `  ${quoteIdent(OLD_NEW_COLUMN)} TINYINT NOT NULL,\n` +
    bpos +
    `  PRIMARY KEY (${quoteIdent(SEQ_COLUMN)})${bposKey}\n` +
    `) ENGINE=InnoDB COMMENT='${logTableComment(spec.mlogId)}'`;
  if (binlog) return [{ sql: table, undo: `DROP TABLE IF EXISTS ${log}` }];
  const colList = [...cols.map(quoteIdent), quoteIdent(DML_TYPE_COLUMN), quoteIdent(OLD_NEW_COLUMN)].join(', ');
  const image = (row: 'NEW' | 'OLD', dml: string, sign: 1 | -1) =>
    `INSERT INTO ${log} (${colList}) VALUES (${[...cols.map((c) => `${row}.${quoteIdent(c)}`), `'${dml}'`, String(sign)].join(', ')});`;
  // An UPDATE that changes no tracked column writes nothing. Strings compare as bytes: under a
  // case-insensitive collation 'a' <=> 'A' holds, and the MV would keep the old spelling.
  const same = cols
    .map((c) => {
      const q = quoteIdent(c);
      return STRING_TYPES.has(byName.get(c)!.dataType) ? `BINARY NEW.${q} <=> BINARY OLD.${q}` : `NEW.${q} <=> OLD.${q}`;
    })
    .join(' AND ');
  const names = triggerNames(spec.mlogId);
  const trig = (name: string, event: string, body: string) =>
    `CREATE TRIGGER ${quoteIdent(spec.schema)}.${quoteIdent(name)} AFTER ${event} ON ${base} FOR EACH ROW\n` +
    `BEGIN\n  DECLARE __mvs_gate BIGINT;\n${body}\nEND`;
  const dropTrigger = (name: string) => `DROP TRIGGER IF EXISTS ${quoteIdent(spec.schema)}.${quoteIdent(name)}`;
  return [
    { sql: table, undo: `DROP TABLE IF EXISTS ${log}` },
    { sql: trig(names.insert, 'INSERT', `  ${gateStatement(spec)}\n  ${image('NEW', 'I', 1)}`), undo: dropTrigger(names.insert) },
    {
      sql: trig(
        names.update,
        'UPDATE',
        `  IF NOT (${same}) THEN\n    ${gateStatement(spec)}\n    ${image('OLD', 'U', -1)}\n    ${image('NEW', 'U', 1)}\n  END IF;`,
      ),
      undo: dropTrigger(names.update),
    },
    { sql: trig(names.delete, 'DELETE', `  ${gateStatement(spec)}\n  ${image('OLD', 'D', -1)}`), undo: dropTrigger(names.delete) },
  ];
}

/** The comment of a log table: which log made it. */
export function logTableComment(mlogId: number): string {
  return `mvsched:mlog:${Number(mlogId)}`;
}

/** What every trigger of a log runs first: how mvsched knows a trigger of that name is its own. */
export function ownTriggerMarker(mlogId: number): string {
  return `mvs_mlog_gates WHERE mlog_id = ${Number(mlogId)} LOCK IN SHARE MODE`;
}

/**
 * Drop the log's triggers wherever they are in the schema (a renamed table took them along),
 * only those whose body is the log's own; each DROP waits at most `waitMs` for the table's
 * open transactions. Returns the names dropped.
 */
export async function dropLogTriggers(db: Knex, mlogId: number, schema: string, waitMs: number): Promise<string[]> {
  const names = Object.values(triggerNames(mlogId));
  const rows = (await db('information_schema.triggers')
    .where({ trigger_schema: schema })
    .whereIn('trigger_name', names)
    .select({ name: 'trigger_name', body: 'action_statement' })) as Array<{ name: string; body: string }>;
  const dropped: string[] = [];
  for (const r of rows) {
    if (!String(r.body).includes(ownTriggerMarker(mlogId))) continue;
    await boundedDdl(db, `DROP TRIGGER IF EXISTS ${quoteIdent(schema)}.${quoteIdent(r.name)}`, waitMs);
    dropped.push(r.name);
  }
  return dropped;
}

/** Is this log table the one mvsched made (its comment), or one an earlier release made? */
export async function logTableState(db: Knex, mlogId: number, schema: string, logTable: string): Promise<'ours' | 'absent' | 'foreign'> {
  const row = (await db('information_schema.tables')
    .where({ table_schema: schema, table_name: logTable })
    .first({ comment: 'table_comment' })) as { comment: string } | undefined;
  if (!row) return 'absent';
  if (row.comment === logTableComment(mlogId)) return 'ours';
  if (row.comment !== '') return 'foreign';
  // Releases before 0.2 made log tables without a comment; their internal column gives them away.
  const seq = await db('information_schema.columns').where({ table_schema: schema, table_name: logTable, column_name: SEQ_COLUMN }).first('column_name');
  return seq ? 'ours' : 'foreign';
}

/**
 * Drop what createLogStatements made, and only that: triggers with the log's body, the log
 * table when it is the log's. Objects already gone are fine (DROP DATABASE, DROP TABLE).
 */
export async function dropLogObjects(db: Knex, mlogId: number, schema: string, logTable: string, waitMs: number): Promise<void> {
  await dropLogTriggers(db, mlogId, schema, waitMs);
  if ((await logTableState(db, mlogId, schema, logTable)) === 'ours') {
    await boundedDdl(db, `DROP TABLE IF EXISTS ${quoteIdent(schema)}.${quoteIdent(logTable)}`, waitMs);
  }
}
