// Pipelines to a target lag (DESIGN.md §2 "Pipelines", invariant 7): CHAINS chains of depth 3
// (raw -> m1 (TARGET LAG DOWNSTREAM) -> m2 (DOWNSTREAM) -> m3 (TARGET LAG n)) and DIAMONDS
// diamonds (raw -> a (DOWNSTREAM) -> b, c (DOWNSTREAM) -> d (TARGET LAG n)), n drawn from
// MIN_LAG..MAX_LAG s, refreshed by a planner and WORKERS workers (real processes) while a writer
// adds rows to every chain's slice of one base table. After a warm-up, for MEASURE_S seconds:
// - every second, the lag of every target-lag MV against its target: the share within it
//   (goal >= 99 %);
// - from the history, for each DOWNSTREAM MV, its refreshes against the waves that needed it
//   (waves in which an MV that reads it, directly or not, ran): goal <= 1.1x (one per wave);
// - the planner's CPU per wave, next to the workers' CPU per wave (the refreshes it orders).
//
// From bench/run.ts: `npm run bench -- pipeline`.
// Env: BENCH_PIPELINE_CHAINS=200 BENCH_PIPELINE_DIAMONDS=20 BENCH_PIPELINE_MIN_LAG=10 BENCH_PIPELINE_MAX_LAG=60
//      BENCH_PIPELINE_WARMUP_S=60 BENCH_PIPELINE_S=180 BENCH_PIPELINE_WORKERS=2 BENCH_PIPELINE_CONCURRENCY=4 (per worker)
import { createDdlExecutor, createRuntime } from '../src/app/runtime.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { loadGraph } from '../src/pipeline/repository.js';
import { prng } from '../test/support/prng.js';
import {
  cpuSnapshot,
  cpuUse,
  createBenchDatabase,
  envInt,
  fmtInt,
  fmtMs,
  fmtRatio,
  freshPrefix,
  loadAvg,
  parallel,
  progress,
  serverPids,
  sleep,
  spawnMvsched,
  stopMvsched,
  summarize,
  table,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
} from './support.js';

interface HistRow {
  mview_id: number | string;
  refresh_job_id: string | null;
  refresh_trigger: string;
  refresh_status: string;
  start_time: Date;
  end_time: Date | null;
}

/** The MVs of the workload, by level, each a CREATE statement. */
function workload(chains: number, diamonds: number, minLag: number, maxLag: number): string[][] {
  const rnd = prng(20261203);
  const lag = () => minLag + Math.floor(rnd() * (maxLag - minLag + 1));
  const levels: string[][] = [[], [], []];
  for (let i = 0; i < chains; i++) {
    levels[0]!.push(`CREATE MATERIALIZED VIEW c${i}_1 TARGET LAG DOWNSTREAM AS SELECT g, COUNT(*) AS n, SUM(v) AS s FROM raw WHERE chain = ${i} GROUP BY g`);
    levels[1]!.push(`CREATE MATERIALIZED VIEW c${i}_2 TARGET LAG DOWNSTREAM AS SELECT SUM(n) AS n, SUM(s) AS s FROM c${i}_1`);
    levels[2]!.push(`CREATE MATERIALIZED VIEW c${i}_3 TARGET LAG ${lag()} AS SELECT n, s FROM c${i}_2`);
  }
  for (let j = 0; j < diamonds; j++) {
    const k = chains + j;
    levels[0]!.push(`CREATE MATERIALIZED VIEW d${j}_a TARGET LAG DOWNSTREAM AS SELECT g, SUM(v) AS s FROM raw WHERE chain = ${k} GROUP BY g`);
    levels[1]!.push(`CREATE MATERIALIZED VIEW d${j}_b TARGET LAG DOWNSTREAM AS SELECT g, s FROM d${j}_a WHERE g < 4`);
    levels[1]!.push(`CREATE MATERIALIZED VIEW d${j}_c TARGET LAG DOWNSTREAM AS SELECT g, s FROM d${j}_a WHERE g >= 4`);
    levels[2]!.push(`CREATE MATERIALIZED VIEW d${j}_d TARGET LAG ${lag()} AS SELECT (SELECT SUM(s) FROM d${j}_b) AS low, (SELECT SUM(s) FROM d${j}_c) AS high`);
  }
  return levels;
}

