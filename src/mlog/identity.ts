import type { Knex } from 'knex';
import { serverFlavor } from '../db/flavor.js';
import { triggerNames } from './names.js';

// Is the table a log captures still the table it was created on (DESIGN.md §2 "Changes made
// behind mvsched's back")? Names are not enough: a table dropped and re-created under the same
// name has none of the log's triggers, and a renamed one takes them along. And some changes
// reach no trigger at all (TRUNCATE, a table rebuilt): the InnoDB table id moves with them.

export interface LogIdentity {
  /** The log's own triggers found on the named base table. */
  triggers: string[];
  tableExists: boolean;
  /** InnoDB table id, or minus the create time in seconds where the id cannot be read. */
  token: number | null;
  /**
   * How the log is filled and its state, as mvs_mlogs says now. A BINLOG log's identity is the
   * table map capture follows: capture marks it BROKEN (with the reason) where the binlog shows
   * its table dropped, renamed or replaced, or a tracked column gone; read after the cut has
   * waited for capture, that covers every change up to the cut.
   */
  captureMode?: string;
  state?: string;
  brokenReason?: string | null;
}

const ASCII_SAFE = /^[A-Za-z0-9_]$/;

/**
 * The name InnoDB's dictionary gives a table (`db/table`, other characters as @XXXX), or
 * undefined for names with non-ASCII characters, whose encoding is not a plain code point.
 */
export function innodbTableName(schema: string, table: string): string | undefined {
  const enc = (s: string): string | undefined => {
    let out = '';
    for (const ch of s) {
      const code = ch.codePointAt(0)!;
      if (ASCII_SAFE.test(ch)) out += ch;
      else if (code < 128) out += `@${code.toString(16).padStart(4, '0')}`;
      else return undefined;
    }
    return out;
  };
  const s = enc(schema);
  const t = enc(table);
  return s === undefined || t === undefined ? undefined : `${s}/${t}`;
}

/** Where the table id can be read: needs the PROCESS privilege; found out once per pool. */
const tableIdSource = new WeakMap<Knex, Promise<string | null>>();

export function tableIdView(db: Knex): Promise<string | null> {
  let p = tableIdSource.get(db);
  if (!p) {
    p = (async () => {
      const view = (await serverFlavor(db)) === 'mariadb' ? 'information_schema.INNODB_SYS_TABLES' : 'information_schema.INNODB_TABLES';
      try {
        await db.raw(`SELECT TABLE_ID FROM ${view} WHERE NAME = ? LIMIT 1`, ['mysql/user']);
        return view;
      } catch {
        return null;
      }
    })();
    tableIdSource.set(db, p);
  }
  return p;
}

export interface LoggedTable {
  mlog_id: number;
  table_schema: string;
  base_table_name: string;
}

/** One round trip: the log's triggers on the named table, and the table's identity token. */
export async function readLogIdentity(db: Knex, m: LoggedTable): Promise<LogIdentity> {
  return (await readLogIdentities(db, [m])).get(m.mlog_id)!;
}

/**
 * The same for several logs (the tables of a join MV) in one round trip, by mlog_id: what a
 * refresh checks right after its cut, when every statement counts. Where InnoDB's table id is
 * readable it alone says the table exists (information_schema.TABLES costs as much again); a
 * table without one (gone, not InnoDB, no PROCESS privilege) is looked up there in a second read.
 */
export async function readLogIdentities(db: Knex, logs: LoggedTable[]): Promise<Map<number, LogIdentity>> {
  const out = new Map<number, LogIdentity>();
  if (!logs.length) return out;
  const view = await tableIdView(db);
  const first = await identityRows(db, logs, view, false);
  const without = logs.filter((m) => first.get(Number(m.mlog_id))?.tid === null);
  const second = without.length && view ? await identityRows(db, without, view, true) : new Map<number, IdentityRow>();
  for (const [id, r0] of first) {
    const r = second.get(id) ?? r0;
    out.set(id, {
      triggers: r.trg ? String(r.trg).split(',') : [],
      tableExists: r.ex === undefined ? true : Number(r.ex) > 0,
      token: identityToken(r.tid, r.ct),
      ...(r.st !== null ? { captureMode: r.mode ?? 'TRIGGERS', state: r.st, brokenReason: r.why } : {}),
    });
  }
  return out;
}

