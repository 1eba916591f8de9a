import { Queue, QueueEvents } from 'bullmq';
import type { Runtime } from '../../app/runtime.js';
import { MvsError } from '../../errors.js';
import { bullQueueName, REQUESTS_QUEUE } from '../../queue/names.js';
import { isCluster } from '../../queue/redis.js';
import type { CliContext } from '../context.js';

export interface EnqueueOptions {
  wait?: boolean;
  json?: boolean;
  timeout?: string;
}

/**
 * Put a job on the `requests` queue, as any other service would; with --wait follow it to the
 * end, printing its state every 2 s, and return its result.
 */
export async function enqueueRequest(
  ctx: CliContext,
  rt: Runtime,
  name: string,
  payload: unknown,
  label: string,
  opts: EnqueueOptions,
): Promise<Record<string, unknown> | undefined> {
  const queueName = bullQueueName(REQUESTS_QUEUE, isCluster(rt.redis));
  const queue = new Queue(queueName, { connection: rt.redis, prefix: ctx.config.prefix });
  let events: QueueEvents | undefined;
  try {
    if (opts.wait) {
      events = new QueueEvents(queueName, { connection: rt.newConnection(), prefix: ctx.config.prefix });
      await events.waitUntilReady();
    }
    const job = await queue.add(name, payload, { removeOnComplete: { age: 3600 }, removeOnFail: { age: 86_400 } });
    if (!opts.wait) {
      ctx.out(opts.json ? JSON.stringify({ jobId: job.id, queued: true }) : `queued ${label} (job ${job.id})`);
      return undefined;
    }
    ctx.err(`queued ${label} (job ${job.id}); waiting ...`);
    const ticker = setInterval(() => {
      void job.getState().then((s) => ctx.err(`  ${label}: ${s === 'delayed' ? 'waiting for a running one to finish' : s}`));
    }, 2000);
    try {
      return (await job.waitUntilFinished(events!, Number(opts.timeout ?? 600) * 1000)) as Record<string, unknown>;
    } catch (err) {
      throw new MvsError(`${label} did not succeed: ${(err as Error).message}`);
    } finally {
      clearInterval(ticker);
    }
  } finally {
    await events?.close();
    await queue.close();
  }
}
