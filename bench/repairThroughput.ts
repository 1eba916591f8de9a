// Version-repair throughput and refreshes avoided (DESIGN.md §2 "Base-table versions, freshness
// and repair").
//
// 1. Repairs/s: `repair` request jobs (one compaction step each: one partition, lastVersion ->
//    lastVersion + 1) put on the `requests` queue all at once, consumed by 1, 2 and 4
//    `mvsched worker` processes (MVS_WORKER_CONCURRENCY, default 4). Each request fans out to
//    the MVs that read its table (here one: every MV reads a base table of its own); the worker
//    applies them through its repair batcher (src/repair/batcher.ts: per-MV locks, one
//    transaction and one conditional UPDATE of meta_version per batch). Timed from the first
//    enqueue until every request is done and the repair queue is empty; then checked: one
//    edit-log row and one meta_version step per repair, every map entry at its new version.
//    - contention: 10 MVs, 400 partitions each (every MV is repaired 400 times);
//    - spread: 1,000 MVs, 4 partitions each.
//    Steps are independent (one per partition), so no repair ever waits for an earlier link of
//    a chain: this measures the repair path, not the chain-retry backoff.
//    BENCH_BEFORE_DIR=<checkout of an earlier mvsched>: the same variants also run with that
//    checkout's workers, each right before this checkout's (before/after in one run).
//    Baselines in this process (no queues): Repairer.repair() (one MV per lock + transaction),
//    1 and 4 in flight, and RepairBatcher.submit(), 64 in flight.
// 2. Compaction storm: 100 MVs over 100 base tables of 100 partitions, reported (data changed)
//    and version-mapped as a refresh leaves them. 10,000 partition bumps without a data change,
//    as 100 `report-versions` jobs of 100 partitions; the workers repair the maps. Then every MV
//    is made due at once (next_time = now; a `mvsched planner` process moves the jobs) and the
//    scheduled runs are counted: SKIPPED (refresh avoided) vs SUCCESS. Control: the same again
//    with dataChanged=true, where every run must be a SUCCESS.
//
// Metadata is written straight into the tables (no DDL, no builds). Each variant gets its own
// database and BullMQ prefix, removed afterwards.
//
// Alone: DATABASE_URL=mysql://... REDIS_URL=redis://... npx tsx bench/repairThroughput.ts
// (without them it starts throwaway local servers, like `npm run bench`).
// From bench/run.ts: runRepairThroughput(ctx) returns { result, goals, report }.
// Env: BENCH_REPAIR_STEPS=4000 BENCH_REPAIR_WORKERS=1,2,4 BENCH_REPAIR_CONCURRENCY=4
//      BENCH_REPAIR_STORM_MVS=100 BENCH_REPAIR_STORM_PARTS=100 BENCH_REPAIR_STORM_WORKERS=2
//      BENCH_REPAIR_MD=/tmp/repair-bench.md  BENCH_REPAIR_ONLY=throughput|storm  BENCH_BEFORE_DIR=
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redlock } from '@sesamecare-oss/redlock';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { startMariadb, startRedis } from '../scripts/localServers.mjs';
import { systemClock } from '../src/clock.js';
import { createDb } from '../src/db/connect.js';
import { MembershipRegistry } from '../src/membership/registry.js';
import { JobPlacer } from '../src/queue/jobPlacer.js';
import { nodeQueueName, redisKeys, REPAIR_QUEUE, REQUESTS_QUEUE } from '../src/queue/names.js';
import { RepairBatcher } from '../src/repair/batcher.js';
import { REPAIRS_IN_FLIGHT } from '../src/worker/repairProcessor.js';
import { Repairer } from '../src/repair/repairer.js';
import { mviewFreshness } from '../src/versions/freshness.js';
import {
  benchLogger,
  closeRedis,
  cpuSnapshot,
  cpuUse,
  createBenchDatabase,
  createRedis,
  deleteKeys,
  fmtInt,
  fmtMs,
  fmtRatio,
  freshPrefix,
  insertMvMetadata,
  loadAvg,
  machineInfo,
  progress,
  serverPids,
  sleep,
  table,
  type BenchContext,
  type BenchDatabase,
  type BenchOutcome,
  type CpuUse,
  type GoalCheck,
  spawnMvsched,
  stopMvsched,
  type MvschedProc,
  beforeCheckout,
} from './support.js';

