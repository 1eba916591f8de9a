// mvsched on a Redis Cluster against a single Redis, in the same run (`npm run bench -- cluster`):
//
//   planner     Reconciler.full() of N MVs (default 100,000) on empty node queues of 8 fake
//               live nodes, on the single Redis and on the cluster (alternating, medians).
//   dispatch    dispatch lateness (bench/dispatchLateness.ts runMvsched: 2 worker processes,
//               in-process planner) of M MVs over a window, on each.
//   throughput  8 worker processes, 20,000 MVs in all due at once, for a window: refreshes/s on
//               each, and per cluster master its CPU and commands against the mean of the
//               masters (goal: none above 1.5x). Worker ids bench-1..8 first, then ids chosen
//               so that their node queues' hash slots spread evenly over the masters.
//
// The cluster (3 masters + 3 replicas, Debian's redis-server) is started here and stopped at
// the end; the single Redis and MariaDB are the run's (scripts/devenv.mjs).
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cluster } from 'ioredis';
import { ensureServerPackages, startRedisCluster } from '../scripts/localServers.mjs';
import { systemClock } from '../src/clock.js';
import { MembershipRegistry } from '../src/membership/registry.js';
import { Reconciler } from '../src/planner/reconciler.js';
import { JobPlacer } from '../src/queue/jobPlacer.js';
import { nodeQueueName } from '../src/queue/names.js';
import { HashRing } from '../src/ring/hashRing.js';
import { runMvsched, type MvschedResult } from './dispatchLateness.js';
import { balancedIds, masterOf, runThroughput, seedThroughputMvs, type ThroughputRun } from './clusterThroughput.js';
import {
  benchLogger,
  benchRedis,
  closeRedis,
  createBenchDatabase,
  deleteKeys,
  envInt,
  fmtInt,
  fmtMs,
  fmtRatio,
  freshPrefix,
  insertMvMetadata,
  loadAvg,
  median,
  progress,
  table,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
} from './support.js';

const WORKERS = 8;
const NATURAL_IDS = Array.from({ length: WORKERS }, (_, i) => `bench-${i + 1}`);

export interface PlannerSide {
  ms: number[];
  medianMs: number;
  jobs: number;
  /** Jobs per master (cluster) or per node queue (single). */
  spread: Record<string, number>;
}

export interface ClusterBenchResult {
  cluster: string;
  loadAvgAtStart: number[];
  planner: { n: number; single: PlannerSide; cluster: PlannerSide; clusterOverSingle: number };
  dispatch: { mvs: number; windowS: number; single: MvschedResult; cluster: MvschedResult };
  throughput: { mvs: number; concurrency: number; windowS: number; runs: ThroughputRun[] };
}

// ---------------------------------------------------------------------------------------------
// Planner: first reconcile

async function plannerPass(ctx: BenchContext, db: import('../src/db/connect.js').Db, n: number): Promise<{ ms: number; jobs: number; spread: Record<string, number> }> {
  const prefix = freshPrefix('clplan');
  const redis = benchRedis(ctx);
  const logger = benchLogger();
  const placer = new JobPlacer(redis, prefix, logger);
  try {
    const registry = new MembershipRegistry(redis, prefix);
    for (const node of NATURAL_IDS) await registry.heartbeat(node, 24 * 3_600_000);
    const ring = new HashRing();
    ring.rebuild(await registry.live());
    const reconciler = new Reconciler({
      db,
      placer,
      ring,
      clock: systemClock,
      logger,
      knownQueues: () => registry.nodeQueues(),
      retireQueue: async (q) => {
        await placer.obliterate(q);
        await registry.retireNodeQueue(q);
      },
    });
    const t = performance.now();
    const st = await reconciler.full();
    const ms = performance.now() - t;
    const spread: Record<string, number> = {};
    let jobs = 0;
    for (const node of NATURAL_IDS) {
      const snap = await placer.snapshot(nodeQueueName(node));
      const where = ctx.redisClusterNodes ? await masterOf(redis as Cluster, `{${nodeQueueName(node)}}`) : nodeQueueName(node);
      spread[where] = (spread[where] ?? 0) + snap.delayed.size;
      jobs += snap.delayed.size;
    }
    if (st.added !== n || jobs !== n) throw new Error(`full() placed ${st.added} (found ${jobs}) of ${n} jobs`);
    return { ms, jobs, spread };
  } finally {
    await placer.close();
    await deleteKeys(redis, `${prefix}:*`).catch(() => 0);
    await closeRedis(redis);
  }
}

