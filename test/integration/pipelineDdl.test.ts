import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Queue, QueueEvents } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { ConflictError, ValidationError } from '../../src/errors.js';
import type { RefreshHistRow } from '../../src/mv/repository.js';
import { listMviewStatus } from '../../src/mv/status.js';
import { REQUESTS_QUEUE } from '../../src/queue/names.js';
import { buildApp } from '../../src/server/app.js';
import { Cluster } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// Pipelines at the DDL level (DESIGN.md §2 "Pipelines", §3): dependencies recorded at CREATE and
// shown both ways, DROP refused while others read an MV (exit 4) and DROP ... CASCADE, REFRESH
// ... CASCADE from SQL, the requests queue and the API, data time over MVs, TARGET LAG stored.

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));

let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let cluster: Cluster;

beforeAll(async () => {
  t = await createTestEnv('pipeline_ddl', { MVS_NODE_TTL_S: '3' });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE raw (id INT PRIMARY KEY, g INT NOT NULL, v INT NOT NULL)');
  await t.db.raw('CREATE TABLE dim (g INT PRIMARY KEY, label VARCHAR(16) NOT NULL)');
  await t.db('raw').insert([
    { id: 1, g: 1, v: 10 },
    { id: 2, g: 1, v: 20 },
    { id: 3, g: 2, v: 5 },
  ]);
  await t.db('dim').insert([
    { g: 1, label: 'one' },
    { g: 2, label: 'two' },
  ]);
  rt = createRuntime(t.config, t.logger);
  ddl = createDdlExecutor(rt, 'test');
  cluster = new Cluster(t);
  cluster.worker('pd-1');
  await waitFor(async () => (await rt.redis.zcard(`${t.prefix}:mvs:nodes`)) > 0, { timeoutMs: 30_000, what: 'the worker to join' });
});

afterAll(async () => {
  await cluster?.closeAll();
  await rt?.close();
  await t?.close();
});

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...t.env, LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const id = async (name: string) => Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);
const dataTime = async (name: string) => ((await t.db('mvs_mview_refresh_info').where({ mview_id: await id(name) }).first('data_time')).data_time as Date).getTime();
const runsSince = async (refreshId: number) =>
  (await t.db('mvs_mview_refresh_hist as h')
    .join('mvs_mviews as m', 'm.mview_id', 'h.mview_id')
    .where('h.refresh_id', '>', refreshId)
    .orderBy('h.refresh_id')
    .select('h.*', 'm.mview_name')) as Array<RefreshHistRow & { mview_name: string }>;
const lastRefreshId = async () => Number((await t.db('mvs_mview_refresh_hist').max({ m: 'refresh_id' }).first())!.m ?? 0);
const rows = async (table: string) => ((await t.db.raw(`SELECT * FROM \`${table}\` ORDER BY 1`)) as [unknown[]])[0];

/** Runs in order, each starting after the one before it ended, with these names and triggers. */
function expectOrdered(runs: Array<RefreshHistRow & { mview_name: string }>, expected: Array<[string, string]>): void {
  expect(runs.map((r) => [r.mview_name, r.refresh_trigger]), JSON.stringify(runs)).toEqual(expected);
  for (let i = 1; i < runs.length; i++) {
    expect(runs[i]!.start_time.getTime(), `${runs[i]!.mview_name} starts after ${runs[i - 1]!.mview_name} ended`).toBeGreaterThanOrEqual(runs[i - 1]!.end_time!.getTime());
  }
  expect(runs.every((r) => r.refresh_status === 'SUCCESS')).toBe(true);
}

