import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../queue/redis.js';

// Redlock's scripts take a set of keys all or nothing; a batch wants each MV it can get, now,
// in one round trip. Same data model as Redlock on one instance (key = lock value with a TTL,
// released only by its holder), so these locks and Redlock's exclude each other on the same keys.

/** Take every free key (SET NX PX); returns 1 per key taken, 0 per key held by someone else. */
const TRY_LOCK = `
local got = {}
for i, key in ipairs(KEYS) do
  if redis.call('set', key, ARGV[1], 'NX', 'PX', ARGV[2]) then got[i] = 1 else got[i] = 0 end
end
return got`;

/** Delete the keys that still hold our value. */
const UNLOCK = `
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('del', key)
    n = n + 1
  end
end
return n`;

/** The Redlock resource that serializes an MV's repairs (one hash tag: a batch's keys share a Cluster slot). */
export function repairLockKey(prefix: string, mviewId: number): string {
  return `${prefix}:mvs:{repair-lock}:${mviewId}`;
}

/** The MVs a batch holds, under one lock value. */
export interface HeldLocks {
  value: string;
  mviewIds: number[];
}

/** Per-MV repair locks, taken and released for many MVs in one script call each. */
export class RepairLocks {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
  ) {}

  /** Take the locks of the MVs that are free, for `ttlMs`; the others are left to their holders. */
  async tryLock(mviewIds: number[], ttlMs: number): Promise<HeldLocks> {
    const value = randomBytes(16).toString('hex');
    if (mviewIds.length === 0) return { value, mviewIds: [] };
    const keys = mviewIds.map((id) => repairLockKey(this.prefix, id));
    const got = (await this.redis.eval(TRY_LOCK, keys.length, ...keys, value, ttlMs)) as number[];
    return { value, mviewIds: mviewIds.filter((_, i) => got[i] === 1) };
  }

  async unlock(held: HeldLocks): Promise<void> {
    if (held.mviewIds.length === 0) return;
    const keys = held.mviewIds.map((id) => repairLockKey(this.prefix, id));
    await this.redis.eval(UNLOCK, keys.length, ...keys, held.value);
  }
}
