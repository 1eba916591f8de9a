import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import type { Knex } from 'knex';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { bearerMatches } from './auth.js';
import { registerRoutes, type RouteDeps } from './routes.js';

export interface AppDeps {
  db: Knex;
  redis: Redis;
  logger: Logger;
  apiToken: string | undefined;
  /** The /v1 API; without it only the health endpoints exist. */
  api?: Omit<RouteDeps, 'db' | 'redis'>;
}

/** Build the HTTP app without listening, so tests can use app.inject(). */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    // Per-request access logs at info would drown the scheduler's own; errors still show.
    loggerInstance: deps.logger.child({ component: 'server' }, { level: 'warn' }) as unknown as FastifyBaseLogger,
  });

  if (deps.apiToken) {
    const token = deps.apiToken;
    app.addHook('onRequest', async (req, reply) => {
      if (req.url === '/healthz') return;
      if (!bearerMatches(req.headers.authorization, token)) {
        await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: 'missing or wrong bearer token' });
      }
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

  if (deps.api) registerRoutes(app, { ...deps.api, db: deps.db, redis: deps.redis });

  return app;
}