describe('pipelines: dependencies, DROP, CASCADE, data time', () => {
  it('records what an MV reads, mixed MVs and tables, and shows it both ways', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW a ON DEMAND AS SELECT g, COUNT(*) AS n, SUM(v) AS s FROM raw GROUP BY g');
    await ddl.execute('CREATE MATERIALIZED VIEW b TARGET LAG DOWNSTREAM AS SELECT SUM(n) AS n, SUM(s) AS s FROM a');
    await ddl.execute('CREATE MATERIALIZED VIEW c TARGET LAG 3600 AS SELECT a.g, d.label, a.s FROM a JOIN dim d ON d.g = a.g');
    await ddl.execute('CREATE MATERIALIZED VIEW e TARGET LAG DOWNSTREAM AS SELECT n FROM b');

    const st = new Map((await listMviewStatus(t.db, undefined)).map((s) => [s.mview, s]));
    const db = t.database;
    expect(st.get('a')).toMatchObject({ dependsOn: [], readBy: [`${db}.b`, `${db}.c`], targetLag: null, nextTime: null });
    expect(st.get('b')).toMatchObject({ dependsOn: [`${db}.a`], readBy: [`${db}.e`], targetLag: 'DOWNSTREAM', nextTime: null });
    expect(st.get('c')).toMatchObject({ dependsOn: [`${db}.a`], readBy: [], targetLag: 3600, nextTime: null, targetUnmetReason: null });
    expect(st.get('e')).toMatchObject({ dependsOn: [`${db}.b`], readBy: [] });
    expect(st.get('c')!.lagSeconds).toBeGreaterThanOrEqual(0);
    // One MV, and a page of one, name neighbours that are not in what was asked for.
    const [one] = await listMviewStatus(t.db, undefined, { schema: db, name: 'b' });
    expect(one).toMatchObject({ mview: 'b', dependsOn: [`${db}.a`], readBy: [`${db}.e`] });
    const page = await listMviewStatus(t.db, undefined, undefined, { after: { schema: db, name: 'b' }, limit: 1 });
    expect(page.map((m) => [m.mview, m.dependsOn, m.readBy])).toEqual([['c', [`${db}.a`], []]]);

    // The same through the CLI (status --json) and its table.
    const json = await cli(['status', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const b = (JSON.parse(json.stdout) as { mviews: Array<Record<string, unknown>> }).mviews.find((m) => m.mview === 'b');
    expect(b).toMatchObject({ dependsOn: [`${db}.a`], readBy: [`${db}.e`], targetLag: 'DOWNSTREAM', targetUnmetReason: null });
    expect(typeof b!.dataTime).toBe('string');
    const text = await cli(['status']);
    expect(text.stdout).toContain(`${db}.a: read by ${db}.b, ${db}.c`);
    expect(text.stdout).toContain(`${db}.c: reads ${db}.a`);
    expect(text.stdout).toMatch(/lag 3600s/);
  });

  it('gives an MV over MVs the oldest data time of what it read', async () => {
    await t.db('raw').insert({ id: 4, g: 2, v: 1 });
    await ddl.execute('REFRESH MATERIALIZED VIEW a');
    const aTime = await dataTime('a');
    // b reads a: refreshed later, it reflects a's snapshot, not its own read time.
    await new Promise((r) => setTimeout(r, 50));
    await ddl.execute('REFRESH MATERIALIZED VIEW b');
    expect(await dataTime('b')).toBe(aTime);
    // c reads a and a table: its own read of dim is newer, a's data time holds it back.
    await ddl.execute('REFRESH MATERIALIZED VIEW c');
    expect(await dataTime('c')).toBe(aTime);
    const h = await t.db('mvs_mview_refresh_hist').where({ mview_id: await id('c') }).orderBy('refresh_id', 'desc').first('data_time', 'start_time');
    expect(h.data_time.getTime()).toBe(aTime);
    expect(h.start_time.getTime()).toBeGreaterThan(aTime);
  });

  it('refuses DROP of an MV that others read, naming them (exit 4 from the CLI)', async () => {
    const err = await ddl.execute('DROP MATERIALIZED VIEW a').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as Error).message).toBe(
      `cannot drop materialized view ${t.database}.a: ${t.database}.b, ${t.database}.c read it (DROP MATERIALIZED VIEW ${t.database}.a CASCADE drops them too)`,
    );
    const out = await cli(['sql', 'DROP MATERIALIZED VIEW b']);
    expect(out.code).toBe(4);
    expect(out.stderr.trim()).toBe(`mvsched: cannot drop materialized view ${t.database}.b: ${t.database}.e reads it (DROP MATERIALIZED VIEW ${t.database}.b CASCADE drops it too)`);
    // Nothing changed.
    expect(await t.db('mvs_mviews').count({ n: '*' }).first()).toEqual({ n: 4 });
    expect(await rows('b')).toHaveLength(1);
  });

  it('REFRESH ... CASCADE refreshes the upstream chain first, in order, trigger UPSTREAM', async () => {
    await t.db('raw').insert({ id: 5, g: 3, v: 100 });
    await t.db('dim').insert({ g: 3, label: 'three' });
    const before = await lastRefreshId();
    const res = await ddl.execute('REFRESH MATERIALIZED VIEW e CASCADE');
    expect(res.message).toMatch(new RegExp(`^refreshed materialized view ${t.database}\\.e \\(COMPLETE, 1 rows\\) after its upstream ${t.database}\\.a \\(COMPLETE\\), ${t.database}\\.b \\(COMPLETE\\)$`));
    expectOrdered(await runsSince(before), [
      ['a', 'UPSTREAM'],
      ['b', 'UPSTREAM'],
      ['e', 'MANUAL'],
    ]);
    expect(await rows('e')).toEqual([{ n: '5' }]); // SUM of a DECIMAL
  });

  it('REFRESH CASCADE through the requests queue (job payload cascade) and the API', async () => {
    await t.db('raw').insert({ id: 6, g: 1, v: 1 });
    const queue = new Queue(REQUESTS_QUEUE, { connection: rt.redis, prefix: t.prefix });
    const events = new QueueEvents(REQUESTS_QUEUE, { connection: rt.newConnection(), prefix: t.prefix });
    try {
      await events.waitUntilReady();
      const before = await lastRefreshId();
      const job = await queue.add('refresh', { mview: `${t.database}.c`, cascade: true });
      const result = (await job.waitUntilFinished(events, 60_000)) as Record<string, unknown>;
      expect(result).toMatchObject({ outcome: 'SUCCESS', upstream: [{ name: `${t.database}.a`, outcome: 'REFRESHED', method: 'COMPLETE' }] });
      expectOrdered(await runsSince(before), [
        ['a', 'UPSTREAM'],
        ['c', 'REQUEST'],
      ]);
      // The CLI's --cascade goes the same way.
      const before2 = await lastRefreshId();
      const out = await cli(['refresh', 'b', '--cascade', '--wait']);
      expect(out.code, out.stderr).toBe(0);
      expect(out.stdout.trim()).toBe(`refreshed ${t.database}.b: SUCCESS (1 rows) after its upstream ${t.database}.a (COMPLETE)`);
      expectOrdered(await runsSince(before2), [
        ['a', 'UPSTREAM'],
        ['b', 'MANUAL'],
      ]);
    } finally {
      await events.close();
      await queue.close();
    }
    // The API enqueues the same payload.
    const app: FastifyInstance = await buildApp({ db: rt.db, redis: rt.redis, logger: t.logger, apiToken: undefined, api: { prefix: t.prefix, defaultSchema: rt.defaultSchema, ddl } });
    try {
      const r = await app.inject({ method: 'POST', url: `/v1/mviews/${t.database}/c/refresh`, payload: { cascade: true } });
      expect(r.statusCode).toBe(202);
      const job = await new Queue(REQUESTS_QUEUE, { connection: rt.redis, prefix: t.prefix }).getJob(r.json<{ jobId: string }>().jobId);
      expect(job!.data).toEqual({ mview: `${t.database}.c`, trigger: 'MANUAL', cascade: true });
      const bad = await app.inject({ method: 'POST', url: `/v1/mviews/${t.database}/c/refresh`, payload: { cascade: 'yes' } });
      expect(bad.statusCode).toBe(400);
      expect(bad.json<{ message: string }>().message).toMatch(/^invalid refresh payload: cascade: /);
    } finally {
      await app.close();
    }
  });

  it('DROP ... CASCADE drops the readers first, downstream first, and nothing else', async () => {
    const ids = { a: await id('a'), b: await id('b'), e: await id('e'), c: await id('c') };
    const res = await ddl.execute('DROP MATERIALIZED VIEW b CASCADE');
    expect(res.message).toBe(`dropped materialized view ${t.database}.b and 1 that read it, downstream first: ${t.database}.e`);
    const left = (await t.db('mvs_mviews').orderBy('mview_name').pluck('mview_name')) as string[];
    expect(left).toEqual(['a', 'c']);
    for (const gone of [ids.b, ids.e]) {
      expect(await t.db('mvs_mview_refresh_info').where({ mview_id: gone }).first()).toBeUndefined();
      expect(await t.db('mvs_mview_base_tables').where({ mview_id: gone }).first()).toBeUndefined();
    }
    const tables = (await t.db('information_schema.tables').where({ table_schema: t.database }).pluck('table_name')) as string[];
    expect(tables).not.toContain('b');
    expect(tables).not.toContain('e');
    // a, with c still reading it, is kept; a's readers are c only now.
    const a = (await listMviewStatus(t.db, undefined)).find((s) => s.mview === 'a')!;
    expect(a.readBy).toEqual([`${t.database}.c`]);
    await ddl.execute('DROP MATERIALIZED VIEW a CASCADE');
    expect(await t.db('mvs_mviews').count({ n: '*' }).first()).toEqual({ n: 0 });
  });

  it('refuses an MV that would close a cycle through a table dropped by hand', async () => {
    await t.db.raw('CREATE TABLE loose (x INT)');
    await ddl.execute('CREATE MATERIALIZED VIEW over_loose AS SELECT COUNT(*) AS n FROM loose');
    await t.db.raw('DROP TABLE loose');
    const err = await ddl.execute('CREATE MATERIALIZED VIEW loose AS SELECT n FROM over_loose').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toBe(
      `cannot create materialized view ${t.database}.loose: it would read ${t.database}.over_loose, which reads a table named ${t.database}.loose (a cycle)`,
    );
    expect(await t.db('mvs_mviews').where({ mview_name: 'loose' }).first()).toBeUndefined();
    await ddl.execute('DROP MATERIALIZED VIEW over_loose');
  });

  it('ALTER moves an MV between a grid, a target lag and on demand', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW m NEXT 60 AS SELECT COUNT(*) AS n FROM raw');
    const info = async () =>
      (await t.db('mvs_mviews as m').join('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id').where('m.mview_name', 'm')
        .first('m.refresh_start', 'm.refresh_interval', 'm.target_lag', 'm.target_downstream', 'ri.next_time')) as Record<string, unknown>;
    expect(await info()).toMatchObject({ refresh_interval: 60, target_lag: null, target_downstream: 0 });
    expect((await info()).next_time).not.toBeNull();
    await ddl.execute('ALTER MATERIALIZED VIEW m REFRESH TARGET LAG 30');
    expect(await info()).toEqual({ refresh_start: null, refresh_interval: null, target_lag: 30, target_downstream: 0, next_time: null });
    await ddl.execute('ALTER MATERIALIZED VIEW m REFRESH COMPLETE TARGET LAG DOWNSTREAM');
    expect(await info()).toEqual({ refresh_start: null, refresh_interval: null, target_lag: null, target_downstream: 1, next_time: null });
    await ddl.execute('ALTER MATERIALIZED VIEW m REFRESH NEXT 20');
    expect(await info()).toMatchObject({ refresh_interval: 20, target_lag: null, target_downstream: 0 });
    expect((await info()).next_time).not.toBeNull();
    await ddl.execute('ALTER MATERIALIZED VIEW m REFRESH ON DEMAND');
    expect(await info()).toEqual({ refresh_start: null, refresh_interval: null, target_lag: null, target_downstream: 0, next_time: null });
    await ddl.execute('DROP MATERIALIZED VIEW m');
  });
});
