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
/** Name of the scheduled MV-log purge job in node queues. */
export const SCHEDULED_PURGE = 'purge';

export interface ScheduledRefreshData {
  mviewId: number;
  /** The slot this job is delayed to (epoch ms). */
  dueAt: number;
  /** The MV's display name `schema.name`, for people reading Bull Board (the id is what counts). */
  mview?: string;
}

export interface ScheduledPurgeData {
  mlogId: number;
  dueAt: number;
  /** The log's display name: its base table `schema.table`, as in a `purge` request. */
  mlog?: string;
}

/**
 * Log lines kept on a scheduled job (BullMQ keepLogs). Such a job lives as long as its MV and
 * gets a line per run, so its log must be capped (DESIGN.md §4, invariant 9).
 */
export const SCHEDULED_JOB_LOG_KEEP = 100;

/** One job per scheduled MV log per node queue, like an MV's. */
export function mlogJobId(mlogId: number): string {
  return `mlog-${mlogId}`;
}

export function mlogRingKey(mlogId: number): string {
  return `mlog:${mlogId}`;
}

/**
 * The planner and the placer keep one scheduled task per MV and per scheduled MV log, keyed by
 * a number: an MV by its id, an MV log by minus its id. Only these helpers know the encoding.
 */
export type TaskId = number;

export const mviewTask = (mviewId: number): TaskId => mviewId;
export const mlogTask = (mlogId: number): TaskId => -mlogId;
export const isMlogTask = (task: TaskId): boolean => task < 0;

export function taskJobId(task: TaskId): string {
  return task < 0 ? mlogJobId(-task) : mviewJobId(task);
}

export function taskOfJob(jobId: string | undefined): TaskId | undefined {
  const mv = mviewIdOfJob(jobId);
  if (mv !== undefined) return mv;
  const m = /^mlog-(\d+)$/.exec(jobId ?? '');
  return m ? -Number(m[1]) : undefined;
}

export function taskRingKey(task: TaskId): string {
  return task < 0 ? mlogRingKey(-task) : mviewRingKey(task);
}

export function taskJob(task: TaskId, dueAt: number, displayName?: string): { name: string; data: ScheduledRefreshData | ScheduledPurgeData } {
  const named = (key: 'mview' | 'mlog') => (displayName !== undefined ? { [key]: displayName } : {});
  return task < 0
    ? { name: SCHEDULED_PURGE, data: { mlogId: -task, dueAt, ...named('mlog') } }
    : { name: SCHEDULED_REFRESH, data: { mviewId: task, dueAt, ...named('mview') } };
}

/** The display name a scheduled job's data carries, if any. */
export function taskJobDisplayName(data: unknown): string | undefined {
  const d = data as { mview?: unknown; mlog?: unknown } | null | undefined;
  const name = d?.mview ?? d?.mlog;
  return typeof name === 'string' ? name : undefined;
}

/**
 * The BullMQ name of an mvsched queue. On a Redis Cluster the name is its own hash tag
 * (`{requests}`, `{repair}`, `{node-<id>}`): BullMQ's scripts touch several keys of one queue at
 * once, which a cluster allows only within one slot, and distinct tags let different node queues
 * land on different masters. On a single Redis the names stay as they always were.
 */
export function bullQueueName(queue: string, cluster: boolean): string {
  return cluster ? `{${queue}}` : queue;
}

/** The mvsched queue a BullMQ queue name stands for (the inverse of bullQueueName). */
export function queueOfBullName(name: string): string {
  const m = /^\{([^{}]+)\}$/.exec(name);
  return m ? m[1]! : name;
}

/**
 * mvsched's own Redis keys, under the same prefix as its queues. On a Redis Cluster they all
 * carry the hash tag `{mvs}`, so they share one slot: the heartbeat script writes two of them
 * at once and the metrics scrape reads the per-node keys with one MGET. They are small and
 * touched a few times a second, so one master carries them easily.
 */
export function redisKeys(prefix: string, cluster: boolean) {
  const own = cluster ? `${prefix}:{mvs}` : `${prefix}:mvs`;
  return {
    nodes: `${own}:nodes`,
    nodeQueues: `${own}:node-queues`,
    membershipChannel: `${own}:membership`,
    ddlChannel: cluster ? `${own}:ddl` : `${prefix}:ddl`,
    plannerLeader: `${own}:planner:leader`,
    plannerEpoch: `${own}:planner:epoch`,
    /** Each worker's published run metrics (see metrics/runMetrics.ts). */
    metrics: (nodeId: string) => `${own}:metrics:${nodeId}`,
    metricsPattern: `${own}:metrics:*`,
    /**
     * Pipeline waves (pipeline/ledger.ts): one hash per wave, an index of open waves, a counter.
     * Each command and script of the ledger touches one of them only.
     */
    wave: (waveId: string) => `${own}:wave:${waveId}`,
    waves: `${own}:waves`,
    waveSeq: `${own}:wave-seq`,
  };
}

export type RedisKeys = ReturnType<typeof redisKeys>;
