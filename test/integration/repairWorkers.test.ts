// Version repair across real `mvsched worker` processes (test/support/cluster.ts) sharing the
// `requests` and `repair` queues: DESIGN.md §2 "Base-table versions, freshness and repair" and
// §3 "Jobs from other services" (report-versions, repair), §4 invariant 6.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Queue, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { listMviewStatus, type MviewStatus } from '../../src/mv/status.js';
import { REPAIR_QUEUE, REQUESTS_QUEUE } from '../../src/queue/names.js';
import { planRepair } from '../../src/repair/rules.js';
import type { RepairInfo, VersionEntry } from '../../src/versions/types.js';
import { Cluster, inspector, type Proc, type QueueInspector, logLines } from '../support/cluster.js';
import { prng, testSeed } from '../support/prng.js';
import { snapshot } from '../support/snapshot.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));
const run = promisify(execFile);

let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let cluster: Cluster;
let ins: QueueInspector;
let connection: Redis;
let requests: Queue;
let repairQ: Queue;

beforeAll(async () => {
  t = await createTestEnv('repair_workers', { MVS_NODE_TTL_S: '3' });
  await migrateLatest(t.db);
  rt = createRuntime(t.config, t.logger);
  ddl = createDdlExecutor(rt, 'test-ddl');
  cluster = new Cluster(t, { MVS_WORKER_CONCURRENCY: '4' });
  ins = inspector(t);
  connection = new Redis(t.redisUrl, { maxRetriesPerRequest: null });
  requests = new Queue(REQUESTS_QUEUE, { connection, prefix: t.prefix });
  repairQ = new Queue(REPAIR_QUEUE, { connection, prefix: t.prefix });
});

afterAll(async () => {
  await cluster?.closeAll();
  await requests?.close();
  await repairQ?.close();
  connection?.disconnect();
  await ins?.close();
  await rt?.close();
  await t?.close();
});

// ---- helpers ----

const workers = new Map<string, Proc>();

async function startWorkers(ids: string[]): Promise<void> {
  for (const id of ids) workers.set(id, cluster.worker(id));
  let missing: string[] = ids;
  try {
    await waitFor(async () => {
      const dead = ids.find((id) => workers.get(id)!.child.exitCode !== null);
      if (dead) throw new Error(`worker ${dead} exited: ${workers.get(dead)!.output().slice(-2000)}`);
      const live = await ins.registry.live();
      missing = ids.filter((id) => !live.includes(id));
      return missing.length === 0;
    }, { timeoutMs: 90_000, intervalMs: 200, what: `workers ${ids.join(', ')} in the ring` });
  } catch (err) {
    const tails = missing.map((id) => `${id}: ${workers.get(id)!.output().slice(-1500)}`).join('\n');
    throw new Error(`${(err as Error).message}; missing ${missing.join(', ')}\n${tails}`);
  }
}

async function stopWorkers(): Promise<void> {
  await Promise.all([...workers.values()].map((p) => cluster.stop(p, 'SIGTERM')));
  workers.clear();
}

/** The JSON log lines a process wrote (pino, one object per line). */

/** Nothing left to do on the repair queue (completed jobs may be kept or removed). */
async function repairQueueIdle(): Promise<boolean> {
  const c = await repairQ.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
  return Object.values(c).every((n) => n === 0);
}

/** Wait until a job is completed or failed; returns it fresh. */
async function settled(job: Job, timeoutMs = 20_000): Promise<Job> {
  return waitFor(async () => {
    // State first, then the job: read the other way round, the hash may predate the finish.
    const state = await requests.getJobState(job.id!);
    return state === 'completed' || state === 'failed' ? requests.getJob(job.id!) : undefined;
  }, { timeoutMs, what: `request ${job.name} ${job.id} to finish` });
}

type VersionMap = Map<string, VersionEntry>;

async function versionMap(db: Knex, mviewId: number): Promise<VersionMap> {
  const rows = (await db('mvs_mview_version_map').where({ mview_id: mviewId })) as Array<Record<string, unknown>>;
  return new Map(
    rows.map((r) => [
      String(r.partition_name),
      {
        partitionId: Number(r.partition_id),
        version: Number(r.version),
        lastRefreshTime: Number(r.last_refresh_time),
        extLastFileModifiedTime: Number(r.ext_last_file_modified_time),
        fileNumber: Number(r.file_number),
      },
    ]),
  );
}

