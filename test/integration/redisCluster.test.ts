// mvsched on a real Redis Cluster (DESIGN.md §3 configuration, REDIS_CLUSTER_NODES): 3 masters +
// 3 replicas of Debian's redis-server started for this file, real `mvsched planner` / `worker`
// processes, the HTTP server's Bull Board and /metrics in-process, and a plain-JS BullMQ producer.
// The same scheduling guarantees as on one Redis (invariant 1 after DDL, joins, leaves, crashes
// and a data loss), with every queue in a slot of its own and node queues spread over masters.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Cluster as IORedisCluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { MvsClient } from '../../src/client/mvsClient.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { ServerMetrics } from '../../src/metrics/serverMetrics.js';
import type { RefreshHistRow } from '../../src/mv/repository.js';
import { mviewRingKey, nodeQueueName, redisKeys } from '../../src/queue/names.js';
import { closeRedis, createRedisCluster, isCluster } from '../../src/queue/redis.js';
import { parseClusterNodes } from '../../src/queue/clusterSeeds.js';
import { HashRing } from '../../src/ring/hashRing.js';
import { buildApp } from '../../src/server/app.js';
import { collectJobs, Cluster, inspector, invariant1Violations, type Proc, type QueueInspector } from '../support/cluster.js';
import { flushAllMasters, keysByMaster, startTestRedisCluster, type TestRedisCluster } from '../support/redisCluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

const producerPath = fileURLToPath(new URL('../fixtures/plainProducer.mjs', import.meta.url));

const NODE_TTL_S = 3;
/**
 * The planner's periodic pass is off (an hour), so anything placed within seconds of a DDL got
 * there through the DDL channel (pub/sub on the cluster), and joins, leaves and the data loss
 * through membership changes.
 */
const RECONCILE_S = 3600;
const CONVERGE_MS = 20_000;
const TOKEN = 'cluster-test-token';
const T0 = 1_767_225_600_000; // 2026-01-01, epoch ms

let redisCluster: TestRedisCluster;
let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let procs: Cluster;
let ins: QueueInspector;
let keys: ReturnType<typeof redisKeys>;
let planner: Proc;
let app: FastifyInstance;
let metrics: ServerMetrics;
const workers = new Map<string, Proc>();

beforeAll(async () => {
  redisCluster = await startTestRedisCluster();
  t = await createTestEnv('redis_cluster', { MVS_NODE_TTL_S: String(NODE_TTL_S), MVS_RECONCILE_S: String(RECONCILE_S) }, { redisClusterNodes: redisCluster.nodes });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE base (id INT PRIMARY KEY, grp VARCHAR(8) NULL, v INT NOT NULL)');
  await t.db('base').insert([
    { id: 1, grp: 'a', v: 10 },
    { id: 2, grp: 'a', v: 20 },
    { id: 3, grp: 'b', v: 5 },
    { id: 4, grp: null, v: 7 },
  ]);
  rt = createRuntime(t.config, t.logger);
  metrics = new ServerMetrics({ db: t.db, redis: rt.redis, prefix: t.prefix });
  ddl = createDdlExecutor(rt, 'server', metrics.own);
  app = await buildApp({
    db: t.db,
    redis: rt.redis,
    logger: t.logger,
    apiToken: TOKEN,
    api: { prefix: t.prefix, defaultSchema: t.database, ddl },
    board: { prefix: t.prefix, writable: false, refreshMs: 300 },
    metrics: () => metrics.scrape(),
  });
  keys = redisKeys(t.prefix, true);
  ins = inspector(t);
  procs = new Cluster(t);
  planner = procs.planner();
  for (const id of ['w1', 'w2']) workers.set(id, procs.worker(id));
  await waitForLive(['w1', 'w2'], 'workers w1 and w2 to register');
  await waitFor(async () => (await ins.redis.exists(keys.plannerEpoch)) === 1, { timeoutMs: 30_000, what: 'the planner to finish a full pass' });
}, 120_000);

afterAll(async () => {
  await procs?.closeAll();
  await app?.close();
  await metrics?.close();
  await ins?.close();
  await rt?.close();
  await t?.close();
  await redisCluster?.stop();
});

// ---- helpers ----

const cluster = () => ins.redis as IORedisCluster;
const auth = { authorization: `Bearer ${TOKEN}` };

async function waitForLive(expected: string[], what: string, timeoutMs = 30_000): Promise<void> {
  const want = [...expected].sort().join(',');
  await waitFor(async () => (await ins.registry.live()).join(',') === want, { timeoutMs, what });
}

