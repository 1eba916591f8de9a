import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { DemoWriter, setupDemo } from '../../src/demo/demo.js';
import { buildApp } from '../../src/server/app.js';
import { createTestLog } from '../support/binlogLogs.js';
import { Cluster, inspector, type QueueInspector } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// The dashboard at /ui (DESIGN.md §3 "Dashboard") against the demo, kept fresh by real planner and
// worker processes: its token rules, its CSRF-protected refresh, its server-side listing, and the
// pages in a real browser (Debian's chromium through playwright-core), screenshots kept under
// test-artifacts/.

const TOKEN = 'dashboard-test-token';
const ARTIFACTS = join(process.cwd(), 'test-artifacts');
const auth = { authorization: `Bearer ${TOKEN}` };

let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let cluster: Cluster;
let ins: QueueInspector;
let app: FastifyInstance;
let writer: DemoWriter;
let url: string;
let demo: string;

beforeAll(async () => {
  t = await createTestEnv('dashboard', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '5' });
  await migrateLatest(t.db);
  rt = createRuntime(t.config, t.logger);
  ddl = createDdlExecutor(rt, 'server');
  demo = `${t.database}_demo`;
  const setup = await setupDemo({ db: t.db, ddl, logger: t.logger, schema: demo });
  expect(setup.kind).toBe('created');
  // A pipeline: an MV over one of the demo's MVs; and an MV whose table goes away, so it fails.
  await ddl.execute(`CREATE MATERIALIZED VIEW ${demo}.region_totals NEXT 10 AS SELECT SUM(revenue) AS revenue, SUM(orders) AS orders FROM ${demo}.sales_by_region`);
  await t.db.raw('CREATE TABLE doomed (id INT PRIMARY KEY, v INT NULL)');
  await ddl.execute('CREATE MATERIALIZED VIEW doomed_sum NEXT 2 AS SELECT SUM(v) AS v FROM doomed');
  await t.db.raw('DROP TABLE doomed');
  writer = new DemoWriter({ db: t.db, ddl, logger: t.logger, schema: demo, everyMs: 500 });
  writer.start();
  app = await buildApp({
    db: t.db,
    redis: rt.redis,
    logger: t.logger,
    apiToken: TOKEN,
    api: { prefix: t.prefix, defaultSchema: t.database, ddl },
    board: { prefix: t.prefix, writable: false, refreshMs: 500 },
    ui: true,
  });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
  ins = inspector(t);
  cluster = new Cluster(t);
  cluster.planner();
  cluster.worker('w1');
  await waitFor(async () => (await ins.registry.live()).join() === 'w1', { timeoutMs: 30_000, what: 'w1 live' });
});

afterAll(async () => {
  writer?.close();
  await cluster?.closeAll();
  await app?.close();
  await ins?.close();
  await rt?.close();
  await t?.db.raw('DROP DATABASE IF EXISTS ??', [demo]).catch(() => {});
  await t?.close();
});

const cookieOf = (setCookie: unknown) => String(setCookie).split(';')[0]!;

async function login(): Promise<string> {
  const res = await app.inject({ url: `/ui?token=${TOKEN}` });
  expect(res.statusCode).toBe(302);
  return cookieOf(res.headers['set-cookie']);
}

async function csrfOf(cookie: string): Promise<string> {
  const html = (await app.inject({ url: '/ui', headers: { cookie } })).body;
  const m = /<meta name="mvs-csrf" content="([^"]+)">/.exec(html);
  expect(m, 'the page carries its CSRF token').not.toBeNull();
  return m![1]!;
}

