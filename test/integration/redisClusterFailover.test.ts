// A Redis Cluster master dies under a running mvsched (DESIGN.md §3 configuration; §4
// invariant 1): its replica is promoted by the cluster itself, and scheduling resumes with no
// manual action. The master killed is the one holding mvsched's own keys ({mvs}: membership,
// planner lease, epoch) and at least one worker's node queue, the hardest case.
import type { Cluster as IORedisCluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { redisKeys } from '../../src/queue/names.js';
import { Cluster, inspector, invariant1Violations, logLines, type Proc, type QueueInspector } from '../support/cluster.js';
import { clusterNodes, masterOfKey, startTestRedisCluster, type TestRedisCluster } from '../support/redisCluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

/** The cluster's node timeout: a master unreachable this long is failed over. */
const NODE_TIMEOUT_MS = 2_000;
const MVS = 18;
const INTERVAL_S = 3;
/**
 * Measured on the 2-core CI box, 13 runs (kill -> every MV refreshed again): 4.5-8.1 s, of which
 * the cluster's own failover (node timeout 2 s, then the replica's election) took 3.7-5.1 s and
 * the rest is the wait for each MV's next slot (up to INTERVAL_S); invariant 1 held again
 * 4.8-9.2 s after the kill. The bound is three times the worst, so load cannot fail it, while an
 * mvsched that needed the periodic full pass (MVS_RECONCILE_S = 300 here) or a restart misses it.
 */
const RESUME_BOUND_MS = 25_000;

let redisCluster: TestRedisCluster;
let t: TestEnv;
let rt: Runtime;
let procs: Cluster;
let ins: QueueInspector;
let planner: Proc;
const workers = new Map<string, Proc>();
const ids: number[] = [];

beforeAll(async () => {
  redisCluster = await startTestRedisCluster({ nodeTimeoutMs: NODE_TIMEOUT_MS });
  // A long safety-net interval: recovery must not come from the periodic full pass.
  t = await createTestEnv('redis_failover', { MVS_NODE_TTL_S: '10', MVS_RECONCILE_S: '300' }, { redisClusterNodes: redisCluster.nodes });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE base (id INT PRIMARY KEY, v INT NOT NULL)');
  await t.db('base').insert([{ id: 1, v: 1 }, { id: 2, v: 2 }]);
  rt = createRuntime(t.config, t.logger);
  const ddl = createDdlExecutor(rt, 'test');
  ins = inspector(t);
  procs = new Cluster(t);
  planner = procs.planner();
  for (const id of ['f1', 'f2', 'f3']) workers.set(id, procs.worker(id));
  await waitFor(async () => (await ins.registry.live()).join() === 'f1,f2,f3', { timeoutMs: 30_000, what: 'f1, f2, f3 live' });
  for (let i = 0; i < MVS; i++) {
    const res = await ddl.execute(`CREATE MATERIALIZED VIEW fo_${i} NEXT ${INTERVAL_S} AS SELECT COUNT(*) AS n, SUM(v) AS s FROM base`);
    ids.push(res.mviewId!);
  }
}, 120_000);

afterAll(async () => {
  await procs?.closeAll();
  await ins?.close();
  await rt?.close();
  await t?.close();
  await redisCluster?.stop();
});

const cluster = () => ins.redis as IORedisCluster;

async function converge(what: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  let last: string[] = [];
  try {
    await waitFor(
      async () => {
        last = await invariant1Violations(t.db, ins);
        return last.length === 0;
      },
      { timeoutMs, intervalMs: 250, what: `invariant 1 after ${what}` },
    );
  } catch {
    expect(last, `invariant 1 did not hold ${timeoutMs} ms after ${what}`).toEqual([]);
  }
  return Date.now() - started;
}

/** Per MV, the start of its first successful scheduled run at or after `since`. */
async function firstRunsSince(since: number): Promise<Map<number, number>> {
  const rows = (await t.db('mvs_mview_refresh_hist')
    .whereIn('mview_id', ids)
    .where({ refresh_trigger: 'SCHEDULED', refresh_status: 'SUCCESS' })
    .where('start_time', '>=', new Date(since))
    .groupBy('mview_id')
    .select('mview_id')
    .min({ first: 'start_time' })) as Array<{ mview_id: number; first: Date }>;
  return new Map(rows.map((r) => [Number(r.mview_id), r.first.getTime()]));
}

describe('a Redis Cluster master is killed', () => {
  it('its replica takes over and every MV refreshes again within the bound, with invariant 1 holding', async () => {
    await converge('start-up', 30_000);
    const warm = Date.now();
    await waitFor(async () => (await firstRunsSince(warm)).size === MVS, { timeoutMs: 30_000, what: 'every MV running on its grid' });

    // The master of {mvs}; it must also carry a node queue with jobs on it.
    const victim = await masterOfKey(cluster(), redisKeys(t.prefix, true).nodes);
    const queuesThere: string[] = [];
    for (const w of workers.keys()) if ((await masterOfKey(cluster(), `${t.prefix}:{node-${w}}:meta`)) === victim) queuesThere.push(w);
    expect(queuesThere.length, `a node queue on ${victim}`).toBeGreaterThan(0);
    const before = await clusterNodes(cluster());
    const victimId = before.find((n) => n.addr === victim)!.id;
    const replica = before.find((n) => n.masterId === victimId)!;
    expect(replica, `a replica of ${victim}`).toBeDefined();
    t.logger.info({ victim, replica: replica.addr, node_queues: queuesThere }, 'killing the master of {mvs}');

    const killedAt = Date.now();
    await redisCluster.kill(Number(victim.split(':')[1]));

    // The cluster promotes the replica by itself.
    await waitFor(
      async () => {
        const now = await clusterNodes(cluster());
        return now.find((n) => n.id === replica.id)?.role === 'master' && (await masterOfKey(cluster(), redisKeys(t.prefix, true).nodes)) === replica.addr;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: `${replica.addr} promoted` },
    );
    const promotedMs = Date.now() - killedAt;

    // Every MV refreshes on schedule again, those whose queue was on the dead master included.
    let missing: number[] = [];
    try {
      await waitFor(
        async () => {
          const runs = await firstRunsSince(killedAt);
          missing = ids.filter((id) => !runs.has(id));
          return missing.length === 0;
        },
        { timeoutMs: RESUME_BOUND_MS, intervalMs: 200, what: 'every MV to refresh after the kill' },
      );
    } catch {
      const tails = [...workers.values(), planner].map((p) => `${p.name}:\n${p.output().slice(-2500)}`).join('\n');
      if (process.env.MVS_TEST_DUMP) (await import('node:fs')).writeFileSync(process.env.MVS_TEST_DUMP, [...workers.values(), planner].map((p) => `==== ${p.name}\n${p.output()}`).join('\n'));
      expect(missing, `MVs not refreshed within ${RESUME_BOUND_MS} ms of the kill\n${tails}`).toEqual([]);
    }
    const runs = await firstRunsSince(killedAt);
    const resumedMs = Math.max(...runs.values()) - killedAt;
    await converge('the failover', 30_000);
    const convergedMs = Date.now() - killedAt;

    // No process died or was restarted, and the planner noticed the new master.
    for (const p of [...workers.values(), planner]) expect(p.child.exitCode, `${p.name} still running`).toBeNull();
    // ioredis re-reads the slot map every 5 s (queue/redis.ts slotsRefreshInterval) or on a
    // redirection, so the planner may learn of the new master after the MVs already run again.
    const noticed = await waitFor(async () => logLines(planner).find((l) => l.msg === 'Redis Cluster masters changed (failover)'), {
      timeoutMs: 15_000,
      what: 'the planner to log the failover',
    });
    const noticedMs = new Date(noticed.time as string | number).getTime() - killedAt;
    expect((await ins.registry.live()).sort()).toEqual(['f1', 'f2', 'f3']);
    t.logger.warn({ promoted_ms: promotedMs, planner_noticed_ms: noticedMs, resumed_ms: resumedMs, invariant1_ms: convergedMs, node_timeout_ms: NODE_TIMEOUT_MS }, 'failover measured');
    expect(resumedMs).toBeLessThan(RESUME_BOUND_MS);
  });
});
