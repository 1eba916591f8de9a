import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import { Queue, type Job } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log.js';
import { MembershipRegistry } from '../membership/registry.js';
import { PROMOTE_LEAD_MS } from '../queue/jobPlacer.js';
import { bullQueueName, nodeQueueName, queueOfBullName, REPAIR_QUEUE, REQUESTS_QUEUE, taskJobDisplayName } from '../queue/names.js';
import { isCluster, type RedisClient } from '../queue/redis.js';

export const BOARD_PATH = '/admin/queues';

export interface BoardDeps {
  redis: RedisClient;
  prefix: string;
  logger: Logger;
  /** MVS_BOARD_WRITE=1: retry, remove, promote jobs from the board. Read-only otherwise. */
  writable: boolean;
  /** How often the node-queue list follows membership (ms). */
  refreshMs?: number;
}

/**
 * Bull Board at /admin/queues over every mvsched queue: the shared `requests` and `repair`
 * queues and one `node-<id>` queue per live worker, kept in step with membership so node queues
 * appear and disappear as workers join and leave. On a Redis Cluster the board shows the BullMQ
 * names, which carry their hash tags (`{requests}`, `{node-<id>}`).
 */
export async function registerBoard(app: FastifyInstance, deps: BoardDeps): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(BOARD_PATH);
  const queues = new Map<string, Queue>();
  const bullName = (name: string) => bullQueueName(name, isCluster(deps.redis));
  const adapter = (name: string) => {
    let q = queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: deps.redis, prefix: deps.prefix });
      q.on('error', (err) => deps.logger.warn({ err, queue: name }, 'board queue error'));
      queues.set(name, q);
    }
    const a = new ScheduledJobsAdapter(q, deps.redis, { readOnlyMode: !deps.writable, prefix: '', description: describe(name) });
    // "refresh app.sales" rather than a bare "refresh" in the job list.
    a.setFormatter('name', (job: { name?: string; data?: unknown }) => {
      const shown = taskJobDisplayName(job.data);
      return shown ? `${job.name ?? ''} ${shown}` : (job.name ?? '');
    });
    return a;
  };
  const registry = new MembershipRegistry(deps.redis, deps.prefix);
  const current = async () => [REQUESTS_QUEUE, REPAIR_QUEUE, ...(await registry.live()).map(nodeQueueName)].map(bullName);
  let shown = await current();
  const board = createBullBoard({
    queues: shown.map(adapter),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'mvsched' } },
  });
  const timer = setInterval(() => {
    current()
      .then((names) => {
        if (names.join('\n') === shown.join('\n')) return;
        shown = names;
        board.replaceQueues(names.map(adapter));
        for (const [name, q] of queues) {
          if (!names.includes(name)) {
            queues.delete(name);
            void q.close();
          }
        }
      })
      .catch((err: unknown) => deps.logger.warn({ err }, 'could not refresh the board queue list'));
  }, deps.refreshMs ?? 2_000);
  timer.unref();
  app.addHook('onClose', async () => {
    clearInterval(timer);
    await Promise.allSettled([...queues.values()].map((q) => q.close()));
  });
  await app.register(serverAdapter.registerPlugin(), { prefix: BOARD_PATH });
}

function describe(bullName: string): string {
  const name = queueOfBullName(bullName);
  if (name === REQUESTS_QUEUE) return 'refresh / purge / report-versions / repair requests from other services';
  if (name === REPAIR_QUEUE) return 'per-MV version-map repairs (serialized per MV)';
  return 'scheduled refreshes and purges owned by this node';
}

/** BullMQ scores delayed jobs by run time * 4096 + a counter. */
const DELAY_SCORE_FACTOR = 0x1000;

/**
 * The board shows a delayed job's run time as its creation time plus its first delay. A
 * scheduled job is created once and re-delayed after every run (moveToDelayed, changeDelay),
 * so that sum points at its first slot; the delayed set holds the real one (PROMOTE_LEAD_MS before
 * the slot: the job wakes a little early and waits in the worker), put in its place here.
 */
class ScheduledJobsAdapter extends BullMQAdapter {
  constructor(
    private readonly q: Queue,
    private readonly redis: RedisClient,
    options: ConstructorParameters<typeof BullMQAdapter>[1],
  ) {
    super(q, options);
  }

  override async getJob(id: string): Promise<Job | undefined> {
    const job = await super.getJob(id);
    if (job) await this.withRunTimes([job]);
    return job;
  }

  override async getJobs(...args: Parameters<BullMQAdapter['getJobs']>): Promise<Job[]> {
    return this.withRunTimes(await super.getJobs(...args));
  }

  private async withRunTimes(jobs: Job[]): Promise<Job[]> {
    if (jobs.length === 0) return jobs;
    const pipeline = this.redis.pipeline();
    for (const job of jobs) pipeline.zscore(this.q.keys.delayed!, job.id!);
    const scores = (await pipeline.exec()) ?? [];
    jobs.forEach((job, i) => {
      const score = scores[i]?.[1];
      if (score === null || score === undefined) return;
      const slot = Math.floor(Number(score) / DELAY_SCORE_FACTOR) + PROMOTE_LEAD_MS;
      const delay = Math.max(0, slot - job.timestamp);
      job.delay = delay;
      job.opts = { ...job.opts, delay };
    });
    return jobs;
  }
}