interface IdentityRow {
  id: number | string;
  trg: string | null;
  tid: number | string | null;
  ex?: number | string;
  ct?: Date | null;
  mode: string | null;
  st: string | null;
  why: string | null;
}

/** One statement: per log, its triggers, table id and mvs_mlogs state; `tables`: also existence and create time. */
async function identityRows(db: Knex, logs: LoggedTable[], view: string | null, tables: boolean): Promise<Map<number, IdentityRow>> {
  const withTables = tables || !view;
  const parts: string[] = [];
  const bindings: unknown[] = [];
  for (const m of logs) {
    const names = triggerNames(m.mlog_id);
    const inno = innodbTableName(m.table_schema, m.base_table_name);
    const tid = view && inno ? `(SELECT TABLE_ID FROM ${view} WHERE NAME = ?)` : 'NULL';
    // A trigger lives in its table's schema; asked by the table's schema and name (EVENT_OBJECT_*),
    // MariaDB opens that one table's triggers, where TRIGGER_SCHEMA made it list the schema's
    // tables (EXPLAIN: "Scanned 1 database"; 0.97 against 0.45 ms in a schema of 20 tables).
    parts.push(
      'SELECT ? AS id, (SELECT GROUP_CONCAT(TRIGGER_NAME) FROM information_schema.TRIGGERS ' +
        'WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? AND TRIGGER_NAME IN (?, ?, ?)) AS trg, ' +
        `${tid} AS tid, ` +
        (withTables
          ? '(SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND TABLE_TYPE = ?) AS ex, ' +
            '(SELECT CREATE_TIME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?) AS ct, '
          : '') +
        'l.capture_mode AS mode, l.state AS st, l.broken_reason AS why FROM (SELECT 1) AS one LEFT JOIN mvs_mlogs AS l ON l.mlog_id = ?',
    );
    bindings.push(Number(m.mlog_id), m.table_schema, m.base_table_name, names.insert, names.update, names.delete, ...(view && inno ? [inno] : []));
    if (withTables) bindings.push(m.table_schema, m.base_table_name, 'BASE TABLE', m.table_schema, m.base_table_name);
    bindings.push(Number(m.mlog_id));
  }
  const [rows] = (await db.raw(parts.join(' UNION ALL '), bindings as never)) as [IdentityRow[]];
  return new Map(rows.map((r) => [Number(r.id), r]));
}

export function identityToken(tid: number | string | null | undefined, createTime: Date | null | undefined): number | null {
  if (tid !== null && tid !== undefined) return Number(tid);
  return createTime ? -Math.floor(createTime.getTime() / 1000) : null;
}

/** Why the log can no longer capture its table's changes, or undefined when it can. */
export function identityProblem(m: LoggedTable, id: LogIdentity): string | undefined {
  const t = `${m.table_schema}.${m.base_table_name}`;
  if (id.state === 'BROKEN') return id.brokenReason ?? 'the log is broken';
  if (id.state === 'CREATING') return 'the log is being re-created';
  if (!id.tableExists) return `base table ${t} was dropped or renamed`;
  if (id.captureMode === 'BINLOG') return undefined; // no triggers: capture follows the table
  if (id.triggers.length === 0) return `base table ${t} was dropped and re-created (the log's triggers are not on it)`;
  if (id.triggers.length < 3) {
    const all = Object.values(triggerNames(m.mlog_id));
    return `trigger${all.length - id.triggers.length > 1 ? 's' : ''} ${all.filter((n) => !id.triggers.includes(n)).join(', ')} of the log on ${t} dropped`;
  }
  return undefined;
}
