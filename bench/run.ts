// Benchmark entry: `npm run bench` (every benchmark) or `npm run bench -- planner dispatch`.
// Needs DATABASE_URL and REDIS_URL (scripts/devenv.mjs provides throwaway servers); each
// benchmark makes its own database and BullMQ prefix and removes them when done.
// Prints a readable report on stdout (progress goes to stderr) and writes bench-results.json.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runDashboard } from './dashboard.js';
import { runDispatchLateness } from './dispatchLateness.js';
import { runFastJoin } from './fastJoin.js';
import { runFastOracleSoak } from './fastOracleSoak.js';
import { runFastRefresh } from './fastRefresh.js';
import { runJoinOracleSoak } from './joinOracleSoak.js';
import { runMlogPurge } from './mlogPurge.js';
import { runMlogWriters } from './mlogWriters.js';
import { runPipeline } from './pipeline.js';
import { runPlannerReconcile } from './plannerReconcile.js';
import { runRedisCluster } from './redisCluster.js';
import { runRepairThroughput } from './repairThroughput.js';
import { runStatusScale } from './statusScale.js';
import { runWriterStall } from './writerStall.js';
import {
  fmtRatio,
  loadAvg,
  machineInfo,
  progress,
  table,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
} from './support.js';

const root = fileURLToPath(new URL('..', import.meta.url));

interface RingBalanceResult {
  output: string;
  /** getNode throughput rows: lookup -> { perSecM, mapOverThis } */
  throughput: Array<{ lookup: string; lookupsPerSecM: number; mapOverThis: number }>;
  freshRingMs: number | null;
  joinLeaveMs: number | null;
}

/** bench/ringBalance.ts is a standalone script (no exported main): run it as a child. */
async function runRingBalance(): Promise<BenchOutcome<RingBalanceResult>> {
  progress('ring: running bench/ringBalance.ts (about 30-45 s)');
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/ringBalance.ts'], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`bench/ringBalance.ts exited with ${code}`))));
  });
  const throughput: RingBalanceResult['throughput'] = [];
  for (const m of output.matchAll(/^\| (Map<string,string>\.get \(baseline\)|HashRing [^|]+?)\s+\| ([\d.]+) M\s+\| ([\d.]+)x/gm)) {
    throughput.push({ lookup: m[1]!.trim(), lookupsPerSecM: Number(m[2]), mapOverThis: Number(m[3]) });
  }
  const num = (re: RegExp) => {
    const m = re.exec(output);
    return m ? Number(m[1]) : null;
  };
  const result: RingBalanceResult = {
    output,
    throughput,
    freshRingMs: num(/fresh ring, .*?: ([\d.]+) ms/),
    joinLeaveMs: num(/one node joins then leaves .*?: ([\d.]+) ms/),
  };
  const ring = throughput.find((t) => t.lookup.startsWith('HashRing default'));
  const goals: GoalCheck[] = ring
    ? [{ name: 'ring: getNode cost vs Map.get (default ring)', value: ring.mapOverThis, goal: 'informational', met: null }]
    : [];
  return { result, goals, report: output.trimEnd() };
}

const BENCHES: Record<string, { title: string; run: (ctx: BenchContext) => Promise<BenchOutcome> }> = {
  planner: { title: 'Planner reconcile (bench/plannerReconcile.ts)', run: runPlannerReconcile },
  dispatch: { title: 'Dispatch lateness (bench/dispatchLateness.ts)', run: runDispatchLateness },
  ring: { title: 'Hash ring balance and speed (bench/ringBalance.ts)', run: () => runRingBalance() },
  repair: { title: 'Version repair (bench/repairThroughput.ts)', run: (ctx) => runRepairThroughput(ctx) },
  fast: { title: 'FAST vs COMPLETE refresh (bench/fastRefresh.ts)', run: (ctx) => runFastRefresh(ctx) },
  'fast-join': { title: 'FAST vs COMPLETE refresh over a star join (bench/fastJoin.ts)', run: (ctx) => runFastJoin(ctx) },
  'join-oracle': { title: 'Join oracle with many seeds (bench/joinOracleSoak.ts)', run: (ctx) => runJoinOracleSoak(ctx) },
  'mlog-writers': { title: 'MV log writer overhead (bench/mlogWriters.ts)', run: (ctx) => runMlogWriters(ctx) },
  purge: { title: 'MV log purge (bench/mlogPurge.ts)', run: (ctx) => runMlogPurge(ctx) },
  'writer-stall': { title: "Writers' stalls under a frozen or waiting refresher (bench/writerStall.ts)", run: (ctx) => runWriterStall(ctx) },
  'fast-oracle': { title: 'FAST oracle, every seed, TRIGGERS and BINLOG logs (bench/fastOracleSoak.ts)', run: (ctx) => runFastOracleSoak(ctx) },
  cluster: { title: 'Redis Cluster vs single Redis (bench/redisCluster.ts)', run: (ctx) => runRedisCluster(ctx) },
  ui: { title: 'Dashboard overview at 10,000 MVs (bench/dashboard.ts)', run: (ctx) => runDashboard(ctx) },
  pipeline: { title: 'Pipelines to a target lag (bench/pipeline.ts)', run: (ctx) => runPipeline(ctx) },
  'status-scale': { title: 'Status of 100,000 MVs vs a plain SELECT (bench/statusScale.ts)', run: (ctx) => runStatusScale(ctx) },
};

