import { createRuntime } from '../../app/runtime.js';
import { NotFoundError } from '../../errors.js';
import { listHistory, type HistoryEntry } from '../../mv/history.js';
import { displayName, parseDottedName } from '../../mv/identifiers.js';
import { parseLimit } from '../../mv/paging.js';
import { findMviewByName } from '../../mv/repository.js';
import type { CliContext } from '../context.js';
import { columns, utc } from '../format.js';

/** Rows of a run: inserted / deleted where recorded, else the older single count. */
function rowsText(h: HistoryEntry): string {
  if (h.rowsInserted !== null || h.rowsDeleted !== null) return `+${h.rowsInserted ?? 0} -${h.rowsDeleted ?? 0}`;
  return h.rowsChanged === null ? '-' : String(h.rowsChanged);
}

function durationText(h: HistoryEntry): string {
  if (!h.startTime || !h.endTime) return '-';
  const ms = Date.parse(h.endTime) - Date.parse(h.startTime);
  return ms < 10_000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function historyTable(items: HistoryEntry[]): string[] {
  const head = ['ID', 'STATUS', 'METHOD', 'TRIGGER', 'START (UTC)', 'DURATION', 'ROWS', 'DATA AS OF (UTC)', 'LOG RANGE', 'NODE'];
  const body = items.map((h) => [
    String(h.refreshId),
    h.status,
    h.method,
    h.trigger,
    utc(h.startTime),
    durationText(h),
    rowsText(h),
    utc(h.dataTime),
    h.watermarkTo === null ? '-' : `${h.watermarkFrom ?? 0}..${h.watermarkTo}`,
    h.node ?? '-',
  ]);
  const out = columns(head, body);
  for (const h of items) if (h.reason) out.push(`  ${h.refreshId}: ${h.reason}`);
  return out;
}

/** `mvsched history <s.mv> [--limit N] [--json]`: an MV's refresh runs, newest first. */
export async function historyCommand(ctx: CliContext, mview: string, opts: { limit?: string; json?: boolean }): Promise<number> {
  const limit = parseLimit(opts.limit, 20);
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 1 });
  try {
    const name = parseDottedName(mview, rt.defaultSchema, 'materialized view');
    const mv = await findMviewByName(rt.db, name.schema, name.name);
    if (!mv) throw new NotFoundError(`materialized view ${displayName(name)} does not exist`);
    const { items } = await listHistory(rt.db, mv.mview_id, { limit });
    if (opts.json) ctx.out(JSON.stringify(items, null, 2));
    else if (items.length === 0) ctx.out(`no refresh runs of ${displayName(name)} yet`);
    else for (const line of historyTable(items)) ctx.out(line);
    return 0;
  } finally {
    await rt.close();
  }
}
