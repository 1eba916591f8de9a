import type { Knex } from 'knex';
import { createRuntime } from '../../app/runtime.js';
import { MembershipRegistry } from '../../membership/registry.js';
import { listMviewStatus, type MviewStatus } from '../../mv/status.js';
import { HashRing } from '../../ring/hashRing.js';
import { listMlogStatus, type MlogStatus } from '../../mlog/status.js';
import type { CliContext } from '../context.js';
import { columns, formatLag, utc } from '../format.js';

function mlogTable(rows: MlogStatus[]): string[] {
  const head = ['MV LOG', 'ON', 'STATE', 'BACKLOG', 'PURGE', 'LAST PURGE', 'LAST END (UTC)', 'ROWS', 'WATERMARK', 'NEXT (UTC)', 'CONSUMERS'];
  const body = rows.map((r) => [
    r.log,
    r.table,
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
    r.nextSeconds ? `every ${r.nextSeconds}s` : r.startWith ? 'once' : 'manual',
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
  return out;
}

/** What `status --json` prints: every MV and MV log, read in a bounded number of queries. */
export async function statusDocument(db: Knex, ring: HashRing): Promise<{ nodes: string[]; mviews: MviewStatus[]; mlogs: MlogStatus[] }> {
  const [mviews, mlogs] = await Promise.all([listMviewStatus(db, ring), listMlogStatus(db)]);
  return { nodes: ring.nodes(), mviews, mlogs };
}

export async function statusCommand(ctx: CliContext, opts: { json?: boolean }): Promise<number> {
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 2 });
  try {
    const ring = new HashRing(ctx.config.vnodes !== undefined ? { vnodes: ctx.config.vnodes } : {});
    ring.rebuild(await new MembershipRegistry(rt.redis, ctx.config.prefix).live());
    const doc = await statusDocument(rt.db, ring);
    const { mviews: rows, mlogs } = doc;
    if (opts.json) ctx.out(JSON.stringify(doc, null, 2));
    else if (rows.length === 0 && mlogs.length === 0) ctx.out(`no materialized views (live nodes: ${ring.nodes().join(', ') || 'none'})`);
    else {
      if (rows.length) for (const line of table(rows)) ctx.out(line);
      if (mlogs.length) {
        if (rows.length) ctx.out('');
        for (const line of mlogTable(mlogs)) ctx.out(line);
      }
      ctx.out(`live nodes: ${ring.nodes().join(', ') || 'none'}`);
    }
    return 0;
  } finally {
    await rt.close();
  }
}
