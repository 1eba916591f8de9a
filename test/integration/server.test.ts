import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, closeRedis } from '../../src/queue/redis.js';
import { buildApp } from '../../src/server/app.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
beforeAll(async () => {
  t = await createTestEnv('server');
});
afterAll(async () => {
  await t?.close();
});

describe('HTTP server base', () => {
  it('answers /healthz and /readyz when MySQL and Redis are up', async () => {
    const redis = createRedis(t.redisUrl);
    const app = await buildApp({ db: t.db, redis, logger: t.logger, apiToken: undefined });
    try {
      expect((await app.inject({ url: '/healthz' })).json()).toEqual({ status: 'ok' });
      const ready = await app.inject({ url: '/readyz' });
      expect(ready.statusCode).toBe(200);
      expect(ready.json()).toEqual({ status: 'ready' });
    } finally {
      await app.close();
      await closeRedis(redis);
    }
  });

  it('/readyz is 503 naming Redis when Redis is unreachable', async () => {
    // A connection to a port nobody listens on, which gives up at once.
    const redis = createRedis('redis://127.0.0.1:1', { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    redis.on('error', () => {});
    const app = await buildApp({ db: t.db, redis, logger: t.logger, apiToken: undefined });
    try {
      const res = await app.inject({ url: '/readyz' });
      expect(res.statusCode).toBe(503);
      expect(res.json().problems.join(' ')).toMatch(/^redis:/);
    } finally {
      await app.close();
      redis.disconnect();
    }
  });

  it('with a token, everything but /healthz needs the bearer token', async () => {
    const redis = createRedis(t.redisUrl);
    const token = 'a-test-token-of-enough-length';
    const app = await buildApp({ db: t.db, redis, logger: t.logger, apiToken: token });
    try {
      expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
      expect((await app.inject({ url: '/readyz' })).statusCode).toBe(401);
      expect((await app.inject({ url: '/readyz', headers: { authorization: 'Bearer wrong' } })).statusCode).toBe(401);
      const ok = await app.inject({ url: '/readyz', headers: { authorization: `Bearer ${token}` } });
      expect(ok.statusCode).toBe(200);
    } finally {
      await app.close();
      await closeRedis(redis);
    }
  });
});
