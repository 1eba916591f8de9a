import type { RedisClient } from '../queue/redis.js';

const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

/**
 * A Redis lease: whoever holds the key leads until it stops renewing. Renew and release are
 * compare-and-set on the holder id, so a planner that lost the lease cannot extend or delete
 * its successor's.
 */
export class LeaderLease {
  constructor(
    private readonly redis: RedisClient,
    private readonly key: string,
    readonly holderId: string,
    readonly ttlMs: number,
  ) {}

  async tryAcquire(): Promise<boolean> {
    return (await this.redis.set(this.key, this.holderId, 'PX', this.ttlMs, 'NX')) === 'OK';
  }

  async renew(): Promise<boolean> {
    return ((await this.redis.eval(RENEW, 1, this.key, this.holderId, this.ttlMs)) as number) === 1;
  }

  async release(): Promise<void> {
    await this.redis.eval(RELEASE, 1, this.key, this.holderId);
  }

  async holder(): Promise<string | null> {
    return this.redis.get(this.key);
  }
}
