// Names that other services and operators see: queue names under the BullMQ prefix, job ids,
// Redis keys and channels. BullMQ forbids ':' in queue names and job ids.

export const REQUESTS_QUEUE = 'requests';
export const REPAIR_QUEUE = 'repair';
const NODE_QUEUE_PREFIX = 'node-';

export function nodeQueueName(nodeId: string): string {
  return `${NODE_QUEUE_PREFIX}${nodeId}`;
}

export function nodeIdOfQueue(queueName: string): string | undefined {
  return queueName.startsWith(NODE_QUEUE_PREFIX) ? queueName.slice(NODE_QUEUE_PREFIX.length) : undefined;
}

/** One job per MV per node queue; the id never changes, the job is re-delayed after each run. */
export function mviewJobId(mviewId: number): string {
  return `mv-${mviewId}`;
}

export function mviewIdOfJob(jobId: string | undefined): number | undefined {
  const m = /^mv-(\d+)$/.exec(jobId ?? '');
  return m ? Number(m[1]) : undefined;
}

/** Key the hash ring places: stable per MV. */
export function mviewRingKey(mviewId: number): string {
  return `mv:${mviewId}`;
}

/** Name of the scheduled refresh job in node queues. */
export const SCHEDULED_REFRESH = 'refresh';

export interface ScheduledRefreshData {
  mviewId: number;
  /** The slot this job is delayed to (epoch ms). */
  dueAt: number;
}

/** mvsched's own Redis keys, under the same prefix as its queues. */
export function redisKeys(prefix: string) {
  return {
    nodes: `${prefix}:mvs:nodes`,
    nodeQueues: `${prefix}:mvs:node-queues`,
    membershipChannel: `${prefix}:mvs:membership`,
    ddlChannel: `${prefix}:ddl`,
    plannerLeader: `${prefix}:mvs:planner:leader`,
    plannerEpoch: `${prefix}:mvs:planner:epoch`,
  };
}
