// Pipeline waves on a real Redis Cluster (DESIGN.md §2 "Pipelines": wave ordering must work on a
// Redis Cluster, no BullMQ flow spans queues of different slots): 3 masters + 3 replicas, a
// planner and two workers as processes. The chain raw -> a -> b -> c is made so that each MV
// reads one owned by the other worker, so every wave crosses node queues (`{node-w1}`,
// `{node-w2}`: different slots) twice, and its steps still run upstream first, each once.
import type { Cluster as IORedisCluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import type { RefreshHistRow } from '../../src/mv/repository.js';
import { mviewRingKey, nodeQueueName, redisKeys } from '../../src/queue/names.js';
import { HashRing } from '../../src/ring/hashRing.js';
import { Cluster, inspector, invariant1Violations, waveStepViolations, type QueueInspector } from '../support/cluster.js';
import { keysByMaster, startTestRedisCluster, type TestRedisCluster } from '../support/redisCluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

const TARGET_S = 4;

let redisCluster: TestRedisCluster;
let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let procs: Cluster;
let ins: QueueInspector;

beforeAll(async () => {
  redisCluster = await startTestRedisCluster();
  t = await createTestEnv('pipeline_cluster', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '5' }, { redisClusterNodes: redisCluster.nodes });
  await migrateLatest(t.db);
  rt = createRuntime(t.config, t.logger);
  ddl = createDdlExecutor(rt, 'test');
  ins = inspector(t);
  procs = new Cluster(t);
  procs.planner();
  procs.worker('w1');
  procs.worker('w2');
  await waitFor(async () => (await ins.registry.live()).length === 2, { timeoutMs: 60_000, what: 'two workers in the ring' });
  await waitFor(async () => (await ins.redis.exists(redisKeys(t.prefix, true).plannerEpoch)) === 1, { timeoutMs: 60_000, what: 'the planner to lead' });
}, 120_000);

afterAll(async () => {
  await procs?.closeAll();
  await ins?.close();
  await rt?.close();
  await t?.close();
  await redisCluster?.stop();
});

type Hist = RefreshHistRow & { mview_name: string };

async function ownerQueue(id: number): Promise<string> {
  const ring = new HashRing();
  ring.rebuild(await ins.registry.live());
  return nodeQueueName(ring.getNode(mviewRingKey(id))!);
}

/** CREATE `name` (reading `upstream`), again under a new id until the other worker owns it. */
async function createOwnedApart(name: string, when: string, select: string, upstreamQueue: string | undefined): Promise<{ id: number; queue: string }> {
  for (let attempt = 0; attempt < 30; attempt++) {
    const { mviewId } = await ddl.execute(`CREATE MATERIALIZED VIEW ${name} ${when} AS ${select}`);
    const queue = await ownerQueue(mviewId!);
    if (queue !== upstreamQueue) return { id: mviewId!, queue };
    await ddl.execute(`DROP MATERIALIZED VIEW ${name}`);
  }
  throw new Error(`${name} kept landing in ${upstreamQueue}`);
}

