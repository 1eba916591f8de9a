// The dashboard's overview at 10,000 MVs (DESIGN.md §3 "Dashboard": usable at that size).
//
// A database with N MVs (default 10,000, BENCH_UI_MVS) written straight into the metadata
// tables: most succeeded recently, some failing, some late (a 60 s schedule with old data), some
// suspended; each reads one of 50 base tables, whose MV logs (plain log tables with a sequence)
// hold a backlog. The server (buildApp with the API, Bull Board and the dashboard, behind a
// token) listens in this process; requests go over HTTP from this process and from Chromium.
//
// Measured, interleaved so both sides see the same load:
//   baseline  GET /v1/mviews?limit=100: the JSON API's page of the same size as the overview's;
//   overview  GET /ui/api/overview (100 rows by name), worst first with the attention filter,
//             and a search; the logs' listing; the full /v1 listing (limit=10000) for scale;
//   browser   Chromium opening /ui until the 100 rows and the logs are drawn, against Chromium
//             opening the baseline JSON page.
// Goals (ratios against the baseline of the same run): the overview's request within 3x of the
// API page, and the page drawn in the browser within 5x of the browser fetching that page.
//
// From bench/run.ts: `npm run bench -- ui`. Env: BENCH_UI_MVS=10000 BENCH_UI_REPS=15.
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { createDdlExecutor, createRuntime } from '../src/app/runtime.js';
import { loadConfig } from '../src/config.js';
import { buildApp } from '../src/server/app.js';
import {
  benchLogger,
  createBenchDatabase,
  envInt,
  fmtInt,
  fmtMs,
  fmtRatio,
  freshPrefix,
  insertMvMetadata,
  loadAvg,
  progress,
  summarize,
  table,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
  type Summary,
} from './support.js';

const TOKEN = 'bench-dashboard-token';
const TABLES = 50;

interface DashboardResult {
  mviews: number;
  reps: number;
  server: Record<string, Summary>;
  browser: Record<string, Summary>;
  overviewBytes: number;
  fullListingBytes: number;
  loadAvgAtStart: number[];
  loadAvgAtEnd: number[];
}

async function seed(db: import('knex').Knex, schema: string, n: number): Promise<void> {
  const now = Date.now();
  await insertMvMetadata(db, schema, Array.from({ length: n }, (_, i) => ({ id: i + 1, nextTime: now + 60_000 + ((i * 997) % 3_540_000) })), { label: 'ui' });
  // Most ran a moment ago; 2 % failing, 5 % late (every 60 s, data 10 min old), 1 % suspended.
  await db.raw(
    `UPDATE mvs_mview_refresh_info SET last_refresh_result = IF(MOD(mview_id, 50) = 7, 'FAILED', 'SUCCESS'),
       consecutive_failures = IF(MOD(mview_id, 50) = 7, 3, 0),
       last_failed_reason = IF(MOD(mview_id, 50) = 7, 'Deadlock found when trying to get lock; try restarting transaction', NULL),
       refresh_endtime = NOW(3) - INTERVAL MOD(mview_id, 120) SECOND, last_refresh_type = 'COMPLETE', refresh_count = 10,
       data_time = IF(MOD(mview_id, 20) = 3, NOW(3) - INTERVAL 600 SECOND, NOW(3) - INTERVAL MOD(mview_id, 1800) SECOND)`,
  );
  await db.raw('UPDATE mvs_mviews SET refresh_interval = 60 WHERE MOD(mview_id, 20) = 3');
  await db.raw("UPDATE mvs_mviews SET status = 'SUSPENDED' WHERE MOD(mview_id, 100) = 11");
  const created = new Date();
  for (let k = 0; k < TABLES; k++) {
    await db.raw(`CREATE TABLE ??.?? (\`_mlog$seq\` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, dml_type CHAR(1) NOT NULL, id INT NOT NULL)`, [schema, `mlog$src_${k}`]);
    await db.raw('INSERT INTO ??.?? (dml_type, id) SELECT ?, seq FROM seq_1_to_200', [schema, `mlog$src_${k}`, 'I']);
    await db('mvs_mlogs').insert({
      mlog_id: k + 1,
      table_schema: schema,
      base_table_name: `src_${k}`,
      mlog_name: `mlog$src_${k}`,
      mlog_columns: '["id"]',
      pk_columns: '["id"]',
      purge_method: 'MANUAL',
      created_at: created,
      mlog_modify_time: created,
    });
  }
  for (let i = 0; i < n; i += 5000) {
    await db('mvs_mview_base_tables').insert(
      Array.from({ length: Math.min(5000, n - i) }, (_, j) => {
        const id = i + j + 1;
        return { mview_id: id, base_table_schema: schema, base_table_name: `src_${id % TABLES}`, mlog_id: (id % TABLES) + 1, consumed_watermark: 100 + (id % 100) };
      }),
    );
  }
}

