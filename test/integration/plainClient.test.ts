// Jobs from other services (DESIGN.md §3, README "Jobs from other services"), sent the way
// another service would: test/fixtures/plainProducer.mjs is plain JavaScript that imports
// `bullmq` only, runs as its own Node process and talks to a real `mvsched worker` process over
// Redis. Every job type by its documented schema, then malformed payloads that must fail for
// good, naming the bad field, and write nothing.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { REPAIR_QUEUE } from '../../src/queue/names.js';
import { Cluster, inspector, type Proc, type QueueInspector } from '../support/cluster.js';
import { snapshot } from '../support/snapshot.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

const producerPath = fileURLToPath(new URL('../fixtures/plainProducer.mjs', import.meta.url));

let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let cluster: Cluster;
let worker: Proc;
let ins: QueueInspector;
let repairQ: Queue;

const FAST_DEF = 'SELECT g, COUNT(*) AS c, SUM(v) AS s FROM t GROUP BY g';
const FULL_DEF = 'SELECT p, COUNT(*) AS n, SUM(v) AS total FROM u GROUP BY p';

beforeAll(async () => {
  t = await createTestEnv('plain_client');
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE t (id INT PRIMARY KEY, g INT NOT NULL, v INT NOT NULL)');
  await t.db.raw('CREATE TABLE u (id INT PRIMARY KEY, p INT NOT NULL, v INT NOT NULL)');
  await t.db('t').insert(Array.from({ length: 12 }, (_, i) => ({ id: i + 1, g: i % 3, v: i * 10 })));
  await t.db('u').insert(Array.from({ length: 10 }, (_, i) => ({ id: i + 1, p: i % 2, v: i + 1 })));
  rt = createRuntime(t.config, t.logger);
  ddl = createDdlExecutor(rt, 'test-ddl');
  await ddl.execute('CREATE MATERIALIZED VIEW LOG ON t (g, v)');
  await ddl.execute(`CREATE MATERIALIZED VIEW mv_fast REFRESH FAST AS ${FAST_DEF}`);
  await ddl.execute(`CREATE MATERIALIZED VIEW mv_full REFRESH COMPLETE AS ${FULL_DEF}`);
  ins = inspector(t);
  repairQ = new Queue(REPAIR_QUEUE, { connection: ins.redis, prefix: t.prefix });
  cluster = new Cluster(t);
  worker = cluster.worker('pw1');
  await waitFor(
    async () => {
      if (worker.child.exitCode !== null) throw new Error(`worker exited: ${worker.output().slice(-2000)}`);
      return (await ins.registry.live()).includes('pw1');
    },
    { timeoutMs: 45_000, intervalMs: 100, what: 'worker pw1 live' },
  );
}, 90_000);

afterAll(async () => {
  await cluster?.closeAll();
  await repairQ?.close();
  await ins?.close();
  await rt?.close();
  await t?.close();
});

// ---- helpers ----

interface JobSpec {
  name: string;
  payload: unknown;
  opts?: Record<string, unknown>;
}

interface ProducerLine {
  name: string;
  id: string;
  ok: boolean;
  result?: Record<string, unknown>;
  failedReason?: string;
  attemptsMade?: number;
  attempts?: number;
  failedWithoutRetry?: boolean;
  timedOut?: boolean;
  state?: string;
}

/** Run the plain producer as its own process with only what another service would be given. */
async function produce(jobs: JobSpec[]): Promise<ProducerLine[]> {
  const child = spawn(process.execPath, [producerPath], {
    env: {
      PATH: process.env.PATH ?? '',
      REDIS_URL: t.redisUrl,
      MVS_PREFIX: t.prefix,
      MVS_JOBS: JSON.stringify(jobs),
      JOB_TIMEOUT_MS: '30000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c));
  });
  const context = `producer exit ${code}\nstdout:\n${stdout}\nstderr:\n${stderr}\nworker tail:\n${worker.output().slice(-3000)}`;
  expect(code, context).toBe(0);
  const lines = stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as ProducerLine);
  expect(lines.map((l) => l.name), context).toEqual(jobs.map((j) => j.name));
  expect(lines.filter((l) => l.timedOut), context).toEqual([]);
  return lines;
}

/** Rows of a query, order-free, numbers normalised (SUM comes back as a DECIMAL string). */
async function rowsOf(sql: string): Promise<string[]> {
  const [rows] = (await t.db.raw(sql)) as [Array<Record<string, unknown>>];
  return rows
    .map((r) => JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v === null ? null : Number(v)]))))
    .sort();
}

const mvFast = () => rowsOf('SELECT g, c, s FROM mv_fast');
const mvFull = () => rowsOf('SELECT p, n, total FROM mv_full');
const logCount = async () => Number(((await t.db('mlog$t').count({ n: '*' }).first()) as { n: number | string }).n);

