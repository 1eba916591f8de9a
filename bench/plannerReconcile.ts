// Planner reconcile cost at N = 10,000 and 100,000 MVs, against raw BullMQ addBulk of the same
// N delayed jobs in the same process.
//
// Per N: a fresh database (migrated) and a fresh BullMQ prefix; N MV metadata rows inserted
// directly; two fake live nodes (heartbeat with a long TTL, no workers) so the ring has owners.
// An unreported N = 2,000 round runs first to warm the code paths of both sides.
//   baseline        Queue.addBulk of N delayed jobs (same ids, data and delays) in chunks of 1,000
//   full (empty)    Reconciler.full() on empty node queues             goal: <= 1.5x baseline
//                   (baseline and full() alternate 3 times at N <= 20,000; medians compared)
//   full (no-op)    full() again with nothing changed (median of 3)
//   incr (no-op)    incremental() with nothing changed (median of 3)   goal: <= 0.10x first full
//   incr (1%)       next_time of 1% of the MVs moved, then incremental()
// Each pass also records Redis commands (server-side, INFO delta) and MySQL rows read.
import { Queue } from 'bullmq';
import { systemClock } from '../src/clock.js';
import { MembershipRegistry } from '../src/membership/registry.js';
import { Reconciler, SCAN_OVERLAP_MS, type ReconcileStats } from '../src/planner/reconciler.js';
import { JobPlacer } from '../src/queue/jobPlacer.js';
import { mviewJobId, mviewRingKey, nodeQueueName, SCHEDULED_REFRESH, type ScheduledRefreshData } from '../src/queue/names.js';
import { HashRing } from '../src/ring/hashRing.js';
import {
  benchLogger,
  closeRedis,
  countSentCommands,
  createBenchDatabase,
  createRedis,
  deleteKeys,
  fmtInt,
  fmtMs,
  fmtRatio,
  freshPrefix,
  insertMvMetadata,
  loadAvg,
  median,
  progress,
  sleep,
  table,
  WorkMeter,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
  type MvSpec,
  type WorkSample,
} from './support.js';

const NODES = ['bench-a', 'bench-b'];
const CHUNK = 1000;
const REPEATS = 3;
const WARMUP_N = 2000;

export interface PassResult extends WorkSample {
  stats?: Omit<ReconcileStats, 'ms'>;
  /** All repetitions' wall times when the pass was repeated (ms reports their median). */
  allMs?: number[];
}

export interface SizeResult {
  n: number;
  loadAvg: number[];
  insertMs: number;
  baselineAddBulk: PassResult;
  fullEmpty: PassResult;
  fullNoChange: PassResult;
  incrementalNoChange: PassResult;
  changedCount: number;
  incrementalChanged: PassResult;
  ratios: {
    fullOverAddBulk: number;
    fullNoChangeOverFirst: number;
    incrementalNoChangeOverFirst: number;
    incrementalChangedOverFirst: number;
  };
  checks: { jobsAfterFull: number; perQueue: Record<string, number>; misplaced: number; rescheduledOk: boolean };
}

export interface PlannerResult {
  sizes: SizeResult[];
}

function sizesFromEnv(): number[] {
  const raw = process.env.BENCH_PLANNER_SIZES;
  if (!raw) return [10_000, 100_000];
  return raw.split(',').map((s) => Number(s.trim())).filter((n) => Number.isInteger(n) && n > 0);
}

/** Count delayed jobs per node queue and how many sit in a queue other than their owner's. */
async function checkPlacement(placer: JobPlacer, ring: HashRing): Promise<SizeResult['checks']> {
  const perQueue: Record<string, number> = {};
  let total = 0;
  let misplaced = 0;
  for (const node of NODES) {
    const q = nodeQueueName(node);
    const snap = await placer.snapshot(q);
    perQueue[q] = snap.delayed.size + snap.ready.size;
    total += perQueue[q]!;
    for (const id of snap.delayed.keys()) if (ring.getNode(mviewRingKey(id)) !== node) misplaced++;
  }
  return { jobsAfterFull: total, perQueue, misplaced, rescheduledOk: false };
}

