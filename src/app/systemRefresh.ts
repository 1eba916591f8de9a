import { Queue } from 'bullmq';
import type { Logger } from '../log.js';
import { qualifiedText } from '../mv/identifiers.js';
import { getMview } from '../mv/repository.js';
import { bullQueueName, REQUESTS_QUEUE } from '../queue/names.js';
import { isCluster } from '../queue/redis.js';
import type { Runtime } from './runtime.js';

/**
 * Refreshes mvsched forces (trigger SYSTEM, method COMPLETE) go through the `requests` queue
 * like any other, so whichever worker is free runs them under the usual lock. The job id is the
 * caller's key, so asking again while one is pending (or failed within the minute) adds nothing.
 */
export function systemRefreshRequester(rt: Pick<Runtime, 'db' | 'redis' | 'config'>, logger: Logger) {
  let queue: Queue | undefined;
  return {
    async request(mviewId: number, key: string, reason: string): Promise<void> {
      const mv = await getMview(rt.db, mviewId);
      if (!mv) return;
      queue ??= new Queue(bullQueueName(REQUESTS_QUEUE, isCluster(rt.redis)), { connection: rt.redis, prefix: rt.config.prefix });
      await queue.add(
        'refresh',
        { mview: qualifiedText({ schema: mv.table_schema, name: mv.mview_name }), method: 'COMPLETE', trigger: 'SYSTEM' },
        { jobId: key, removeOnComplete: true, removeOnFail: { age: 60 } },
      );
      logger.info({ mview_id: mviewId, job_id: key, reason }, 'asked for a complete refresh (trigger SYSTEM)');
    },
    async close(): Promise<void> {
      await queue?.close();
    },
  };
}