export async function runPipeline(ctx: BenchContext): Promise<BenchOutcome> {
  const chains = envInt('BENCH_PIPELINE_CHAINS', 200);
  const diamonds = envInt('BENCH_PIPELINE_DIAMONDS', 20);
  const minLag = envInt('BENCH_PIPELINE_MIN_LAG', 10);
  const maxLag = envInt('BENCH_PIPELINE_MAX_LAG', 60);
  const warmupS = envInt('BENCH_PIPELINE_WARMUP_S', 60);
  const measureS = envInt('BENCH_PIPELINE_S', 180);
  const workers = envInt('BENCH_PIPELINE_WORKERS', 2);
  const concurrency = envInt('BENCH_PIPELINE_CONCURRENCY', 4);
  const bdb = await createBenchDatabase(ctx, 'pipeline');
  const prefix = freshPrefix('pipeline');
  const env = { DATABASE_URL: bdb.url, REDIS_URL: ctx.redisUrl, MVS_PREFIX: prefix, MVS_NODE_TTL_S: '10', MVS_WORKER_CONCURRENCY: String(concurrency), LOG_LEVEL: 'warn' };
  const rt = createRuntime(loadConfig(env, { database: true, redis: true }), createLogger({ level: 'warn' }), { poolMax: 8 });
  const db = bdb.db;
  const procs: Array<ReturnType<typeof spawnMvsched>> = [];
  let writing = true;
  let written = 0;
  let writer: Promise<void> | undefined;
  try {
    await db.raw('CREATE TABLE raw (id INT AUTO_INCREMENT PRIMARY KEY, chain INT NOT NULL, g INT NOT NULL, v INT NOT NULL, KEY (chain))');
    const total = chains + diamonds;
    for (let i = 0; i < total; i += 50) {
      const rows = [];
      for (let k = i; k < Math.min(total, i + 50); k++) for (let g = 0; g < 8; g++) rows.push({ chain: k, g, v: k + g });
      await db('raw').insert(rows);
    }
    const levels = workload(chains, diamonds, minLag, maxLag);
    const ddl = createDdlExecutor(rt, 'bench');
    let made = 0;
    for (const level of levels) {
      await parallel(level, 4, async (sql) => {
        await ddl.execute(sql);
        if (++made % 100 === 0) progress(`pipeline: created ${made} / ${levels.flat().length} MVs`);
      });
    }
    procs.push(spawnMvsched('planner', ['planner'], env));
    for (let w = 1; w <= workers; w++) procs.push(spawnMvsched(`worker-${w}`, ['worker', '--node-id', `pw${w}`], env));
    const rnd = prng(7);
    writer = (async () => {
      while (writing) {
        await db('raw').insert({ chain: Math.floor(rnd() * total), g: Math.floor(rnd() * 8), v: Math.floor(rnd() * 100) });
        written++;
        await sleep(20);
      }
    })();
    // Processes start slowly on a loaded machine: the warm-up counts from every target's first wave.
    progress(`pipeline: ${made} MVs, ${chains + diamonds} targets; waiting for the first wave of each`);
    const deadline = Date.now() + 600_000;
    for (;;) {
      const [r] = (await db.raw(
        "SELECT COUNT(DISTINCT h.mview_id) AS n FROM mvs_mview_refresh_hist h JOIN mvs_mviews m ON m.mview_id = h.mview_id WHERE m.target_lag IS NOT NULL AND h.refresh_job_id LIKE 'wave-%' AND h.refresh_status = 'SUCCESS'",
      )) as [Array<{ n: number }>];
      if (Number(r[0]!.n) >= chains + diamonds) break;
      if (Date.now() > deadline) throw new Error(`only ${r[0]!.n} of ${chains + diamonds} targets had a wave after 10 minutes`);
      await sleep(1000);
    }
    progress(`pipeline: every target had a wave; warming up ${warmupS} s`);
    await sleep(warmupS * 1000);

    const pids = { planner: procs[0]!.child.pid, ...Object.fromEntries(procs.slice(1).map((p) => [p.name, p.child.pid])), ...(await serverPids(db, rt.redis)) };
    const cpu0 = cpuSnapshot(pids);
    const [w0] = (await db.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>];
    const windowStart = w0[0]!.t;
    const ratios: number[] = [];
    let within = 0;
    const end = Date.now() + measureS * 1000;
    let lastReport = Date.now();
    while (Date.now() < end) {
      const [rows] = (await db.raw(
        'SELECT m.target_lag AS target, TIMESTAMPDIFF(MICROSECOND, ri.data_time, NOW(3)) / 1000 AS lag FROM mvs_mviews m JOIN mvs_mview_refresh_info ri ON ri.mview_id = m.mview_id WHERE m.target_lag IS NOT NULL',
      )) as [Array<{ target: number; lag: string | number }>];
      for (const r of rows) {
        const ratio = Number(r.lag) / (Number(r.target) * 1000);
        ratios.push(ratio);
        if (ratio <= 1) within++;
      }
      if (Date.now() - lastReport > 30_000) {
        lastReport = Date.now();
        progress(`pipeline: ${fmtInt(ratios.length)} lag samples, ${((within / ratios.length) * 100).toFixed(2)} % within target; load ${loadAvg().join(' ')}`);
      }
      await sleep(1000);
    }
    const cpu = cpuUse(cpu0, cpuSnapshot(pids));
    const [w1] = (await db.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>];
    const windowEnd = w1[0]!.t;
    writing = false;
    await writer;
    // Let the waves started in the window finish (none starts once the planner is gone), so that
    // each is counted whole: its upstream runs and its target's.
    await stopMvsched(procs[0]!);
    progress('pipeline: planner stopped; waiting for the waves in flight to finish');
    let last = -1;
    for (let stable = 0, i = 0; stable < 5 && i < 180; i++) {
      const [r] = (await db.raw("SELECT COUNT(*) AS n, SUM(refresh_status = 'RUNNING') AS running FROM mvs_mview_refresh_hist")) as [Array<{ n: number; running: string | null }>];
      const n = Number(r[0]!.n);
      stable = n === last && Number(r[0]!.running ?? 0) === 0 ? stable + 1 : 0;
      last = n;
      await sleep(1000);
    }

    // Waves from the history: the runs of one wave share its id in their job id.
    const hist = (await db('mvs_mview_refresh_hist')
      .where('start_time', '>=', new Date(windowStart.getTime() - 120_000))
      .select('mview_id', 'refresh_job_id', 'refresh_trigger', 'refresh_status', 'start_time', 'end_time')) as HistRow[];
    const waveRuns = new Map<string, HistRow[]>();
    for (const h of hist) {
      const w = /^wave-(\d+)-/.exec(h.refresh_job_id ?? '')?.[1];
      if (w) waveRuns.set(w, [...(waveRuns.get(w) ?? []), h]);
    }
    const inWindow = (ms: number) => ms >= windowStart.getTime() && ms < windowEnd.getTime();
    const waves = [...waveRuns].filter(([, rs]) => inWindow(Math.min(...rs.map((r) => r.start_time.getTime()))));
    const waveIds = new Set(waves.map(([w]) => w));
    const graph = await loadGraph(db);
    const downstream = [...graph.all()].filter((n) => n.kind === 'DOWNSTREAM');
    const perMv: Array<{ id: number; refreshes: number; needed: number }> = [];
    for (const u of downstream) {
      const readers = graph.downstreamClosure(u.id);
      const needed = waves.filter(([, rs]) => rs.some((r) => readers.has(Number(r.mview_id)) && r.refresh_status === 'SUCCESS')).length;
      const refreshes = hist.filter((h) => {
        if (Number(h.mview_id) !== u.id || h.refresh_status !== 'SUCCESS') return false;
        const w = /^wave-(\d+)-/.exec(h.refresh_job_id ?? '')?.[1];
        return w ? waveIds.has(w) : inWindow(h.start_time.getTime());
      }).length;
      perMv.push({ id: u.id, refreshes, needed });
    }
    const ratioOf = (p: { refreshes: number; needed: number }) => (p.needed === 0 ? (p.refreshes === 0 ? 1 : Infinity) : p.refreshes / p.needed);
    const refreshRatios = perMv.map(ratioOf);
    const worstRefresh = Math.max(...refreshRatios);
    const totalRefreshes = perMv.reduce((a, p) => a + p.refreshes, 0);
    const totalNeeded = perMv.reduce((a, p) => a + p.needed, 0);
    const windowRuns = hist.filter((h) => inWindow(h.start_time.getTime()));
    const failedRuns = windowRuns.filter((h) => h.refresh_status === 'FAILED').length;
    const seconds = (windowEnd.getTime() - windowStart.getTime()) / 1000;
    const plannerCores = cpu.byProcess.planner ?? null;
    const workerCores = procs.slice(1).reduce((a, p) => a + (cpu.byProcess[p.name] ?? 0), 0);
    const plannerMsPerWave = plannerCores === null || waves.length === 0 ? null : (plannerCores * seconds * 1000) / waves.length;
    const workerMsPerWave = waves.length === 0 ? null : (workerCores * seconds * 1000) / waves.length;
    const share = within / ratios.length;
    const lagSummary = summarize(ratios);
    const waveDur = summarize(waves.map(([, rs]) => Math.max(...rs.map((r) => (r.end_time ?? r.start_time).getTime())) - Math.min(...rs.map((r) => r.start_time.getTime()))));

    const goals: GoalCheck[] = [
      { name: 'pipeline: lag samples within target', value: share, goal: '>= 99 %', met: share >= 0.99 },
      { name: 'pipeline: refreshes of a DOWNSTREAM MV per wave that needed it (worst MV)', value: worstRefresh, goal: '<= 1.1x', met: worstRefresh <= 1.1 },
      { name: 'pipeline: planner CPU per wave vs workers\' CPU per wave', value: plannerMsPerWave !== null && workerMsPerWave ? plannerMsPerWave / workerMsPerWave : null, goal: 'informational', met: null },
    ];
    const report = [
      `${chains} chains of depth 3 and ${diamonds} diamonds (${made} MVs, ${chains + diamonds} with a target lag of ${minLag}-${maxLag} s), ` +
        `${workers} workers (concurrency ${concurrency}), a writer adding ${fmtInt(written / ((Date.now() - (end - measureS * 1000)) / 1000 + warmupS))} rows/s; ` +
        `warm-up ${warmupS} s, measured ${Math.round(seconds)} s. Load average at the end: ${loadAvg().join(' ')}.`,
      '',
      table(
        ['measure', 'value'],
        [
          ['lag samples (one per target per second)', fmtInt(ratios.length)],
          ['within target', `${(share * 100).toFixed(2)} %`],
          ['lag / target: p50, p99, max', `${lagSummary.p50.toFixed(2)}, ${lagSummary.p99.toFixed(2)}, ${lagSummary.max.toFixed(2)}`],
          ['waves started in the window', fmtInt(waves.length)],
          ['wave duration p50 / p99 / max', `${fmtMs(waveDur.p50)} / ${fmtMs(waveDur.p99)} / ${fmtMs(waveDur.max)}`],
          ['refreshes in the window (all MVs) / s', `${fmtInt(windowRuns.length)} / ${(windowRuns.length / seconds).toFixed(1)}`],
          ['failed runs', fmtInt(failedRuns)],
          ['DOWNSTREAM MVs: refreshes / waves that needed them (all)', `${fmtInt(totalRefreshes)} / ${fmtInt(totalNeeded)} = ${fmtRatio(totalRefreshes / totalNeeded, 3)}`],
          ['DOWNSTREAM MVs: worst and mean ratio', `${fmtRatio(worstRefresh, 3)}, ${fmtRatio(refreshRatios.reduce((a, b) => a + b, 0) / refreshRatios.length, 3)}`],
          ['planner CPU (cores) / per wave', `${plannerCores ?? '-'} / ${fmtMs(plannerMsPerWave)}`],
          ['workers CPU (cores) / per wave', `${workerCores.toFixed(2)} / ${fmtMs(workerMsPerWave)}`],
          ['MariaDB / Redis / everything else on the host (cores)', `${cpu.byProcess.mariadbd ?? '-'} / ${cpu.byProcess.redis ?? '-'} / ${cpu.otherCores ?? '-'}`],
        ],
      ),
    ].join('\n');
    return {
      result: { share, lag: lagSummary, waves: waves.length, waveDurationMs: waveDur, worstRefresh, totalRefreshes, totalNeeded, failedRuns, cpu, plannerMsPerWave, workerMsPerWave },
      goals,
      report,
    };
  } finally {
    writing = false;
    await writer?.catch(() => {});
    await Promise.all(procs.map((p) => stopMvsched(p)));
    for (const p of procs) if (p.errors) progress(`pipeline: ${p.name} logged ${p.errors} errors; last lines:\n${p.lines.slice(-5).join('\n')}`);
    await rt.close();
    await bdb.drop();
  }
}
