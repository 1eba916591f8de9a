import { nodeQueueName, redisKeys, type RedisKeys } from '../queue/names.js';
import { isCluster, type RedisClient } from '../queue/redis.js';

// Live nodes are members of a sorted set scored by their expiry time, read from Redis' own
// clock so hosts with skewed clocks still agree on who is alive. On a Redis Cluster both keys
// the heartbeat script writes carry the {mvs} hash tag (names.ts), so they share a slot.

const HEARTBEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
return added`;

const LIVE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')`;

const PRUNE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now) end
return dead`;

export class MembershipRegistry {
  private readonly keys: RedisKeys;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
  ) {
    this.keys = redisKeys(prefix, isCluster(redis));
  }

  get channel(): string {
    return this.keys.membershipChannel;
  }

  /** Register or refresh a node; true when it was not a member before. */
  async heartbeat(nodeId: string, ttlMs: number): Promise<boolean> {
    const added = (await this.redis.eval(HEARTBEAT, 2, this.keys.nodes, this.keys.nodeQueues, nodeId, ttlMs, nodeQueueName(nodeId))) as number;
    if (added === 1) await this.redis.publish(this.keys.membershipChannel, `join ${nodeId}`);
    return added === 1;
  }

  async leave(nodeId: string): Promise<void> {
    await this.redis.zrem(this.keys.nodes, nodeId);
    await this.redis.publish(this.keys.membershipChannel, `leave ${nodeId}`);
  }

  /** Ids of nodes whose heartbeat has not expired, sorted. */
  async live(): Promise<string[]> {
    const ids = (await this.redis.eval(LIVE, 1, this.keys.nodes)) as string[];
    return ids.sort();
  }

  /** Remove expired members; returns their ids. */
  async prune(): Promise<string[]> {
    return (await this.redis.eval(PRUNE, 1, this.keys.nodes)) as string[];
  }

  /** Every node queue ever registered and not yet retired (live or not). */
  async nodeQueues(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.nodeQueues)).sort();
  }

  /**
   * Record a node queue before writing to it from outside its node, so that if the node is
   * already gone the planner still finds the queue and drains it.
   */
  async registerNodeQueue(queueName: string): Promise<void> {
    await this.redis.sadd(this.keys.nodeQueues, queueName);
  }

  async retireNodeQueue(queueName: string): Promise<void> {
    await this.redis.srem(this.keys.nodeQueues, queueName);
  }
}
