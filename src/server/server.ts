import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Closeable } from '../process/lifecycle.js';
import { createDdlExecutor, createRuntime } from '../app/runtime.js';
import { buildApp } from './app.js';
import { ServerMetrics } from '../metrics/serverMetrics.js';

/** 127.0.0.0/8, ::1 and localhost: addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Where the server listens. Without MVS_API_TOKEN nothing checks who calls (and POST /v1/sql
 * runs DDL), so it listens on 127.0.0.1 only and refuses any other address; with a token the
 * default is every interface.
 */
export function listenHost(config: Pick<Config, 'httpHost' | 'apiToken'>): string {
  const host = config.httpHost ?? (config.apiToken ? '0.0.0.0' : '127.0.0.1');
  if (!config.apiToken && !isLoopback(host)) {
    throw new ConfigError(
      `MVS_HTTP_HOST=${host} needs MVS_API_TOKEN: without a token anyone who can reach the server could run DDL; ` +
        'set MVS_API_TOKEN (16+ characters) or listen on 127.0.0.1',
      { variable: 'MVS_HTTP_HOST' },
    );
  }
  return host;
}

/** Listen on MVS_HTTP_HOST:MVS_HTTP_PORT (see listenHost for the address). */
export async function startServer(config: Config, logger: Logger): Promise<{ app: FastifyInstance; url: string; closeables: Closeable[] }> {
  const host = listenHost(config);
  const rt = createRuntime(config, logger, { poolMax: 8 });
  const metrics = new ServerMetrics({ db: rt.db, redis: rt.redis, prefix: config.prefix, maxMviews: config.metricsMaxMviews });
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
  if (!config.apiToken) logger.warn(`MVS_API_TOKEN is not set: listening on ${host} only, without authentication`);
  let url: string;
  try {
    url = await app.listen({ port: config.httpPort, host });
  } catch (err) {
    await app.close().catch(() => {});
    await metrics.close();
    await rt.close();
    if ((err as { code?: string }).code === 'EADDRINUSE') {
      throw new ConfigError(`port ${config.httpPort} on ${host} is already in use: set MVS_HTTP_PORT to a free port`, { variable: 'MVS_HTTP_PORT' });
    }
    throw err;
  }
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