async function runPlanner(single: BenchContext, cluster: BenchContext, n: number, rounds: number): Promise<ClusterBenchResult['planner']> {
  const bdb = await createBenchDatabase(single, `cluster_planner_${n}`, 4);
  try {
    progress(`cluster planner: inserting ${fmtInt(n)} MV metadata rows`);
    const start = Date.now();
    await insertMvMetadata(bdb.db, bdb.name, Array.from({ length: n }, (_, i) => ({ id: i + 1, nextTime: start + 3_600_000 + Math.floor((i * 3_600_000) / n) })), { label: 'cluster planner' });
    // Warm both code paths (JIT, script loading, cluster slot map) on a small copy first.
    progress('cluster planner: warm-up on 2,000 MVs');
    const warm = await createBenchDatabase(single, 'cluster_planner_warm', 4);
    try {
      await insertMvMetadata(warm.db, warm.name, Array.from({ length: 2000 }, (_, i) => ({ id: i + 1, nextTime: start + 3_600_000 + i })));
      await plannerPass(single, warm.db, 2000);
      await plannerPass(cluster, warm.db, 2000);
    } finally {
      await warm.drop();
    }
    const sides = { single: [] as Array<Awaited<ReturnType<typeof plannerPass>>>, cluster: [] as Array<Awaited<ReturnType<typeof plannerPass>>> };
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? (['single', 'cluster'] as const) : (['cluster', 'single'] as const);
      for (const side of order) {
        progress(`cluster planner: full() of ${fmtInt(n)} MVs on the ${side === 'single' ? 'single Redis' : 'Redis Cluster'} (round ${r + 1}/${rounds})`);
        const out = await plannerPass(side === 'single' ? single : cluster, bdb.db, n);
        progress(`cluster planner: ${side}: ${fmtMs(out.ms)}`);
        sides[side].push(out);
      }
    }
    const summary = (xs: Array<Awaited<ReturnType<typeof plannerPass>>>): PlannerSide => ({
      ms: xs.map((x) => Math.round(x.ms)),
      medianMs: median(xs.map((x) => x.ms)),
      jobs: xs[0]!.jobs,
      spread: xs[0]!.spread,
    });
    const s = summary(sides.single);
    const c = summary(sides.cluster);
    return { n, single: s, cluster: c, clusterOverSingle: c.medianMs / s.medianMs };
  } finally {
    await bdb.drop();
  }
}

// ---------------------------------------------------------------------------------------------
// Throughput with 8 workers

