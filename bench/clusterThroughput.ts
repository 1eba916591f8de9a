// The 8-worker part of `npm run bench -- cluster` (bench/redisCluster.ts): 20,000 trivial MVs,
// all due within a few seconds, worked off by 8 `mvsched worker` processes for a fixed window,
// once on the single Redis and once (or twice) on the Redis Cluster. Measured: refreshes/s, and
// per Redis master its CPU time (INFO cpu) and commands (INFO stats) over the window, so the
// busiest master can be compared with the mean. Node queues are `{node-<id>}` on a cluster, so
// which master carries which worker's queue follows from the worker ids' hash slots; the report
// names them.
import type { Cluster } from 'ioredis';
import { systemClock } from '../src/clock.js';
import { createDb } from '../src/db/connect.js';
import { MembershipRegistry } from '../src/membership/registry.js';
import { Planner } from '../src/planner/planner.js';
import { bullQueueName, nodeQueueName } from '../src/queue/names.js';
import { dataNodes, isCluster, type RedisClient } from '../src/queue/redis.js';
import {
  benchLogger,
  benchRedis,
  closeRedis,
  cpuSnapshot,
  cpuUse,
  deleteKeys,
  fmtInt,
  freshPrefix,
  insertMvMetadata,
  median,
  parallel,
  progress,
  redisEnv,
  serverPids,
  sleep,
  spawnMvsched,
  stopMvsched,
  type BenchContext,
  type BenchDatabase,
  type MvschedProc,
} from './support.js';

const LEAD_MS = 15_000;
const SETTLE_MS = 5_000;

export interface MasterFigures {
  master: string;
  /** Worker node queues (`{node-<id>}`) whose slot this master serves. */
  nodeQueues: string[];
  /** Also holds mvsched's own keys ({mvs}). */
  ownKeys: boolean;
  cpuSeconds: number;
  commands: number;
  cpuOverMean: number;
  commandsOverMean: number;
}

export interface ThroughputRun {
  label: string;
  cluster: boolean;
  workers: string[];
  concurrency: number;
  mvs: number;
  windowS: number;
  refreshes: number;
  perS: number;
  /** Median refresh duration (end - start) and wait (start - scheduled) of the window's runs. */
  durationP50Ms: number;
  waitP50Ms: number;
  failed: number;
  masters: MasterFigures[];
  /** Cores used over the window: the 8 workers together, every redis-server, mariadbd, the rest of the host. */
  cores: { workers: number | null; redis: number | null; mariadbd: number | null; bench: number | null; other: number | null };
  /** Busiest master's CPU over the mean of all masters (1.0 on a single Redis). */
  maxCpuOverMean: number;
  workerErrors: number;
}

interface RedisUsage {
  cpu: number;
  commands: number;
}

async function usageByMaster(redis: RedisClient): Promise<Map<string, RedisUsage>> {
  const out = new Map<string, RedisUsage>();
  for (const node of dataNodes(redis)) {
    const text = (await node.call('INFO', 'cpu', 'stats')) as string;
    const num = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(text)?.[1] ?? NaN);
    out.set(`${node.options.host}:${node.options.port}`, { cpu: num('used_cpu_sys') + num('used_cpu_user'), commands: num('total_commands_processed') });
  }
  return out;
}