const sortedEntries = (m: VersionMap) => [...m].sort(([a], [b]) => a.localeCompare(b));

interface SeedSpec {
  mviewId: number;
  table: string;
  partitions: Array<{ name: string; id: number; version: number; versionTime: number }>;
}

/**
 * Metadata of MVs as a refresh leaves it, without DDL or builds: mvs_mviews (+ refresh info,
 * due in an hour), the dependency on its base table, the reported partitions and the MV's
 * version map for them.
 */
async function seedMviews(db: Knex, schema: string, specs: SeedSpec[]): Promise<void> {
  const now = new Date();
  const next = new Date(Date.now() + 3_600_000);
  await db('mvs_mviews').insert(
    specs.map((s) => ({
      mview_id: s.mviewId,
      table_schema: schema,
      mview_name: `mv_${s.mviewId}`,
      mview_definition: 'SELECT 1 AS x',
      refresh_method: 'COMPLETE',
      refresh_start: next,
      refresh_interval: 3600,
      status: 'ACTIVE',
      created_at: now,
      mview_modify_time: now,
    })),
  );
  await db('mvs_mview_refresh_info').insert(specs.map((s) => ({ mview_id: s.mviewId, next_time: next, updated_at: db.fn.now(6) })));
  await db('mvs_mview_base_tables').insert(
    specs.map((s) => ({ mview_id: s.mviewId, base_table_schema: schema, base_table_name: s.table })),
  );
  await db('mvs_base_partitions').insert(
    specs.flatMap((s) =>
      s.partitions.map((p) => ({
        base_table_schema: schema,
        base_table_name: s.table,
        partition_name: p.name,
        partition_id: p.id,
        version: p.version,
        version_time: p.versionTime,
        data_version: p.version,
        updated_at: now,
      })),
    ),
  );
  await db('mvs_mview_version_map').insert(
    specs.flatMap((s) =>
      s.partitions.map((p) => ({
        mview_id: s.mviewId,
        base_table_schema: schema,
        base_table_name: s.table,
        partition_name: p.name,
        partition_id: p.id,
        version: p.version,
        last_refresh_time: p.versionTime,
        ext_last_file_modified_time: -1,
        file_number: -1,
      })),
    ),
  );
}

// ---- 1. many workers, many repairs ----

