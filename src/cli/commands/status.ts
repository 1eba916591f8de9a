import type { Knex } from 'knex';
import { createRuntime } from '../../app/runtime.js';
import { captureSummary, type CaptureSummary } from '../../capture/status.js';
import { MembershipRegistry } from '../../membership/registry.js';
import { listMviewStatus, type MviewStatus } from '../../mv/status.js';
import { HashRing } from '../../ring/hashRing.js';
import { listMlogStatus, type MlogStatus } from '../../mlog/status.js';
import type { CliContext } from '../context.js';
import { columns, formatLag, utc } from '../format.js';

function mlogTable(rows: MlogStatus[]): string[] {
  const head = ['MV LOG', 'ON', 'CAPTURE', 'STATE', 'BACKLOG', 'PURGE', 'LAST PURGE', 'LAST END (UTC)', 'ROWS', 'WATERMARK', 'NEXT (UTC)', 'CONSUMERS'];
  const body = rows.map((r) => [
    r.log,
    r.table,
    r.capture,
    r.state,
    r.backlogRows === null ? '-' : String(r.backlogRows),
    r.purgeMethod === 'SCHEDULED' ? `every ${r.purgeIntervalS ?? '-'}s` : r.purgeMethod.toLowerCase(),
    r.lastPurgeResult ?? '-',
    utc(r.lastPurgeTime),
    String(r.lastPurgeRows),
    String(r.purgeWatermark),
    utc(r.nextPurgeTime),
    r.consumers.map((c) => `${c.mview}@${c.consumedWatermark}`).join(', ') || '-',
  ]);
  const out = columns(head, body);
  for (const r of rows) if (r.state === 'BROKEN') out.push(`  ${r.log}: BROKEN: ${r.brokenReason ?? ''}`);
  return out;
}

function table(rows: MviewStatus[]): string[] {
  const head = ['MVIEW', 'METHOD', 'STATE', 'SCHEDULE', 'DATA AS OF (UTC)', 'LAG', 'LAST', 'LAST END (UTC)', 'NEXT (UTC)', 'OWNER', 'FAILS', 'VERSIONS'];
  const body = rows.map((r) => [
    r.name,
    r.method,
    r.status,
    scheduleText(r),
    utc(r.dataTime),
    formatLag(r.lagSeconds),
    r.lastResult ?? '-',
    utc(r.lastRefreshEnd),
    utc(r.nextTime),
    r.owner ?? '-',
    String(r.failures),
    r.freshness === 'unversioned' ? '-' : `${r.freshness} per versions reported at ${utc(r.versionsReportedAt)}`,
  ]);
  const out = columns(head, body);
  for (const r of rows) if (r.lastResult === 'FAILED' && r.lastFailedReason) out.push(`  ${r.name}: ${r.lastFailedReason}`);
  for (const r of rows) {
    const parts = [r.dependsOn.length ? `reads ${r.dependsOn.join(', ')}` : '', r.readBy.length ? `read by ${r.readBy.join(', ')}` : ''].filter(Boolean);
    if (parts.length) out.push(`  ${r.name}: ${parts.join('; ')}`);
    if (r.targetUnmetReason) out.push(`  ${r.name}: target lag ${String(r.targetLag)}s not met: ${r.targetUnmetReason}`);
  }
  return out;
}

function scheduleText(r: MviewStatus): string {
  if (r.targetLag === 'DOWNSTREAM') return 'lag downstream';
  if (r.targetLag !== null) return `lag ${r.targetLag}s`;
  return r.nextSeconds ? `every ${r.nextSeconds}s` : r.startWith ? 'once' : 'manual';
}

/** One line on binlog capture: who captures, how far behind; or that nothing fills the BINLOG logs. */
export function captureLine(c: CaptureSummary): string {
  if (!c.active) {
    return `capture: NOT RUNNING: ${c.binlogLogs} BINLOG log${c.binlogLogs === 1 ? '' : 's'} not being filled (start \`mvsched capture\`); stopped at GTID ${c.gtid ?? '-'}`;
  }
  const secs = c.lagSeconds === null ? '-' : `${c.lagSeconds.toFixed(1)} s`;
  const bytes = c.lagBytes === null ? '-' : `${c.lagBytes} bytes`;
  return `capture: active (${c.holder ?? '-'}), behind by ${secs} / ${bytes}, at GTID ${c.gtid ?? '-'} (${c.file ?? '-'}:${c.pos ?? '-'})`;
}

type CaptureJson = Pick<CaptureSummary, 'active' | 'lagSeconds' | 'lagBytes' | 'gtid' | 'file' | 'pos' | 'holder'>;

/** What `status --json` prints: every MV and MV log, read in a bounded number of queries. */
export async function statusDocument(
  db: Knex,
  ring: HashRing,
  capture: CaptureSummary | null,
): Promise<{ nodes: string[]; mviews: MviewStatus[]; mlogs: MlogStatus[]; capture?: CaptureJson }> {
  const [mviews, mlogs] = await Promise.all([listMviewStatus(db, ring), listMlogStatus(db)]);
  if (!capture) return { nodes: ring.nodes(), mviews, mlogs };
  const { active, lagSeconds, lagBytes, gtid, file, pos, holder } = capture;
  return { nodes: ring.nodes(), mviews, mlogs, capture: { active, lagSeconds, lagBytes, gtid, file, pos, holder } };
}

export async function statusCommand(ctx: CliContext, opts: { json?: boolean }): Promise<number> {
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 2 });
  try {
    const ring = new HashRing(ctx.config.vnodes !== undefined ? { vnodes: ctx.config.vnodes } : {});
    ring.rebuild(await new MembershipRegistry(rt.redis, ctx.config.prefix).live());
    const capture = await captureSummary(rt.db, rt.redis, ctx.config.prefix);
    const doc = await statusDocument(rt.db, ring, capture);
    const { mviews: rows, mlogs } = doc;
    if (opts.json) ctx.out(JSON.stringify(doc, null, 2));
    else if (rows.length === 0 && mlogs.length === 0) ctx.out(`no materialized views (live nodes: ${ring.nodes().join(', ') || 'none'})`);
    else {
      if (rows.length) for (const line of table(rows)) ctx.out(line);
      if (mlogs.length) {
        if (rows.length) ctx.out('');
        for (const line of mlogTable(mlogs)) ctx.out(line);
      }
      if (capture) ctx.out(captureLine(capture));
      ctx.out(`live nodes: ${ring.nodes().join(', ') || 'none'}`);
    }
    return 0;
  } finally {
    await rt.close();
  }
}
