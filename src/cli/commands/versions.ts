import { readFileSync } from 'node:fs';
import { createRuntime, type Runtime } from '../../app/runtime.js';
import { ValidationError } from '../../errors.js';
import { forgetVersions } from '../../versions/forget.js';
import { parsePayload } from '../../jobs/schemas.js';
import { parseDottedName, qualifiedText } from '../../mv/identifiers.js';
import type { CliContext } from '../context.js';
import { enqueueRequest, type EnqueueOptions } from './enqueue.js';

function readJsonArray(file: string): unknown[] {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ValidationError(`${file}: ${(err as Error).message}`);
  }
  if (!Array.isArray(data)) throw new ValidationError(`${file}: expected a JSON array (the payload's "partitions")`);
  return data;
}

/** `mvsched report-versions s.t --file f.json [--data-changed|--no-data-changed]` */
export async function reportVersionsCommand(
  ctx: CliContext,
  table: string,
  opts: EnqueueOptions & { file?: string; forget?: boolean; dataChanged: boolean; tableIdentifier?: string },
): Promise<number> {
  if (opts.forget && opts.file) throw new ValidationError('--forget and --file do not go together: forget the versions, or report new ones');
  if (!opts.forget && !opts.file) throw new ValidationError('report-versions needs --file <f.json> (or --forget)');
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 1 });
  try {
    if (opts.forget) return await forget(ctx, rt, table, opts);
    const name = qualifiedText(parseDottedName(table, rt.defaultSchema, 'table'));
    const payload = parsePayload('report-versions', {
      table: name,
      partitions: readJsonArray(opts.file!),
      dataChanged: opts.dataChanged,
      ...(opts.tableIdentifier ? { tableIdentifier: opts.tableIdentifier } : {}),
    });
    const result = await enqueueRequest(ctx, rt, 'report-versions', payload, `version report for ${name}`, opts);
    if (result) ctx.out(opts.json ? JSON.stringify(result) : `reported ${payload.partitions.length} partition version(s) of ${name}: ${String(result.dependents)} dependent MV(s), ${String(result.repairs)} repair(s) queued`);
    return 0;
  } finally {
    await rt.close();
  }
}

/** `mvsched report-versions s.t --forget`: done here and now, in one transaction. */
async function forget(ctx: CliContext, rt: Runtime, table: string, opts: { json?: boolean }): Promise<number> {
  const n = parseDottedName(table, rt.defaultSchema, 'table');
  const out = await forgetVersions(rt.db, n, rt.clock);
  const shown = `${n.schema}.${n.name}`;
  ctx.out(
    opts.json
      ? JSON.stringify({ table: shown, schema: n.schema, tableName: n.name, partitions: out.partitions, mviews: out.mviews.length })
      : out.partitions
        ? `${shown} is an ordinary table again: forgot ${out.partitions} reported partition version(s) and the version-map entries of ${out.mviews.length} MV(s)`
        : `${shown} had no reported versions: nothing to forget`,
  );
  return 0;
}

/** `mvsched repair s.t --file infos.json` */
export async function repairCommand(ctx: CliContext, table: string, opts: EnqueueOptions & { file: string }): Promise<number> {
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 1 });
  try {
    const name = qualifiedText(parseDottedName(table, rt.defaultSchema, 'table'));
    const payload = parsePayload('repair', { table: name, partitions: readJsonArray(opts.file) });
    const result = await enqueueRequest(ctx, rt, 'repair', payload, `repair of ${name}`, opts);
    if (result) ctx.out(opts.json ? JSON.stringify(result) : `repair of ${name}: queued for ${String(result.repairs)} dependent MV(s)`);
    return 0;
  } finally {
    await rt.close();
  }
}