const ALIASES: Record<string, string> = {
  planner: 'planner',
  plannerreconcile: 'planner',
  reconcile: 'planner',
  dispatch: 'dispatch',
  dispatchlateness: 'dispatch',
  lateness: 'dispatch',
  ring: 'ring',
  ringbalance: 'ring',
  repair: 'repair',
  repairthroughput: 'repair',
  fast: 'fast',
  fastrefresh: 'fast',
  fastjoin: 'fast-join',
  join: 'fast-join',
  joinoracle: 'join-oracle',
  mlogwriters: 'mlog-writers',
  writers: 'mlog-writers',
  writerstall: 'writer-stall',
  stall: 'writer-stall',
  mlogwriter: 'mlog-writers',
  purge: 'purge',
  mlogpurge: 'purge',
  fastoracle: 'fast-oracle',
  oracle: 'fast-oracle',
  cluster: 'cluster',
  rediscluster: 'cluster',
  ui: 'ui',
  dashboard: 'ui',
  pipeline: 'pipeline',
  pipelines: 'pipeline',
  targetlag: 'pipeline',
  statusscale: 'status-scale',
  status: 'status-scale',
};

function usage(): string {
  return [
    'usage: npm run bench [-- <name> ...]',
    `  names: ${Object.keys(BENCHES).join(', ')} (default: all, in that order)`,
    '  env: BENCH_PLANNER_SIZES=10000,100000  BENCH_DISPATCH_MVS=5000  BENCH_DISPATCH_WINDOW_S=60',
    '       BENCH_DISPATCH_LOW_MVS=1000  BENCH_DISPATCH_LOW=auto|always|never  BENCH_REDIS_HZ=<n>',
    '       BENCH_KEEP_DB=1 (keep dispatch / fast databases)  BENCH_RESULTS=bench-results.json',
    '       BENCH_FAST_ROWS=1000000 BENCH_FAST_GROUPS=1000 BENCH_FAST_CHANGES=1000 BENCH_FAST_REPS=5',
    '       BENCH_JOIN_FACT_ROWS=1000000 BENCH_JOIN_DIM1_ROWS=10000 BENCH_JOIN_DIM2_ROWS=100 BENCH_JOIN_FACT_CHANGES=1000',
    '       BENCH_JOIN_DIM_CHANGES=10 BENCH_JOIN_REPS=5 BENCH_JOIN_B_REPS=5 BENCH_JOIN_ORACLE_SEEDS=100',
    '       BENCH_WRITERS_ROWS=1000 BENCH_WRITERS_ROUNDS=10 BENCH_WRITERS_CONC=4 BENCH_CAPTURE_BACKLOG=100000',
    '       BENCH_FASTLAT_ROWS=100000 BENCH_FASTLAT_GROUPS=1000 BENCH_FASTLAT_REPS=15 BENCH_FASTLAT_BATCH=1000',
    '       BENCH_PURGE_ROWS=1000000 BENCH_PURGE_BATCH=10000[,...] BENCH_PURGE_BASELINE_S=10 BENCH_PURGE_FILL=direct|triggers',
    '       BENCH_FAST_ORACLE_SEEDS=20 (MVS_TEST_SEED replays a run)',
    '       BENCH_STALL_EPISODES=5 BENCH_STALL_FREEZE_MS=6000 BENCH_STALL_LONG_MS=6000 BENCH_STALL_CUT_WAIT_MS=2000',
    '       BENCH_CLUSTER_PLANNER_N=100000 BENCH_CLUSTER_PLANNER_ROUNDS=2 BENCH_CLUSTER_DISPATCH_MVS=500 BENCH_CLUSTER_DISPATCH_WINDOW_S=30',
    '       BENCH_CLUSTER_MVS=20000 BENCH_CLUSTER_CONCURRENCY=4 BENCH_CLUSTER_WINDOW_S=30',
    '       BENCH_UI_MVS=10000 BENCH_UI_REPS=15',
    '       BENCH_PIPELINE_CHAINS=200 BENCH_PIPELINE_DIAMONDS=20 BENCH_PIPELINE_MIN_LAG=10 BENCH_PIPELINE_MAX_LAG=60',
    '       BENCH_PIPELINE_WARMUP_S=60 BENCH_PIPELINE_S=180 BENCH_PIPELINE_WORKERS=2 BENCH_PIPELINE_CONCURRENCY=4',
    '       BENCH_STATUS_MVS=100000 BENCH_STATUS_REPS=5',
    '       BENCH_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (node flags for every mvsched process a benchmark starts)',
  ].join('\n');
}

