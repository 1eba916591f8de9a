// Status at scale (issue 11): `mvsched status --json` (its code, in this process), and
// `GET /v1/mviews` paged to the end and a /metrics scrape from a `mvsched server` process over
// HTTP, over N MVs (default 100,000), each against one plain SELECT of the same rows (the MV
// listing's columns, same order) from this process: each operation right after a baseline run,
// REPS times; medians of the wall and CPU (this process + the server process + mariadbd + redis)
// ratios. Also counts the statements each sends: they must not grow with N.
//
// Data: N MV metadata rows (mv_<id>, COMPLETE, every hour, last run a success with a data time);
// every MV reads one of 100 real tables; 20 of them have an MV log (with rows in it) and 200 MVs
// consume those logs; 10 tables are versioned (2 partitions each) with version maps for the 10%
// of MVs over them, a third of which are stale.
//
// From bench/run.ts: `npm run bench -- status-scale`.
// Env: BENCH_STATUS_MVS=100000 BENCH_STATUS_REPS=5
import { Agent, request } from 'node:http';
import type { Knex } from 'knex';
import { createDdlExecutor, createRuntime } from '../src/app/runtime.js';
import { statusDocument } from '../src/cli/commands/status.js';
import { loadConfig } from '../src/config.js';
import { HashRing } from '../src/ring/hashRing.js';
import { freePort } from '../scripts/localServers.mjs';
import {
  benchLogger,
  cpuSnapshot,
  cpuUse,
  createBenchDatabase,
  deleteKeys,
  envInt,
  fmtInt,
  fmtMs,
  fmtRatio,
  freshPrefix,
  insertMvMetadata,
  median,
  progress,
  serverPids,
  spawnMvsched,
  stopMvsched,
  table,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
} from './support.js';

const TABLES = 100;
const CURSOR_KEY = '"nextCursor":';
const LOGGED = 20;
const VERSIONED_FROM = 90;

/** The listing's rows as one plain statement: what mvsched's status is compared with. */
const PLAIN_SELECT = `SELECT m.mview_id, m.table_schema, m.mview_name, m.refresh_method, m.status, m.refresh_start, m.refresh_interval,
  ri.last_refresh_result, ri.refresh_endtime, ri.last_refresh_type, ri.next_time, ri.consecutive_failures,
  ri.last_failed_reason, ri.refresh_count, ri.last_success_endtime, ri.data_time, m.target_lag, m.target_downstream, ri.target_unmet_reason
  FROM mvs_mviews m LEFT JOIN mvs_mview_refresh_info ri ON ri.mview_id = m.mview_id ORDER BY m.table_schema, m.mview_name`;

