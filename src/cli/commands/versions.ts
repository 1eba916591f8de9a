import { readFileSync } from 'node:fs';
import { createRuntime } from '../../app/runtime.js';
import { ValidationError } from '../../errors.js';
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
  opts: EnqueueOptions & { file: string; dataChanged: boolean; tableIdentifier?: string },
): Promise<number> {
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 1 });
  try {
    const name = qualifiedText(parseDottedName(table, rt.defaultSchema, 'table'));
    const payload = parsePayload('report-versions', {
      table: name,
      partitions: readJsonArray(opts.file),
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