export async function runDashboard(ctx: BenchContext): Promise<BenchOutcome<DashboardResult>> {
  const n = envInt('BENCH_UI_MVS', 10_000);
  const reps = envInt('BENCH_UI_REPS', 15);
  if (!existsSync('/usr/bin/chromium')) throw new Error('the ui benchmark drives Debian chromium: apt-get install chromium');
  const loadAvgAtStart = loadAvg();
  const bdb = await createBenchDatabase(ctx, 'ui');
  const prefix = freshPrefix('ui');
  const logger = benchLogger();
  const config = loadConfig({ DATABASE_URL: bdb.url, REDIS_URL: ctx.redisUrl, MVS_PREFIX: prefix, MVS_API_TOKEN: TOKEN, LOG_LEVEL: 'warn' }, { database: true, redis: true });
  // The server's own pool size (src/server/server.ts).
  const rt = createRuntime(config, logger, { poolMax: 8 });
  const app = await buildApp({
    db: rt.db,
    redis: rt.redis,
    logger,
    apiToken: TOKEN,
    api: { prefix, defaultSchema: bdb.name, ddl: createDdlExecutor(rt, 'server') },
    board: { prefix, writable: false },
    ui: true,
  });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  try {
    progress(`ui: seeding ${fmtInt(n)} MVs`);
    await seed(bdb.db, bdb.name, n);
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const get = async (path: string) => {
      const t = performance.now();
      const res = await fetch(base + path, { headers: { authorization: `Bearer ${TOKEN}` } });
      const body = await res.text();
      if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status} ${body.slice(0, 200)}`);
      return { ms: performance.now() - t, bytes: body.length, body };
    };
    const requests: Record<string, string> = {
      'baseline: GET /v1/mviews?limit=100': '/v1/mviews?limit=100',
      'GET /ui/api/overview (100 rows by name)': '/ui/api/overview',
      'GET /ui/api/overview?filter=attention&sort=health': '/ui/api/overview?filter=attention&sort=health',
      'GET /ui/api/overview?q=mv_99': '/ui/api/overview?q=mv_99',
      'GET /ui/api/mlogs (50 logs)': '/ui/api/mlogs',
    };
    const first = JSON.parse((await get('/ui/api/overview')).body) as { total: number; items: unknown[]; counts: Record<string, number> };
    if (first.total !== n || first.items.length !== 100) throw new Error(`overview: expected ${n} MVs and a page of 100, got ${first.total} / ${first.items.length}`);
    progress(`ui: counts ${JSON.stringify(first.counts)}`);
    const times: Record<string, number[]> = Object.fromEntries(Object.keys(requests).map((k) => [k, []]));
    for (const path of Object.values(requests)) await get(path); // warm-up
    for (let r = 0; r < reps; r++) {
      for (const [name, path] of Object.entries(requests)) times[name]!.push((await get(path)).ms);
    }
    const overviewBytes = (await get('/ui/api/overview')).bytes;
    progress('ui: the full /v1 listing (twice)');
    const full: number[] = [];
    let fullListingBytes = 0;
    for (let r = 0; r < 2; r++) {
      const res = await get('/v1/mviews?limit=10000');
      full.push(res.ms);
      fullListingBytes = res.bytes;
    }
    times['GET /v1/mviews?limit=10000 (everything)'] = full;

    progress('ui: Chromium');
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/ui?token=${TOKEN}`);
    // Functions run in the page (where eval is refused by the page's CSP); this file is
    // type-checked without the DOM's types, hence `globalThis`.
    const drawn = () => {
      const doc = (globalThis as unknown as { document: { querySelectorAll(s: string): { length: number } } }).document;
      return doc.querySelectorAll('#mviews tr[data-mv]').length === 100 && doc.querySelectorAll('#mlogs tr[data-log]').length > 0;
    };
    await page.waitForFunction(drawn, undefined, { timeout: 60_000 });
    const browserTimes: Record<string, number[]> = { 'baseline: open /v1/mviews?limit=100': [], 'open /ui until 100 rows and the logs are drawn': [] };
    for (let r = 0; r < Math.max(5, Math.ceil(reps / 2)); r++) {
      let t = performance.now();
      await page.goto(`${base}/v1/mviews?limit=100`, { waitUntil: 'load' });
      browserTimes['baseline: open /v1/mviews?limit=100']!.push(performance.now() - t);
      t = performance.now();
      await page.goto(`${base}/ui`, { waitUntil: 'commit' });
      await page.waitForFunction(drawn, undefined, { timeout: 60_000, polling: 10 });
      browserTimes['open /ui until 100 rows and the logs are drawn']!.push(performance.now() - t);
    }
    await page.goto('about:blank'); // stops the page's polling before the server closes
    if (errors.length) throw new Error(`console errors in the browser: ${errors.join(' | ')}`);

    const server = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, summarize(v)]));
    const browserS = Object.fromEntries(Object.entries(browserTimes).map(([k, v]) => [k, summarize(v)]));
    const result: DashboardResult = { mviews: n, reps, server, browser: browserS, overviewBytes, fullListingBytes, loadAvgAtStart, loadAvgAtEnd: loadAvg() };
    const apiRatio = server['GET /ui/api/overview (100 rows by name)']!.p50 / server['baseline: GET /v1/mviews?limit=100']!.p50;
    const worstRatio = server['GET /ui/api/overview?filter=attention&sort=health']!.p50 / server['baseline: GET /v1/mviews?limit=100']!.p50;
    const pageRatio = browserS['open /ui until 100 rows and the logs are drawn']!.p50 / browserS['baseline: open /v1/mviews?limit=100']!.p50;
    const goals: GoalCheck[] = [
      { name: `ui: overview request / API page of the same size (p50, ${fmtInt(n)} MVs)`, value: apiRatio, goal: '<= 3', met: apiRatio <= 3 },
      { name: `ui: worst-first overview / API page (p50, ${fmtInt(n)} MVs)`, value: worstRatio, goal: '<= 3', met: worstRatio <= 3 },
      { name: `ui: page drawn in Chromium / Chromium opening the API page (p50)`, value: pageRatio, goal: '<= 5', met: pageRatio <= 5 },
    ];
    return { result, goals, report: report(result) };
  } finally {
    await browser.close();
    await app.close();
    await rt.close();
    await bdb.drop();
  }
}

function report(r: DashboardResult): string {
  const rows = (m: Record<string, Summary>, base: string) =>
    Object.entries(m).map(([k, s]) => [k, fmtMs(s.p50), fmtMs(s.p90), fmtMs(s.max), k === base ? '1.00x' : fmtRatio(s.p50 / m[base]!.p50)]);
  return [
    `${fmtInt(r.mviews)} MVs (2 % failing, 5 % late, 1 % suspended), 50 MV logs; ${r.reps} rounds, requests interleaved. ` +
      `Overview answer ${fmtInt(r.overviewBytes)} bytes; the full /v1 listing ${fmtInt(r.fullListingBytes)} bytes.`,
    '',
    table(['request (server in this process, over HTTP)', 'p50', 'p90', 'max', 'p50 vs baseline'], rows(r.server, 'baseline: GET /v1/mviews?limit=100')),
    '',
    table(['Chromium', 'p50', 'p90', 'max', 'p50 vs baseline'], rows(r.browser, 'baseline: open /v1/mviews?limit=100')),
    '',
    `load avg at start ${r.loadAvgAtStart.join(' ')}, at end ${r.loadAvgAtEnd.join(' ')}`,
  ].join('\n');
}