export async function seedStatusScale(db: Knex, schema: string, ddl: { execute(sql: string): Promise<unknown> }, n: number): Promise<void> {
  progress(`status-scale: ${TABLES} tables, ${LOGGED} MV logs`);
  for (let i = 0; i < TABLES; i++) await db.raw(`CREATE TABLE bt_${i} (id INT PRIMARY KEY, g INT, x INT)`);
  for (let i = 0; i < LOGGED; i++) {
    await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON bt_${i} (g, x)`);
    await db(`bt_${i}`).insert(Array.from({ length: 50 }, (_, k) => ({ id: k, g: k % 5, x: k })));
  }
  progress(`status-scale: inserting ${fmtInt(n)} MVs`);
  const now = Date.now();
  await insertMvMetadata(db as never, schema, Array.from({ length: n }, (_, i) => ({ id: i + 1, nextTime: now + 60_000 + (i % 3600) * 1000 })), { label: 'status-scale' });
  // A successful last run for each, with data times spread over the last hour.
  await db.raw(`UPDATE mvs_mview_refresh_info SET refresh_method = 'COMPLETE', last_refresh_result = 'SUCCESS', last_refresh_type = 'COMPLETE',
    last_refresh_trigger = 'SCHEDULED', refresh_count = 1, data_time = NOW(3) - INTERVAL (mview_id % 3600) SECOND,
    refresh_time = NOW(3) - INTERVAL (mview_id % 3600) SECOND, refresh_endtime = NOW(3) - INTERVAL (mview_id % 3600) SECOND + INTERVAL 0.2 SECOND,
    last_success_endtime = NOW(3) - INTERVAL (mview_id % 3600) SECOND + INTERVAL 0.2 SECOND`);
  await db.raw(`INSERT INTO mvs_mview_base_tables (mview_id, base_table_schema, base_table_name, mlog_id, consumed_watermark)
    SELECT m.mview_id, ?, CONCAT('bt_', m.mview_id % ${TABLES}), IF(m.mview_id <= 200 AND m.mview_id % ${TABLES} < ${LOGGED}, l.mlog_id, NULL), 0
    FROM mvs_mviews m LEFT JOIN mvs_mlogs l ON l.base_table_name = CONCAT('bt_', m.mview_id % ${TABLES})`, [schema]);
  const t0 = Date.now();
  for (let i = VERSIONED_FROM; i < TABLES; i++) {
    await db('mvs_base_partitions').insert(
      ['p1', 'p2'].map((p, k) => ({ base_table_schema: schema, base_table_name: `bt_${i}`, partition_name: p, partition_id: k + 1, version: 2, version_time: t0, updated_at: new Date(t0) })),
    );
  }
  // Their MVs read version 2 of both, except a third that read version 1 of p2 (stale).
  await db.raw(`INSERT INTO mvs_mview_version_map (mview_id, base_table_schema, base_table_name, partition_name, partition_id, version, last_refresh_time)
    SELECT b.mview_id, b.base_table_schema, b.base_table_name, p.partition_name, p.partition_id,
      IF(p.partition_name = 'p2' AND b.mview_id % 3 = 0, 1, 2), ?
    FROM mvs_mview_base_tables b JOIN mvs_base_partitions p ON p.base_table_schema = b.base_table_schema AND p.base_table_name = b.base_table_name`, [t0]);
}

/** GET `url` on `agent`'s kept-alive socket; the answer as the bytes that came. */
function httpGet(agent: Agent, url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

interface Op {
  name: string;
  run: () => Promise<unknown>;
  times: number[];
  /** CPU ms of the bench process, the server process, mariadbd and redis (when local) per run. */
  cpu: number[];
  /** This operation's time (and CPU) over the baseline run's just before it, per round. */
  ratios: number[];
  cpuRatios: number[];
  queries: number;
}

/**
 * Statements the database server answered while `fn` ran, from its Questions counter (so the
 * server process's count too; on a server nobody else uses, as `npm run bench` starts).
 */
async function countQueries(db: Knex, fn: () => Promise<unknown>): Promise<number> {
  const questions = async () => Number(((await db.raw("SHOW GLOBAL STATUS LIKE 'Questions'")) as [Array<{ Value: string }>])[0][0]!.Value);
  const before = await questions();
  await fn();
  return (await questions()) - before - 1; // the second SHOW counts itself
}

async function until(fn: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** One run of `op`: wall time, and CPU of this process plus the server processes'. */
async function measure(op: Op, pids: Record<string, number | undefined>): Promise<{ wallMs: number; cpuMs: number }> {
  const c0 = process.cpuUsage();
  const s0 = cpuSnapshot(pids);
  const t = performance.now();
  await op.run();
  const wallMs = performance.now() - t;
  const own = process.cpuUsage(c0);
  const servers = cpuUse(s0, cpuSnapshot(pids));
  const serverCores = Object.values(servers.byProcess).reduce<number>((a, c) => a + (c ?? 0), 0);
  const cpuMs = (own.user + own.system) / 1000 + serverCores * servers.seconds * 1000;
  op.times.push(wallMs);
  op.cpu.push(cpuMs);
  return { wallMs, cpuMs };
}

export async function runStatusScale(ctx: BenchContext): Promise<BenchOutcome> {
  const n = envInt('BENCH_STATUS_MVS', 100_000);
  const reps = envInt('BENCH_STATUS_REPS', 5);
  const bdb = await createBenchDatabase(ctx, 'status', 4);
  const prefix = freshPrefix('status');
  const logger = benchLogger();
  const config = loadConfig({ DATABASE_URL: bdb.url, REDIS_URL: ctx.redisUrl, MVS_PREFIX: prefix, LOG_LEVEL: 'warn' }, { database: true, redis: true });
  const rt = createRuntime(config, logger, { poolMax: 4 });
  // The API as deployed: `mvsched server` in a process of its own, asked over HTTP.
  const port = await freePort();
  const server = spawnMvsched('server', ['server'], { DATABASE_URL: bdb.url, REDIS_URL: ctx.redisUrl, MVS_PREFIX: prefix, MVS_HTTP_PORT: String(port), LOG_LEVEL: 'warn' });
  const url = `http://127.0.0.1:${port}`;
  const ring = new HashRing();
  ring.rebuild(['w1', 'w2', 'w3']);
  let jsonBytes = 0;
  // A client pages: the cursor is taken from the end of the answer so the timing is the server's,
  // not a JSON.parse on our side (the first, untimed run checks it all). node:http on a kept-alive
  // socket, the bytes kept as they come: fetch's web streams and its text decoding cost this
  // process 1.3 ms a 600 KB page (walks 1,834 -> 1,705 ms in one run), work of the measuring
  // client, not of the server measured.
  let checkPages = true;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const get = (path: string) => httpGet(agent, `${url}${path}`);
  // The cursor is the answer's last member: read from there. (A regular expression ending in
  // `\}$` was tried at every position of the 600 KB text: 0.8 ms of this process a page.)
  const cursorKey = Buffer.from(CURSOR_KEY);
  const cursorAtEnd = (body: Buffer) => {
    const at = body.lastIndexOf(cursorKey);
    if (at < 0) throw new Error(`GET /v1/mviews: no nextCursor in ${body.toString('utf8', Math.max(0, body.length - 200))}`);
    return JSON.parse(body.toString('utf8', at + cursorKey.length, body.length - 1)) as string | null;
  };
  const pagesOf = async (limit: number) => {
    let cursor: string | null = null;
    let items = 0;
    do {
      const res = await get(`/v1/mviews?limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
      if (res.status !== 200) throw new Error(`GET /v1/mviews: ${res.status} ${res.body.toString('utf8', 0, 200)}`);
      if (checkPages) {
        const page = JSON.parse(res.body.toString('utf8')) as { items: unknown[]; nextCursor: string | null };
        items += page.items.length;
        if (cursorAtEnd(res.body) !== page.nextCursor) throw new Error('GET /v1/mviews: the cursor read from the end is not the parsed one');
        cursor = page.nextCursor;
      } else {
        cursor = cursorAtEnd(res.body);
      }
    } while (cursor);
    if (checkPages && items !== n) throw new Error(`GET /v1/mviews paged ${items} MVs, expected ${n}`);
  };
  const ops: Op[] = [
    { name: 'plain SELECT of the same rows (baseline)', run: () => bdb.db.raw(PLAIN_SELECT), times: [], cpu: [], ratios: [], cpuRatios: [], queries: 0 },
    {
      name: 'status --json (listing + MV logs + JSON text)',
      run: async () => {
        jsonBytes = JSON.stringify(await statusDocument(bdb.db, ring, null), null, 2).length;
      },
      times: [],
      cpu: [],
      ratios: [],
      cpuRatios: [],
      queries: 0,
    },
    { name: 'GET /v1/mviews, every page, limit=10000', run: () => pagesOf(10_000), times: [], cpu: [], ratios: [], cpuRatios: [], queries: 0 },
    { name: 'GET /v1/mviews, every page, limit=1000 (default)', run: () => pagesOf(1_000), times: [], cpu: [], ratios: [], cpuRatios: [], queries: 0 },
    {
      // What paging alone costs: the same SELECT a page at a time, as the API pages (informational).
      name: 'plain SELECT paged by 1000 rows (keyset)',
      run: async () => {
        let after: { s: string; n: string } | undefined;
        for (;;) {
          const where = after ? 'WHERE m.table_schema > ? OR (m.table_schema = ? AND m.mview_name > ?)' : '';
          const [rows] = (await bdb.db.raw(PLAIN_SELECT.replace('ORDER BY', `${where} ORDER BY`) + ' LIMIT 1000', after ? [after.s, after.s, after.n] : [])) as [
            Array<{ table_schema: string; mview_name: string }>,
          ];
          if (rows.length < 1000) break;
          const last = rows[rows.length - 1]!;
          after = { s: last.table_schema, n: last.mview_name };
        }
      },
      times: [],
      cpu: [],
      ratios: [],
      cpuRatios: [],
      queries: 0,
    },
    {
      name: `GET /metrics (per-MV series capped at ${fmtInt(config.metricsMaxMviews)})`,
      run: async () => {
        const res = await get('/metrics');
        if (res.status !== 200) throw new Error(`GET /metrics: ${res.status} ${res.body.toString('utf8', 0, 200)}`);
      },
      times: [],
      cpu: [],
      ratios: [],
      cpuRatios: [],
      queries: 0,
    },
  ];
  try {
    await seedStatusScale(bdb.db, bdb.name, createDdlExecutor(rt, 'bench'), n);
    await until(async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.ok === true, 60_000, 'mvsched server up');
    for (const op of ops) {
      progress(`status-scale: warm-up and statement count: ${op.name}`);
      op.queries = await countQueries(bdb.db, op.run);
    }
    checkPages = false;
    // Each operation right after a baseline run: load on a shared host drifts, so each ratio
    // compares two runs seconds apart, and the goal reads the median of those ratios.
    const [base, ...rest] = ops;
    const pids = { ...(await serverPids(bdb.db, rt.redis)), 'mvsched server': server.child.pid };
    for (let r = 0; r < reps; r++) {
      progress(`status-scale: round ${r + 1}/${reps}`);
      for (const op of rest) {
        const b = await measure(base!, pids);
        const o = await measure(op, pids);
        op.ratios.push(o.wallMs / b.wallMs);
        op.cpuRatios.push(o.cpuMs / b.cpuMs);
      }
    }
  } finally {
    agent.destroy();
    await stopMvsched(server);
    await deleteKeys(rt.redis, `${prefix}:*`).catch(() => 0);
    await rt.close();
    await bdb.drop();
  }
  return report(ops, n, reps, jsonBytes);
}

function report(ops: Op[], n: number, reps: number, bytes: number): BenchOutcome {
  const ratio = (op: Op) => (op.ratios.length ? median(op.ratios) : 1);
  const cpuRatio = (op: Op) => (op.cpuRatios.length ? median(op.cpuRatios) : 1);
  const spread = (xs: number[]) => (xs.length ? ` (${fmtRatio(Math.min(...xs))}-${fmtRatio(Math.max(...xs))})` : '');
  const goals: GoalCheck[] = ops.slice(1, 4).map((op) => ({
    name: `status-scale: ${op.name} vs plain SELECT, ${fmtInt(n)} MVs (wall)`,
    value: ratio(op),
    goal: '<= 3x',
    met: ratio(op) <= 3,
    note: `CPU ${fmtRatio(cpuRatio(op))}`,
  }));
  for (const op of ops.slice(4)) goals.push({ name: `status-scale: ${op.name} vs plain SELECT (wall)`, value: ratio(op), goal: 'informational', met: null });
  const text = [
    `${fmtInt(n)} MVs, ${TABLES} base tables (${LOGGED} with MV logs, ${TABLES - VERSIONED_FROM} versioned); each operation run ${reps} times, ` +
      `each right after a baseline run; ratios are medians of those ${reps} pairs (min-max). CPU = this process + the mvsched server process + mariadbd + redis. ` +
      `status --json text ${(bytes / 1e6).toFixed(1)} MB.`,
    table(
      ['operation', 'wall median', 'wall vs SELECT', 'CPU median', 'CPU vs SELECT', 'statements'],
      ops.map((op) => [
        op.name,
        fmtMs(median(op.times)),
        op.ratios.length ? `${fmtRatio(ratio(op))}${spread(op.ratios)}` : '1.00x',
        fmtMs(median(op.cpu)),
        op.cpuRatios.length ? `${fmtRatio(cpuRatio(op))}${spread(op.cpuRatios)}` : '1.00x',
        String(op.queries),
      ]),
    ),
  ].join('\n');
  const result = { n, reps, jsonBytes: bytes, ops: ops.map((o) => ({ name: o.name, times: o.times, cpu: o.cpu, ratios: o.ratios, cpuRatios: o.cpuRatios, queries: o.queries })) };
  return { result, goals, report: text };
}
