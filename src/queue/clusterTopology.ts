import type { Cluster } from 'ioredis';

/** `host:port` of each master the connection knows, sorted. */
export function clusterMasters(cluster: Cluster): string[] {
  return cluster
    .nodes('master')
    .map((n) => `${n.options.host}:${n.options.port}`)
    .sort();
}

/**
 * Call `onChange` whenever the set of masters changes, which on a healthy cluster means a
 * failover: a replica took over and whatever its master had not yet replicated is lost (Redis
 * replication is asynchronous). ioredis re-reads the slot map every few seconds and after any
 * redirection, and emits `refresh` each time; the master set is compared then. Returns a stop
 * function.
 */
export function watchClusterTopology(cluster: Cluster, onChange: (masters: string[], previous: string[]) => void): () => void {
  let known: string[] | undefined;
  const check = () => {
    const now = clusterMasters(cluster);
    if (now.length === 0) return; // between a lost connection and the next slot map
    if (known === undefined) {
      known = now;
      return;
    }
    if (now.join(',') === known.join(',')) return;
    const previous = known;
    known = now;
    onChange(now, previous);
  };
  cluster.on('refresh', check);
  cluster.on('ready', check);
  if (cluster.status === 'ready') check();
  return () => {
    cluster.off('refresh', check);
    cluster.off('ready', check);
  };
}
