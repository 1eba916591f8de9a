import { Redis, type RedisOptions } from 'ioredis';

/**
 * An ioredis connection fit for BullMQ (no per-command retry limit, so blocking commands and
 * reconnects behave) that still fails fast when Redis is unreachable at start-up.
 */
export function createRedis(url: string, opts: RedisOptions = {}): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, ...opts });
}

export async function closeRedis(redis: Redis): Promise<void> {
  if (redis.status === 'end') return;
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
}
