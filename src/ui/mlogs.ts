import type { Knex } from 'knex';
import { quoteIdent } from '../mv/identifiers.js';
import { SEQ_COLUMN } from '../mlog/names.js';

// MV logs as the dashboard lists them: capture mode, state and backlog, worst first, a page at
// a time. One query for the list and one for the consumers' watermarks; the backlog of a page's
// logs comes from each log table's highest sequence number (its primary key, so one index probe
// per log), hence an estimate: sequence numbers skip on rolled-back writes.

export interface UiMlog {
  mlogId: number;
  /** Display name of the base table (`schema.table`), the log table's, and the parts apart. */
  table: string;
  log: string;
  schema: string;
  tableName: string;
  capture: string;
  state: string;
  brokenReason: string | null;
  purgeMethod: string;
  lastPurgeResult: string | null;
  lastPurgeTime: string | null;
  nextPurgeTime: string | null;
  /** MVs that refresh from it. */
  consumers: number;
  /** Rows the slowest consuming MV has not applied yet (estimated; null when unknown). */
  backlogRows: number | null;
  /** Rows still in the log table, waiting for a purge (estimated; null when unknown). */
  unpurgedRows: number | null;
}

export interface MlogPage {
  total: number;
  broken: number;
  offset: number;
  limit: number;
  items: UiMlog[];
}

const iso = (d: unknown) => (d instanceof Date ? d.toISOString() : null);
const STATE_ORDER: Record<string, number> = { BROKEN: 0, CREATING: 1, OK: 2 };

async function maxSeq(db: Knex, schema: string, logTable: string): Promise<number | null> {
  try {
    const [rows] = (await db.raw(`SELECT MAX(${quoteIdent(SEQ_COLUMN)}) AS s FROM ${quoteIdent(schema)}.${quoteIdent(logTable)}`)) as [Array<{ s: number | string | null }>];
    const s = rows[0]?.s;
    return s === null || s === undefined ? 0 : Number(s);
  } catch {
    return null; // log table gone (a BROKEN log) or not readable: no estimate
  }
}

/** Logs worst first (BROKEN, then CREATING, then by name); `tables` narrows to those base tables. */
export async function listUiMlogs(db: Knex, opts: { offset: number; limit: number; tables?: Array<{ schema: string; name: string }> }): Promise<MlogPage> {
  const q = db('mvs_mlogs as l').leftJoin('mvs_mlog_purge_info as p', 'p.mlog_id', 'l.mlog_id').select('l.*', 'p.last_purge_result', 'p.purge_endtime', 'p.next_time', 'p.purge_watermark');
  if (opts.tables) {
    if (opts.tables.length === 0) return { total: 0, broken: 0, offset: opts.offset, limit: opts.limit, items: [] };
    q.where((w) => {
      for (const t of opts.tables!) w.orWhere({ 'l.table_schema': t.schema, 'l.base_table_name': t.name });
    });
  }
  const rows = (await q) as Array<Record<string, unknown>>;
  rows.sort(
    (a, b) =>
      (STATE_ORDER[String(a.state ?? 'OK')] ?? 3) - (STATE_ORDER[String(b.state ?? 'OK')] ?? 3) ||
      `${String(a.table_schema)}.${String(a.base_table_name)}`.localeCompare(`${String(b.table_schema)}.${String(b.base_table_name)}`),
  );
  const page = rows.slice(opts.offset, opts.offset + opts.limit);
  const ids = page.map((r) => Number(r.mlog_id));
  const consumers = ids.length
    ? ((await db('mvs_mview_base_tables').whereIn('mlog_id', ids).groupBy('mlog_id').select('mlog_id', db.raw('COUNT(*) AS n'), db.raw('MIN(consumed_watermark) AS w'))) as Array<{
        mlog_id: number | string;
        n: number | string;
        w: number | string;
      }>)
    : [];
  const byId = new Map(consumers.map((c) => [Number(c.mlog_id), { n: Number(c.n), w: Number(c.w) }]));
  const items = await Promise.all(
    page.map(async (r): Promise<UiMlog> => {
      const id = Number(r.mlog_id);
      const schema = String(r.table_schema);
      const seq = await maxSeq(db, schema, String(r.mlog_name));
      const c = byId.get(id);
      const purged = Number(r.purge_watermark ?? 0);
      return {
        mlogId: id,
        table: `${schema}.${String(r.base_table_name)}`,
        log: `${schema}.${String(r.mlog_name)}`,
        schema,
        tableName: String(r.base_table_name),
        capture: String(r.capture_mode ?? 'TRIGGERS'),
        state: String(r.state ?? 'OK'),
        brokenReason: (r.broken_reason as string | null | undefined) ?? null,
        purgeMethod: String(r.purge_method),
        lastPurgeResult: (r.last_purge_result as string | null) ?? null,
        lastPurgeTime: iso(r.purge_endtime),
        nextPurgeTime: iso(r.next_time),
        consumers: c?.n ?? 0,
        backlogRows: seq === null ? null : c ? Math.max(0, seq - c.w) : 0,
        unpurgedRows: seq === null ? null : Math.max(0, seq - purged),
      };
    }),
  );
  return { total: rows.length, broken: rows.filter((r) => r.state === 'BROKEN').length, offset: opts.offset, limit: opts.limit, items };
}
