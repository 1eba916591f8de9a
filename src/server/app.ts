import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Knex } from 'knex';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { RedisClient } from '../queue/redis.js';
import { tokenGuard } from './auth.js';
import { BOARD_PATH, registerBoard, type BoardDeps } from './board.js';
import { registerRoutes, type RouteDeps } from './routes.js';
import { registerUi } from '../ui/routes.js';

export interface AppDeps {
  db: Knex;
  redis: RedisClient;
  logger: Logger;
  apiToken: string | undefined;
  /** The /v1 API; without it only the health endpoints exist. */
  api?: Omit<RouteDeps, 'db' | 'redis'>;
  /** Bull Board at /admin/queues. */
  board?: Omit<BoardDeps, 'redis' | 'logger'>;
  /** The dashboard at /ui (and a page of links at /); it reads the /v1 API, so needs `api`. */
  ui?: boolean;
  /** Prometheus text for GET /metrics. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

/** Build the HTTP app without listening, so tests can use app.inject(). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    // Per-request access logs at info would drown the scheduler's own; errors still show.
    loggerInstance: deps.logger.child({ component: 'server' }, { level: 'warn' }) as unknown as FastifyBaseLogger,
  });

  // A bearer header, or in a browser the ?token= login's cookie (auth.ts says where).
  if (deps.apiToken) app.addHook('onRequest', tokenGuard(deps.apiToken));

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const problems: string[] = [];
    await Promise.all([
      deps.db.raw('SELECT 1').catch((err: unknown) => problems.push(`mysql: ${errorMessage(err)}`)),
      deps.redis.ping().catch((err: unknown) => problems.push(`redis: ${errorMessage(err)}`)),
    ]);
    if (problems.length) return reply.code(503).send({ status: 'unavailable', problems });
    return { status: 'ready' };
  });

  if (deps.metrics) {
    const metrics = deps.metrics;
    app.get('/metrics', async (_req, reply) => {
      const m = await metrics();
      return reply.header('content-type', m.contentType).send(m.body);
    });
  }

  if (deps.api) registerRoutes(app, { ...deps.api, db: deps.db, redis: deps.redis });
  if (deps.ui) {
    if (!deps.api) throw new Error('the dashboard needs the /v1 API (AppDeps.api)');
    const { prefix, defaultSchema, vnodes } = deps.api;
    await registerUi(app, { db: deps.db, redis: deps.redis, prefix, defaultSchema, apiToken: deps.apiToken, boardPath: BOARD_PATH, ...(vnodes !== undefined ? { vnodes } : {}) });
  }
  if (deps.board) await registerBoard(app, { ...deps.board, redis: deps.redis, logger: deps.logger });

  return app;
}
