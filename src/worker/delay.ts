import { DelayedError, type Job } from 'bullmq';

/** Put a job back to wait until `at`; BullMQ then counts no attempt. */
export async function delayJob(job: Job, token: string | undefined, at: number): Promise<never> {
  await job.moveToDelayed(at, token);
  throw new DelayedError();
}

/** How long a job that found its MV busy waits before it tries again. */
export function deferDelayMs(): number {
  return 300 + Math.floor(Math.random() * 700);
}