describe('8 worker processes repairing version maps concurrently', () => {
  const N_MV = 50;
  const PARTS = 4;
  const STEPS = 10; // 50 x 4 x 10 = 2,000 compaction steps
  const BASE_TIME = 1_767_225_600_000; // 2026-01-01
  const ids = ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8'];

  beforeAll(async () => {
    await startWorkers(ids);
  }, 120_000);

  afterAll(async () => {
    await stopWorkers();
  });

  it('2,000 chained repairs over 50 MVs lose no update: final maps equal a sequential replay of the same infos', async () => {
    const seed = testSeed();
    const rnd = prng(seed);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const vt = (mv: number, p: number, v: number) => BASE_TIME + v * 60_000 + mv * 10 + p;

    // MV i reads only bt_i, so each request fans out to exactly one repair-mview job.
    const specs: SeedSpec[] = Array.from({ length: N_MV }, (_, i) => {
      const mv = i + 1;
      return {
        mviewId: mv,
        table: `bt_${mv}`,
        partitions: Array.from({ length: PARTS }, (_, p) => {
          const v0 = 10 + ((mv * 7 + p * 3) % 13);
          return { name: `p${p}`, id: mv * 100 + p, version: v0, versionTime: vt(mv, p, v0) };
        }),
      };
    });
    await seedMviews(t.db, t.database, specs);

    // One chain per (table, partition): v0 -> v0+1 -> ... -> v0+STEPS, each link its own job.
    // Links are enqueued in chain order, chains interleaved at random.
    interface Req { mv: number; info: RepairInfo; kind: 'step' | 'dup' | 'bad-id' | 'newer-time' | 'no-partition' }
    const chains: Req[][] = specs.flatMap((s) =>
      s.partitions.map((p, pi) =>
        Array.from({ length: STEPS }, (_, k): Req => {
          const last = p.version + k;
          return {
            mv: s.mviewId,
            kind: 'step',
            info: {
              partitionId: p.id,
              partitionName: p.name,
              lastVersion: last,
              newVersion: last + 1,
              newVersionTime: vt(s.mviewId, pi, last + 1),
              // Half the links carry lastVersionTime (equal to the entry's: not newer, applies).
              ...(k % 2 === 0 ? { lastVersionTime: vt(s.mviewId, pi, last) } : {}),
            },
          };
        }),
      ),
    );
    const order: Req[] = [];
    const live = chains.map((c) => [...c]);
    while (live.some((c) => c.length)) {
      const open = live.filter((c) => c.length);
      order.push(pick(open).shift()!);
    }
    expect(order).toHaveLength(N_MV * PARTS * STEPS);

    // Infos the rules must skip, each placed after the link it refers to: a redelivered link
    // (version-behind by then), a wrong partition id, a lastVersionTime newer than the map's,
    // a partition the MV never read. 50 of each.
    const extras: Array<{ after: number; req: Req }> = [];
    for (let i = 0; i < 200; i++) {
      const at = Math.floor(rnd() * order.length);
      const ref = order[at]!;
      const base = ref.info;
      const kind = (['dup', 'bad-id', 'newer-time', 'no-partition'] as const)[i % 4]!;
      const info: RepairInfo =
        kind === 'dup'
          ? { ...base }
          : kind === 'bad-id'
            ? { ...base, partitionId: base.partitionId + 50_000, newVersion: 9_999 }
            : kind === 'newer-time'
              ? { ...base, lastVersion: base.newVersion, lastVersionTime: base.newVersionTime + 1, newVersion: 9_999, newVersionTime: base.newVersionTime + 5 }
              : { ...base, partitionName: 'p9', partitionId: 999_999 };
      extras.push({ after: at, req: { mv: ref.mv, kind, info } });
    }
    const all: Req[] = [];
    const byPos = new Map<number, Req[]>();
    for (const e of extras) byPos.set(e.after, [...(byPos.get(e.after) ?? []), e.req]);
    order.forEach((r, i) => all.push(r, ...(byPos.get(i) ?? [])));
    expect(all).toHaveLength(2_200);

    // The oracle: the same infos through the pure rules, one after another, in enqueue order.
    const replay = new Map<number, VersionMap>();
    const appliedPerMv = new Map<number, number>();
    const maxTimePerMv = new Map<number, number>();
    for (const s of specs) {
      replay.set(
        s.mviewId,
        new Map(s.partitions.map((p) => [p.name, { partitionId: p.id, version: p.version, lastRefreshTime: p.versionTime, extLastFileModifiedTime: -1, fileNumber: -1 }])),
      );
    }
    for (const r of all) {
      const map = replay.get(r.mv)!;
      const plan = planRepair(map, [r.info]);
      for (const [name, e] of plan.updates) map.set(name, e);
      if (plan.updates.size) {
        appliedPerMv.set(r.mv, (appliedPerMv.get(r.mv) ?? 0) + 1);
        maxTimePerMv.set(r.mv, Math.max(maxTimePerMv.get(r.mv) ?? -Infinity, plan.maxNewVersionTime!));
      }
      // Sanity of the oracle itself: only chain links (or their redeliveries) ever apply.
      if (r.kind !== 'step' && r.kind !== 'dup') expect(plan.updates.size).toBe(0);
    }
    const appliedTotal = [...appliedPerMv.values()].reduce((a, b) => a + b, 0);
    expect(appliedTotal).toBe(N_MV * PARTS * STEPS);

    // A few requests for a table nothing depends on: done, nothing to fan out.
    const orphan = Array.from({ length: 5 }, (_, i) => ({
      name: 'repair',
      data: { table: `${t.database}.bt_orphan`, partitions: [{ partitionId: i, partitionName: `p${i}`, lastVersion: 1, newVersion: 2, newVersionTime: BASE_TIME }] },
    }));
    const jobs = [
      ...all.map((r) => ({ name: 'repair', data: { table: `${t.database}.bt_${r.mv}`, partitions: [r.info] } })),
      ...orphan,
    ];
    const started = Date.now();
    for (let i = 0; i < jobs.length; i += 500) await requests.addBulk(jobs.slice(i, i + 500));

    // Links that came too early wait for their predecessor with a backoff that doubles up to
    // 5 s, so the drain takes a while on a loaded box: one budget for the whole of it.
    const budget = () => Math.max(1_000, started + 120_000 - Date.now());
    const counts = await waitFor(async () => {
      const c = await requests.getJobCounts('completed', 'failed');
      return c.completed! + c.failed! >= jobs.length ? c : undefined;
    }, { timeoutMs: budget(), intervalMs: 200, what: `${jobs.length} repair requests to finish` });
    const requestsMs = Date.now() - started;
    expect(counts, `seed ${seed}`).toEqual({ completed: jobs.length, failed: 0 });
    // Every request fanned out before it completed, so the repair queue now holds all of it.
    await waitFor(repairQueueIdle, { timeoutMs: budget(), intervalMs: 200, what: 'the repair queue to drain' });
    const tookMs = Date.now() - started;
    expect(await repairQ.getJobCounts('failed'), `seed ${seed}`).toEqual({ failed: 0 });

    const done = (await requests.getJobs(['completed'], 0, -1)) as Job[];
    const fanout = done.map((j) => (j.returnvalue as { repairs: number }).repairs);
    expect(fanout.filter((n) => n === 1)).toHaveLength(all.length);
    expect(fanout.filter((n) => n === 0)).toHaveLength(orphan.length);

    // The maps equal the sequential replay, MV by MV.
    const wrong: string[] = [];
    for (const s of specs) {
      const got = sortedEntries(await versionMap(t.db, s.mviewId));
      const want = sortedEntries(replay.get(s.mviewId)!);
      if (JSON.stringify(got) !== JSON.stringify(want)) wrong.push(`mv ${s.mviewId}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }
    expect(wrong, `seed ${seed}`).toEqual([]);

    // One edit-log row per applied step, meta_version counts the applied repairs of each MV,
    // and the fence handed out 1, 2, ..., n without a gap or a repeat.
    const mvRows = (await t.db('mvs_mviews').whereIn('mview_id', specs.map((s) => s.mviewId)).select('mview_id', 'meta_version', 'version_refresh_time')) as Array<Record<string, unknown>>;
    const editRows = (await t.db('mvs_edit_log').orderBy('id').select('mview_id', 'op_type', 'payload')) as Array<{ mview_id: number; op_type: string; payload: string }>;
    expect(editRows).toHaveLength(appliedTotal);
    expect(new Set(editRows.map((r) => r.op_type))).toEqual(new Set(['REPAIR_VERSION_MAP']));
    const fences = new Map<number, number[]>();
    for (const r of editRows) {
      const id = Number(r.mview_id);
      fences.set(id, [...(fences.get(id) ?? []), (JSON.parse(r.payload) as { metaVersion: number }).metaVersion]);
    }
    for (const row of mvRows) {
      const id = Number(row.mview_id);
      const n = appliedPerMv.get(id) ?? 0;
      expect(Number(row.meta_version), `meta_version of mv ${id}`).toBe(n);
      expect(Number(row.version_refresh_time), `version_refresh_time of mv ${id}`).toBe(maxTimePerMv.get(id));
      expect(fences.get(id), `edit-log fences of mv ${id}`).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    }

    // The work really was spread over the processes, and nothing gave up on a chain.
    const perWorker = new Map<string, number>();
    let dropped = 0;
    let waits = 0;
    for (const [id, p] of workers) {
      const lines = logLines(p);
      perWorker.set(id, lines.filter((l) => l.msg === 'version map repaired').length);
      dropped += lines.filter((l) => l.msg === 'repair infos still ahead of the version map: dropped').length;
      waits += lines.filter((l) => l.msg === 'repair done' && Number(l.waiting) > 0).length;
    }
    // (Counted from each process's log tail, which may have lost its oldest lines: at most.)
    expect(dropped).toBe(0);
    expect([...perWorker.values()].reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(appliedTotal);
    expect([...perWorker.values()].filter((n) => n > 0).length).toBeGreaterThanOrEqual(4);
    console.log(
      `[repair x8] seed ${seed}: ${jobs.length} requests (all done after ${requestsMs} ms) -> ${appliedTotal} applied repairs in ${tookMs} ms ` +
        `(${Math.round((appliedTotal * 1000) / tookMs)}/s); ${waits} rounds waited for an earlier link; ` +
        `per worker ${JSON.stringify(Object.fromEntries(perWorker))}`,
    );
  }, 160_000);
});

// ---- 2 and 3. through the requests queue with a planner ----

describe('2 workers and a planner: reports, repairs, skipped and real scheduled runs', () => {
  beforeAll(async () => {
    cluster.planner();
    await startWorkers(['e1', 'e2']);
  }, 60_000);

  afterAll(async () => {
    await stopWorkers();
  });

  async function status(name: string): Promise<MviewStatus> {
    const [s] = await listMviewStatus(t.db, undefined, { schema: t.database, name });
    return s!;
  }

  async function mvId(name: string): Promise<number> {
    const row = (await t.db('mvs_mviews').where({ table_schema: t.database, mview_name: name }).first('mview_id')) as { mview_id: number };
    return Number(row.mview_id);
  }

  async function histOf(id: number): Promise<Array<Record<string, unknown>>> {
    return (await t.db('mvs_mview_refresh_hist').where({ mview_id: id }).orderBy('refresh_id')) as Array<Record<string, unknown>>;
  }

  async function rowsOf(sql: string): Promise<string[]> {
    const [rows] = (await t.db.raw(sql)) as [Array<Record<string, unknown>>];
    return rows.map((r) => JSON.stringify(r)).sort();
  }

  /** Make the MV due in ~1.5 s and have the planner move its job there at once. */
  async function dueSoon(id: number): Promise<void> {
    await t.db('mvs_mview_refresh_info')
      .where({ mview_id: id })
      .update({ next_time: t.db.raw('NOW(3) + INTERVAL 1500000 MICROSECOND'), updated_at: t.db.fn.now(6) });
    await rt.publishDdl({ kind: 'mview', id, change: 'altered' });
  }

  it('malformed report-versions and repair payloads fail unrecoverable, naming the field, and write nothing', async () => {
    const table = `${t.database}.bt_bad`;
    const ok = { partitionName: 'p0', partitionId: 1, version: 2, versionTime: 1_000 };
    const okInfo = { partitionId: 1, partitionName: 'p0', lastVersion: 1, newVersion: 2, newVersionTime: 1_000 };
    const { version: _v, ...noVersion } = ok;
    const { newVersion: _n, ...noNewVersion } = okInfo;
    const cases: Array<{ name: string; data: unknown; field: RegExp }> = [
      { name: 'report-versions', data: { table, partitions: [noVersion], dataChanged: false }, field: /partitions\.0\.version\b/ },
      // The first partition is fine: nothing of it may be written either.
      { name: 'report-versions', data: { table, partitions: [ok, { ...ok, partitionName: 'p1', versionTime: 'soon' }], dataChanged: true }, field: /partitions\.1\.versionTime\b/ },
      { name: 'report-versions', data: { table, partitions: [{ ...ok, partitionId: 1.5 }], dataChanged: true }, field: /partitions\.0\.partitionId\b/ },
      { name: 'report-versions', data: { table, partitions: [ok], dataChanged: 'no' }, field: /dataChanged\b/ },
      { name: 'report-versions', data: { table, partitions: [ok] }, field: /dataChanged\b/ },
      { name: 'report-versions', data: { table, partitions: [], dataChanged: false }, field: /\bpartitions\b/ },
      { name: 'report-versions', data: { table: 'a.b.c', partitions: [ok], dataChanged: false }, field: /\btable\b/ },
      { name: 'report-versions', data: { table, partitions: [{ ...ok, extra: 1 }], dataChanged: false }, field: /partitions\.0\b.*\bextra\b/ },
      { name: 'repair', data: { table, partitions: [noNewVersion] }, field: /partitions\.0\.newVersion\b/ },
      { name: 'repair', data: { table, partitions: [okInfo, { ...okInfo, lastVersionTime: 'x' }] }, field: /partitions\.1\.lastVersionTime\b/ },
      { name: 'repair', data: { table, partitions: [{ ...okInfo, partitionName: '' }] }, field: /partitions\.0\.partitionName\b/ },
      { name: 'repair', data: { partitions: [okInfo] }, field: /\btable\b/ },
      { name: 'repair', data: { table, partitions: okInfo }, field: /\bpartitions\b/ },
    ];
    // A dependent MV, so a payload that slipped through would have something to repair.
    await seedMviews(t.db, t.database, [
      { mviewId: 900, table: 'bt_bad', partitions: [{ name: 'p0', id: 1, version: 1, versionTime: 500 }, { name: 'p1', id: 2, version: 1, versionTime: 500 }] },
    ]);
    const before = await snapshot(t.db, t.database);
    const repairBefore = await repairQ.getJobCounts();
    const jobs = await Promise.all(cases.map((c) => requests.add(c.name, c.data, { attempts: 3, backoff: { type: 'fixed', delay: 50 } })));
    const failed = await Promise.all(jobs.map((j) => settled(j)));
    for (const [i, job] of failed.entries()) {
      const c = cases[i]!;
      const what = `${c.name} ${JSON.stringify(c.data)}`;
      expect(await job.getState(), what).toBe('failed');
      expect(job.failedReason, what).toMatch(new RegExp(`invalid ${c.name} payload`));
      expect(job.failedReason, what).toMatch(c.field);
      // Unrecoverable: failed on its first attempt although 3 were allowed.
      expect(job.attemptsMade, `${what}: ${job.failedReason}`).toBe(1);
    }
    expect(await snapshot(t.db, t.database)).toEqual(before);
    expect(await repairQ.getJobCounts()).toEqual(repairBefore);
    await requests.clean(0, 0, 'failed');
  });

  it('a compaction repairs the map and the scheduled run is SKIPPED; a data change makes it stale and the next run recomputes', async () => {
    await t.db.raw('CREATE TABLE bt_e2e (id INT PRIMARY KEY, p INT NOT NULL, v INT NOT NULL)');
    await t.db('bt_e2e').insert(Array.from({ length: 30 }, (_, i) => ({ id: i + 1, p: i % 3, v: i * 10 })));
    const definition = 'SELECT p, COUNT(*) AS n, SUM(v) AS total FROM bt_e2e GROUP BY p';
    await ddl.execute(`CREATE MATERIALIZED VIEW mv_e2e START WITH NOW() + INTERVAL 1 HOUR NEXT 3600 AS ${definition}`);
    const id = await mvId('mv_e2e');
    const table = `${t.database}.bt_e2e`;
    const key = `${t.database}.bt_e2e`;
    const T0 = 1_767_225_600_000;
    const parts = [0, 1, 2].map((p) => ({ partitionName: `p${p}`, partitionId: 700 + p, version: 5, versionTime: T0 + p }));

    // Versions reported with a data change: the MV (built before any report) is stale.
    const reported = await settled(await requests.add('report-versions', { table, partitions: parts, dataChanged: true }));
    expect(reported.failedReason).toBeUndefined();
    expect(reported.returnvalue).toMatchObject({ dependents: 1, repairs: 0, recreated: false });
    expect((await status('mv_e2e')).freshness).toBe('stale');

    // A requested refresh writes the map from the reported versions.
    const refreshed = await settled(await requests.add('refresh', { mview: `${t.database}.mv_e2e` }));
    expect((refreshed.returnvalue as { outcome: string }).outcome).toBe('SUCCESS');
    const cli = await run(process.execPath, [bin, 'status', '--json'], { env: { ...process.env, ...t.env } });
    const viaCli = (JSON.parse(cli.stdout) as { mviews: MviewStatus[] }).mviews.find((m) => m.name === `${t.database}.mv_e2e`)!;
    expect(viaCli).toMatchObject({ freshness: 'fresh', stalePartitions: [], lastResult: 'SUCCESS' });
    const refreshCount = viaCli.refreshCount;
    const contents = await rowsOf('SELECT * FROM mv_e2e');
    expect(contents).toEqual(await rowsOf(definition));
    expect(sortedEntries(await versionMap(t.db, id))).toEqual(
      parts.map((p) => [p.partitionName, { partitionId: p.partitionId, version: 5, lastRefreshTime: p.versionTime, extLastFileModifiedTime: -1, fileNumber: -1 }]),
    );
    const histBefore = (await histOf(id)).length;
    const editBefore = (await t.db('mvs_edit_log').where({ mview_id: id }).count({ n: '*' }).first()) as { n: number };

    // Compaction of p1: new version, no data change. The map follows without a refresh.
    const compacted = await settled(
      await requests.add('report-versions', { table, partitions: [{ ...parts[1]!, version: 6, versionTime: T0 + 10_000 }], dataChanged: false }),
    );
    expect(compacted.returnvalue).toMatchObject({ dependents: 1, repairs: 1, recreated: false });
    const repaired = await waitFor(async () => {
      const e = (await versionMap(t.db, id)).get('p1');
      return e?.version === 6 ? e : undefined;
    }, { timeoutMs: 15_000, what: 'p1 repaired to version 6' });
    expect(repaired).toEqual({ partitionId: 701, version: 6, lastRefreshTime: T0 + 10_000, extLastFileModifiedTime: -1, fileNumber: -1 });
    expect(await waitFor(repairQueueIdle, { what: 'repair queue idle' })).toBe(true);
    let s = await status('mv_e2e');
    expect(s).toMatchObject({ freshness: 'fresh', stalePartitions: [], refreshCount });
    expect(await histOf(id)).toHaveLength(histBefore);
    const editAfter = (await t.db('mvs_edit_log').where({ mview_id: id }).count({ n: '*' }).first()) as { n: number };
    expect(Number(editAfter.n)).toBe(Number(editBefore.n) + 1);

    // Its next scheduled run finds nothing changed: SKIPPED, nothing recomputed.
    await dueSoon(id);
    const skipped = await waitFor(async () => (await histOf(id)).slice(histBefore).find((r) => r.refresh_trigger === 'SCHEDULED'), {
      timeoutMs: 20_000,
      intervalMs: 100,
      what: 'the scheduled run',
    });
    expect(skipped).toMatchObject({ refresh_status: 'SKIPPED', refresh_method: 'NONE' });
    expect(Number(skipped.rows_changed)).toBe(0);
    s = await status('mv_e2e');
    expect(s).toMatchObject({ freshness: 'fresh', refreshCount, lastResult: 'SKIPPED' });
    // Back on its grid (START WITH an hour ahead), so no second run comes now.
    expect(new Date(s.nextTime!).getTime()).toBeGreaterThan(Date.now() + 3_000_000);
    expect(await rowsOf('SELECT * FROM mv_e2e')).toEqual(contents);

    // A real change in p2: stale, and the next scheduled run recomputes.
    await t.db('bt_e2e').insert({ id: 100, p: 2, v: 1_000 });
    await t.db('bt_e2e').where({ id: 3 }).update({ v: 7 });
    await settled(await requests.add('report-versions', { table, partitions: [{ ...parts[2]!, version: 6, versionTime: T0 + 20_000 }], dataChanged: true }));
    s = await status('mv_e2e');
    expect(s).toMatchObject({ freshness: 'stale', stalePartitions: [`${key}.p2`], refreshCount });
    expect(await repairQueueIdle()).toBe(true);
    expect((await versionMap(t.db, id)).get('p2')!.version).toBe(5);

    const histMid = (await histOf(id)).length;
    await dueSoon(id);
    const ran = await waitFor(
      async () => (await histOf(id)).slice(histMid).find((r) => r.refresh_trigger === 'SCHEDULED' && r.refresh_status !== 'RUNNING'),
      { timeoutMs: 20_000, intervalMs: 100, what: 'the second scheduled run' },
    );
    expect(ran).toMatchObject({ refresh_status: 'SUCCESS', refresh_method: 'COMPLETE' });
    s = await status('mv_e2e');
    expect(s).toMatchObject({ freshness: 'fresh', stalePartitions: [], refreshCount: refreshCount + 1, lastResult: 'SUCCESS' });
    const now = await rowsOf('SELECT * FROM mv_e2e');
    expect(now).not.toEqual(contents);
    expect(now).toEqual(await rowsOf(definition));
    expect((await versionMap(t.db, id)).get('p2')).toEqual({ partitionId: 702, version: 6, lastRefreshTime: T0 + 20_000, extLastFileModifiedTime: -1, fileNumber: -1 });
    // The repaired p1 entry is what the refresh read too.
    expect((await versionMap(t.db, id)).get('p1')!.version).toBe(6);
  });
});