const T0 = 1_767_225_600_000; // 2026-01-01, base of every versionTime

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  const n = v ? Number(v) : dflt;
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive whole number (got ${JSON.stringify(v)})`);
  return n;
}

function envList(name: string, dflt: number[]): number[] {
  const v = process.env[name];
  if (!v) return dflt;
  const out = v.split(',').map((x) => Number(x.trim()));
  if (out.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`${name} must be a list of positive whole numbers (got ${JSON.stringify(v)})`);
  return out;
}

export interface RepairBenchOptions {
  steps: number;
  workers: number[];
  concurrency: number;
  contentionMvs: number;
  spreadMvs: number;
  stormMvs: number;
  stormParts: number;
  stormWorkers: number;
  only?: 'throughput' | 'storm';
}

export function optionsFromEnv(): RepairBenchOptions {
  const only = process.env.BENCH_REPAIR_ONLY;
  if (only !== undefined && only !== 'throughput' && only !== 'storm') throw new Error('BENCH_REPAIR_ONLY must be throughput or storm');
  return {
    steps: envInt('BENCH_REPAIR_STEPS', 4000),
    workers: envList('BENCH_REPAIR_WORKERS', [1, 2, 4]),
    concurrency: envInt('BENCH_REPAIR_CONCURRENCY', 4),
    contentionMvs: 10,
    spreadMvs: 1000,
    stormMvs: envInt('BENCH_REPAIR_STORM_MVS', 100),
    stormParts: envInt('BENCH_REPAIR_STORM_PARTS', 100),
    stormWorkers: envInt('BENCH_REPAIR_STORM_WORKERS', 2),
    ...(only ? { only } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Processes

type Proc = MvschedProc;

const stopProc = stopMvsched;

async function startWorkers(redis: Redis, prefix: string, ids: string[], env: Record<string, string>, bin?: string): Promise<Proc[]> {
  const procs = ids.map((id) => spawnMvsched(`worker ${id}`, ['worker', '--node-id', id], env, bin));
  const registry = new MembershipRegistry(redis, prefix);
  const deadline = Date.now() + 90_000;
  for (;;) {
    const live = await registry.live();
    if (ids.every((id) => live.includes(id))) break;
    const dead = procs.find((p) => p.child.exitCode !== null);
    if (dead) throw new Error(`${dead.name} exited during start-up:\n${dead.lines.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`workers ${ids.join(', ')} did not join the ring within 90 s`);
    await sleep(200);
  }
  // Let every worker's ring view see the others (membership poll is 1 s).
  await sleep(1500);
  return procs;
}

// ---------------------------------------------------------------------------------------------
// Metadata

interface Seed {
  mvs: number;
  partsPerMv: number;
  version: number;
}

/**
 * MVs 1..mvs: mv_i reads bt_i with partitions p0..p(k-1), all reported at `version`
 * (data changed) and in mv_i's version map as a refresh leaves them. Due in an hour.
 */
export async function seed(bdb: BenchDatabase, s: Seed, label: string): Promise<void> {
  const { db, name } = bdb;
  const ids = Array.from({ length: s.mvs }, (_, i) => i + 1);
  const later = Date.now() + 3_600_000;
  await insertMvMetadata(db, name, ids.map((id) => ({ id, nextTime: later })), { label });
  for (let i = 0; i < ids.length; i += 1000) {
    await db('mvs_mview_base_tables').insert(ids.slice(i, i + 1000).map((id) => ({ mview_id: id, base_table_schema: name, base_table_name: `bt_${id}` })));
  }
  const parts: Array<{ id: number; p: number }> = [];
  for (const id of ids) for (let p = 0; p < s.partsPerMv; p++) parts.push({ id, p });
  for (let i = 0; i < parts.length; i += 2000) {
    const chunk = parts.slice(i, i + 2000);
    await db('mvs_base_partitions').insert(
      chunk.map(({ id, p }) => ({
        base_table_schema: name,
        base_table_name: `bt_${id}`,
        partition_name: `p${p}`,
        partition_id: id * 10_000 + p,
        version: s.version,
        version_time: T0 + p,
        data_version: s.version,
        updated_at: new Date(),
      })),
    );
    await db('mvs_mview_version_map').insert(
      chunk.map(({ id, p }) => ({
        mview_id: id,
        base_table_schema: name,
        base_table_name: `bt_${id}`,
        partition_name: `p${p}`,
        partition_id: id * 10_000 + p,
        version: s.version,
        last_refresh_time: T0 + p,
        ext_last_file_modified_time: -1,
        file_number: -1,
      })),
    );
  }
}

async function countWhere(bdb: BenchDatabase, tableName: string, where: Record<string, unknown> = {}): Promise<number> {
  const row = (await bdb.db(tableName).where(where).count({ n: '*' }).first()) as { n: number | string };
  return Number(row.n);
}

/** Until every request is done (or failed) and the repair queue holds nothing left to do. */
async function drained(requests: Queue, repair: Queue, expected: number, timeoutMs: number): Promise<{ completed: number; failed: number }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await requests.getJobCounts('completed', 'failed');
    if (r.completed! + r.failed! >= expected) {
      const c = await repair.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
      if (Object.values(c).every((n) => n === 0)) return { completed: r.completed!, failed: r.failed! };
    }
    if (Date.now() > deadline) throw new Error(`not drained after ${timeoutMs} ms: requests ${JSON.stringify(r)}`);
    await sleep(50);
  }
}

interface Harness {
  bdb: BenchDatabase;
  prefix: string;
  redis: Redis;
  requests: Queue;
  repair: Queue;
  env: Record<string, string>;
  procs: Proc[];
  pids(): Record<string, number | undefined>;
}