describe('token rules', () => {
  it('401 without the token; ?token= logs in once and redirects to the URL without it', async () => {
    for (const path of ['/ui', `/ui/mv/${demo}/sales_by_region`, '/ui/api/overview', '/ui/assets/app.js', '/ui/vendor/uplot.js', '/', '/v1/mviews']) {
      expect((await app.inject({ url: path })).statusCode, path).toBe(401);
    }
    const html401 = await app.inject({ url: '/ui', headers: { accept: 'text/html' } });
    expect(html401.statusCode).toBe(401);
    expect(html401.body).toContain('?token=');
    expect((await app.inject({ url: '/ui?token=wrong' })).statusCode).toBe(401);

    const res = await app.inject({ url: `/ui/mv/${demo}/sales_by_region?token=${TOKEN}&tab=runs` });
    expect(res.statusCode).toBe(302);
    expect(res.headers.location).toBe(`/ui/mv/${demo}/sales_by_region?tab=runs`);
    const setCookie = String(res.headers['set-cookie']);
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).toMatch(/Path=\//);
    const cookie = cookieOf(setCookie);

    const page = await app.inject({ url: '/ui', headers: { cookie } });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect((await app.inject({ url: '/ui/api/overview', headers: { cookie } })).statusCode).toBe(200);
    expect((await app.inject({ url: '/ui/vendor/dagre.js', headers: { cookie } })).statusCode).toBe(200);
    expect((await app.inject({ url: '/ui/assets/nope.js', headers: { cookie } })).statusCode).toBe(404);
    // The cookie reads the JSON API (the dashboard's client does), but writes there need the bearer.
    expect((await app.inject({ url: `/v1/mviews/${demo}/sales_by_region`, headers: { cookie } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: '/v1/sql', headers: { cookie }, payload: { sql: `DROP MATERIALIZED VIEW ${demo}.region_totals` } })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: `/v1/mviews/${demo}/sales_by_region/refresh`, headers: { cookie }, payload: {} })).statusCode).toBe(401);
    expect((await app.inject({ url: '/v1/mviews', headers: { cookie: 'mvs_token=nope' } })).statusCode).toBe(401);
    // Bull Board takes the same login, and / links to both.
    expect((await app.inject({ url: '/admin/queues/api/queues', headers: { cookie } })).statusCode).toBe(200);
    const home = await app.inject({ url: '/', headers: { cookie } });
    expect(home.statusCode).toBe(200);
    expect(home.body).toContain('href="/ui"');
    expect(home.body).toContain('href="/admin/queues"');
    expect((await app.inject({ url: '/favicon.ico' })).statusCode).toBe(204);
  });

  it('refresh from the dashboard needs the CSRF token and a same-origin request', async () => {
    const cookie = await login();
    const csrf = await csrfOf(cookie);
    const path = `/ui/api/mviews/${demo}/top_customers/refresh`;
    const post = (headers: Record<string, string>) => app.inject({ method: 'POST', url: path, headers: { cookie, 'content-type': 'application/json', ...headers }, payload: '{}' });
    const noToken = await post({});
    expect(noToken.statusCode).toBe(403);
    expect(noToken.json().message).toMatch(/x-mvs-csrf/);
    expect((await post({ 'x-mvs-csrf': 'forged' })).statusCode).toBe(403);
    expect((await post({ 'x-mvs-csrf': csrf, 'sec-fetch-site': 'cross-site' })).statusCode).toBe(403);
    expect((await post({ 'x-mvs-csrf': csrf, origin: 'http://evil.example' })).statusCode).toBe(403);
    // Nothing was enqueued by the refused ones.
    const requests = new Queue('requests', { connection: ins.redis, prefix: t.prefix });
    try {
      expect(await requests.getJobCounts()).toMatchObject({ waiting: 0, active: 0, completed: 0, failed: 0 });
    } finally {
      await requests.close();
    }

    const ok = await post({ 'x-mvs-csrf': csrf, 'sec-fetch-site': 'same-origin', origin: 'http://localhost:80' });
    expect(ok.statusCode).toBe(202);
    expect(ok.json()).toMatchObject({ queue: 'requests', name: 'refresh' });
    const missing = await app.inject({ method: 'POST', url: `/ui/api/mviews/${demo}/nope/refresh`, headers: { cookie, 'content-type': 'application/json', 'x-mvs-csrf': csrf }, payload: '{}' });
    expect(missing.statusCode).toBe(404);
    const badMethod = await app.inject({ method: 'POST', url: path, headers: { cookie, 'content-type': 'application/json', 'x-mvs-csrf': csrf }, payload: '{"method":"SLOW"}' });
    expect(badMethod.statusCode).toBe(400);
  });

  it('without MVS_API_TOKEN (a loopback-only server) the refresh still needs the CSRF token', async () => {
    const open = await buildApp({ db: t.db, redis: rt.redis, logger: t.logger, apiToken: undefined, api: { prefix: t.prefix, defaultSchema: t.database, ddl }, ui: true });
    try {
      const page = await open.inject({ url: '/ui' });
      expect(page.statusCode).toBe(200);
      const csrf = /<meta name="mvs-csrf" content="([^"]+)">/.exec(page.body)![1]!;
      const post = (headers: Record<string, string>) =>
        open.inject({ method: 'POST', url: `/ui/api/mviews/${demo}/top_customers/refresh`, headers: { 'content-type': 'application/json', ...headers }, payload: '{}' });
      expect((await post({})).statusCode).toBe(403);
      expect((await post({ 'x-mvs-csrf': csrf, 'sec-fetch-site': 'cross-site' })).statusCode).toBe(403);
      expect((await post({ 'x-mvs-csrf': csrf })).statusCode).toBe(202);
    } finally {
      await open.close();
    }
  });
});