async function runThroughputPhase(
  single: BenchContext,
  cluster: BenchContext,
  redisPids: Record<string, number>,
  mvs: number,
  concurrency: number,
  windowS: number,
): Promise<ClusterBenchResult['throughput']> {
  const bdb = await createBenchDatabase(single, 'cluster_tp', 8);
  const ids: number[] = [];
  try {
    progress(`cluster throughput: creating ${fmtInt(mvs)} MVs (target tables and metadata)`);
    ids.push(...(await seedThroughputMvs(bdb, mvs)));
    const runs: ThroughputRun[] = [];
    runs.push(await runThroughput(single, bdb, ids, { label: 'single Redis', workerIds: NATURAL_IDS, concurrency, windowS }));
    const natural = await runThroughput(cluster, bdb, ids, { label: `Redis Cluster, workers ${NATURAL_IDS[0]}..${WORKERS}`, workerIds: NATURAL_IDS, concurrency, windowS, redisPids });
    runs.push(natural);
    // Which master a node queue lands on is its id's hash slot: eight ids over three masters
    // split 4/2/2 as often as 3/3/2. Once more with ids an operator could choose to spread them.
    const conn = benchRedis(cluster);
    let spread: string[];
    try {
      spread = await balancedIds(conn as Cluster, 'w', WORKERS);
    } finally {
      await closeRedis(conn);
    }
    progress(`cluster throughput: again with worker ids whose node queues spread over the masters: ${spread.join(', ')}`);
    runs.push(await runThroughput(cluster, bdb, ids, { label: `Redis Cluster, spread ids ${spread.join(',')}`, workerIds: spread, concurrency, windowS, redisPids }));
    return { mvs, concurrency, windowS, runs };
  } finally {
    await bdb.drop({ tables: ids.map((id) => `mv_${id}`) }).catch((err: unknown) => progress(`cluster throughput: cleanup failed: ${String(err)}`));
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function report(r: ClusterBenchResult): string {
  const out: string[] = [];
  out.push(`Redis Cluster: 3 masters + 3 replicas (local, ${r.cluster}); single Redis: the run's. Load avg at start ${r.loadAvgAtStart.join(' ')}.`);
  out.push('');
  const p = r.planner;
  out.push(`### Planner: first full() of ${fmtInt(p.n)} MVs on empty queues (8 live nodes)`);
  out.push('');
  out.push(
    table(
      ['Redis', 'full() median', 'runs', 'jobs', 'jobs by queue / master'],
      [
        ['single', fmtMs(p.single.medianMs), p.single.ms.map((x) => fmtMs(x)).join(', '), fmtInt(p.single.jobs), Object.values(p.single.spread).map(fmtInt).join(' / ')],
        ['cluster', fmtMs(p.cluster.medianMs), p.cluster.ms.map((x) => fmtMs(x)).join(', '), fmtInt(p.cluster.jobs), Object.entries(p.cluster.spread).map(([m, k]) => `${m} ${fmtInt(k)}`).join(', ')],
      ],
    ),
  );
  out.push('');
  out.push(`cluster / single: ${fmtRatio(p.clusterOverSingle)}`);
  out.push('');
  const d = r.dispatch;
  out.push(`### Dispatch lateness: ${fmtInt(d.mvs)} MVs over ${d.windowS} s, 2 workers x concurrency 8`);
  out.push('');
  const row = (name: string, m: MvschedResult) => [
    name,
    fmtMs(m.lateness.p50),
    fmtMs(m.lateness.p90),
    fmtMs(m.lateness.p99),
    fmtMs(m.lateness.max),
    `${m.achievedPerS.toFixed(1)}/s`,
    m.saturated ? 'SATURATED' : 'no',
    `${m.mvsWithoutJob} / ${m.mvsWithDuplicateJobs}`,
    m.cpu?.otherCores?.toFixed(2) ?? '?',
  ];
  out.push(table(['Redis', 'p50', 'p90', 'p99', 'max', 'achieved', 'saturated', 'MVs without / with 2 jobs', 'foreign load (cores)'], [row('single', d.single), row('cluster', d.cluster)]));
  out.push('');
  out.push(`p99 cluster - single: ${fmtMs(d.cluster.lateness.p99 - d.single.lateness.p99)}`);
  out.push('');
  const t = r.throughput;
  out.push(`### ${WORKERS} workers x concurrency ${t.concurrency}, ${fmtInt(t.mvs)} MVs due at once, ${t.windowS} s window`);
  out.push('');
  out.push(
    table(
      ['run', 'refreshes/s', 'refreshes', 'failed', 'refresh p50', 'busiest master CPU / mean', 'cores: workers / redis / mariadbd / rest of host', 'worker errors'],
      t.runs.map((x) => [
        x.label,
        x.perS.toFixed(1),
        fmtInt(x.refreshes),
        x.failed,
        fmtMs(x.durationP50Ms),
        x.cluster ? fmtRatio(x.maxCpuOverMean) : '-',
        [x.cores.workers, x.cores.redis, x.cores.mariadbd, x.cores.other].map((c) => c?.toFixed(2) ?? '?').join(' / '),
        x.workerErrors,
      ]),
    ),
  );
  for (const x of t.runs.filter((y) => y.cluster)) {
    out.push('');
    out.push(`${x.label}: per master`);
    out.push('');
    out.push(
      table(
        ['master', 'node queues', '{mvs}', 'CPU s', 'CPU / mean', 'commands', 'commands / mean'],
        x.masters.map((m) => [m.master, m.nodeQueues.join(',') || '-', m.ownKeys ? 'yes' : '', m.cpuSeconds.toFixed(3), fmtRatio(m.cpuOverMean), fmtInt(m.commands), fmtRatio(m.commandsOverMean)]),
      ),
    );
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------

export async function runRedisCluster(ctx: BenchContext): Promise<BenchOutcome<ClusterBenchResult>> {
  ensureServerPackages({ redis: true, mariadb: false }, progress);
  const load = loadAvg();
  progress('cluster: starting a local Redis Cluster (3 masters + 3 replicas)');
  const rc = (await startRedisCluster({ baseDir: join(tmpdir(), `mvsched-bench-cluster-${process.pid}`) })) as {
    nodes: string;
    pids: Record<string, number>;
    stop(): Promise<void>;
  };
  const clusterCtx: BenchContext = { ...ctx, redisClusterNodes: rc.nodes };
  try {
    const planner = await runPlanner(ctx, clusterCtx, envInt('BENCH_CLUSTER_PLANNER_N', 100_000), envInt('BENCH_CLUSTER_PLANNER_ROUNDS', 2));
    const dMvs = envInt('BENCH_CLUSTER_DISPATCH_MVS', 500);
    const dWindow = envInt('BENCH_CLUSTER_DISPATCH_WINDOW_S', 30);
    progress(`cluster dispatch: ${fmtInt(dMvs)} MVs over ${dWindow} s on the single Redis`);
    const dSingle = await runMvsched(ctx, dMvs, dWindow);
    progress(`cluster dispatch: ${fmtInt(dMvs)} MVs over ${dWindow} s on the Redis Cluster`);
    const dCluster = await runMvsched(clusterCtx, dMvs, dWindow);
    const throughput = await runThroughputPhase(
      ctx,
      clusterCtx,
      rc.pids,
      envInt('BENCH_CLUSTER_MVS', 20_000),
      envInt('BENCH_CLUSTER_CONCURRENCY', 4),
      envInt('BENCH_CLUSTER_WINDOW_S', 30),
    );
    const result: ClusterBenchResult = { cluster: rc.nodes, loadAvgAtStart: load, planner, dispatch: { mvs: dMvs, windowS: dWindow, single: dSingle, cluster: dCluster }, throughput };
    const natural = throughput.runs.find((x) => x.cluster)!;
    const spread = throughput.runs.filter((x) => x.cluster)[1];
    const goals: GoalCheck[] = [
      { name: `cluster: planner full() of ${fmtInt(planner.n)} MVs, cluster / single`, value: planner.clusterOverSingle, goal: 'informational', met: null },
      {
        name: `cluster: dispatch p99, cluster - single (${fmtInt(dMvs)} MVs/${dWindow}s)`,
        value: dCluster.lateness.p99 - dSingle.lateness.p99,
        goal: 'informational ms',
        met: null,
      },
      { name: `cluster: busiest master CPU / mean, workers ${NATURAL_IDS[0]}..${WORKERS}`, value: natural.maxCpuOverMean, goal: '<= 1.5x', met: natural.maxCpuOverMean <= 1.5 },
    ];
    if (spread) goals.push({ name: 'cluster: busiest master CPU / mean, node ids spread over the masters', value: spread.maxCpuOverMean, goal: '<= 1.5x', met: spread.maxCpuOverMean <= 1.5 });
    return { result, goals, report: report(result) };
  } finally {
    await rc.stop();
  }
}
