import type { RedisClient } from '../queue/redis.js';
import type { Logger } from '../log.js';

/**
 * A worker that starts under a node id whose previous process died (SIGKILL, OOM, a lost VM) finds
 * that life's jobs still "active", each with a lock that BullMQ's stalled-job check would only
 * notice after up to two check intervals (a minute, many missed slots). Node ids belong to one
 * live process at a time, so those jobs are known dead: release them now (lock removed, marked
 * stalled), and the worker's first stalled check, which runs as it starts, puts them back.
 *
 * In the node's own queue every active job is that life's; in shared queues, those it processed
 * (BullMQ records the worker's name, which is the node id). Returns how many were released.
 * Queues are named as BullMQ knows them (`{node-<id>}` on a Redis Cluster): every key touched
 * is one queue's, in that queue's slot.
 */
export async function releasePreviousLife(redis: RedisClient, prefix: string, nodeId: string, queues: { own: string; shared: string[] }, log: Logger): Promise<number> {
  let released = 0;
  for (const queue of [queues.own, ...queues.shared]) {
    const key = (s: string) => `${prefix}:${queue}:${s}`;
    const active = await redis.lrange(key('active'), 0, -1);
    const ours: string[] = [];
    for (const jobId of active) {
      if (queue === queues.own || (await redis.hget(key(jobId), 'pb')) === nodeId) ours.push(jobId);
    }
    if (!ours.length) continue;
    for (const jobId of ours) await redis.del(key(`${jobId}:lock`));
    await redis.sadd(key('stalled'), ...ours);
    // A check another worker ran moments ago would make ours a no-op until its interval ends.
    await redis.del(key('stalled-check'));
    released += ours.length;
    log.warn({ queue, jobs: ours }, 'released the jobs a previous life of this node left active');
  }
  return released;
}