describe('overview listing', () => {
  it('filters, searches, counts and pages on the server', async () => {
    const get = async (qs: string) => {
      const res = await app.inject({ url: `/ui/api/overview?${qs}`, headers: auth });
      expect(res.statusCode, res.body).toBe(200);
      return res.json() as { now: string; total: number; matched: number; counts: Record<string, number>; schemas: string[]; nodes: Array<{ node: string; mviews: number }>; items: Array<Record<string, unknown>> };
    };
    const failing = await waitFor(async () => {
      const o = await get('filter=failing');
      return o.items.length ? o : undefined;
    }, { timeoutMs: 30_000, what: 'doomed_sum failing' });
    expect(failing.items.map((i) => i.name)).toEqual([`${t.database}.doomed_sum`]);
    expect(String(failing.items[0]!.lastFailedReason)).toMatch(/doomed/);
    const all = await get('');
    expect(all.total).toBe(4);
    expect(all.schemas).toEqual([t.database, demo].sort());
    expect(all.nodes).toEqual([{ node: 'w1', mviews: 4 }]);
    expect(Object.values(all.counts).reduce((a, b) => a + b, 0)).toBe(4);
    const demoOnly = await get(`schema=${demo}&sort=lag`);
    expect(demoOnly.matched).toBe(3);
    const lags = demoOnly.items.map((i) => Number(i.lagSeconds ?? -1));
    expect([...lags].sort((a, b) => b - a)).toEqual(lags);
    // Shown lags are those the page was ordered by: measured at `now`, not re-read per item.
    for (const i of demoOnly.items.filter((x) => x.dataTime)) {
      const ageMs = Date.parse(demoOnly.now) - Date.parse(String(i.dataTime));
      expect(i.lagSeconds).toBe(Math.max(0, Math.round(ageMs / 100) / 10));
    }
    const found = await get('q=REGION');
    expect(found.items.map((i) => i.mview).sort()).toEqual(['region_totals', 'sales_by_region']);
    const page2 = await get(`limit=1&offset=1`);
    expect(page2.items).toHaveLength(1);
    expect(page2.matched).toBe(4);
    expect(page2.items[0]!.name).toBe(all.items[1]!.name);
    for (const bad of ['filter=nope', 'limit=0', 'limit=501', 'offset=-1', 'sort=size']) {
      const res = await app.inject({ url: `/ui/api/overview?${bad}`, headers: auth });
      expect(res.statusCode, bad).toBe(400);
      expect(res.json().message).toContain(bad.split('=')[0]);
    }
  });

  it('lists MV logs with capture, state and backlog, and the pipeline around an MV', async () => {
    const logs = (await app.inject({ url: '/ui/api/mlogs', headers: auth })).json();
    expect(logs.total).toBe(1);
    expect(logs.items[0]).toMatchObject({ table: `${demo}.orders`, capture: 'TRIGGERS', state: 'OK', consumers: 1 });
    expect(logs.items[0].backlogRows).toBeGreaterThanOrEqual(0);
    expect(logs.items[0].unpurgedRows).toBeGreaterThanOrEqual(logs.items[0].backlogRows);
    expect(logs.capture).toBeNull(); // no BINLOG log, no capture: nothing to say

    // A BINLOG log that nothing captures into: the listing says so.
    await t.db.raw('CREATE TABLE ticks (id INT PRIMARY KEY, v INT NULL)');
    await createTestLog(t.db, { metaSchema: t.database, schema: t.database, table: 'ticks', columns: ['v'], mode: 'BINLOG' });
    const withBinlog = (await app.inject({ url: '/ui/api/mlogs', headers: auth })).json();
    expect(withBinlog.total).toBe(2);
    expect(withBinlog.items.find((l: { table: string }) => l.table === `${t.database}.ticks`)).toMatchObject({ capture: 'BINLOG', consumers: 0, backlogRows: 0 });
    expect(withBinlog.capture).toMatchObject({ active: false, binlogLogs: 1 });
    const graph = (await app.inject({ url: `/ui/api/mviews/${demo}/sales_by_region/graph`, headers: auth })).json();
    expect(graph.edges).toEqual(expect.arrayContaining([{ from: `table:${demo}.orders`, to: expect.stringMatching(/^mv:/) }]));
    const names = graph.nodes.map((n: { name: string }) => n.name).sort();
    expect(names).toEqual([`${demo}.orders`, `${demo}.region_totals`, `${demo}.sales_by_region`]);
    expect(graph.nodes.find((n: { name: string }) => n.name === `${demo}.orders`).log).toMatchObject({ capture: 'TRIGGERS', state: 'OK' });
    const explain = (await app.inject({ url: `/ui/api/mviews/${demo}/sales_by_region/explain`, headers: auth })).json();
    expect(explain).toMatchObject({ method: 'FAST', explain: { fastRefreshable: true } });
    const top = (await app.inject({ url: `/ui/api/mviews/${demo}/region_totals/explain`, headers: auth })).json();
    expect(top.explain.fastRefreshable).toBe(false);
    expect(top.explain.reason).toBeTruthy();
  });
});

