import type { Queue } from 'bullmq';

export interface JobStatus {
  jobId: string;
  /** BullMQ's state: waiting, delayed (waiting for a running one of the same MV), active, completed, failed; unknown once removed. */
  state: string;
  name?: string;
  /** The payload it was enqueued with. */
  data?: unknown;
  result?: unknown;
  failedReason?: string;
  /** Epoch ms. */
  enqueuedAt?: number;
  finishedAt?: number;
}

/** Where a job of the requests queue stands (finished jobs are kept an hour, failed ones a day). */
export async function jobStatus(queue: Queue, jobId: string): Promise<JobStatus> {
  const job = await queue.getJob(jobId);
  if (!job) return { jobId, state: 'unknown' };
  const state = await job.getState();
  return {
    jobId,
    state,
    name: job.name,
    data: job.data as unknown,
    enqueuedAt: job.timestamp,
    ...(job.finishedOn !== undefined ? { finishedAt: job.finishedOn } : {}),
    ...(state === 'completed' ? { result: job.returnvalue as unknown } : {}),
    ...(state === 'failed' ? { failedReason: job.failedReason } : {}),
  };
}
