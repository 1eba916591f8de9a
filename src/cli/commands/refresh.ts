import { createRuntime } from '../../app/runtime.js';
import { NotFoundError } from '../../errors.js';
import { parsePayload } from '../../jobs/schemas.js';
import { displayName, parseDottedName, qualifiedText } from '../../mv/identifiers.js';
import { findMviewByName } from '../../mv/repository.js';
import type { CliContext } from '../context.js';
import { describeSteps, type CascadeStep } from '../../pipeline/cascade.js';
import { enqueueRequest, type EnqueueOptions } from './enqueue.js';

/** Enqueue a manual refresh on the requests queue; with --wait, follow it to the end. */
export async function refreshCommand(ctx: CliContext, mview: string, opts: EnqueueOptions & { method?: string; cascade?: boolean }): Promise<number> {
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 2 });
  try {
    const name = parseDottedName(mview, rt.defaultSchema, 'materialized view');
    if (!(await findMviewByName(rt.db, name.schema, name.name))) {
      throw new NotFoundError(`materialized view ${displayName(name)} does not exist`);
    }
    const payload = parsePayload('refresh', {
      mview: qualifiedText(name),
      trigger: 'MANUAL',
      ...(opts.method ? { method: opts.method } : {}),
      ...(opts.cascade ? { cascade: true } : {}),
    });
    const result = await enqueueRequest(ctx, rt, 'refresh', payload, `refresh of ${displayName(name)}`, opts);
    if (result) {
      ctx.out(
        opts.json
          ? JSON.stringify(result)
          : `refreshed ${displayName(name)}: ${String(result.outcome)}${result.rows !== undefined ? ` (${String(result.rows)} rows)` : ''}${upstreamText(result.upstream)}`,
      );
    }
    return 0;
  } finally {
    await rt.close();
  }
}

function upstreamText(steps: unknown): string {
  if (!Array.isArray(steps) || steps.length === 0) return '';
  return ` after its upstream ${describeSteps(steps as CascadeStep[])}`;
}