async function main(): Promise<number> {
  const args = process.argv.slice(2).filter((a) => a !== '--');
  if (args.includes('-h') || args.includes('--help')) {
    console.log(usage());
    return 0;
  }
  const names: string[] = [];
  for (const a of args) {
    const key = ALIASES[a.toLowerCase().replace(/[^a-z]/g, '')];
    if (!key) {
      console.error(`unknown benchmark "${a}"\n${usage()}`);
      return 2;
    }
    if (!names.includes(key)) names.push(key);
  }
  if (names.length === 0) names.push(...Object.keys(BENCHES));

  const serverUrl = process.env.DATABASE_URL;
  const redisUrl = process.env.REDIS_URL;
  const needServers = names.some((n) => n !== 'ring');
  if (needServers && (!serverUrl || !redisUrl)) {
    console.error('DATABASE_URL and REDIS_URL must be set; `npm run bench` starts throwaway servers and sets them.');
    return 2;
  }
  const ctx: BenchContext = { serverUrl: serverUrl ?? '', redisUrl: redisUrl ?? '' };
  const machine = needServers ? await machineInfo(ctx) : undefined;
  const started = new Date();
  console.log(`# mvsched benchmarks — ${started.toISOString()}`);
  if (machine) {
    console.log(
      `machine: ${machine.nproc} CPUs (${machine.cpuModel}), ${machine.memoryGiB} GiB, node ${machine.node}, ` +
        `${machine.mariadb}, Redis ${machine.redis}, BullMQ ${machine.bullmq}, load avg ${machine.loadAvgAtStart.join(' ')}`,
    );
  }
  console.log(`running: ${names.join(', ')}\n`);

  const results: Record<string, { title: string; durationS: number; result?: unknown; goals: GoalCheck[]; error?: string }> = {};
  let failed = false;
  for (const name of names) {
    const b = BENCHES[name]!;
    console.log(`## ${b.title}\n`);
    const t = performance.now();
    try {
      const out = await b.run(ctx);
      const durationS = Math.round((performance.now() - t) / 100) / 10;
      console.log(out.report);
      console.log(`\n(${name} took ${durationS} s)\n`);
      results[name] = { title: b.title, durationS, result: out.result, goals: out.goals };
    } catch (err) {
      failed = true;
      const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
      console.log(`FAILED: ${msg}\n`);
      results[name] = { title: b.title, durationS: Math.round((performance.now() - t) / 100) / 10, goals: [], error: msg };
    }
  }

  const goals = Object.values(results).flatMap((r) => r.goals);
  if (goals.length) {
    console.log('## Goals (ratios against baselines measured in the same run)\n');
    console.log(
      table(
        ['goal', 'measured', 'target', 'met'],
        goals.map((g) => [
          g.name,
          g.value === null ? '-' : g.goal.includes('ms') ? `${g.value.toFixed(1)} ms` : g.goal.includes('%') ? `${(g.value * 100).toFixed(2)} %` : fmtRatio(g.value, 3),
          g.goal,
          g.met === null ? `n/a${g.note ? ` (${g.note})` : ''}` : g.met ? `yes${g.note ? ` ${g.note}` : ''}` : `NO${g.note ? ` ${g.note}` : ''}`,
        ]),
      ),
    );
    console.log('');
  }
  const file = process.env.BENCH_RESULTS ?? 'bench-results.json';
  const path = new URL(file, `file://${root}`).pathname;
  writeFileSync(
    path,
    `${JSON.stringify({ startedAt: started.toISOString(), finishedAt: new Date().toISOString(), machine, loadAvgAtEnd: loadAvg(), argv: args, results }, null, 2)}\n`,
  );
  console.log(`results written to ${path}`);
  return failed ? 1 : 0;
}

process.exitCode = await main();