async function withHarness<T>(ctx: BenchContext, tag: string, concurrency: number, fn: (h: Harness) => Promise<T>): Promise<T> {
  const bdb = await createBenchDatabase(ctx, tag, 8);
  const prefix = freshPrefix(tag);
  const redis = createRedis(ctx.redisUrl);
  const requests = new Queue(REQUESTS_QUEUE, { connection: redis, prefix });
  const repair = new Queue(REPAIR_QUEUE, { connection: redis, prefix });
  const servers = await serverPids(bdb.db, redis);
  const h: Harness = {
    bdb,
    prefix,
    redis,
    requests,
    repair,
    env: { DATABASE_URL: bdb.url, REDIS_URL: ctx.redisUrl, MVS_PREFIX: prefix, LOG_LEVEL: 'warn', MVS_WORKER_CONCURRENCY: String(concurrency) },
    procs: [],
    pids: () => ({
      ...Object.fromEntries(h.procs.map((p) => [p.name, p.child.pid])),
      mariadbd: servers.mariadbd,
      redis: servers.redis,
    }),
  };
  try {
    return await fn(h);
  } finally {
    await Promise.all(h.procs.map(stopProc));
    const bad = h.procs.filter((p) => p.errors > 0);
    for (const p of bad) progress(`${tag}: ${p.name} logged ${p.errors} errors, last lines:\n${p.lines.slice(-5).join('\n')}`);
    await requests.close();
    await repair.close();
    await deleteKeys(redis, `${prefix}:*`).catch(() => 0);
    await closeRedis(redis);
    const mvTables = (await bdb.db('information_schema.tables').where({ table_schema: bdb.name }).whereNot('table_name', 'like', 'mvs\\_%').pluck('table_name').catch(() => [])) as string[];
    await bdb.drop({ tables: mvTables }).catch((err: unknown) => progress(`${tag}: cleanup failed: ${String(err)}`));
  }
}

function oursAndOthers(cpu: CpuUse): { ours: number; mvsched: number; other: number | null } {
  let ours = 0;
  let mvsched = 0;
  for (const [name, cores] of Object.entries(cpu.byProcess)) {
    if (cores === null) continue;
    ours += cores;
    if (name.startsWith('worker') || name === 'planner') mvsched += cores;
  }
  return { ours: Math.round(ours * 100) / 100, mvsched: Math.round(mvsched * 100) / 100, other: cpu.otherCores };
}

// ---------------------------------------------------------------------------------------------
// 1. Throughput

export interface ThroughputRow {
  /** Which mvsched: this checkout, or BENCH_BEFORE_DIR's. */
  code: 'before' | 'after';
  scenario: 'contention' | 'spread';
  mvs: number;
  workers: number;
  steps: number;
  ms: number;
  repairsPerSec: number;
  /** vs 1 worker, same scenario and code. */
  ratio: number | null;
  /** Average cores: mvsched workers, all our processes incl. servers, everything else on the host. */
  workerCores: number;
  serverAndWorkerCores: number;
  otherCores: number | null;
  /** CPU time per repair (ms): worker processes, and workers + MariaDB + Redis. */
  workerCpuMsPerRepair: number;
  totalCpuMsPerRepair: number;
  warnings: number;
}

async function throughputVariant(
  ctx: BenchContext,
  scenario: 'contention' | 'spread',
  mvs: number,
  steps: number,
  nWorkers: number,
  concurrency: number,
  code: ThroughputRow['code'] = 'after',
): Promise<Omit<ThroughputRow, 'ratio'>> {
  const label = `repair ${scenario} ${fmtInt(mvs)} MVs x${nWorkers}${code === 'before' ? ' (before)' : ''}`;
  const partsPerMv = Math.ceil(steps / mvs);
  const bin = code === 'before' ? beforeCheckout()!.bin : undefined;
  return withHarness(ctx, `repair_${scenario}_${nWorkers}`, concurrency, async (h) => {
    progress(`${label}: seeding ${fmtInt(mvs)} MVs x ${partsPerMv} partitions`);
    await seed(h.bdb, { mvs, partsPerMv, version: 1 }, label);
    progress(`${label}: starting ${nWorkers} worker process(es), concurrency ${concurrency}`);
    h.procs.push(...(await startWorkers(h.redis, h.prefix, Array.from({ length: nWorkers }, (_, i) => `w${i + 1}`), h.env, bin)));

    // Step k: MV (k mod mvs), partition floor(k / mvs): round-robin over the MVs.
    const jobs = Array.from({ length: steps }, (_, k) => {
      const id = (k % mvs) + 1;
      const p = Math.floor(k / mvs);
      return {
        name: 'repair',
        data: {
          table: `${h.bdb.name}.bt_${id}`,
          partitions: [{ partitionId: id * 10_000 + p, partitionName: `p${p}`, lastVersion: 1, newVersion: 2, newVersionTime: T0 + 1_000 + p, lastVersionTime: T0 + p }],
        },
      };
    });
    const cpu0 = cpuSnapshot(h.pids());
    const t = performance.now();
    for (let i = 0; i < jobs.length; i += 1000) await h.requests.addBulk(jobs.slice(i, i + 1000));
    const counts = await drained(h.requests, h.repair, jobs.length, 600_000);
    const ms = performance.now() - t;
    const cpu = cpuUse(cpu0, cpuSnapshot(h.pids()));

    const failedRepairs = (await h.repair.getJobCounts('failed')).failed!;
    const edits = await countWhere(h.bdb, 'mvs_edit_log', { op_type: 'REPAIR_VERSION_MAP' });
    const moved = await countWhere(h.bdb, 'mvs_mview_version_map', { version: 2 });
    const fence = (await h.bdb.db('mvs_mviews').sum({ s: 'meta_version' }).first()) as { s: number | string };
    if (counts.failed || failedRepairs || edits !== steps || moved !== steps || Number(fence.s) !== steps) {
      throw new Error(
        `${label}: wrong result: ${counts.failed} requests and ${failedRepairs} repairs failed; ${edits} edit-log rows, ` +
          `${moved} entries at the new version, meta_version sum ${fence.s}; expected ${steps} each`,
      );
    }
    const use = oursAndOthers(cpu);
    const warnings = h.procs.reduce((a, p) => a + p.warnings, 0);
    progress(`${label}: ${fmtInt(steps)} repairs in ${fmtMs(ms)} = ${fmtInt((steps * 1000) / ms)}/s (workers ${use.mvsched} cores, other ${use.other ?? '-'})`);
    return {
      code,
      scenario,
      mvs,
      workers: nWorkers,
      steps,
      ms,
      repairsPerSec: (steps * 1000) / ms,
      workerCores: use.mvsched,
      serverAndWorkerCores: use.ours,
      otherCores: use.other,
      workerCpuMsPerRepair: (use.mvsched * ms) / steps,
      totalCpuMsPerRepair: (use.ours * ms) / steps,
      warnings,
    };
  });
}