async function mvId(name: string): Promise<number> {
  const row = (await t.db('mvs_mviews').where({ table_schema: t.database, mview_name: name }).first('mview_id')) as { mview_id: number };
  return Number(row.mview_id);
}

async function histCount(id: number): Promise<number> {
  const r = (await t.db('mvs_mview_refresh_hist').where({ mview_id: id }).count({ n: '*' }).first()) as { n: number | string };
  return Number(r.n);
}

async function versionMap(id: number): Promise<Record<string, { partitionId: number; version: number; lastRefreshTime: number }>> {
  const rows = (await t.db('mvs_mview_version_map').where({ mview_id: id })) as Array<Record<string, unknown>>;
  return Object.fromEntries(
    rows.map((r) => [
      String(r.partition_name),
      { partitionId: Number(r.partition_id), version: Number(r.version), lastRefreshTime: Number(r.last_refresh_time) },
    ]),
  );
}

async function basePartitions(table: string): Promise<Record<string, { partitionId: number; version: number; versionTime: number; dataVersion: number }>> {
  const rows = (await t.db('mvs_base_partitions').where({ base_table_schema: t.database, base_table_name: table })) as Array<Record<string, unknown>>;
  return Object.fromEntries(
    rows.map((r) => [
      String(r.partition_name),
      { partitionId: Number(r.partition_id), version: Number(r.version), versionTime: Number(r.version_time), dataVersion: Number(r.data_version) },
    ]),
  );
}

async function repairQueueIdle(): Promise<boolean> {
  const c = await repairQ.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
  return Object.values(c).every((n) => n === 0);
}

const T0 = 1_767_225_600_000; // 2026-01-01, epoch ms

// ---- tests ----

