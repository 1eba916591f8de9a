import type { Queue } from 'bullmq';
import { MvsError } from '../errors.js';
import type { MembershipRegistry } from '../membership/registry.js';

export interface FollowOptions {
  /** Give up after this long (ms). */
  timeoutMs: number;
  /** A job still waiting this long with no live worker fails (ms). */
  noWorkerMs?: number;
  pollMs?: number;
  /** Told the job's state every progressMs (ms) while it runs. */
  progress?: (state: string, elapsedMs: number) => void;
  progressMs?: number;
}

const WAITING = new Set(['waiting', 'delayed', 'prioritized', 'waiting-children', 'paused']);

/**
 * Follow a job to its end and return its result. Fails within seconds, with a sentence that says
 * why, when waiting cannot end well: the job vanished from Redis (flushed, or a failover without
 * persistence), or it waits and no worker is alive to take it.
 */
export async function followJob(queue: Queue, jobId: string, registry: Pick<MembershipRegistry, 'live'>, opts: FollowOptions): Promise<unknown> {
  const t0 = Date.now();
  const pollMs = opts.pollMs ?? 250;
  const noWorkerMs = opts.noWorkerMs ?? 5_000;
  let lastProgress = t0;
  let noWorkerSince: number | undefined;
  for (;;) {
    const state = await queue.getJobState(jobId);
    const now = Date.now();
    if (state === 'completed') return (await queue.getJob(jobId))?.returnvalue ?? null;
    if (state === 'failed') throw new MvsError((await queue.getJob(jobId))?.failedReason ?? 'failed');
    if (state === 'unknown') throw new MvsError(`job ${jobId} is no longer in the queue (was Redis flushed or restarted without its data?)`);
    if (WAITING.has(state) && (await registry.live()).length === 0) {
      noWorkerSince ??= now;
      if (now - noWorkerSince >= noWorkerMs) {
        throw new MvsError(`no worker is running, so nothing will take job ${jobId}; start one (mvsched worker) and try again`);
      }
    } else noWorkerSince = undefined;
    if (now - t0 > opts.timeoutMs) throw new MvsError(`job ${jobId} did not finish within ${Math.round(opts.timeoutMs / 1000)} s (still ${state})`);
    if (opts.progress && now - lastProgress >= (opts.progressMs ?? 2_000)) {
      lastProgress = now;
      opts.progress(state, now - t0);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

