import { Queue, QueueEvents } from 'bullmq';
import { createRuntime } from '../../app/runtime.js';
import { MvsError, NotFoundError } from '../../errors.js';
import { parsePayload } from '../../jobs/schemas.js';
import { displayName, parseDottedName } from '../../mv/identifiers.js';
import { findMviewByName } from '../../mv/repository.js';
import { REQUESTS_QUEUE } from '../../queue/names.js';
import type { CliContext } from '../context.js';

/** Enqueue a manual refresh on the requests queue; with --wait, follow it to the end. */
export async function refreshCommand(
  ctx: CliContext,
  mview: string,
  opts: { wait?: boolean; method?: string; json?: boolean; timeout?: string },
): Promise<number> {
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 2 });
  const queue = new Queue(REQUESTS_QUEUE, { connection: rt.redis, prefix: ctx.config.prefix });
  let events: QueueEvents | undefined;
  try {
    const name = parseDottedName(mview, rt.defaultSchema, 'materialized view');
    if (!(await findMviewByName(rt.db, name.schema, name.name))) {
      throw new NotFoundError(`materialized view ${displayName(name)} does not exist`);
    }
    const payload = parsePayload('refresh', { mview: displayName(name), trigger: 'MANUAL', ...(opts.method ? { method: opts.method } : {}) });
    if (opts.wait) {
      events = new QueueEvents(REQUESTS_QUEUE, { connection: rt.newConnection(), prefix: ctx.config.prefix });
      await events.waitUntilReady();
    }
    const job = await queue.add('refresh', payload, { removeOnComplete: { age: 3600 }, removeOnFail: { age: 86_400 } });
    if (!opts.wait) {
      ctx.out(opts.json ? JSON.stringify({ jobId: job.id, queued: true }) : `queued refresh of ${displayName(name)} (job ${job.id})`);
      return 0;
    }
    ctx.err(`queued refresh of ${displayName(name)} (job ${job.id}); waiting ...`);
    const ticker = setInterval(() => {
      void job.getState().then((s) => ctx.err(`  ${displayName(name)}: ${s === 'delayed' ? 'waiting for a running refresh' : s}`));
    }, 2000);
    try {
      const result = (await job.waitUntilFinished(events!, Number(opts.timeout ?? 600) * 1000)) as Record<string, unknown>;
      ctx.out(opts.json ? JSON.stringify({ jobId: job.id, ...result }) : `refreshed ${displayName(name)}: ${String(result.outcome)}${result.rows !== undefined ? ` (${String(result.rows)} rows)` : ''}`);
      return 0;
    } catch (err) {
      throw new MvsError(`refresh of ${displayName(name)} did not succeed: ${(err as Error).message}`);
    } finally {
      clearInterval(ticker);
    }
  } finally {
    await events?.close();
    await queue.close();
    await rt.close();
  }
}
