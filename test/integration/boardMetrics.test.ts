import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Queue, QueueEvents } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { ServerMetrics } from '../../src/metrics/serverMetrics.js';
import { listMviewStatus } from '../../src/mv/status.js';
import { buildApp } from '../../src/server/app.js';
import { Cluster, inspector, type Proc, type QueueInspector } from '../support/cluster.js';
import { alertRules, dashboardExprs, exportedNames, metricNames } from '../support/deploy.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// Bull Board and /metrics of the server, against real worker and planner processes; Bull Board
// is also opened in a real browser (Debian's chromium through playwright-core).

const TOKEN = 'board-test-token';
const ARTIFACTS = join(process.cwd(), 'test-artifacts');

let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let cluster: Cluster;
let ins: QueueInspector;
let app: FastifyInstance;
let metrics: ServerMetrics;
let url: string;
let w2: Proc | undefined;

beforeAll(async () => {
  t = await createTestEnv('board', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '5' });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE orders (id INT PRIMARY KEY, cust INT NULL, amt INT NULL)');
  await t.db('orders').insert([
    { id: 1, cust: 1, amt: 5 },
    { id: 2, cust: 2, amt: 7 },
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
  url = await app.listen({ port: 0, host: '127.0.0.1' });
  ins = inspector(t);
  cluster = new Cluster(t);
  cluster.planner();
  cluster.worker('w1');
  await waitFor(async () => (await ins.registry.live()).join() === 'w1', { timeoutMs: 30_000, what: 'w1 live' });
});

afterAll(async () => {
  await cluster?.closeAll();
  await app?.close();
  await metrics?.close();
  await ins?.close();
  await rt?.close();
  await t?.close();
});

const auth = { authorization: `Bearer ${TOKEN}` };

async function boardQueues(): Promise<Array<{ name: string; readOnlyMode: boolean; counts: Record<string, number> }>> {
  const res = await app.inject({ url: '/admin/queues/api/queues', headers: auth });
  expect(res.statusCode).toBe(200);
  return (res.json() as { queues: Array<{ name: string; readOnlyMode: boolean; counts: Record<string, number> }> }).queues;
}

interface BoardJob {
  id: string;
  name: string;
  timestamp: number;
  opts: { delay?: number; keepLogs?: number };
  data: { dueAt: number; [k: string]: unknown };
}

/** The delayed jobs of a queue as the board's API gives them to its UI. */
async function delayedJobs(queue: string): Promise<BoardJob[]> {
  const res = await app.inject({ url: `/admin/queues/api/queues?activeQueue=${queue}&status=delayed&page=1&jobsPerPage=50`, headers: auth });
  const q = (res.json() as { queues: Array<{ name: string; jobs: BoardJob[] }> }).queues.find((x) => x.name === queue);
  return q?.jobs ?? [];
}

async function jobLogs(queue: string, jobId: string): Promise<string[]> {
  const res = await app.inject({ url: `/admin/queues/api/queues/${queue}/${jobId}/logs`, headers: auth });
  return res.statusCode === 200 ? (res.json() as string[]) : [];
}

/** Value of one sample in Prometheus text, e.g. sample(body, 'mvs_live_nodes'). */
function sample(body: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of body.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^([^{\s]+)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe('Bull Board', () => {
  it('is behind the token: bearer, or ?token= once (sets a cookie); nothing without', async () => {
    expect((await app.inject({ url: '/admin/queues' })).statusCode).toBe(401);
    expect((await app.inject({ url: '/admin/queues/api/queues?token=wrong' })).statusCode).toBe(401);
    const viaQuery = await app.inject({ url: '/admin/queues?token=' + TOKEN });
    expect(viaQuery.statusCode).toBe(302);
    expect(viaQuery.headers.location).toBe('/admin/queues');
    const cookie = String(viaQuery.headers['set-cookie']).split(';')[0]!;
    expect((await app.inject({ url: '/admin/queues/api/queues', headers: { cookie } })).statusCode).toBe(200);
    expect((await app.inject({ url: '/admin/queues/api/queues', headers: { cookie: 'mvs_token=nope' } })).statusCode).toBe(401);
    expect((await app.inject({ url: '/admin/queues', headers: auth })).statusCode).toBe(200);
  });

  it('shows every mvsched queue, read-only, and node queues follow membership', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW by_cust NEXT 3600 AS SELECT cust, SUM(amt) AS total FROM orders GROUP BY cust');
    await waitFor(async () => (await boardQueues()).find((q) => q.name === 'node-w1')?.counts.delayed === 1, {
      timeoutMs: 15_000,
      what: 'the delayed refresh job of node-w1 on the board',
    });
    const qs = await boardQueues();
    expect(qs.map((q) => q.name).sort()).toEqual(['node-w1', 'repair', 'requests']);
    expect(qs.every((q) => q.readOnlyMode)).toBe(true);
    // Read-only: the board refuses to act on jobs.
    const retry = await app.inject({ method: 'PUT', url: '/admin/queues/api/queues/node-w1/retry/failed', headers: auth });
    expect(retry.statusCode).toBeGreaterThanOrEqual(400);

    w2 = cluster.worker('w2');
    await waitFor(async () => (await boardQueues()).some((q) => q.name === 'node-w2'), { timeoutMs: 15_000, what: 'node-w2 on the board' });
    await cluster.stop(w2, 'SIGTERM');
    await waitFor(async () => !(await boardQueues()).some((q) => q.name === 'node-w2'), { timeoutMs: 15_000, what: 'node-w2 gone from the board' });
  });

  let tickerJob: string;

  it('scheduled jobs carry the MV name, a log line per run (capped), and their real run time', async () => {
    await ddl.execute('CREATE MATERIALIZED VIEW ticker NEXT 1 AS SELECT COUNT(*) AS n FROM orders');
    const id = Number((await t.db('mvs_mviews').where({ mview_name: 'ticker' }).first('mview_id')).mview_id);
    tickerJob = `mv-${id}`;
    // A job the planner placed and nothing ran yet: the name is there from the start.
    const byCust = (await delayedJobs('node-w1')).find((j) => j.id === 'mv-1');
    expect(byCust?.data).toMatchObject({ mviewId: 1, dueAt: expect.any(Number), mview: `${t.database}.by_cust` });
    expect(byCust?.name).toBe(`refresh ${t.database}.by_cust`);
    // After a few runs, re-delayed by the worker each time: the board's run time is the slot it
    // waits for, not its first one, and its log has a line per run.
    const job = await waitFor(
      async () => {
        const j = (await delayedJobs('node-w1')).find((x) => x.id === tickerJob);
        const logs = await jobLogs('node-w1', tickerJob);
        return j && logs.length >= 3 && j.timestamp + Number(j.opts.delay) === j.data.dueAt ? { j, logs } : undefined;
      },
      { timeoutMs: 30_000, what: 'the ticker job re-delayed with three log lines and the run time of its slot' },
    );
    expect(job.j.data).toMatchObject({ mviewId: id, mview: `${t.database}.ticker` });
    expect(job.j.timestamp).toBeLessThan(job.j.data.dueAt - 2_000); // created runs ago, so the fix was needed
    expect(job.j.opts.keepLogs).toBe(100);
    expect(job.logs[0]).toMatch(/^\d{4}-\d\d-\d\dT\S+Z SUCCESS COMPLETE: 1 rows in \d+ ms \(refresh \d+\); next \d{4}-/);
  });

  it('renders in a real browser: the node queue, the delayed job with its MV name, and its job log', async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    expect(existsSync('/usr/bin/chromium'), 'Debian chromium (apt-get install chromium; the test bootstrap installs it as root)').toBe(true);
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(`${url}/admin/queues?token=${TOKEN}`);
      await page.getByText('node-w1').first().waitFor({ timeout: 20_000 });
      await page.goto(`${url}/admin/queues/queue/node-w1?status=delayed`);
      await page.getByText('mv-1').first().waitFor({ timeout: 20_000 });
      await page.getByText(`refresh ${t.database}.by_cust`).first().waitFor({ timeout: 20_000 });
      await page.screenshot({ path: join(ARTIFACTS, 'bull-board.png'), fullPage: true });
      const text = await page.locator('body').innerText();
      expect(text).toMatch(new RegExp(`mview:\\s*"${t.database}\\.by_cust"`));

      await page.goto(`${url}/admin/queues/queue/node-w1/${tickerJob}`);
      await page.getByText(`refresh ${t.database}.ticker`).first().waitFor({ timeout: 20_000 });
      await page.getByRole('tab', { name: /logs/i }).or(page.getByText(/^logs$/i)).first().click();
      await page.getByText(/SUCCESS COMPLETE: 1 rows in \d+ ms/).first().waitFor({ timeout: 20_000 });
      await page.screenshot({ path: join(ARTIFACTS, 'bull-board-job-log.png'), fullPage: true });
    } finally {
      await browser.close();
      await ddl.execute('DROP MATERIALIZED VIEW ticker');
    }
  });
});