async function runSize(ctx: BenchContext, n: number, warmup = false): Promise<SizeResult> {
  const label = warmup ? `planner warm-up N=${fmtInt(n)}` : `planner N=${fmtInt(n)}`;
  const load = loadAvg();
  progress(`${label}: creating database and prefix`);
  const bdb = await createBenchDatabase(ctx, `planner_${n}`, 4);
  const prefix = freshPrefix(`planner${n}`);
  const redis = createRedis(ctx.redisUrl);
  const statsConn = createRedis(ctx.redisUrl);
  const sent = countSentCommands(redis);
  const meter = new WorkMeter(statsConn, bdb.db, sent);
  const logger = benchLogger();
  let placer = new JobPlacer(redis, prefix, logger);
  let baselineQueue: Queue | undefined;
  try {
    // Metadata: next_time an hour ahead, spread over that hour, so nothing falls due while we
    // measure (and no worker runs anyway).
    const start = Date.now();
    const specs: MvSpec[] = [];
    for (let i = 1; i <= n; i++) specs.push({ id: i, nextTime: start + 3_600_000 + Math.floor(((i - 1) * 3_600_000) / n) });
    progress(`${label}: inserting ${fmtInt(n)} MV metadata rows`);
    const ti = performance.now();
    await insertMvMetadata(bdb.db, bdb.name, specs, { label });
    const insertMs = performance.now() - ti;
    const insertedAt = Date.now();

    const registry = new MembershipRegistry(redis, prefix);
    for (const node of NODES) await registry.heartbeat(node, 24 * 3_600_000);
    const ring = new HashRing();
    ring.rebuild(await registry.live());

    // incremental() re-reads rows updated up to SCAN_OVERLAP_MS before the previous scan began.
    // The rows inserted above must fall outside that window, or the "no change" incremental
    // pass would re-examine all of them (that case is what the 1% pass measures, scaled).
    const waitMs = warmup ? 0 : insertedAt + SCAN_OVERLAP_MS + 500 - Date.now();
    if (waitMs > 0) {
      progress(`${label}: waiting ${(waitMs / 1000).toFixed(1)} s so the inserts age out of the ${SCAN_OVERLAP_MS / 1000} s incremental overlap window`);
      await sleep(waitMs);
    }

    // Baseline and full() alternate, a few rounds when they are short, so a burst of load from
    // elsewhere on the host hits both alike; the medians are compared.
    const rounds = warmup || n > 20_000 ? 1 : 3;
    const baselines: WorkSample[] = [];
    const firsts: Array<{ value: ReconcileStats; work: WorkSample }> = [];
    let reconciler: Reconciler | undefined;
    for (let round = 1; round <= rounds; round++) {
      const tag = rounds > 1 ? ` (round ${round}/${rounds})` : '';
      // Baseline: what BullMQ itself needs to hold the same N delayed jobs.
      progress(`${label}: baseline Queue.addBulk of ${fmtInt(n)} delayed jobs${tag}`);
      baselineQueue = new Queue('bench-baseline', { connection: redis, prefix });
      await baselineQueue.waitUntilReady();
      const bq = baselineQueue;
      const baseline = await meter.measure(async () => {
        const now = Date.now();
        for (let i = 0; i < specs.length; i += CHUNK) {
          await bq.addBulk(
            specs.slice(i, i + CHUNK).map((s) => ({
              name: SCHEDULED_REFRESH,
              data: { mviewId: s.id, dueAt: s.nextTime } satisfies ScheduledRefreshData,
              opts: { removeOnComplete: true, removeOnFail: true, jobId: mviewJobId(s.id), timestamp: now, delay: Math.max(0, s.nextTime - now) },
            })),
          );
        }
      });
      baselines.push(baseline.work);
      progress(`${label}: baseline took ${fmtMs(baseline.work.ms)}; removing its jobs`);
      await baselineQueue.close();
      baselineQueue = undefined;
      await deleteKeys(redis, `${prefix}:bench-baseline:*`);

      if (reconciler) {
        // Empty the node queues again and start from a new Reconciler (and placer).
        await placer.close();
        placer = new JobPlacer(redis, prefix, logger);
        for (const node of NODES) await deleteKeys(redis, `${prefix}:${nodeQueueName(node)}:*`);
      }
      const pl = placer;
      reconciler = new Reconciler({
        db: bdb.db,
        placer: pl,
        ring,
        clock: systemClock,
        logger,
        knownQueues: () => registry.nodeQueues(),
        retireQueue: async (q) => {
          await pl.obliterate(q);
          await registry.retireNodeQueue(q);
        },
      });
      progress(`${label}: Reconciler.full() on empty queues${tag}`);
      const r = reconciler;
      const first = await meter.measure(() => r.full());
      firsts.push(first);
      progress(`${label}: full() took ${fmtMs(first.work.ms)} (${first.value.added} added)`);
    }
    const mid = <T extends { ms: number }>(xs: T[]): T => [...xs].sort((a, b) => a.ms - b.ms)[Math.floor(xs.length / 2)]!;
    const baseline = { work: { ...mid(baselines), allMs: baselines.map((b) => b.ms) } };
    const firstMid = mid(firsts.map((f) => ({ ...f, ms: f.work.ms })));
    const first = { value: firstMid.value, work: { ...firstMid.work, allMs: firsts.map((f) => f.work.ms) } };
    const rec = reconciler!;
    const checks = await checkPlacement(placer, ring);

    const repeat = async (what: string, fn: () => Promise<ReconcileStats>): Promise<PassResult> => {
      const runs: Array<{ value: ReconcileStats; work: WorkSample }> = [];
      for (let r = 0; r < REPEATS; r++) runs.push(await meter.measure(fn));
      const allMs = runs.map((x) => x.work.ms);
      const mid = [...runs].sort((a, b) => a.work.ms - b.work.ms)[Math.floor(runs.length / 2)]!;
      progress(`${label}: ${what}: ${allMs.map((m) => fmtMs(m)).join(', ')}`);
      const { ms: _ms, ...stats } = mid.value;
      return { ...mid.work, ms: median(allMs), allMs, stats };
    };
    const fullNoChange = await repeat('no-change full()', () => rec.full());
    const incrNoChange = await repeat('no-change incremental()', () => rec.incremental());

    // 1% changed: move next_time of every 100th MV by a minute.
    const changedIds = specs.filter((s) => s.id % 100 === 0).map((s) => s.id);
    await bdb.db('mvs_mview_refresh_info')
      .whereIn('mview_id', changedIds)
      .update({ next_time: bdb.db.raw('next_time + INTERVAL 60 SECOND'), updated_at: bdb.db.fn.now(6) });
    progress(`${label}: moved next_time of ${fmtInt(changedIds.length)} MVs; incremental()`);
    const changed = await meter.measure(() => rec.incremental());
    progress(`${label}: 1% incremental() took ${fmtMs(changed.work.ms)} (${changed.value.rescheduled} rescheduled)`);
    // Spot check: the moved jobs now carry the new due time.
    const probe = changedIds[0]!;
    const owner = nodeQueueName(ring.getNode(mviewRingKey(probe))!);
    const snap = await placer.snapshot(owner);
    const want = specs[probe - 1]!.nextTime + 60_000;
    checks.rescheduledOk = Math.abs((snap.delayed.get(probe) ?? 0) - want) <= 100;

    const strip = (x: { value: ReconcileStats; work: PassResult }): PassResult => {
      const { ms: _ms, ...stats } = x.value;
      return { ...x.work, stats };
    };
    const fullEmpty = strip(first);
    return {
      n,
      loadAvg: load,
      insertMs,
      baselineAddBulk: baseline.work,
      fullEmpty,
      fullNoChange,
      incrementalNoChange: incrNoChange,
      changedCount: changedIds.length,
      incrementalChanged: strip(changed),
      ratios: {
        fullOverAddBulk: fullEmpty.ms / baseline.work.ms,
        fullNoChangeOverFirst: fullNoChange.ms / fullEmpty.ms,
        incrementalNoChangeOverFirst: incrNoChange.ms / fullEmpty.ms,
        incrementalChangedOverFirst: changed.work.ms / fullEmpty.ms,
      },
      checks,
    };
  } finally {
    progress(`${label}: cleaning up (database ${bdb.name}, prefix ${prefix})`);
    await baselineQueue?.close().catch(() => {});
    await placer.close();
    await deleteKeys(statsConn, `${prefix}:*`).catch(() => 0);
    await closeRedis(redis);
    await closeRedis(statsConn);
    await bdb.drop();
  }
}