/** Slot ranges per master (`host:port`), from CLUSTER SLOTS. */
export async function slotMap(cluster: Cluster): Promise<Array<{ from: number; to: number; master: string }>> {
  const rows = (await cluster.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>;
  return rows.map(([from, to, [host, port]]) => ({ from, to, master: `${host}:${port}` }));
}

/** The master serving `key` on a cluster. */
export async function masterOf(cluster: Cluster, key: string): Promise<string> {
  const slot = Number(await cluster.call('CLUSTER', 'KEYSLOT', key));
  const hit = (await slotMap(cluster)).find((r) => slot >= r.from && slot <= r.to);
  if (!hit) throw new Error(`no master serves slot ${slot}`);
  return hit.master;
}

/**
 * `count` worker ids `<stem>-<k>` whose node queues spread over the masters as evenly as
 * possible (counts differing by at most one): what an operator can do by choosing MVS_NODE_ID.
 */
export async function balancedIds(cluster: Cluster, stem: string, count: number): Promise<string[]> {
  const masters = [...new Set((await slotMap(cluster)).map((r) => r.master))];
  const base = Math.floor(count / masters.length);
  let extra = count % masters.length; // this many masters take one more
  const per = new Map(masters.map((m) => [m, 0]));
  const out: string[] = [];
  for (let k = 1; out.length < count && k < 10_000; k++) {
    const id = `${stem}-${k}`;
    const m = await masterOf(cluster, bullQueueName(nodeQueueName(id), true));
    const n = per.get(m)!;
    if (n < base || (n === base && extra > 0)) {
      if (n === base) extra--;
      per.set(m, n + 1);
      out.push(id);
    }
  }
  return out;
}

/** Create `mvs` MVs (metadata and target tables) once; each run re-times them. */
export async function seedThroughputMvs(bdb: BenchDatabase, mvs: number): Promise<number[]> {
  const ids = Array.from({ length: mvs }, (_, i) => i + 1);
  let made = 0;
  let last = Date.now();
  await parallel(ids, 4, async (id) => {
    await bdb.db.raw('CREATE TABLE ??.?? (x INT NOT NULL)', [bdb.name, `mv_${id}`]);
    made++;
    if (Date.now() - last > 10_000) {
      last = Date.now();
      progress(`cluster throughput: ${fmtInt(made)} / ${fmtInt(mvs)} target tables`);
    }
  });
  await insertMvMetadata(bdb.db, bdb.name, ids.map((id) => ({ id, nextTime: Date.now() + 86_400_000 })), { label: 'cluster throughput' });
  return ids;
}

async function startWorkers(ctx: BenchContext, bdb: BenchDatabase, prefix: string, ids: string[], concurrency: number, redis: RedisClient): Promise<MvschedProc[]> {
  const env = { DATABASE_URL: bdb.url, ...redisEnv(ctx), MVS_PREFIX: prefix, LOG_LEVEL: 'warn', MVS_WORKER_CONCURRENCY: String(concurrency) };
  const workers = ids.map((id) => spawnMvsched(id, ['worker', '--node-id', id], env));
  const registry = new MembershipRegistry(redis, prefix);
  const deadline = Date.now() + 90_000;
  for (;;) {
    const live = await registry.live();
    if (ids.every((n) => live.includes(n))) return workers;
    const dead = workers.find((w) => w.child.exitCode !== null);
    if (dead) throw new Error(`worker ${dead.name} exited during start-up:\n${dead.lines.join('\n')}`);
    if (Date.now() > deadline) throw new Error('workers did not join the ring within 90 s');
    await sleep(250);
  }
}

/** One window: every MV due within the first 5 s, 8 workers refreshing for `windowS`. */
export async function runThroughput(
  ctx: BenchContext,
  bdb: BenchDatabase,
  mvIds: number[],
  opts: { label: string; workerIds: string[]; concurrency: number; windowS: number; redisPids?: Record<string, number> },
): Promise<ThroughputRun> {
  const label = `cluster throughput, ${opts.label}`;
  const prefix = freshPrefix('cltp');
  const redis = benchRedis(ctx);
  const plannerRedis = benchRedis(ctx);
  const plannerSub = benchRedis(ctx);
  const plannerDb = createDb(bdb.url, { poolMax: 4 });
  let workers: MvschedProc[] = [];
  let planner: Planner | undefined;
  try {
    progress(`${label}: starting ${opts.workerIds.length} workers (concurrency ${opts.concurrency})`);
    workers = await startWorkers(ctx, bdb, prefix, opts.workerIds, opts.concurrency, redis);
    await sleep(1500); // ring views converge (membership poll 1 s)
    const base = Date.now() + LEAD_MS;
    // All due within 5 s: a backlog far larger than the window can work off, so the window
    // measures capacity, with every worker busy.
    await bdb.db.raw('UPDATE mvs_mview_refresh_info SET next_time = DATE_ADD(?, INTERVAL (mview_id % 5000) * 1000 MICROSECOND), updated_at = NOW(6)', [new Date(base)]);
    await bdb.db('mvs_mviews').update({ refresh_start: new Date(base) });
    planner = new Planner({ db: plannerDb, redis: plannerRedis, subscriber: plannerSub, logger: benchLogger(), clock: systemClock, prefix, reconcileIntervalS: 30, leaseTtlMs: 10_000 });
    await planner.start();
    while (planner.passCount < 1) await sleep(50);
    // The window opens a few seconds after the first due time (or the end of the placement, on
    // a host so busy that it ran past it): by then the workers are busy and the first burst of
    // promotions from delayed to waiting is behind, the same for every run.
    const opens = Math.max(base, Date.now()) + SETTLE_MS;
    progress(`${label}: ${fmtInt(mvIds.length)} jobs placed; first due in ${((base - Date.now()) / 1000).toFixed(1)} s; measuring ${opts.windowS} s from ${((opens - base) / 1000).toFixed(1)} s after that`);
    await sleep(opens - Date.now());
    const pids: Record<string, number | undefined> = {
      bench: process.pid,
      ...Object.fromEntries(workers.map((w) => [`worker ${w.name}`, w.child.pid])),
      ...(await serverPids(bdb.db, redis)),
      ...Object.fromEntries(Object.entries(opts.redisPids ?? {}).map(([port, pid]) => [`redis ${port}`, pid])),
    };
    const c0 = cpuSnapshot(pids);
    const u0 = await usageByMaster(redis);
    const t0 = Date.now();
    await sleep(opts.windowS * 1000);
    const u1 = await usageByMaster(redis);
    const t1 = Date.now();
    const cpu = cpuUse(c0, cpuSnapshot(pids));
    const sum = (pred: (name: string) => boolean) => {
      const xs = Object.entries(cpu.byProcess).filter(([k]) => pred(k)).map(([, v]) => v);
      return xs.some((v) => v === null) || xs.length === 0 ? null : Math.round(xs.reduce((a, v) => a! + v!, 0)! * 100) / 100;
    };
    const [rows] = (await bdb.db.raw(
      "SELECT COALESCE(SUM(refresh_status = 'SUCCESS'), 0) AS ok, COALESCE(SUM(refresh_status = 'FAILED'), 0) AS failed FROM mvs_mview_refresh_hist " +
        "WHERE refresh_trigger = 'SCHEDULED' AND start_time >= ? AND start_time < ?",
      [new Date(t0), new Date(t1)],
    )) as [Array<{ ok: number | string; failed: number | string }>];
    const refreshes = Number(rows[0]!.ok);
    const runs = (await bdb.db('mvs_mview_refresh_hist')
      .where({ refresh_trigger: 'SCHEDULED', refresh_status: 'SUCCESS' })
      .where('start_time', '>=', new Date(t0))
      .where('start_time', '<', new Date(t1))
      .select('scheduled_time', 'start_time', 'end_time')) as Array<{ scheduled_time: Date; start_time: Date; end_time: Date }>;
    const durationP50Ms = median(runs.map((r) => r.end_time.getTime() - r.start_time.getTime()));
    const waitP50Ms = median(runs.map((r) => r.start_time.getTime() - r.scheduled_time.getTime()));

    const cluster = isCluster(redis);
    const queueMaster = new Map<string, string>();
    let ownMaster: string | undefined;
    if (cluster) {
      for (const id of opts.workerIds) queueMaster.set(id, await masterOf(redis as Cluster, bullQueueName(nodeQueueName(id), true)));
      ownMaster = await masterOf(redis as Cluster, '{mvs}');
    }
    const deltas = [...u1].map(([m, b]) => ({ m, cpu: b.cpu - u0.get(m)!.cpu, commands: b.commands - u0.get(m)!.commands }));
    const meanCpu = deltas.reduce((a, d) => a + d.cpu, 0) / deltas.length;
    const meanCmd = deltas.reduce((a, d) => a + d.commands, 0) / deltas.length;
    const masters: MasterFigures[] = deltas.map((d) => ({
      master: d.m,
      nodeQueues: opts.workerIds.filter((id) => !cluster || queueMaster.get(id) === d.m),
      ownKeys: !cluster || ownMaster === d.m,
      cpuSeconds: Math.round(d.cpu * 1000) / 1000,
      commands: d.commands,
      cpuOverMean: d.cpu / meanCpu,
      commandsOverMean: d.commands / meanCmd,
    }));
    const run: ThroughputRun = {
      label: opts.label,
      cluster,
      workers: opts.workerIds,
      concurrency: opts.concurrency,
      mvs: mvIds.length,
      windowS: Math.round((t1 - t0) / 100) / 10,
      refreshes,
      perS: refreshes / ((t1 - t0) / 1000),
      durationP50Ms,
      waitP50Ms,
      failed: Number(rows[0]!.failed),
      masters,
      maxCpuOverMean: Math.max(...masters.map((m) => m.cpuOverMean)),
      cores: {
        workers: sum((k) => k.startsWith('worker ')),
        redis: sum((k) => k.startsWith('redis')),
        mariadbd: sum((k) => k === 'mariadbd'),
        bench: sum((k) => k === 'bench'),
        other: cpu.otherCores,
      },
      workerErrors: workers.reduce((a, w) => a + w.errors, 0),
    };
    progress(`${label}: ${fmtInt(refreshes)} refreshes (${run.perS.toFixed(1)}/s); busiest master ${run.maxCpuOverMean.toFixed(2)}x the mean CPU`);
    return run;
  } finally {
    // Workers first: while they work off the backlog every run moves a refresh-info row, and
    // each planner pass then has that much more to look at before close() can return.
    await Promise.allSettled(workers.map(stopMvsched));
    await planner?.close().catch(() => {});
    await plannerDb.destroy().catch(() => {});
    await Promise.allSettled([plannerRedis, plannerSub].map(closeRedis));
    await deleteKeys(redis, `${prefix}:*`).catch(() => 0);
    await closeRedis(redis);
  }
}
