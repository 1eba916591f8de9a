import { Queue } from 'bullmq';
import { MembershipRegistry } from '../../membership/registry.js';
import { followJob } from '../../queue/followJob.js';
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
 * end (printing its state every 2 s; failing fast when no worker is alive or the job vanished),
 * and return its result.
 */
export async function enqueueRequest(
  ctx: CliContext,
  rt: Runtime,
  name: string,
  payload: unknown,
  label: string,
  opts: EnqueueOptions,
): Promise<Record<string, unknown> | undefined> {
  const queue = new Queue(bullQueueName(REQUESTS_QUEUE, isCluster(rt.redis)), { connection: rt.redis, prefix: ctx.config.prefix });
  try {
    // Kept an hour after completion so that --wait (and a later status) can read the result.
    const job = await queue.add(name, payload, { removeOnComplete: { age: 3600 }, removeOnFail: { age: 86_400 } });
    if (!opts.wait) {
      ctx.out(opts.json ? JSON.stringify({ jobId: job.id, queued: true }) : `queued ${label} (job ${job.id})`);
      return undefined;
    }
    ctx.err(`queued ${label} (job ${job.id}); waiting ...`);
    try {
      return (await followJob(queue, job.id!, new MembershipRegistry(rt.redis, ctx.config.prefix), {
        timeoutMs: Number(opts.timeout ?? 600) * 1000,
        progress: (state, ms) => ctx.err(`  ${label}: ${state === 'delayed' ? 'waiting for a running one to finish' : state} (${Math.round(ms / 1000)} s)`),
      })) as Record<string, unknown>;
    } catch (err) {
      // The worker's reason already names the work ("refresh of s.mv failed: ..."): one sentence.
      const msg = (err as Error).message;
      throw new MvsError(msg.startsWith(label) ? msg : `${label} did not succeed: ${msg}`);
    }
  } finally {
    await queue.close();
  }
}
