// REDIS_CLUSTER_NODES (DESIGN.md §3 configuration): the seed nodes of a Redis Cluster, as
// comma-separated `host:port` or `redis[s]://[user:pass@]host:port`. ioredis needs only a few
// live seeds; it learns every other node (and every failover) from the cluster itself.

export interface ClusterSeed {
  readonly host: string;
  readonly port: number;
}

/** Where a Redis Cluster is and how to log in; the credentials and TLS apply to every node. */
export interface RedisClusterConfig {
  readonly seeds: readonly ClusterSeed[];
  readonly username: string | undefined;
  readonly password: string | undefined;
  readonly tls: boolean;
}

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;

function port(text: string, seed: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`seed "${seed}": port must be 1-65535`);
  return n;
}

interface ParsedSeed extends ClusterSeed {
  username?: string;
  password?: string;
  tls: boolean;
}

function parseSeed(seed: string): ParsedSeed {
  if (!seed.includes('://')) {
    const m = HOST_PORT.exec(seed);
    if (!m) throw new Error(`seed "${seed}": expected host:port or redis://[user:pass@]host:port`);
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port: port(m[2]!, seed), tls: false };
  }
  let u: URL;
  try {
    u = new URL(seed);
  } catch {
    throw new Error(`seed "${seed.replace(/\/\/[^@/]*@/, '//***@')}": not a valid URL`);
  }
  const shown = u.password ? seed.replace(/\/\/[^@/]*@/, '//***@') : seed;
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error(`seed "${shown}": expected redis:// or rediss://`);
  if (!u.hostname) throw new Error(`seed "${shown}": no host`);
  // A cluster has database 0 only: a /<db> part would be silently meaningless.
  if (u.pathname !== '' && u.pathname !== '/' && u.pathname !== '/0') {
    throw new Error(`seed "${shown}": a Redis Cluster has no databases; drop "${u.pathname}"`);
  }
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: u.port ? port(u.port, shown) : 6379,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    tls: u.protocol === 'rediss:',
  };
}

/**
 * Parse REDIS_CLUSTER_NODES. Seeds that carry credentials must agree (ioredis uses one set for
 * every node), and either all seeds use TLS or none. Throws with a message naming the seed.
 */
export function parseClusterNodes(text: string): RedisClusterConfig {
  const parts = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (parts.length === 0) throw new Error('expected at least one seed (host:port)');
  const seeds = parts.map(parseSeed);
  const withLogin = seeds.filter((s) => s.username !== undefined || s.password !== undefined);
  const first = withLogin[0];
  if (withLogin.some((s) => s.username !== first!.username || s.password !== first!.password)) {
    throw new Error('seeds carry different credentials; a Redis Cluster takes one user and password for every node');
  }
  if (seeds.some((s) => s.tls !== seeds[0]!.tls)) throw new Error('mixes redis:// and rediss:// seeds; use TLS for all or none');
  const unique = new Map(seeds.map((s) => [`${s.host}:${s.port}`, { host: s.host, port: s.port }]));
  return Object.freeze({
    seeds: Object.freeze([...unique.values()]),
    username: first?.username,
    password: first?.password,
    tls: seeds[0]!.tls,
  });
}