function report(r: PlannerResult): string {
  const out: string[] = [];
  for (const s of r.sizes) {
    out.push(`### N = ${fmtInt(s.n)} MVs  (metadata insert ${fmtMs(s.insertMs)}, load avg ${s.loadAvg.join(' ')})`);
    out.push('');
    const row = (name: string, p: PassResult, ratio: string) => [
      p.allMs && p.allMs.length > 1 ? `${name} (median of ${p.allMs.length})` : name,
      fmtMs(p.ms),
      ratio,
      fmtInt(p.redisCommands),
      fmtInt(p.redisSent),
      fmtInt(p.mysqlRowsRead),
      p.stats ? `${p.stats.examined}/${p.stats.added}/${p.stats.rescheduled}/${p.stats.removed}` : '-',
      p.redisTop.slice(0, 3).map(([c, k]) => `${c} ${fmtInt(k)}`).join(', '),
    ];
    out.push(
      table(
        ['pass', 'time', 'ratio', 'redis cmds (server)', 'cmds sent', 'mysql rows read', 'exam/add/resched/rm', 'top redis commands'],
        [
          row('baseline: Queue.addBulk x N', s.baselineAddBulk, '1.00x (baseline)'),
          row('full() on empty queues', s.fullEmpty, `${fmtRatio(s.ratios.fullOverAddBulk)} of addBulk`),
          row('full(), no change', s.fullNoChange, `${fmtRatio(s.ratios.fullNoChangeOverFirst, 3)} of 1st full`),
          row('incremental(), no change', s.incrementalNoChange, `${fmtRatio(s.ratios.incrementalNoChangeOverFirst, 3)} of 1st full`),
          row(`incremental(), ${fmtInt(s.changedCount)} changed (1%)`, s.incrementalChanged, `${fmtRatio(s.ratios.incrementalChangedOverFirst, 3)} of 1st full`),
        ],
      ),
    );
    out.push('');
    const per = s.incrementalChanged.redisCommands / Math.max(1, s.changedCount);
    out.push(
      `checks: ${fmtInt(s.checks.jobsAfterFull)} jobs after full() (${Object.entries(s.checks.perQueue).map(([q, k]) => `${q} ${fmtInt(k)}`).join(', ')}), ` +
        `${s.checks.misplaced} misplaced; moved job carries its new due time: ${s.checks.rescheduledOk ? 'yes' : 'NO'}; ` +
        `1% pass: ${per.toFixed(1)} Redis commands and ${(s.incrementalChanged.redisSent / Math.max(1, s.changedCount)).toFixed(1)} client requests per changed MV`,
    );
    out.push('');
  }
  return out.join('\n');
}

export async function runPlannerReconcile(ctx: BenchContext): Promise<BenchOutcome<PlannerResult>> {
  // One small unreported round first, so neither the baseline nor full() at the first size pays
  // for cold code (JIT, BullMQ script loading, connection set-up) that the other then skips.
  await runSize(ctx, WARMUP_N, true);
  const sizes: SizeResult[] = [];
  for (const n of sizesFromEnv()) sizes.push(await runSize(ctx, n));
  const result: PlannerResult = { sizes };
  const goals: GoalCheck[] = [];
  for (const s of sizes) {
    goals.push({
      name: `planner N=${fmtInt(s.n)}: full() / addBulk`,
      value: s.ratios.fullOverAddBulk,
      goal: '<= 1.5x',
      met: s.ratios.fullOverAddBulk <= 1.5,
    });
    goals.push({
      name: `planner N=${fmtInt(s.n)}: no-change incremental() / first full()`,
      value: s.ratios.incrementalNoChangeOverFirst,
      goal: '<= 0.10x',
      met: s.ratios.incrementalNoChangeOverFirst <= 0.1,
    });
  }
  return { result, goals, report: report(result) };
}
