import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Closeable } from '../process/lifecycle.js';
import { createDdlExecutor, createRuntime } from '../app/runtime.js';
import { buildApp } from './app.js';
import { ServerMetrics } from '../metrics/serverMetrics.js';

/**
 * Listen on MVS_HTTP_PORT. Without MVS_API_TOKEN nothing checks who calls, so the server binds
 * to 127.0.0.1 only and says so.
 */
export async function startServer(config: Config, logger: Logger): Promise<{ app: FastifyInstance; url: string; closeables: Closeable[] }> {
  const rt = createRuntime(config, logger, { poolMax: 8 });
  const metrics = new ServerMetrics({ db: rt.db, redis: rt.redis, prefix: config.prefix });
  const app = await buildApp({
    db: rt.db,
    redis: rt.redis,
    logger,
    apiToken: config.apiToken,
    api: {
      prefix: config.prefix,
      defaultSchema: rt.defaultSchema,
      ddl: createDdlExecutor(rt, 'server', metrics.own),
      ...(config.vnodes !== undefined ? { vnodes: config.vnodes } : {}),
    },
    board: { prefix: config.prefix, writable: config.boardWrite },
    ui: true,
    metrics: () => metrics.scrape(),
  });
  const host = config.apiToken ? '0.0.0.0' : '127.0.0.1';
  if (!config.apiToken) logger.warn('MVS_API_TOKEN is not set: listening on 127.0.0.1 only, without authentication');
  const url = await app.listen({ port: config.httpPort, host });
  logger.info({ url, dashboard: `${url}/ui` }, 'HTTP server listening');
  return {
    app,
    url,
    closeables: [
      { name: 'runtime', close: () => rt.close() },
      { name: 'metrics', close: () => metrics.close() },
      { name: 'http', close: () => app.close() },
    ],
  };
}