export interface BaselineRow {
  label: string;
  mvs: number;
  steps: number;
  inFlight: number;
  ms: number;
  repairsPerSec: number;
}

/**
 * The repair path without queues or processes: Repairer.repair() (Redlock + read, plan, CAS,
 * write in one transaction) called from this process over the spread set-up, `inFlight` at a
 * time. What the worker numbers are up against: the rest is BullMQ and fan-out.
 */
async function inProcessBaseline(ctx: BenchContext, mvs: number, steps: number, inFlight: number): Promise<BaselineRow> {
  const label = `repair in-process ${fmtInt(mvs)} MVs, ${inFlight} in flight`;
  const partsPerMv = Math.ceil(steps / mvs);
  const bdb = await createBenchDatabase(ctx, `repair_inproc_${inFlight}`, 2);
  const db = createDb(bdb.url, { poolMax: inFlight + 2 });
  const redis = createRedis(ctx.redisUrl);
  const prefix = freshPrefix('repair_inproc');
  try {
    progress(`${label}: seeding`);
    await seed(bdb, { mvs, partsPerMv, version: 1 }, label);
    const repairer = new Repairer({
      db,
      redlock: new Redlock([redis], { retryCount: 30, retryDelay: 100, retryJitter: 50 }),
      prefix,
      logger: benchLogger(),
      clock: systemClock,
    });
    let next = 0;
    const t = performance.now();
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        for (let k = next++; k < steps; k = next++) {
          const id = (k % mvs) + 1;
          const p = Math.floor(k / mvs);
          await repairer.repair(id, { schema: bdb.name, name: `bt_${id}` }, [
            { partitionId: id * 10_000 + p, partitionName: `p${p}`, lastVersion: 1, newVersion: 2, newVersionTime: T0 + 1_000 + p, lastVersionTime: T0 + p },
          ]);
        }
      }),
    );
    const ms = performance.now() - t;
    const edits = await countWhere(bdb, 'mvs_edit_log', { op_type: 'REPAIR_VERSION_MAP' });
    if (edits !== steps) throw new Error(`${label}: ${edits} edit-log rows, expected ${steps}`);
    progress(`${label}: ${fmtInt(steps)} repairs in ${fmtMs(ms)} = ${fmtInt((steps * 1000) / ms)}/s`);
    return { label: `in-process Repairer.repair(), ${inFlight} in flight`, mvs, steps, inFlight, ms, repairsPerSec: (steps * 1000) / ms };
  } finally {
    await db.destroy();
    await deleteKeys(redis, `${prefix}:*`).catch(() => 0);
    await closeRedis(redis);
    await bdb.drop();
  }
}

/**
 * The batched repair path without queues or processes: RepairBatcher.submit() (what a worker's
 * requests go through), `inFlight` submissions outstanding at a time, over the spread set-up.
 */