describe('in a real browser', () => {
  let browser: Browser;
  const problems: string[] = [];

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    expect(existsSync('/usr/bin/chromium'), 'Debian chromium (apt-get install chromium; the test bootstrap installs it as root)').toBe(true);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  });
  afterAll(async () => {
    await browser?.close();
  });

  function watch(page: Page): void {
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  }

  it('logs in with the token, shows the MVs with their lag, an MV page with history and graph, and a refresh adds a run', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    watch(page);
    await page.goto(`${url}/ui?token=${TOKEN}`);
    expect(new URL(page.url()).search).toBe('');

    // The overview: the demo's MVs with a lag once they have run on their schedules.
    const row = page.locator(`tr[data-mv="${demo}.sales_by_region"]`);
    await row.waitFor({ timeout: 20_000 });
    await waitFor(async () => ((await row.locator('.lagv').getAttribute('data-lag')) ?? '') !== '', { timeoutMs: 20_000, what: 'a lag on the overview' });
    await expect.poll(() => page.locator(`tr[data-mv="${demo}.top_customers"] .lagv`).innerText(), { timeout: 20_000 }).toMatch(/\d/);
    await expect.poll(() => page.locator(`tr[data-mv="${t.database}.doomed_sum"]`).getAttribute('data-health'), { timeout: 20_000 }).toBe('failing');
    expect(await page.locator('tr[data-log] >> text=TRIGGERS').count()).toBe(1);
    expect(await page.locator('tr[data-log] >> text=BINLOG').count()).toBe(1);
    expect(await page.locator('#capture').innerText()).toMatch(/not running: 1 BINLOG log/);
    expect(await page.locator('[data-node="w1"]').count()).toBe(1);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-overview.png'), fullPage: true });

    // It updates itself: the lag shown moves without a reload.
    const before = await row.locator('.lagv').getAttribute('data-lag');
    await expect.poll(() => row.locator('.lagv').getAttribute('data-lag'), { timeout: 20_000 }).not.toBe(before);

    // Filter: only the failing MV, its reason shown.
    await page.locator('button[data-filter="failing"]').click();
    await expect.poll(() => page.locator('tr[data-mv]').count(), { timeout: 10_000 }).toBe(1);
    expect(await page.locator(`tr[data-mv="${t.database}.doomed_sum"] .reason`).innerText()).toMatch(/doomed/);
    expect(page.url()).toContain('filter=failing');
    await page.locator('button[data-filter="all"]').click();

    // The MV page.
    await page.locator(`tr[data-mv="${demo}.sales_by_region"] a`).click();
    await page.waitForURL(`**/ui/mv/${demo}/sales_by_region`);
    await page.locator('#history-chart canvas').waitFor({ timeout: 20_000 });
    await page.locator('#lag-chart canvas').waitFor({ timeout: 20_000 });
    await page.locator(`#graph [data-node="${demo}.orders"]`).waitFor({ timeout: 20_000 });
    expect(await page.locator(`#graph [data-node="${demo}.region_totals"]`).count()).toBe(1);
    expect(await page.locator('#graph path.gedge').count()).toBe(2);
    expect(await page.locator('#definition').innerText()).toMatch(/GROUP BY region/);
    await expect.poll(() => page.locator('#explain').innerText(), { timeout: 10_000 }).toMatch(/Fast-refreshable now/);

    // Refresh: the run it asked for appears in the history.
    const maxRun = async () => Math.max(0, ...(await page.locator('#runs tr[data-run]').evaluateAll((trs) => trs.map((tr) => Number(tr.getAttribute('data-run'))))));
    const runsBefore = await maxRun();
    await page.locator('#method').selectOption('COMPLETE');
    await page.locator('#refresh').click();
    await expect.poll(() => page.locator('#job').innerText(), { timeout: 30_000 }).toMatch(/SUCCESS/);
    expect(await maxRun()).toBeGreaterThan(runsBefore);
    const manual = page.locator('#runs tr[data-run]', { hasText: 'MANUAL' }).filter({ hasText: 'COMPLETE' });
    expect(await manual.count()).toBeGreaterThanOrEqual(1);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-mview.png'), fullPage: true });

    // A failing MV's page shows the failures marked.
    await page.goto(`${url}/ui/mv/${t.database}/doomed_sum`);
    await page.locator('#history-chart canvas').waitFor({ timeout: 20_000 });
    await expect.poll(() => page.locator('#runs tr.run-FAILED').count(), { timeout: 20_000 }).toBeGreaterThan(0);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-failing.png'), fullPage: true });
    await page.close();
    expect(problems).toEqual([]);
  });
});
