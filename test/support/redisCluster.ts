import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster } from 'ioredis';
import { ensureServerPackages, startRedisCluster } from '../../scripts/localServers.mjs';
import { dataNodes } from '../../src/queue/redis.js';

// A real local Redis Cluster (3 masters + 3 replicas of Debian's redis-server) for the test files
// that ask for one; other files use the run's single Redis (globalSetup.ts). Not to be confused
// with ./cluster.ts, which runs mvsched processes.

export interface TestRedisCluster {
  /** Seeds for REDIS_CLUSTER_NODES. */
  nodes: string;
  ports: number[];
  pids: Record<number, number>;
  /** SIGKILL the node on this port (a failover test). */
  kill(port: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Start a throwaway cluster (data in a temporary directory, removed on stop). A short node
 * timeout (default 2 s) keeps failover tests quick; production clusters use 15 s by default.
 */
export async function startTestRedisCluster(opts: { nodeTimeoutMs?: number } = {}): Promise<TestRedisCluster> {
  // Also when the run uses REDIS_URL (no local Redis started): this file still needs its own.
  ensureServerPackages({ redis: true, mariadb: false });
  const baseDir = join(tmpdir(), `mvsched-test-cluster-${process.pid}`);
  return (await startRedisCluster({ baseDir, ...(opts.nodeTimeoutMs !== undefined ? { nodeTimeoutMs: opts.nodeTimeoutMs } : {}) })) as TestRedisCluster;
}

export interface ClusterNodeInfo {
  id: string;
  /** `127.0.0.1:port` */
  addr: string;
  port: number;
  role: 'master' | 'replica';
  /** For a replica, the id of its master. */
  masterId: string | undefined;
  failed: boolean;
  /** Slot ranges [from, to] a master serves. */
  slots: Array<[number, number]>;
}

/** CLUSTER NODES as seen by the node the connection asks. */
export async function clusterNodes(cluster: Cluster): Promise<ClusterNodeInfo[]> {
  const text = (await cluster.call('CLUSTER', 'NODES')) as string;
  const out: ClusterNodeInfo[] = [];
  for (const line of text.trim().split('\n')) {
    const [id, addrField, flags, master, , , , , ...slots] = line.split(' ');
    const addr = addrField!.split('@')[0]!;
    out.push({
      id: id!,
      addr,
      port: Number(addr.split(':')[1]),
      role: flags!.includes('master') ? 'master' : 'replica',
      masterId: master === '-' ? undefined : master,
      failed: /\bfail\b/.test(flags!.replace(/,/g, ' ')),
      slots: slots
        .filter((s) => /^\d/.test(s))
        .map((s) => {
          const [a, b] = s.split('-');
          return [Number(a), Number(b ?? a)] as [number, number];
        }),
    });
  }
  return out;
}

/** The master (`127.0.0.1:port`) that serves `key`'s slot. */
export async function masterOfKey(cluster: Cluster, key: string): Promise<string> {
  const slot = Number(await cluster.call('CLUSTER', 'KEYSLOT', key));
  const master = (await clusterNodes(cluster)).find((n) => n.role === 'master' && !n.failed && n.slots.some(([a, b]) => slot >= a && slot <= b));
  if (!master) throw new Error(`no live master serves slot ${slot} of ${key}`);
  return master.addr;
}

/** Keys matching `pattern`, by the master that holds them (SCAN on each master directly). */
export async function keysByMaster(cluster: Cluster, pattern: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const node of dataNodes(cluster)) {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    if (keys.length) out.set(`${node.options.host}:${node.options.port}`, keys.sort());
  }
  return out;
}

/** FLUSHALL on every master: the whole cluster loses its data (replicas follow their masters). */
export async function flushAllMasters(cluster: Cluster): Promise<void> {
  for (const node of dataNodes(cluster)) await node.flushall();
}
