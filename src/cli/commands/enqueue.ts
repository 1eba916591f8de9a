import { Queue, QueueEvents, type Job } from 'bullmq';
import type { Runtime } from '../../app/runtime.js';
import { MvsError } from '../../errors.js';
import { REQUESTS_QUEUE } from '../../queue/names.js';
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
  const queue = new Queue(REQUESTS_QUEUE, { connection: rt.redis, prefix: ctx.config.prefix });
  let events: QueueEvents | undefined;
  try {
    if (opts.wait) {
      events = new QueueEvents(REQUESTS_QUEUE, { connection: rt.newConnection(), prefix: ctx.config.prefix });
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
    const timeoutS = Number(opts.timeout ?? 600);
    try {
      return (await job.waitUntilFinished(events!, timeoutS * 1000)) as Record<string, unknown>;
    } catch (err) {
      throw new MvsError(await failureSentence(err, label, job, timeoutS));
    } finally {
      clearInterval(ticker);
    }
  } finally {
    await events?.close();
    await queue.close();
  }
}

/**
 * One sentence for a job that did not succeed. The worker's reason already names the work
 * ("refresh of s.mv failed: ..."), so it is not wrapped again.
 */
async function failureSentence(err: unknown, label: string, job: Job, timeoutS: number): Promise<string> {
  const msg = (err as Error).message;
  if (/timed out before finishing/.test(msg)) {
    const state = await job.getState().catch(() => 'unknown');
    return `${label} did not finish within ${timeoutS} s (job ${job.id} is ${state}; see mvsched status)`;
  }
  return msg.startsWith(label) ? msg : `${label} failed: ${msg}`;
}