async function inProcessBatcher(ctx: BenchContext, mvs: number, steps: number, inFlight: number): Promise<BaselineRow> {
  const label = `repair batcher in-process ${fmtInt(mvs)} MVs, ${inFlight} in flight`;
  const bdb = await createBenchDatabase(ctx, `repair_batch_${inFlight}`, 2);
  const db = createDb(bdb.url, { poolMax: 4 });
  const redis = createRedis(ctx.redisUrl);
  const prefix = freshPrefix('repair_batch');
  try {
    progress(`${label}: seeding`);
    await seed(bdb, { mvs, partsPerMv: Math.ceil(steps / mvs), version: 1 }, label);
    const batcher = new RepairBatcher({ db, redis, prefix, logger: benchLogger(), clock: systemClock });
    let next = 0;
    const t = performance.now();
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        for (let k = next++; k < steps; k = next++) {
          const id = (k % mvs) + 1;
          const p = Math.floor(k / mvs);
          await batcher.submit({
            mviewId: id,
            table: { schema: bdb.name, name: `bt_${id}` },
            infos: [{ partitionId: id * 10_000 + p, partitionName: `p${p}`, lastVersion: 1, newVersion: 2, newVersionTime: T0 + 1_000 + p, lastVersionTime: T0 + p }],
          });
        }
      }),
    );
    const ms = performance.now() - t;
    await batcher.close();
    const edits = await countWhere(bdb, 'mvs_edit_log', { op_type: 'REPAIR_VERSION_MAP' });
    if (edits !== steps) throw new Error(`${label}: ${edits} edit-log rows, expected ${steps}`);
    progress(`${label}: ${fmtInt(steps)} repairs in ${fmtMs(ms)} = ${fmtInt((steps * 1000) / ms)}/s`);
    return { label: `in-process RepairBatcher.submit(), ${inFlight} in flight`, mvs, steps, inFlight, ms, repairsPerSec: (steps * 1000) / ms };
  } finally {
    await db.destroy();
    await deleteKeys(redis, `${prefix}:*`).catch(() => 0);
    await closeRedis(redis);
    await bdb.drop();
  }
}

/**
 * The queue's own share: the same 4,000 `repair` jobs through one BullMQ Worker in this process
 * with a processor that does nothing, at the concurrency a worker's requests queue has. What any
 * processing of these requests costs before it does anything.
 */
