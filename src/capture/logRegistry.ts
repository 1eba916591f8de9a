import type { Executor } from '../mv/repository.js';
import { toNumber } from '../mv/repository.js';
import { logColumns } from '../mlog/repository.js';

// The BINLOG logs capture fills, by base table. It changes at the point in the binlog where the
// change of mvs_mlogs committed (a log created, dropped or marked BROKEN), so a log starts to be
// filled exactly with the first transaction that commits after its creation, whatever capture's
// lag: the rows of mvs_mlogs are read from the binlog like any other table's.

export interface CapturedLog {
  mlogId: number;
  schema: string;
  table: string;
  logTable: string;
  /** The base table's primary key, then the tracked columns (the log table's own columns). */
  columns: string[];
}

/** An mvs_mlogs row, from the table or from a binlog row image of it. */
export interface MlogRowImage {
  mlog_id: unknown;
  table_schema: unknown;
  base_table_name: unknown;
  mlog_name: unknown;
  mlog_columns: unknown;
  pk_columns: unknown;
  capture_mode?: unknown;
  state?: unknown;
}

/** The log that row describes, when it is one capture fills (BINLOG and not BROKEN). */
export function capturedLogOf(row: MlogRowImage): CapturedLog | undefined {
  if (String(row.capture_mode ?? 'TRIGGERS') !== 'BINLOG' || String(row.state ?? 'OK') !== 'OK') return undefined;
  const parse = (v: unknown) => JSON.parse(Buffer.isBuffer(v) ? v.toString('utf8') : String(v)) as string[];
  return {
    mlogId: toNumber(row.mlog_id as number),
    schema: String(row.table_schema),
    table: String(row.base_table_name),
    logTable: String(row.mlog_name),
    columns: logColumns({ columns: parse(row.mlog_columns), pkColumns: parse(row.pk_columns) }),
  };
}

const tableKey = (schema: string, table: string) => `${schema}\u0000${table}`;

export class LogRegistry {
  private readonly byTable = new Map<string, CapturedLog>();
  private readonly byId = new Map<number, CapturedLog>();

  constructor(logs: Iterable<CapturedLog> = []) {
    for (const l of logs) this.add(l);
  }

  add(log: CapturedLog): void {
    this.remove(log.mlogId);
    const key = tableKey(log.schema, log.table);
    const old = this.byTable.get(key);
    if (old) this.byId.delete(old.mlogId);
    this.byTable.set(key, log);
    this.byId.set(log.mlogId, log);
  }

  remove(mlogId: number): CapturedLog | undefined {
    const log = this.byId.get(mlogId);
    if (!log) return undefined;
    this.byId.delete(mlogId);
    this.byTable.delete(tableKey(log.schema, log.table));
    return log;
  }

  forTable(schema: string, table: string): CapturedLog | undefined {
    return this.byTable.get(tableKey(schema, table));
  }

  get(mlogId: number): CapturedLog | undefined {
    return this.byId.get(mlogId);
  }

  /** The logs on tables of one schema. */
  inSchema(schema: string): CapturedLog[] {
    return [...this.byId.values()].filter((l) => l.schema === schema);
  }

  tables(): Array<{ schema: string; table: string }> {
    return [...this.byId.values()].map((l) => ({ schema: l.schema, table: l.table }));
  }

  /** Sorted ids: what the stored position records as captured at that point. */
  ids(): number[] {
    return [...this.byId.keys()].sort((a, b) => a - b);
  }

  get size(): number {
    return this.byId.size;
  }

  /** Follow one change of an mvs_mlogs row (null before = insert, null after = delete). */
  applyRowChange(before: MlogRowImage | null, after: MlogRowImage | null): { added?: CapturedLog; removed?: CapturedLog } {
    const id = toNumber((after ?? before)!.mlog_id as number);
    const next = after ? capturedLogOf(after) : undefined;
    const removed = this.remove(id);
    if (next) this.add(next);
    return { ...(next && !removed ? { added: next } : {}), ...(removed && !next ? { removed } : {}) };
  }
}

/** Every log capture should fill, as mvs_mlogs says now. */
export async function loadCapturedLogs(db: Executor): Promise<CapturedLog[]> {
  const rows = (await db('mvs_mlogs').where({ capture_mode: 'BINLOG', state: 'OK' }).orderBy('mlog_id')) as MlogRowImage[];
  return rows.map((r) => capturedLogOf(r)!);
}