describe('/metrics', () => {
  it('has runs by result, durations, lateness, queue depths, MVs by state, repairs and live nodes', async () => {
    await t.db.raw('CREATE TABLE ev (id INT PRIMARY KEY, k INT NULL)');
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON ev (k)');
    await ddl.execute('CREATE MATERIALIZED VIEW ev_mv REFRESH FAST NEXT 1 AS SELECT k, COUNT(*) AS n FROM ev GROUP BY k');
    await t.db('ev').insert([{ id: 1, k: 1 }, { id: 2, k: 1 }]);
    const requests = new Queue('requests', { connection: ins.redis, prefix: t.prefix });
    const events = new QueueEvents('requests', { connection: ins.redis.duplicate(), prefix: t.prefix });
    try {
      await events.waitUntilReady();
      // A request-driven purge, and a repair (which finds no version map: skipped).
      const p = await requests.add('purge', { mlog: `${t.database}.ev` });
      await p.waitUntilFinished(events, 20_000);
      const r = await requests.add('repair', { table: `${t.database}.orders`, partitions: [{ partitionId: 1, partitionName: 'p', lastVersion: 1, newVersion: 2, newVersionTime: 1 }] });
      await r.waitUntilFinished(events, 20_000);
    } finally {
      await events.close();
      await requests.close();
    }
    const body = await waitFor(
      async () => {
        const res = await app.inject({ url: '/metrics', headers: auth });
        const b = res.body;
        return (sample(b, 'mvs_refresh_runs_total', { result: 'SUCCESS', method: 'FAST', trigger: 'SCHEDULED', node: 'w1' }) ?? 0) >= 2 &&
          (sample(b, 'mvs_purge_runs_total', { result: 'SUCCESS', trigger: 'REQUEST', node: 'w1' }) ?? 0) >= 1
          ? b
          : undefined;
      },
      { timeoutMs: 20_000, what: 'scheduled FAST refreshes and a purge in the scrape' },
    );
    expect(sample(body, 'mvs_refresh_runs_total', { result: 'SUCCESS', method: 'COMPLETE', trigger: 'MANUAL', node: 'server' })).toBeGreaterThanOrEqual(2);
    expect(sample(body, 'mvs_refresh_duration_seconds_count', { method: 'FAST', node: 'w1' })).toBeGreaterThanOrEqual(2);
    const lateCount = sample(body, 'mvs_dispatch_lateness_seconds_count', { node: 'w1' })!;
    const lateSum = sample(body, 'mvs_dispatch_lateness_seconds_sum', { node: 'w1' })!;
    expect(lateCount).toBeGreaterThanOrEqual(2);
    expect(lateSum / lateCount).toBeLessThan(5); // plausible: scheduled runs start within seconds of their slot
    expect(sample(body, 'mvs_queue_jobs', { queue: 'node-w1', state: 'delayed' })).toBeGreaterThanOrEqual(1);
    expect(sample(body, 'mvs_queue_jobs', { queue: 'requests', state: 'active' })).toBe(0);
    expect(sample(body, 'mvs_mviews', { state: 'fresh' })).toBe(2);
    expect(sample(body, 'mvs_mviews', { state: 'suspended' })).toBe(0);
    expect(sample(body, 'mvs_live_nodes')).toBe(1);
    expect(sample(body, 'mvs_repairs_total', { outcome: 'skipped', node: 'w1' })).toBe(1);
    expect(body).toMatch(/# TYPE mvs_refresh_duration_seconds histogram/);
    // A planner runs in this file and holds the lease.
    expect(sample(body, 'mvs_planner_leader_present')).toBe(1);

    // Per-MV and per-log series (DESIGN.md §3), with plausible values.
    const ev = { mview: `${t.database}.ev_mv` };
    const nowS = Date.now() / 1000;
    expect(sample(body, 'mvs_mview_lag_seconds', ev)).toBeGreaterThanOrEqual(0);
    expect(sample(body, 'mvs_mview_lag_seconds', ev)).toBeLessThan(30); // refreshed every second by w1
    expect(sample(body, 'mvs_mview_last_success_timestamp_seconds', ev)).toBeGreaterThan(nowS - 60);
    expect(sample(body, 'mvs_mview_last_success_timestamp_seconds', ev)).toBeLessThan(nowS + 5);
    expect(sample(body, 'mvs_mview_consecutive_failures', ev)).toBe(0);
    expect(sample(body, 'mvs_mview_interval_seconds', ev)).toBe(1);
    expect(sample(body, 'mvs_mview_interval_seconds', { mview: `${t.database}.by_cust` })).toBe(3600);
    expect(sample(body, 'mvs_mview_series_omitted')).toBe(0);
    expect(sample(body, 'mvs_mlog_broken', { mlog: `${t.database}.ev` })).toBe(0);
    expect(sample(body, 'mvs_mlog_backlog_rows', { mlog: `${t.database}.ev` })).toBeGreaterThanOrEqual(0);
    expect(sample(body, 'mvs_mlog_backlog_rows', { mlog: `${t.database}.ev` })).toBeLessThanOrEqual(2);

    // MVS_METRICS_MAX_MVIEWS: past it, the worst by lag are exported and a gauge counts the rest.
    const capped = new ServerMetrics({ db: t.db, redis: rt.redis, prefix: t.prefix, maxMviews: 1 });
    try {
      const worst = (await listMviewStatus(t.db, undefined)).sort((a, b) => (b.lagSeconds ?? -1) - (a.lagSeconds ?? -1))[0]!;
      const few = (await capped.scrape()).body;
      const lagged = few.split('\n').filter((l) => l.startsWith('mvs_mview_lag_seconds{'));
      expect(lagged).toHaveLength(1);
      expect(lagged[0]).toContain(`mview="${worst.name}"`);
      expect(sample(few, 'mvs_mview_series_omitted')).toBe(1);
      expect(sample(few, 'mvs_mviews', { state: 'fresh' })).toBe(2); // the counts still cover every MV
    } finally {
      await capped.close();
    }

    // The shipped alert rules and Grafana dashboard read only series the server exports.
    const exported = exportedNames(body);
    const read = [...alertRules().map((r) => r.expr), ...dashboardExprs()].flatMap(metricNames);
    expect(read.length).toBeGreaterThan(10);
    // Capture's series exist only where USING BINLOG logs exist or a capture runs (none here);
    // test/integration/captureAlerts.test.ts scrapes them from a real capture.
    const conditional = new Set(['mvs_capture_active', 'mvs_capture_lag_seconds', 'mvs_capture_lag_bytes']);
    expect([...new Set(read)].filter((n) => !exported.has(n) && !conditional.has(n)), 'metric names in deploy/ that /metrics does not export').toEqual([]);

    await ddl.execute('ALTER MATERIALIZED VIEW ev_mv SUSPEND');
    const after = (await app.inject({ url: '/metrics', headers: auth })).body;
    expect(sample(after, 'mvs_mviews', { state: 'suspended' })).toBe(1);
    expect((await app.inject({ url: '/metrics' })).statusCode).toBe(401);
  });
});