async function converge(what: string): Promise<void> {
  let last: string[] = [];
  try {
    await waitFor(
      async () => {
        last = await invariant1Violations(t.db, ins);
        return last.length === 0;
      },
      { timeoutMs: CONVERGE_MS, intervalMs: 200, what: `invariant 1 after ${what}` },
    );
  } catch {
    expect(last, `invariant 1 did not hold ${CONVERGE_MS} ms after ${what}`).toEqual([]);
  }
}

async function create(sql: string): Promise<number> {
  const res = await ddl.execute(sql);
  expect(res.mviewId, sql).toBeDefined();
  return res.mviewId!;
}

async function nextTime(id: number): Promise<number> {
  const row = (await t.db('mvs_mview_refresh_info').where({ mview_id: id }).first('next_time')) as { next_time: Date };
  return row.next_time.getTime();
}

async function ownerQueue(id: number): Promise<string> {
  const ring = new HashRing();
  ring.rebuild(await ins.registry.live());
  return nodeQueueName(ring.getNode(mviewRingKey(id))!);
}

/** Run the plain-JS producer with only what another service would be given. */
async function produce(jobs: Array<{ name: string; payload: unknown }>): Promise<Array<Record<string, unknown>>> {
  const child = spawn(process.execPath, [producerPath], {
    env: { PATH: process.env.PATH ?? '', REDIS_CLUSTER_NODES: redisCluster.nodes, MVS_PREFIX: t.prefix, MVS_JOBS: JSON.stringify(jobs), JOB_TIMEOUT_MS: '30000' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  expect(code, `producer exit ${code}\n${stdout}\n${stderr}`).toBe(0);
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function sample(body: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of body.split('\n')) {
    const m = /^([^{\s]+)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

// ---- tests ----

describe('configuration', () => {
  it('every process of this file talks to the cluster', () => {
    expect(t.env.REDIS_CLUSTER_NODES).toBe(redisCluster.nodes);
    expect(t.env.REDIS_URL).toBeUndefined();
    expect(t.config.redisCluster?.seeds).toHaveLength(6);
    expect(isCluster(rt.redis)).toBe(true);
    expect(isCluster(ins.redis)).toBe(true);
  });
});

describe('scheduling on a Redis Cluster', () => {
  it('runs a NEXT 2 view on its grid, on the owner node', async () => {
    const id = await create('CREATE MATERIALIZED VIEW grid_mv NEXT 2 AS SELECT grp, COUNT(*) AS c, SUM(v) AS s FROM base GROUP BY grp');
    const scheduled = async () =>
      (await t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_trigger: 'SCHEDULED' }).orderBy('refresh_id')) as RefreshHistRow[];
    await waitFor(async () => (await scheduled()).filter((r) => r.refresh_status === 'SUCCESS').length >= 3, {
      timeoutMs: 30_000,
      intervalMs: 200,
      what: 'three scheduled runs of grid_mv',
    });
    const done = (await scheduled()).filter((r) => r.refresh_status !== 'RUNNING');
    expect(done.every((r) => r.refresh_status === 'SUCCESS'), JSON.stringify(done)).toBe(true);
    const owner = await ownerQueue(id);
    for (const [i, r] of done.entries()) {
      expect(nodeQueueName(r.node_id!)).toBe(owner);
      if (i > 0) expect(r.scheduled_time!.getTime() - done[i - 1]!.scheduled_time!.getTime(), 'one run per 2 s slot').toBe(2000);
    }
    await converge('the grid runs');
  });

  it('puts every queue in a slot of its own: node queues on at least two masters, mvsched keys under {mvs}', async () => {
    // A node queue per live worker (three of them), and jobs in each.
    workers.set('w3', procs.worker('w3'));
    await waitForLive(['w1', 'w2', 'w3'], 'w3 to join');
    for (let i = 0; i < 12; i++) await create(`CREATE MATERIALIZED VIEW spread_${i} NEXT 600 AS SELECT COUNT(*) AS n FROM base`);
    await converge('12 views over three nodes');
    const byMaster = await keysByMaster(cluster(), `${t.prefix}:*`);
    const mastersOf = (tag: string) => [...byMaster].filter(([, ks]) => ks.some((k) => k.startsWith(`${t.prefix}:${tag}:`))).map(([m]) => m);
    const placed = new Map<string, string[]>();
    for (const w of ['w1', 'w2', 'w3']) {
      const where = mastersOf(`{node-${w}}`);
      expect(where, `keys of {node-${w}} on exactly one master: ${JSON.stringify(where)}`).toHaveLength(1);
      placed.set(where[0]!, [...(placed.get(where[0]!) ?? []), w]);
    }
    t.logger.info({ placed: Object.fromEntries(placed) }, 'node queues by master');
    expect(placed.size, `node queues on at least two masters: ${JSON.stringify(Object.fromEntries(placed))}`).toBeGreaterThanOrEqual(2);
    for (const tag of ['{requests}', '{repair}', '{mvs}']) {
      // {repair} exists once a worker listens on it (BullMQ writes its meta key).
      expect(mastersOf(tag), `keys of ${tag}`).toHaveLength(1);
    }
    // Nothing outside a hash tag: every key of this deployment is `<prefix>:{...}:...`.
    const untagged = [...byMaster.values()].flat().filter((k) => !k.startsWith(`${t.prefix}:{`));
    expect(untagged).toEqual([]);
    expect(await ins.redis.exists(keys.nodes, keys.nodeQueues, keys.plannerLeader, keys.plannerEpoch)).toBe(4);
  });

  it('places a new schedule through the DDL wake-up (the periodic pass is off)', async () => {
    const id = await create('CREATE MATERIALIZED VIEW wake_mv NEXT 300 AS SELECT id, v FROM base WHERE v > 6');
    const due = await nextTime(id);
    const queue = await ownerQueue(id);
    const t0 = Date.now();
    await waitFor(async () => (await ins.placer.snapshot(queue)).delayed.get(id) === due, { timeoutMs: 3_000, intervalMs: 20, what: `mv-${id} in ${queue}` });
    t.logger.info({ ms: Date.now() - t0 }, 'CREATE to job in queue on the cluster');
    await ddl.execute('ALTER MATERIALIZED VIEW wake_mv SUSPEND');
    await waitFor(async () => !(await collectJobs(ins)).has(id), { timeoutMs: 3_000, intervalMs: 20, what: `mv-${id} removed after SUSPEND` });
    await ddl.execute('ALTER MATERIALIZED VIEW wake_mv RESUME');
    await converge('CREATE, SUSPEND, RESUME');
  });

  it('keeps invariant 1 through a clean leave, a crash, and the loss of every key on every master', async () => {
    const w1 = workers.get('w1')!;
    expect(await procs.stop(w1, 'SIGTERM'), `w1 exits cleanly\n${w1.output().slice(-3000)}`).toEqual({ code: 0, signal: null });
    workers.delete('w1');
    expect(await ins.registry.live()).toEqual(['w2', 'w3']);
    await converge('w1 left');

    const w3 = workers.get('w3')!;
    expect(await procs.stop(w3, 'SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    workers.delete('w3');
    await waitForLive(['w2'], 'w3 to expire', NODE_TTL_S * 1000 + 5_000);
    await converge('w3 was killed');
    // Its queue is obliterated on whichever master held it.
    await waitFor(async () => (await keysByMaster(cluster(), `${t.prefix}:{node-w3}:*`)).size === 0, { timeoutMs: 10_000, what: 'the queue of w3 to be gone' });

    workers.set('w4', procs.worker('w4'));
    await waitForLive(['w2', 'w4'], 'w4 to join');
    await converge('w4 joined');

    await flushAllMasters(cluster());
    expect(await collectJobs(ins)).toEqual(new Map());
    await waitForLive(['w2', 'w4'], 'w2 and w4 to re-register', NODE_TTL_S * 1000 + 5_000);
    await waitFor(async () => (await ins.redis.exists(keys.plannerEpoch)) === 1, { timeoutMs: 15_000, what: 'the planner to rebuild' });
    await converge('every master lost its data');
  });
});

describe('jobs from other services on a Redis Cluster', () => {
  it('a plain BullMQ producer enqueues to {requests}: refresh, purge, report-versions and repair all run', async () => {
    await t.db.raw('CREATE TABLE ev (id INT PRIMARY KEY, k INT NOT NULL, v INT NOT NULL)');
    await t.db('ev').insert([{ id: 1, k: 1, v: 10 }, { id: 2, k: 2, v: 20 }]);
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON ev (k, v)');
    const fastId = await create('CREATE MATERIALIZED VIEW ev_fast REFRESH FAST AS SELECT k, COUNT(*) AS n, SUM(v) AS s FROM ev GROUP BY k');
    await t.db('ev').insert({ id: 3, k: 1, v: 5 });
    await t.db('ev').where({ id: 2 }).delete();
    const [refresh, purge] = await produce([
      { name: 'refresh', payload: { mview: `${t.database}.ev_fast` } },
      { name: 'purge', payload: { mlog: `${t.database}.ev` } },
    ]);
    expect(refresh, JSON.stringify(refresh)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS', method: 'FAST' } });
    // Logged: the insert of id 3 and the delete of id 2 (the rows before the log are not in it).
    expect(purge, JSON.stringify(purge)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS', rows: 2 } });
    const [rows] = (await t.db.raw('SELECT k, n, s FROM ev_fast ORDER BY k')) as [Array<{ k: number; n: number; s: string }>];
    expect(rows.map((r) => [r.k, Number(r.n), Number(r.s)])).toEqual([[1, 2, 15]]);
    expect(Number(((await t.db('mlog$ev').count({ n: '*' }).first()) as { n: number }).n)).toBe(0);

    // Versions, then a compaction (no data change): a repair job on {repair} moves the map.
    const table = `${t.database}.ev`;
    const p0 = { partitionName: 'p0', partitionId: 7, version: 5, versionTime: T0 };
    const [reported, refreshed] = await produce([
      { name: 'report-versions', payload: { table, partitions: [p0], dataChanged: true } },
      { name: 'refresh', payload: { mview: `${t.database}.ev_fast`, method: 'COMPLETE' } },
    ]);
    expect(reported, JSON.stringify(reported)).toMatchObject({ ok: true, result: { dependents: 1, repairs: 0 } });
    expect(refreshed, JSON.stringify(refreshed)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS' } });
    const versionOf = async () => Number(((await t.db('mvs_mview_version_map').where({ mview_id: fastId, partition_name: 'p0' }).first('version')) as { version: number } | undefined)?.version);
    expect(await versionOf()).toBe(5);
    const [compacted, repair] = await produce([
      { name: 'report-versions', payload: { table, partitions: [{ ...p0, version: 6, versionTime: T0 + 1000 }], dataChanged: false } },
      { name: 'repair', payload: { table, partitions: [{ partitionId: 7, partitionName: 'p0', lastVersion: 6, newVersion: 8, newVersionTime: T0 + 2000 }] } },
    ]);
    expect(compacted, JSON.stringify(compacted)).toMatchObject({ ok: true, result: { dependents: 1, repairs: 1 } });
    expect(repair, JSON.stringify(repair)).toMatchObject({ ok: true, result: { dependents: 1, repairs: 1 } });
    await waitFor(async () => (await versionOf()) === 8, { timeoutMs: 20_000, what: 'p0 repaired 5 -> 6 -> 8 through {repair}' });
    const edits = (await t.db('mvs_edit_log').where({ mview_id: fastId, op_type: 'REPAIR_VERSION_MAP' }).count({ n: '*' }).first()) as { n: number };
    expect(Number(edits.n)).toBe(2);
  });

  it('the typed client given an ioredis Cluster enqueues to {requests} and follows the job', async () => {
    const conn = createRedisCluster(parseClusterNodes(redisCluster.nodes));
    const client = new MvsClient({ connection: conn, prefix: t.prefix });
    try {
      expect(client.queueName).toBe('{requests}');
      const job = await client.refresh(`${t.database}.ev_fast`);
      expect(await job.finished(30_000)).toMatchObject({ outcome: 'SUCCESS' });
      expect(await client.status(job.jobId)).toMatchObject({ state: 'completed', name: 'refresh' });
    } finally {
      await client.close();
      await closeRedis(conn);
    }
  });

  it('a scheduled MV-log purge runs on its grid', async () => {
    await t.db.raw('CREATE TABLE pl (id INT PRIMARY KEY, v INT NOT NULL)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON pl (v) PURGE NEXT 2');
    await t.db('pl').insert([{ id: 1, v: 1 }, { id: 2, v: 2 }]);
    await waitFor(async () => Number(((await t.db('mlog$pl').count({ n: '*' }).first()) as { n: number }).n) === 0, {
      timeoutMs: 20_000,
      what: 'the scheduled purge to empty mlog$pl',
    });
    // The batches commit as they go; the run's SUCCESS row is written when it ends, just after.
    const succeeded = async () =>
      Number(((await t.db('mvs_mlog_purge_hist').where({ purge_trigger: 'SCHEDULED', purge_status: 'SUCCESS' }).count({ n: '*' }).first()) as { n: number }).n);
    await waitFor(async () => (await succeeded()) >= 1, { timeoutMs: 10_000, what: 'the scheduled purge run to be recorded SUCCESS' });
    expect(await succeeded()).toBeGreaterThanOrEqual(1);
    expect(Number(((await t.db('mlog$pl').count({ n: '*' }).first()) as { n: number }).n)).toBe(0);
    await converge('a scheduled purge');
  });
});

describe('Bull Board and /metrics on a Redis Cluster', () => {
  it('the board lists {requests}, {repair} and one {node-<id>} per live worker, with their jobs', async () => {
    const list = async () =>
      ((await app.inject({ url: '/admin/queues/api/queues', headers: auth })).json() as { queues: Array<{ name: string; counts: Record<string, number> }> }).queues;
    await waitFor(async () => (await list()).map((q) => q.name).sort().join() === '{node-w2},{node-w4},{repair},{requests}', {
      timeoutMs: 15_000,
      what: 'the board to show the live node queues',
    });
    const qs = await list();
    const delayed = qs.filter((q) => q.name.startsWith('{node-')).reduce((a, q) => a + (q.counts.delayed ?? 0), 0);
    expect(delayed, JSON.stringify(qs)).toBeGreaterThan(5);
    // The jobs of one node queue, and one job by id, through the board's API (names with braces
    // travel URL-encoded).
    const w2 = encodeURIComponent('{node-w2}');
    const jobs = await app.inject({ url: `/admin/queues/api/queues?activeQueue=${w2}&status=delayed&page=1&jobsPerPage=50`, headers: auth });
    expect(jobs.statusCode, jobs.body.slice(0, 500)).toBe(200);
    const shown = (jobs.json() as { queues: Array<{ name: string; jobs: Array<{ id: string; name: string }> }> }).queues.find((q) => q.name === '{node-w2}')!;
    expect(shown.jobs.length, JSON.stringify(shown).slice(0, 500)).toBeGreaterThan(0);
    expect(shown.jobs.every((j) => /^mlog?-\d+$|^mv-\d+$/.test(j.id))).toBe(true);
    const one = await app.inject({ url: `/admin/queues/api/queues/${w2}/${shown.jobs[0]!.id}`, headers: auth });
    expect(one.statusCode, one.body.slice(0, 500)).toBe(200);
    expect((one.json() as { job: { id: string } }).job.id).toBe(shown.jobs[0]!.id);
  });

  it('/metrics merges every worker\'s figures (scanned over all masters) with queue depths', async () => {
    const body = await waitFor(
      async () => {
        const b = (await app.inject({ url: '/metrics', headers: auth })).body;
        return (sample(b, 'mvs_refresh_runs_total', { result: 'SUCCESS', method: 'COMPLETE', trigger: 'SCHEDULED', node: 'w2' }) ?? 0) +
          (sample(b, 'mvs_refresh_runs_total', { result: 'SUCCESS', method: 'COMPLETE', trigger: 'SCHEDULED', node: 'w4' }) ?? 0) >= 1
          ? b
          : undefined;
      },
      { timeoutMs: 20_000, what: 'scheduled runs of the workers in the scrape' },
    );
    expect(sample(body, 'mvs_live_nodes')).toBe(2);
    expect(sample(body, 'mvs_queue_jobs', { queue: 'requests', state: 'completed' })).toBeGreaterThanOrEqual(1);
    const nodeDelayed = (sample(body, 'mvs_queue_jobs', { queue: 'node-w2', state: 'delayed' }) ?? 0) + (sample(body, 'mvs_queue_jobs', { queue: 'node-w4', state: 'delayed' }) ?? 0);
    expect(nodeDelayed).toBeGreaterThan(5);
    const applied = ['w2', 'w4'].reduce((a, n) => a + (sample(body, 'mvs_repairs_total', { outcome: 'applied', node: n }) ?? 0), 0);
    expect(applied, body.split('\n').filter((l) => l.startsWith('mvs_repairs_total')).join('\n')).toBeGreaterThanOrEqual(2);
  });
});

describe('the CLI on a Redis Cluster', () => {
  it('mvsched refresh --wait and status --json work with REDIS_CLUSTER_NODES (REDIS_URL set too is ignored with a warning)', async () => {
    const cli = procs.spawn('cli refresh', ['refresh', `${t.database}.grid_mv`, '--wait', '--json'], { REDIS_URL: t.redisUrl, LOG_LEVEL: 'warn' });
    expect(await cli.exited, cli.output()).toEqual({ code: 0, signal: null });
    expect(cli.output()).toMatch(/"outcome":"SUCCESS"/);
    expect(cli.output()).toContain('REDIS_CLUSTER_NODES is set: REDIS_URL is ignored');
    const status = procs.spawn('cli status', ['status', '--json']);
    expect(await status.exited, status.output()).toEqual({ code: 0, signal: null });
    const out = status.output();
    const doc = JSON.parse(out.slice(out.indexOf('{\n  "nodes"'), out.lastIndexOf('}') + 1)) as { nodes: string[] };
    expect(doc.nodes.sort()).toEqual(['w2', 'w4']);
  });
});