describe('pipeline waves on a Redis Cluster', () => {
  it('runs each wave upstream first, each MV once, across node queues in different slots', async () => {
    await t.db.raw('CREATE TABLE raw (id INT AUTO_INCREMENT PRIMARY KEY, g INT NOT NULL, v INT NOT NULL)');
    const a = await createOwnedApart('a', 'TARGET LAG DOWNSTREAM', 'SELECT g, COUNT(*) AS n, SUM(v) AS s FROM raw GROUP BY g', undefined);
    const b = await createOwnedApart('b', 'TARGET LAG DOWNSTREAM', 'SELECT SUM(n) AS n, SUM(s) AS s FROM a', a.queue);
    const c = await createOwnedApart('c', `TARGET LAG ${TARGET_S}`, 'SELECT n, s FROM b', b.queue);
    expect(new Set([a.queue, b.queue]).size).toBe(2);
    expect(new Set([b.queue, c.queue]).size).toBe(2);

    let writing = true;
    let n = 0;
    const writer = (async () => {
      while (writing) {
        await t.db('raw').insert({ g: ++n % 5, v: n });
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const waveOf = (h: Hist) => /^wave-(\d+)-/.exec(h.refresh_job_id ?? '')?.[1];
    const history = async () =>
      (await t.db('mvs_mview_refresh_hist as h')
        .join('mvs_mviews as m', 'm.mview_id', 'h.mview_id')
        .whereIn('m.mview_name', ['a', 'b', 'c'])
        .where('h.refresh_status', 'SUCCESS')
        .orderBy('h.refresh_id')
        .select('h.*', 'm.mview_name')) as Hist[];
    const byWave = async () => {
      const out = new Map<string, Hist[]>();
      for (const h of await history()) {
        const w = waveOf(h);
        if (w) out.set(w, [...(out.get(w) ?? []), h]);
      }
      return out;
    };
    // Waves that refreshed the whole chain (a wave may also find a and b fresh enough to read as
    // they are, within a fifth of the target: right after they were made, say).
    const full = (rs: Hist[]) => ['a', 'b', 'c'].every((name) => rs.some((r) => r.mview_name === name));
    const problems: string[] = [];
    try {
      await waitFor(
        async () => {
          problems.push(...(await waveStepViolations(ins)));
          return [...(await byWave()).values()].filter(full).length >= 4;
        },
        { timeoutMs: 60_000, intervalMs: 500, what: 'four waves of the whole chain' },
      );
      // The wave record is mvsched's own key, under its {mvs} tag like the others.
      const byMaster = await keysByMaster(ins.redis as IORedisCluster, `${t.prefix}:*`);
      const all = [...byMaster.values()].flat();
      expect(all.filter((k) => !k.startsWith(`${t.prefix}:{`)), 'every key in a hash tag').toEqual([]);
      expect(all).toContain(redisKeys(t.prefix, true).waveSeq);
    } finally {
      writing = false;
      await writer;
    }
    expect(problems, 'at most one pending wave step per MV').toEqual([]);

    const waves = await byWave();
    const withC = [...waves].filter(([, rs]) => rs.some((r) => r.mview_name === 'c')).map(([w]) => Number(w));
    const [firstWithC, lastWithC] = [Math.min(...withC), Math.max(...withC)];
    for (const [wave, rs] of waves) {
      const by = new Map(rs.map((r) => [r.mview_name, r]));
      expect(by.size, `wave ${wave}: each MV at most once`).toBe(rs.length);
      // a and b only for c: in a wave of c, or in the one still running when the history was read
      // (or, before c's first wave, for a c that createOwnedApart dropped again).
      const between = Number(wave) > firstWithC && Number(wave) < lastWithC;
      if (!by.has('c')) expect(between, `wave ${wave} refreshed ${[...by.keys()].join(',')} without c`).toBe(false);
      const [ra, rb, rc] = [by.get('a'), by.get('b'), by.get('c')];
      if (ra && rb) expect(rb.start_time.getTime(), `wave ${wave}: b after a`).toBeGreaterThanOrEqual(ra.end_time!.getTime());
      if (rb && rc) expect(rc.start_time.getTime(), `wave ${wave}: c after b`).toBeGreaterThanOrEqual(rb.end_time!.getTime());
      // Each ran on the worker that owns it: a full wave crossed node queues twice.
      for (const [r, owner, trigger] of [[ra, a.queue, 'UPSTREAM'], [rb, b.queue, 'UPSTREAM'], [rc, c.queue, 'SCHEDULED']] as const) {
        if (r) expect([nodeQueueName(r.node_id!), r.refresh_trigger], `wave ${wave}: ${r.mview_name}`).toEqual([owner, trigger]);
      }
    }
    expect([...waves.values()].filter(full).length).toBeGreaterThanOrEqual(4);

    // Writer stopped: within the target (and a wave), c equals its definition over raw.
    const [want] = (await t.db.raw('SELECT COUNT(*) AS n, SUM(v) AS s FROM raw')) as [Array<{ n: number; s: string }>];
    await waitFor(
      async () => {
        const [got] = (await t.db.raw('SELECT n, s FROM c')) as [Array<{ n: string; s: string }>];
        return Number(got[0]!.n) === Number(want[0]!.n) && got[0]!.s === want[0]!.s;
      },
      { timeoutMs: TARGET_S * 1000 + 10_000, intervalMs: 100, what: 'c to equal its definition over raw' },
    );
    await waitFor(async () => (await invariant1Violations(t.db, ins)).length === 0 && (await waveStepViolations(ins)).length === 0, {
      timeoutMs: 15_000,
      what: 'invariant 1 and one wave step per MV',
    });
  });
});
