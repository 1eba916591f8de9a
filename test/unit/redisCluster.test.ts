import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { parseClusterNodes } from '../../src/queue/clusterSeeds.js';
import { bullQueueName, nodeQueueName, queueOfBullName, redisKeys, REPAIR_QUEUE, REQUESTS_QUEUE } from '../../src/queue/names.js';
import { isCluster, redisTarget } from '../../src/queue/redis.js';
import { repairLockKey } from '../../src/repair/locks.js';

// REDIS_CLUSTER_NODES (DESIGN.md §3 configuration) and the names mvsched uses on a Redis Cluster
// versus a single Redis. The cluster itself is exercised in test/integration/redisCluster*.test.ts.

const base = { DATABASE_URL: 'mysql://u:p@db:3306/app' };

function configError(env: Record<string, string>): string {
  try {
    loadConfig(env, { database: true, redis: true });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).message;
  }
  throw new Error('expected a ConfigError');
}

describe('REDIS_CLUSTER_NODES', () => {
  it('takes host:port and redis[s]:// seeds, comma-separated, with one login for every node', () => {
    expect(parseClusterNodes('10.0.0.1:7000, cache-b.internal:7001,,[::1]:7002')).toEqual({
      seeds: [
        { host: '10.0.0.1', port: 7000 },
        { host: 'cache-b.internal', port: 7001 },
        { host: '::1', port: 7002 },
      ],
      username: undefined,
      password: undefined,
      tls: false,
    });
    expect(parseClusterNodes('redis://app:s%40cret@a:7000,redis://b:7001,redis://app:s%40cret@c')).toEqual({
      seeds: [
        { host: 'a', port: 7000 },
        { host: 'b', port: 7001 },
        { host: 'c', port: 6379 },
      ],
      username: 'app',
      password: 's@cret',
      tls: false,
    });
    expect(parseClusterNodes('rediss://:pw@a:7000,rediss://b:7001')).toMatchObject({ password: 'pw', username: undefined, tls: true });
    // The same node twice is one seed.
    expect(parseClusterNodes('a:7000,redis://a:7000').seeds).toEqual([{ host: 'a', port: 7000 }]);
  });

  it('refuses bad seeds with a message naming the seed, never the password', () => {
    const bad: Array<[string, RegExp]> = [
      ['', /at least one seed/],
      ['a', /seed "a": expected host:port/],
      ['a:0', /seed "a:0": port must be 1-65535/],
      ['a:70000', /port must be 1-65535/],
      ['http://a:7000', /expected redis:\/\/ or rediss:\/\//],
      ['redis://a:7000/2', /a Redis Cluster has no databases/],
      ['redis://u:one@a:1,redis://u:two@b:2', /different credentials/],
      ['redis://a:1,rediss://b:2', /mixes redis:\/\/ and rediss:\/\//],
    ];
    for (const [text, re] of bad) expect(() => parseClusterNodes(text), text).toThrow(re);
    expect(() => parseClusterNodes('redis://u:topsecret@a:1/3')).toThrow(/\*\*\*@a:1/);
    expect(() => parseClusterNodes('redis://u:topsecret@a:1/3')).not.toThrow(/topsecret/);
  });

  it('wins over REDIS_URL, which is then ignored (not even validated) with a warning', () => {
    const c = loadConfig({ ...base, REDIS_CLUSTER_NODES: 'a:7000,b:7001', REDIS_URL: 'not a url' }, { redis: true });
    expect(c.redisCluster?.seeds).toEqual([{ host: 'a', port: 7000 }, { host: 'b', port: 7001 }]);
    expect(c.redisUrl).toBeUndefined();
    expect(c.warnings).toEqual(['REDIS_CLUSTER_NODES is set: REDIS_URL is ignored']);
    expect(redisTarget(c)).toEqual({ cluster: c.redisCluster });
    expect(loadConfig({ ...base, REDIS_CLUSTER_NODES: 'a:7000' }, { redis: true }).warnings).toEqual([]);
    expect(redisTarget(loadConfig({ ...base, REDIS_URL: 'redis://r:6379' }))).toEqual({ url: 'redis://r:6379' });
  });

  it('satisfies the need for Redis on its own; a bad value stops start-up naming the variable', () => {
    expect(() => loadConfig({ ...base, REDIS_CLUSTER_NODES: 'a:7000' }, { database: true, redis: true })).not.toThrow();
    expect(configError({ ...base })).toMatch(/^missing REDIS_URL: .*REDIS_CLUSTER_NODES/);
    expect(configError({ ...base, REDIS_CLUSTER_NODES: 'a:7000,b' })).toBe('invalid REDIS_CLUSTER_NODES: seed "b": expected host:port or redis://[user:pass@]host:port');
    expect(configError({ ...base, REDIS_CLUSTER_NODES: 'redis://u:pw@a:7000/1' })).not.toContain('pw@');
  });

  it('warns that a prefix with braces would put every queue in one slot', () => {
    const c = loadConfig({ ...base, REDIS_CLUSTER_NODES: 'a:7000', MVS_PREFIX: '{mvs}' });
    expect(c.warnings).toEqual([expect.stringMatching(/^MVS_PREFIX "\{mvs\}" has braces: .* one slot/)]);
    expect(loadConfig({ ...base, REDIS_URL: 'redis://r:6379', MVS_PREFIX: '{mvs}' }).warnings).toEqual([]);
  });
});

describe('names on a single Redis and on a Redis Cluster', () => {
  it('keeps the single-Redis names exactly as before', () => {
    expect([REQUESTS_QUEUE, REPAIR_QUEUE, nodeQueueName('w1')].map((q) => bullQueueName(q, false))).toEqual(['requests', 'repair', 'node-w1']);
    const k = redisKeys('mvs', false);
    expect({ ...k, metrics: k.metrics('w1'), wave: k.wave('7') }).toEqual({
      nodes: 'mvs:mvs:nodes',
      nodeQueues: 'mvs:mvs:node-queues',
      membershipChannel: 'mvs:mvs:membership',
      ddlChannel: 'mvs:ddl',
      plannerLeader: 'mvs:mvs:planner:leader',
      plannerEpoch: 'mvs:mvs:planner:epoch',
      metrics: 'mvs:mvs:metrics:w1',
      metricsPattern: 'mvs:mvs:metrics:*',
      wave: 'mvs:mvs:wave:7',
      waves: 'mvs:mvs:waves',
      waveSeq: 'mvs:mvs:wave-seq',
    });
  });

  it('on a cluster, gives each queue its own hash tag and every mvsched key the {mvs} tag', () => {
    expect([REQUESTS_QUEUE, REPAIR_QUEUE, nodeQueueName('w1')].map((q) => bullQueueName(q, true))).toEqual(['{requests}', '{repair}', '{node-w1}']);
    expect(['{requests}', '{node-w1}', 'repair'].map(queueOfBullName)).toEqual(['requests', 'node-w1', 'repair']);
    const k = redisKeys('acme', true);
    const all = [k.nodes, k.nodeQueues, k.membershipChannel, k.ddlChannel, k.plannerLeader, k.plannerEpoch, k.metrics('w1'), k.metricsPattern, k.wave('7'), k.waves, k.waveSeq];
    // The prefix stays first, as given; the first {...} of each key is {mvs}, so they share a slot.
    for (const key of all) expect(key, key).toMatch(/^acme:\{mvs\}:/);
    expect(new Set(all).size).toBe(all.length);
    // Repair locks are taken many at once by one script: one hash tag for all of them.
    expect([1, 2, 77].map((id) => repairLockKey('acme', id))).toEqual(['acme:mvs:{repair-lock}:1', 'acme:mvs:{repair-lock}:2', 'acme:mvs:{repair-lock}:77']);
  });

  it('tells a cluster connection from a single one', () => {
    expect(isCluster({ isCluster: true })).toBe(true);
    expect(isCluster({ isCluster: false })).toBe(false);
    expect(isCluster({ host: 'a', port: 1 })).toBe(false);
    expect(isCluster(undefined)).toBe(false);
  });
});
