import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Knex } from 'knex';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { RedisClient } from '../queue/redis.js';
import { BOARD_COOKIE, bearerMatches, cookieValue, tokenMatches } from './auth.js';
import { BOARD_PATH, registerBoard, type BoardDeps } from './board.js';
import { registerRoutes, type RouteDeps } from './routes.js';

export interface AppDeps {
  db: Knex;
  redis: RedisClient;
  logger: Logger;
  apiToken: string | undefined;
  /** The /v1 API; without it only the health endpoints exist. */
  api?: Omit<RouteDeps, 'db' | 'redis'>;
  /** Bull Board at /admin/queues. */
  board?: Omit<BoardDeps, 'redis' | 'logger'>;
  /** Prometheus text for GET /metrics. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
}

/** Build the HTTP app without listening, so tests can use app.inject(). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    // Per-request access logs at info would drown the scheduler's own; errors still show.
    loggerInstance: deps.logger.child({ component: 'server' }, { level: 'warn' }) as unknown as FastifyBaseLogger,
  });

  if (deps.apiToken) {
    const token = deps.apiToken;
    app.addHook('onRequest', async (req, reply) => {
      if (req.url === '/healthz') return;
      if (bearerMatches(req.headers.authorization, token)) return;
      if (req.url.startsWith(BOARD_PATH)) {
        // A browser cannot send a bearer header: the board also takes the token once in the
        // query (?token=...), which sets an HttpOnly cookie and redirects to the clean URL.
        const url = new URL(req.url, 'http://board');
        const fromQuery = url.searchParams.get('token') ?? undefined;
        if (fromQuery !== undefined && tokenMatches(fromQuery, token)) {
          url.searchParams.delete('token');
          await reply
            .code(302)
            .header('set-cookie', `${BOARD_COOKIE}=${encodeURIComponent(token)}; Path=${BOARD_PATH}; HttpOnly; SameSite=Strict`)
            .header('location', url.pathname + url.search)
            .send();
          return;
        }
        if (tokenMatches(cookieValue(req.headers.cookie, BOARD_COOKIE), token)) return;
      }
      await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: 'missing or wrong bearer token' });
    });
  }

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
  if (deps.board) await registerBoard(app, { ...deps.board, redis: deps.redis, logger: deps.logger });

  return app;
}
