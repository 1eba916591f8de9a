import type { Knex } from 'knex';
import { decodeCursor, encodeCursor, type Page } from './paging.js';

/**
 * One refresh run as the CLI (`history --json`) and the API show it (DESIGN.md §3). The mapping
 * from `mvs_mview_refresh_hist` lives here only. Columns that an older schema lacks (data time,
 * rows inserted / deleted, the log range of FAST runs) read as null: the row is selected whole
 * and each field falls back on its own.
 */
export interface HistoryEntry {
  refreshId: number;
  trigger: string;
  method: string;
  status: string;
  scheduledTime: string | null;
  startTime: string | null;
  endTime: string | null;
  dataTime: string | null;
  rowsInserted: number | null;
  rowsDeleted: number | null;
  watermarkFrom: number | null;
  watermarkTo: number | null;
  node: string | null;
  /** Why a run FAILED or was SKIPPED. */
  reason: string | null;
  /** Rows written by the run, as counted before rows inserted / deleted were kept apart. */
  rowsChanged: number | null;
}

type Row = Record<string, unknown>;

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const str = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const iso = (v: unknown): string | null => {
  if (v === null || v === undefined) return null;
  const d = v instanceof Date ? v : new Date(String(v));
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
};

export function historyEntry(r: Row): HistoryEntry {
  return {
    refreshId: Number(r.refresh_id),
    trigger: String(r.refresh_trigger),
    method: String(r.refresh_method),
    status: String(r.refresh_status),
    scheduledTime: iso(r.scheduled_time),
    startTime: iso(r.start_time),
    endTime: iso(r.end_time),
    dataTime: iso(r.data_time),
    rowsInserted: num(r.rows_inserted),
    rowsDeleted: num(r.rows_deleted),
    watermarkFrom: num(r.watermark_from),
    watermarkTo: num(r.watermark_to),
    node: str(r.node_id),
    reason: str(r.failed_reason),
    rowsChanged: num(r.rows_changed),
  };
}

const isHistoryCursor = (v: unknown): v is { before: number } =>
  typeof v === 'object' && v !== null && Number.isSafeInteger((v as { before?: unknown }).before) && (v as { before: number }).before > 0;

/** An MV's runs, newest first, `limit` at a time; `cursor` continues where a page ended. */
export async function listHistory(db: Knex, mviewId: number, opts: { limit: number; cursor?: string }): Promise<Page<HistoryEntry>> {
  const after = decodeCursor(opts.cursor, isHistoryCursor);
  const q = db('mvs_mview_refresh_hist')
    .where({ mview_id: mviewId })
    .orderBy('refresh_id', 'desc')
    .limit(opts.limit + 1)
    .select('*');
  if (after) q.where('refresh_id', '<', after.before);
  const rows = (await q) as Row[];
  const items = rows.slice(0, opts.limit).map(historyEntry);
  const more = rows.length > opts.limit;
  return { items, nextCursor: more ? encodeCursor({ before: items[items.length - 1]!.refreshId }) : null };
}