async function bareQueue(ctx: BenchContext, steps: number, concurrency: number): Promise<BaselineRow> {
  const label = `bare BullMQ, no-op processor, concurrency ${concurrency}`;
  const prefix = freshPrefix('repair_bare');
  const producer = createRedis(ctx.redisUrl);
  const consumer = createRedis(ctx.redisUrl);
  const q = new Queue(REQUESTS_QUEUE, { connection: producer, prefix });
  let worker: Worker | undefined;
  try {
    let done = 0;
    let finish!: () => void;
    const finished = new Promise<void>((r) => (finish = r));
    const jobs = Array.from({ length: steps }, (_, k) => ({
      name: 'repair',
      data: { table: `bench.bt_${k}`, partitions: [{ partitionId: k, partitionName: 'p0', lastVersion: 1, newVersion: 2, newVersionTime: T0 + 1_000, lastVersionTime: T0 }] },
    }));
    worker = new Worker(REQUESTS_QUEUE, async () => ({ dependents: 1, repairs: 1 }), { connection: consumer, prefix, concurrency, autorun: false });
    worker.on('completed', () => ++done === steps && finish());
    const t = performance.now();
    for (let i = 0; i < jobs.length; i += 1000) await q.addBulk(jobs.slice(i, i + 1000));
    void worker.run();
    await finished;
    const ms = performance.now() - t;
    progress(`${label}: ${fmtInt(steps)} jobs in ${fmtMs(ms)} = ${fmtInt((steps * 1000) / ms)}/s`);
    return { label, mvs: 0, steps, inFlight: concurrency, ms, repairsPerSec: (steps * 1000) / ms };
  } finally {
    await worker?.close();
    await q.close();
    await deleteKeys(producer, `${prefix}:*`).catch(() => 0);
    await Promise.all([closeRedis(producer), closeRedis(consumer)]);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Compaction storm

export interface StormPhase {
  label: string;
  reportMs: number;
  /** From next_time = now (planner woken) until every MV has a finished scheduled run. */
  runsMs: number;
  skipped: number;
  success: number;
  failed: number;
  editLogRows: number;
}

export interface StormResult {
  mvs: number;
  partitions: number;
  workers: number;
  compaction: StormPhase;
  dataChange: StormPhase;
  refreshesAvoided: number;
}

async function stormRun(ctx: BenchContext, o: RepairBenchOptions): Promise<StormResult> {
  const { stormMvs: mvs, stormParts: parts } = o;
  const label = `storm ${mvs}x${parts}`;
  return withHarness(ctx, 'repair_storm', o.concurrency, async (h) => {
    progress(`${label}: seeding ${mvs} MVs over ${mvs} base tables of ${parts} partitions`);
    await seed(h.bdb, { mvs, partsPerMv: parts, version: 3 }, label);
    const ids = Array.from({ length: mvs }, (_, i) => i + 1);
    for (const id of ids) {
      const f = await mviewFreshness(h.bdb.db, id);
      if (!f.versioned || f.stale.length) throw new Error(`${label}: MV ${id} not fresh after seeding: ${JSON.stringify(f)}`);
    }
    progress(`${label}: starting a planner and ${o.stormWorkers} worker(s)`);
    const planner = spawnMvsched('planner', ['planner'], h.env);
    h.procs.push(planner);
    const nodes = Array.from({ length: o.stormWorkers }, (_, i) => `s${i + 1}`);
    h.procs.push(...(await startWorkers(h.redis, h.prefix, nodes, h.env)));
    const placer = new JobPlacer(h.redis, h.prefix, benchLogger());
    const placed = async () => {
      let n = 0;
      for (const node of nodes) {
        const s = await placer.snapshot(nodeQueueName(node));
        n += s.delayed.size + s.ready.size + s.active.size;
      }
      return n;
    };
    const deadline = Date.now() + 60_000;
    while ((await placed()) < mvs) {
      if (Date.now() > deadline) throw new Error(`${label}: the planner placed ${await placed()} of ${mvs} jobs within 60 s`);
      await sleep(200);
    }

    const phase = async (name: string, version: number, dataChanged: boolean): Promise<StormPhase> => {
      const edits0 = await countWhere(h.bdb, 'mvs_edit_log');
      const hist0 = ((await h.bdb.db('mvs_mview_refresh_hist').max({ m: 'refresh_id' }).first()) as { m: number | null }).m ?? 0;
      const done0 = (await h.requests.getJobCounts('completed', 'failed')) as { completed: number; failed: number };
      const jobs = ids.map((id) => ({
        name: 'report-versions',
        data: {
          table: `${h.bdb.name}.bt_${id}`,
          partitions: Array.from({ length: parts }, (_, p) => ({ partitionName: `p${p}`, partitionId: id * 10_000 + p, version, versionTime: T0 + version * 100_000 + p })),
          dataChanged,
        },
      }));
      const t = performance.now();
      await h.requests.addBulk(jobs);
      const counts = await drained(h.requests, h.repair, done0.completed + done0.failed + jobs.length, 600_000);
      const reportMs = performance.now() - t;
      if (counts.failed !== done0.failed) throw new Error(`${label} ${name}: ${counts.failed - done0.failed} report-versions jobs failed`);
      const editLogRows = (await countWhere(h.bdb, 'mvs_edit_log')) - edits0;
      progress(`${label} ${name}: ${fmtInt(mvs * parts)} partition bumps reported${dataChanged ? '' : ' and repaired'} in ${fmtMs(reportMs)} (${editLogRows} edit-log rows)`);

      // Every MV due now; one DDL-channel message wakes the planner, which moves the jobs.
      const t2 = performance.now();
      await h.bdb.db('mvs_mview_refresh_info').update({ next_time: h.bdb.db.raw('NOW(3)'), updated_at: h.bdb.db.fn.now(6) });
      await h.redis.publish(redisKeys(h.prefix, false).ddlChannel, JSON.stringify({ kind: 'mview', id: 0, change: 'altered' }));
      const finished = async () =>
        (await h.bdb.db('mvs_mview_refresh_hist')
          .where('refresh_id', '>', hist0)
          .where({ refresh_trigger: 'SCHEDULED' })
          .whereNot({ refresh_status: 'RUNNING' })
          .select('mview_id', 'refresh_status')) as Array<{ mview_id: number; refresh_status: string }>;
      let rows = await finished();
      const until = Date.now() + 300_000;
      while (new Set(rows.map((r) => Number(r.mview_id))).size < mvs) {
        if (Date.now() > until) throw new Error(`${label} ${name}: ${rows.length} of ${mvs} scheduled runs finished within 300 s`);
        await sleep(50);
        rows = await finished();
      }
      const runsMs = performance.now() - t2;
      const by = (s: string) => rows.filter((r) => r.refresh_status === s).length;
      const out: StormPhase = { label: name, reportMs, runsMs, skipped: by('SKIPPED'), success: by('SUCCESS'), failed: by('FAILED'), editLogRows };
      progress(`${label} ${name}: ${mvs} scheduled runs in ${fmtMs(runsMs)}: ${out.skipped} SKIPPED, ${out.success} SUCCESS, ${out.failed} FAILED`);
      return out;
    };

    const compaction = await phase('compaction (dataChanged=false)', 4, false);
    const dataChange = await phase('control (dataChanged=true)', 5, true);
    await placer.close();
    return { mvs, partitions: mvs * parts, workers: o.stormWorkers, compaction, dataChange, refreshesAvoided: compaction.skipped };
  });
}

// ---------------------------------------------------------------------------------------------
// Entry points

export interface RepairBenchResult {
  options: RepairBenchOptions;
  throughput: ThroughputRow[];
  baseline: BaselineRow[];
  storm: StormResult | null;
  loadAvgAtStart: number[];
  loadAvgAtEnd: number[];
}

function report(r: RepairBenchResult): string {
  const out: string[] = [];
  if (r.throughput.length) {
    out.push(
      `Repairs/s: ${fmtInt(r.options.steps)} \`repair\` requests (one compaction step each) consumed by N \`mvsched worker\` ` +
        `processes (MVS_WORKER_CONCURRENCY=${r.options.concurrency}); from the first enqueue until all requests are done and the repair queue ` +
        `is empty. Cores: average CPU of the worker processes / of workers + MariaDB + Redis / of everything else on the host (other sessions).` +
        `${r.throughput.some((t) => t.code === 'before') ? ' "before": the workers of BENCH_BEFORE_DIR, run just before "after" (this checkout) with the same set-up.' : ''}\n`,
    );
    out.push(
      table(
        ['code', 'scenario', 'MVs', 'workers', 'repairs', 'time', 'repairs/s', 'vs 1 worker', 'worker cores', 'ours+servers', 'other', 'CPU ms/repair (workers / +servers)'],
        r.throughput.map((t) => [
          t.code,
          t.scenario,
          fmtInt(t.mvs),
          t.workers,
          fmtInt(t.steps),
          fmtMs(t.ms),
          fmtInt(t.repairsPerSec),
          fmtRatio(t.ratio),
          t.workerCores.toFixed(2),
          t.serverAndWorkerCores.toFixed(2),
          t.otherCores === null ? '-' : t.otherCores.toFixed(2),
          `${t.workerCpuMsPerRepair.toFixed(1)} / ${t.totalCpuMsPerRepair.toFixed(1)}`,
        ]),
      ),
    );
  }
  if (r.baseline.length) {
    out.push(
      `\nBaselines in this process (same spread set-up): the repair path without queues (one Redlock + CAS transaction per repair, ` +
        `or the batcher), and the queue without the repair path (requests through a no-op BullMQ Worker):\n`,
    );
    out.push(table(['path', 'MVs', 'repairs', 'time', 'repairs/s'], r.baseline.map((b) => [b.label, b.mvs ? fmtInt(b.mvs) : '-', fmtInt(b.steps), fmtMs(b.ms), fmtInt(b.repairsPerSec)])));
  }
  if (r.storm) {
    const s = r.storm;
    out.push(
      `\nCompaction storm: ${fmtInt(s.partitions)} partition bumps across ${s.mvs} MVs (${s.mvs} \`report-versions\` jobs of ` +
        `${fmtInt(s.partitions / s.mvs)} partitions), ${s.workers} workers + planner; then all ${s.mvs} MVs due at once.\n`,
    );
    out.push(
      table(
        ['phase', 'report + repair', 'edit-log rows', 'scheduled runs', 'SKIPPED', 'SUCCESS', 'FAILED'],
        [s.compaction, s.dataChange].map((p) => [p.label, fmtMs(p.reportMs), fmtInt(p.editLogRows), fmtMs(p.runsMs), p.skipped, p.success, p.failed]),
      ),
    );
    out.push(`\nRefreshes avoided by repair: ${s.refreshesAvoided} of ${s.mvs}.`);
  }
  out.push(`\nload avg ${r.loadAvgAtStart.join(' ')} at start, ${r.loadAvgAtEnd.join(' ')} at end`);
  return out.join('\n');
}

export async function runRepairThroughput(ctx: BenchContext, opts: RepairBenchOptions = optionsFromEnv()): Promise<BenchOutcome<RepairBenchResult>> {
  const result: RepairBenchResult = { options: opts, throughput: [], baseline: [], storm: null, loadAvgAtStart: loadAvg(), loadAvgAtEnd: [] };
  if (opts.only !== 'storm') {
    const codes: Array<ThroughputRow['code']> = beforeCheckout() ? ['before', 'after'] : ['after'];
    for (const [scenario, mvs] of [['contention', opts.contentionMvs], ['spread', opts.spreadMvs]] as const) {
      const one = new Map<string, number>();
      for (const n of opts.workers) {
        // Before and after back to back, so both see about the same neighbours on the host.
        for (const code of codes) {
          const row = await throughputVariant(ctx, scenario, mvs, opts.steps, n, opts.concurrency, code);
          if (n === 1) one.set(code, row.repairsPerSec);
          const base = one.get(code);
          result.throughput.push({ ...row, ratio: base === undefined ? null : row.repairsPerSec / base });
        }
      }
    }
    for (const inFlight of [1, 4]) result.baseline.push(await inProcessBaseline(ctx, opts.spreadMvs, opts.steps, inFlight));
    result.baseline.push(await inProcessBatcher(ctx, opts.spreadMvs, opts.steps, 64));
    result.baseline.push(await bareQueue(ctx, opts.steps, opts.concurrency + REPAIRS_IN_FLIGHT));
  }
  if (opts.only !== 'throughput') result.storm = await stormRun(ctx, opts);
  result.loadAvgAtEnd = loadAvg();

  const goals: GoalCheck[] = [];
  if (result.storm) {
    const s = result.storm;
    goals.push({
      name: `repair: refreshes avoided in a compaction storm (${s.mvs} MVs)`,
      value: s.refreshesAvoided / s.mvs,
      goal: 'every scheduled run SKIPPED (1.000x)',
      met: s.compaction.skipped === s.mvs && s.compaction.success === 0 && s.dataChange.success === s.mvs,
      note: `${s.refreshesAvoided}/${s.mvs} skipped; control ${s.dataChange.success}/${s.mvs} SUCCESS`,
    });
  }
  const after = result.throughput.filter((t) => t.code === 'after');
  for (const t of after.filter((r) => r.scenario === 'spread')) {
    const before = result.throughput.find((b) => b.code === 'before' && b.scenario === 'spread' && b.workers === t.workers);
    goals.push({
      name: `repair: spread repairs/s through the queue, ${t.workers} worker(s)`,
      value: t.repairsPerSec / 1000,
      goal: '>= 1.000x of 1,000 repairs/s',
      met: t.repairsPerSec >= 1000,
      note: `${fmtInt(t.repairsPerSec)}/s${before ? ` (before: ${fmtInt(before.repairsPerSec)}/s, ${fmtRatio(t.repairsPerSec / before.repairsPerSec)})` : ''}; other load ${t.otherCores?.toFixed(2) ?? '?'} cores`,
    });
  }
  for (const scenario of ['contention', 'spread'] as const) {
    const rows = after.filter((t) => t.scenario === scenario && t.ratio !== null);
    const top = rows[rows.length - 1];
    if (top && top.workers > 1) {
      goals.push({
        name: `repair: ${scenario} repairs/s, ${top.workers} workers vs 1`,
        value: top.ratio,
        goal: scenario === 'spread' ? '>= 0.9x (flat from 1 to 4 workers, within noise)' : 'informational',
        met: scenario === 'spread' ? (top.ratio ?? 0) >= 0.9 : null,
      });
    }
  }
  return { result, goals, report: report(result) };
}

function markdown(rep: string, machine: string, command: string): string {
  return [
    `# Version-repair benchmark (bench/repairThroughput.ts) — ${new Date().toISOString()}`,
    '',
    `command: \`${command}\``,
    '',
    machine,
    '',
    rep,
    '',
  ].join('\n');
}

/** Run alone: servers from DATABASE_URL / REDIS_URL, or throwaway local ones. Returns the exit code. */
export async function main(args: string[] = process.argv.slice(2)): Promise<number> {
  if (args.includes('-h') || args.includes('--help')) {
    console.log('usage: [DATABASE_URL=... REDIS_URL=...] npx tsx bench/repairThroughput.ts [throughput|storm]\n' +
      '  env: BENCH_REPAIR_STEPS BENCH_REPAIR_WORKERS BENCH_REPAIR_CONCURRENCY BENCH_REPAIR_STORM_MVS\n' +
      '       BENCH_REPAIR_STORM_PARTS BENCH_REPAIR_STORM_WORKERS BENCH_REPAIR_MD (default /tmp/repair-bench.md)');
    return 0;
  }
  const opts = optionsFromEnv();
  const only = args.find((a) => a === 'throughput' || a === 'storm');
  if (only) opts.only = only;
  const started: Array<{ stop(): Promise<void> }> = [];
  const baseDir = join(tmpdir(), `mvsched-bench-repair-${process.pid}`);
  try {
    let serverUrl = process.env.DATABASE_URL;
    let redisUrl = process.env.REDIS_URL;
    if (!serverUrl || !redisUrl) {
      progress('DATABASE_URL / REDIS_URL not set: starting throwaway servers');
      const [r, m] = await Promise.all([redisUrl ? undefined : startRedis({ baseDir }), serverUrl ? undefined : startMariadb({ baseDir })]);
      if (r) started.push(r);
      if (m) started.push(m);
      redisUrl ??= r!.url;
      serverUrl ??= m!.url;
    }
    const ctx: BenchContext = { serverUrl, redisUrl };
    const mi = await machineInfo(ctx);
    const machine =
      `machine: ${mi.nproc} CPUs (${mi.cpuModel}), ${mi.memoryGiB} GiB, node ${mi.node}, ${mi.mariadb}, ` +
      `Redis ${mi.redis}, BullMQ ${mi.bullmq}, load avg ${mi.loadAvgAtStart.join(' ')}`;
    console.log(`# mvsched version-repair benchmark\n${machine}\n`);
    const out = await runRepairThroughput(ctx, opts);
    console.log(out.report);
    if (out.goals.length) {
      console.log('');
      console.log(table(['goal', 'measured', 'target', 'met'], out.goals.map((g) => [g.name, fmtRatio(g.value, 3), g.goal, g.met === null ? 'n/a' : g.met ? `yes (${g.note ?? ''})` : `NO (${g.note ?? ''})`])));
    }
    const md = process.env.BENCH_REPAIR_MD ?? '/tmp/repair-bench.md';
    const command = `${process.env.DATABASE_URL ? 'DATABASE_URL=... REDIS_URL=... ' : ''}npx tsx bench/repairThroughput.ts${args.length ? ` ${args.join(' ')}` : ''}`;
    writeFileSync(md, markdown(out.report, machine, command));
    progress(`figures written to ${md}`);
    return out.goals.some((g) => g.met === false) ? 1 : 0;
  } finally {
    await Promise.allSettled(started.map((s) => s.stop()));
    if (started.length) rmSync(baseDir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main();
}