describe('a plain-JS BullMQ producer in its own process (imports bullmq only)', () => {
  it('the producer script imports nothing but bullmq (and, for a Redis Cluster only, the ioredis bullmq brings)', () => {
    const src = readFileSync(producerPath, 'utf8');
    const specifiers = [...src.matchAll(/^\s*import\b[^'"]*['"]([^'"]+)['"]/gm), ...src.matchAll(/\bimport\(\s*['"]([^'"]+)['"]/g)].map((m) => m[1]);
    expect(specifiers).toEqual(['bullmq', 'ioredis']);
    expect(src).not.toMatch(/\brequire\(/);
  });

  it('refresh {mview} (FAST) and {mview, method: COMPLETE} bring the MVs up to date; purge {mlog} empties the consumed log', async () => {
    const fastId = await mvId('mv_fast');
    // Changes of every kind in t (logged), and in u (no log: COMPLETE only).
    await t.db('t').insert([{ id: 100, g: 0, v: 5 }, { id: 101, g: 3, v: 7 }]);
    await t.db('t').where({ id: 2 }).update({ v: 1_000 });
    await t.db('t').where({ id: 3 }).delete();
    await t.db('u').insert({ id: 100, p: 2, v: 50 });
    await t.db('u').where({ id: 1 }).update({ v: 99 });
    expect(await mvFast()).not.toEqual(await rowsOf(FAST_DEF));
    expect(await mvFull()).not.toEqual(await rowsOf(FULL_DEF));
    expect(await logCount()).toBeGreaterThan(0);
    const histBefore = await histCount(fastId);

    const [fast, full] = await produce([
      { name: 'refresh', payload: { mview: `${t.database}.mv_fast` } },
      { name: 'refresh', payload: { mview: `${t.database}.mv_full` } },
    ]);
    expect(fast, JSON.stringify(fast)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS', method: 'FAST' } });
    expect(full, JSON.stringify(full)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS', method: 'COMPLETE' } });
    expect(await mvFast()).toEqual(await rowsOf(FAST_DEF));
    expect(await mvFull()).toEqual(await rowsOf(FULL_DEF));
    const runs = (await t.db('mvs_mview_refresh_hist').where({ mview_id: fastId }).orderBy('refresh_id')) as Array<Record<string, unknown>>;
    expect(runs).toHaveLength(histBefore + 1);
    expect(runs.at(-1)).toMatchObject({ refresh_trigger: 'REQUEST', refresh_status: 'SUCCESS', refresh_method: 'FAST', refresh_job_id: fast!.id });

    // The log is consumed but not purged (PURGE defaults to manual). More changes, a COMPLETE
    // refresh of the FAST MV asked for by method, then a purge request.
    await t.db('t').insert({ id: 102, g: 1, v: 3 });
    await t.db('t').where({ id: 4 }).delete();
    const logged = await logCount();
    expect(logged).toBeGreaterThan(0);
    const [complete, purge] = await produce([
      { name: 'refresh', payload: { mview: `${t.database}.mv_fast`, method: 'COMPLETE' } },
      { name: 'purge', payload: { mlog: `${t.database}.t` } },
    ]);
    expect(complete, JSON.stringify(complete)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS', method: 'COMPLETE' } });
    expect(await mvFast()).toEqual(await rowsOf(FAST_DEF));
    expect(purge, JSON.stringify(purge)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS', rows: logged } });
    expect(Object.keys(purge!.result!).sort()).toEqual(['outcome', 'purgeId', 'rows', 'watermark']);
    expect(await logCount()).toBe(0);
    const hist = (await t.db('mvs_mlog_purge_hist').orderBy('purge_id', 'desc').first()) as Record<string, unknown>;
    expect(hist).toMatchObject({ purge_trigger: 'REQUEST', purge_status: 'SUCCESS' });
    expect(Number(hist.purge_rows)).toBe(logged);
    expect(Number(hist.purge_id)).toBe(Number(purge!.result!.purgeId));
  });

  it('report-versions (dataChanged true, then false) stores versions and repairs the version map without a refresh; repair {table, partitions} moves it too', async () => {
    const id = await mvId('mv_full');
    const table = `${t.database}.u`;
    const parts = [0, 1].map((p) => ({ partitionName: `p${p}`, partitionId: 500 + p, version: 5, versionTime: T0 + p }));

    // Versions with a data change, then a refresh: the map records what the refresh read.
    await t.db('u').insert({ id: 200, p: 1, v: 1 });
    const [reported, refreshed] = await produce([
      { name: 'report-versions', payload: { table, partitions: parts, dataChanged: true } },
      { name: 'refresh', payload: { mview: `${t.database}.mv_full` } },
    ]);
    expect(reported, JSON.stringify(reported)).toMatchObject({ ok: true, result: { dependents: 1, repairs: 0, recreated: false } });
    expect(refreshed, JSON.stringify(refreshed)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS', method: 'COMPLETE' } });
    expect(await basePartitions('u')).toEqual({
      p0: { partitionId: 500, version: 5, versionTime: T0, dataVersion: 5 },
      p1: { partitionId: 501, version: 5, versionTime: T0 + 1, dataVersion: 5 },
    });
    expect(await versionMap(id)).toEqual({
      p0: { partitionId: 500, version: 5, lastRefreshTime: T0 },
      p1: { partitionId: 501, version: 5, lastRefreshTime: T0 + 1 },
    });
    expect(await mvFull()).toEqual(await rowsOf(FULL_DEF));
    const hist = await histCount(id);
    const contents = await mvFull();

    // A compaction of p1: newer version, no data change. One repair fans out and the map moves.
    const [compacted] = await produce([
      { name: 'report-versions', payload: { table, partitions: [{ ...parts[1]!, version: 6, versionTime: T0 + 10_000 }], dataChanged: false } },
    ]);
    expect(compacted, JSON.stringify(compacted)).toMatchObject({ ok: true, result: { dependents: 1, repairs: 1, recreated: false } });
    expect((await basePartitions('u')).p1).toEqual({ partitionId: 501, version: 6, versionTime: T0 + 10_000, dataVersion: 5 });
    await waitFor(async () => (await versionMap(id)).p1?.version === 6, { timeoutMs: 15_000, what: 'p1 repaired to version 6' });
    await waitFor(repairQueueIdle, { timeoutMs: 15_000, what: 'repair queue idle' });
    expect(await versionMap(id)).toEqual({
      p0: { partitionId: 500, version: 5, lastRefreshTime: T0 },
      p1: { partitionId: 501, version: 6, lastRefreshTime: T0 + 10_000 },
    });

    // A repair asked for directly: p0 5 -> 7.
    const [repair] = await produce([
      {
        name: 'repair',
        payload: { table, partitions: [{ partitionId: 500, partitionName: 'p0', lastVersion: 5, newVersion: 7, newVersionTime: T0 + 20_000 }] },
      },
    ]);
    expect(repair, JSON.stringify(repair)).toMatchObject({ ok: true, result: { dependents: 1, repairs: 1 } });
    await waitFor(async () => (await versionMap(id)).p0?.version === 7, { timeoutMs: 15_000, what: 'p0 repaired to version 7' });
    await waitFor(repairQueueIdle, { timeoutMs: 15_000, what: 'repair queue idle' });
    expect(await versionMap(id)).toEqual({
      p0: { partitionId: 500, version: 7, lastRefreshTime: T0 + 20_000 },
      p1: { partitionId: 501, version: 6, lastRefreshTime: T0 + 10_000 },
    });
    // Neither repair refreshed the MV.
    expect(await histCount(id)).toBe(hist);
    expect(await mvFull()).toEqual(contents);
    expect(await repairQ.getJobCounts('failed')).toEqual({ failed: 0 });
  });

  it('malformed payloads and unknown job names fail unrecoverable on the first attempt, naming the field, and change nothing', async () => {
    const mv = `${t.database}.mv_fast`;
    const table = `${t.database}.u`;
    const okPart = { partitionName: 'p0', partitionId: 500, version: 9, versionTime: T0 + 30_000 };
    const { version: _v, ...noVersion } = okPart;
    const okInfo = { partitionId: 500, partitionName: 'p0', lastVersion: 7, newVersion: 9, newVersionTime: T0 + 30_000 };
    const cases: Array<{ name: string; payload: unknown; reason: RegExp }> = [
      { name: 'refresh', payload: { mview: 42 }, reason: /invalid refresh payload: mview\b/ },
      { name: 'refresh', payload: {}, reason: /invalid refresh payload: mview\b/ },
      { name: 'refresh', payload: { mview: mv, method: 'SLOW' }, reason: /invalid refresh payload: method\b/ },
      { name: 'refresh', payload: { mview: mv, force: true }, reason: /invalid refresh payload: .*\bforce\b/ },
      { name: 'purge', payload: { mlog: '' }, reason: /invalid purge payload: mlog\b/ },
      { name: 'purge', payload: { table: `${t.database}.t` }, reason: /invalid purge payload: mlog\b/ },
      { name: 'report-versions', payload: { table, partitions: [noVersion], dataChanged: false }, reason: /invalid report-versions payload: partitions\.0\.version\b/ },
      // The first partition is fine: nothing of it may be written either.
      { name: 'report-versions', payload: { table, partitions: [okPart, { ...okPart, partitionName: 'p1', partitionId: 'x' }], dataChanged: true }, reason: /invalid report-versions payload: partitions\.1\.partitionId\b/ },
      { name: 'report-versions', payload: { table, partitions: [okPart] }, reason: /invalid report-versions payload: dataChanged\b/ },
      { name: 'repair', payload: { table, partitions: [] }, reason: /invalid repair payload: partitions\b/ },
      { name: 'repair', payload: { table, partitions: [{ ...okInfo, newVersion: '9' }] }, reason: /invalid repair payload: partitions\.0\.newVersion\b/ },
      { name: 'repair', payload: { partitions: [okInfo] }, reason: /invalid repair payload: table\b/ },
      { name: 'rebuild', payload: { mview: mv }, reason: /unknown job name "rebuild"/ },
      // Well-formed but naming nothing that exists: as final.
      { name: 'refresh', payload: { mview: `${t.database}.no_such_mv` }, reason: /no_such_mv\b.*does not exist/ },
      { name: 'purge', payload: { mlog: `${t.database}.u` }, reason: /no materialized view log on .*\bu\b/ },
    ];

    // Base tables change first, so a refresh, purge or report that slipped through would show.
    await t.db('t').insert({ id: 300, g: 2, v: 30 });
    await t.db('u').insert({ id: 300, p: 0, v: 30 });
    const before = await snapshot(t.db, t.database);
    const fastBefore = await mvFast();
    const fullBefore = await mvFull();
    const logBefore = await logCount();
    expect(logBefore).toBeGreaterThan(0);
    const repairBefore = await repairQ.getJobCounts();

    // Three attempts allowed, with a short backoff: a failure that was retried would show.
    const lines = await produce(cases.map((c) => ({ name: c.name, payload: c.payload, opts: { attempts: 3, backoff: { type: 'fixed', delay: 50 } } })));
    for (const [i, line] of lines.entries()) {
      const c = cases[i]!;
      const what = `${c.name} ${JSON.stringify(c.payload)} -> ${JSON.stringify(line)}`;
      expect(line.ok, what).toBe(false);
      expect(line.state, what).toBe('failed');
      expect(line.failedReason, what).toMatch(c.reason);
      expect(line.attempts, what).toBe(3);
      expect(line.attemptsMade, what).toBe(1);
      expect(line.failedWithoutRetry, what).toBe(true);
    }

    expect(await snapshot(t.db, t.database)).toEqual(before);
    expect(await mvFast()).toEqual(fastBefore);
    expect(await mvFull()).toEqual(fullBefore);
    expect(await logCount()).toBe(logBefore);
    expect(await repairQ.getJobCounts()).toEqual(repairBefore);
    // The worker is still there and still serves good requests.
    expect(worker.child.exitCode).toBeNull();
    const [ok] = await produce([{ name: 'refresh', payload: { mview: mv } }]);
    expect(ok, JSON.stringify(ok)).toMatchObject({ ok: true, result: { outcome: 'SUCCESS', method: 'FAST' } });
    expect(await mvFast()).toEqual(await rowsOf(FAST_DEF));
  });
});
