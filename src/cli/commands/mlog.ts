import { createRuntime } from '../../app/runtime.js';
import { connectionDatabase, createDb } from '../../db/connect.js';
import { NotFoundError } from '../../errors.js';
import { explainMv } from '../../fast/explain.js';
import { parsePayload } from '../../jobs/schemas.js';
import { findMlogByTable } from '../../mlog/repository.js';
import { displayName, parseDottedName, qualifiedText } from '../../mv/identifiers.js';
import type { CliContext } from '../context.js';
import { enqueueRequest, type EnqueueOptions } from './enqueue.js';

/** Enqueue a purge of a table's MV log on the requests queue; with --wait, follow it. */
export async function purgeCommand(ctx: CliContext, table: string, opts: EnqueueOptions): Promise<number> {
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 2 });
  try {
    const name = parseDottedName(table, rt.defaultSchema, 'table');
    if (!(await findMlogByTable(rt.db, name.schema, name.name))) {
      throw new NotFoundError(`there is no materialized view log on ${displayName(name)}`);
    }
    const payload = parsePayload('purge', { mlog: qualifiedText(name) });
    const result = await enqueueRequest(ctx, rt, 'purge', payload, `purge of the log on ${displayName(name)}`, opts);
    if (result) {
      ctx.out(
        opts.json
          ? JSON.stringify(result)
          : `purged the log on ${displayName(name)}: ${String(result.outcome)}` +
              (result.rows !== undefined ? ` (${String(result.rows)} rows, up to seq ${String(result.watermark)})` : ''),
      );
    }
    return 0;
  } finally {
    await rt.close();
  }
}

export async function explainMvCommand(ctx: CliContext, select: string, opts: { json?: boolean }): Promise<number> {
  const db = createDb(ctx.config.databaseUrl!, { poolMax: 1 });
  try {
    const r = await explainMv(db, select, connectionDatabase(db));
    if (opts.json) ctx.out(JSON.stringify(r));
    else if (r.fastRefreshable && r.join) {
      const tables = r.join.map((o) => `${o.table} AS ${o.alias}`).join(', ');
      const logs = [...new Set(r.join.map((o) => o.mlog))].join(', ');
      ctx.out(`FAST refresh: possible (${r.kind === 'aggregate' ? 'aggregate' : 'select-project-join'} over an inner join of ${tables}, from logs ${logs})`);
      for (const rule of r.rules ?? []) ctx.out(`  - ${rule}`);
    } else if (r.fastRefreshable) {
      ctx.out(`FAST refresh: possible (${r.kind === 'aggregate' ? 'aggregate' : 'select-project-filter'} over ${r.table}, from log ${r.mlog})`);
    } else ctx.out(`FAST refresh: not possible: ${r.reason}`);
    return 0;
  } finally {
    await db.destroy();
  }
}
