import { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { MembershipRegistry } from '../../src/membership/registry.js';
import { REQUESTS_QUEUE } from '../../src/queue/names.js';
import { buildApp } from '../../src/server/app.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
let rt: Runtime;
let app: FastifyInstance;
let requests: Queue;
const TOKEN = 'an-api-token-for-the-tests';
const auth = { authorization: `Bearer ${TOKEN}` };

beforeAll(async () => {
  t = await createTestEnv('http_api');
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE orders (id INT PRIMARY KEY, cust INT, amt INT)');
  await t.db('orders').insert([{ id: 1, cust: 1, amt: 3 }]);
  rt = createRuntime(t.config, t.logger);
  app = await buildApp({
    db: rt.db,
    redis: rt.redis,
    logger: t.logger,
    apiToken: TOKEN,
    api: { prefix: t.prefix, defaultSchema: rt.defaultSchema, ddl: createDdlExecutor(rt, 'test') },
  });
  requests = new Queue(REQUESTS_QUEUE, { connection: rt.redis, prefix: t.prefix });
});

afterAll(async () => {
  await app?.close();
  await requests?.close();
  await rt?.close();
  await t?.close();
});

const post = (url: string, payload?: unknown, headers: Record<string, string> = auth) =>
  app.inject({ method: 'POST', url, headers, ...(payload !== undefined ? { payload: payload as object } : {}) });
const get = (url: string, headers: Record<string, string> = auth) => app.inject({ method: 'GET', url, headers });

describe('HTTP API /v1', () => {
  it('POST /v1/sql runs DDL; bad input is 400, a duplicate 409, each with {error, message}', async () => {
    const ok = await post('/v1/sql', { sql: 'CREATE MATERIALIZED VIEW by_cust NEXT 3600 AS SELECT cust, SUM(amt) AS total FROM orders GROUP BY cust' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({ statement: 'createMview', name: `${t.database}.by_cust`, rows: 1 });

    const syntax = await post('/v1/sql', { sql: 'CREATE MATERIALIZED VIEW x REFRES COMPLETE AS SELECT 1' });
    expect(syntax.statusCode).toBe(400);
    expect(syntax.json()).toMatchObject({ error: 'bad_request', message: expect.stringMatching(/^syntax error at line 1, column 28/) });

    const dup = await post('/v1/sql', { sql: 'CREATE MATERIALIZED VIEW by_cust AS SELECT 1 AS x' });
    expect(dup.statusCode).toBe(409);
    expect(dup.json()).toEqual({ error: 'conflict', message: `materialized view ${t.database}.by_cust already exists` });

    const missing = await post('/v1/sql', {});
    expect(missing.statusCode).toBe(400);
    expect(missing.json().message).toBe('sql: expected a non-empty string');

    const unknown = await post('/v1/sql', { sql: 'DROP MATERIALIZED VIEW nosuch' });
    expect(unknown.statusCode).toBe(404);
  });

  it('GET /v1/mviews and /v1/mviews/:schema/:name show status and history; unknown is 404', async () => {
    const list = await get('/v1/mviews');
    expect(list.statusCode).toBe(200);
    expect(list.json().items.map((m: { name: string }) => m.name)).toEqual([`${t.database}.by_cust`]);
    expect(list.json().nextCursor).toBeNull();

    const one = await get(`/v1/mviews/${t.database}/by_cust`);
    expect(one.statusCode).toBe(200);
    expect(one.json()).toMatchObject({ name: `${t.database}.by_cust`, method: 'COMPLETE', lastResult: 'SUCCESS', nextSeconds: 3600 });
    // Data time and lag (DESIGN.md §2): the listing and the MV's own page say the same.
    const listed = list.json().items[0] as Record<string, unknown>;
    expect(listed.dataTime).toBe(one.json().dataTime);
    expect(listed.lastSuccessTime).toBe(one.json().lastSuccessTime);
    expect(Date.parse(one.json().dataTime)).toBeLessThanOrEqual(Date.parse(one.json().lastSuccessTime));
    expect(one.json().lagSeconds).toBeGreaterThanOrEqual(0);
    expect(one.json().lagSeconds).toBeLessThan(600);
    expect(one.json().history).toHaveLength(1);
    expect(one.json().history[0]).toMatchObject({ status: 'SUCCESS', trigger: 'MANUAL', method: 'COMPLETE' });

    const none = await get(`/v1/mviews/${t.database}/nosuch`);
    expect(none.statusCode).toBe(404);
    expect(none.json()).toEqual({ error: 'not_found', message: `materialized view ${t.database}.nosuch does not exist` });
  });

  it('POST /v1/mviews/:schema/:name/refresh enqueues a manual refresh request (202)', async () => {
    const res = await post(`/v1/mviews/${t.database}/by_cust/refresh`, { method: 'COMPLETE' });
    expect(res.statusCode).toBe(202);
    const job = await requests.getJob(res.json().jobId);
    expect(job?.name).toBe('refresh');
    expect(job?.data).toEqual({ mview: `${t.database}.by_cust`, trigger: 'MANUAL', method: 'COMPLETE' });

    expect((await post(`/v1/mviews/${t.database}/nosuch/refresh`)).statusCode).toBe(404);
    const bad = await post(`/v1/mviews/${t.database}/by_cust/refresh`, { method: 'SLOW' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().message).toMatch(/^invalid refresh payload: method:/);
  });

  it('POST /v1/base-tables/:schema/:table/versions and /v1/repairs validate and enqueue', async () => {
    const partitions = [{ partitionName: 'p1', partitionId: 1, version: 2, versionTime: 1000 }];
    const ok = await post(`/v1/base-tables/${t.database}/orders/versions`, { partitions, dataChanged: false });
    expect(ok.statusCode).toBe(202);
    expect((await requests.getJob(ok.json().jobId))?.data).toEqual({ table: `${t.database}.orders`, partitions, dataChanged: false });
    const bad = await post(`/v1/base-tables/${t.database}/orders/versions`, { partitions: [{ partitionName: 'p1', partitionId: 1 }], dataChanged: true });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().message).toMatch(/partitions\.0\.version/);

    const info = { partitionId: 1, partitionName: 'p1', lastVersion: 2, newVersion: 3, newVersionTime: 2000 };
    const rep = await post('/v1/repairs', { table: `${t.database}.orders`, partitions: [info] });
    expect(rep.statusCode).toBe(202);
    expect((await requests.getJob(rep.json().jobId))?.name).toBe('repair');
    const badRep = await post('/v1/repairs', { table: `${t.database}.orders`, partitions: [] });
    expect(badRep.statusCode).toBe(400);
    expect(badRep.json().message).toMatch(/^invalid repair payload: partitions:/);
  });

  it('GET /v1/mviews/:schema/:name/history: every DESIGN field, newest first, paged with limit and cursor', async () => {
    await t.db.raw('CREATE TABLE gone_soon (id INT PRIMARY KEY, v INT)');
    expect((await post('/v1/sql', { sql: 'CREATE MATERIALIZED VIEW h_mv AS SELECT id, v FROM gone_soon' })).statusCode).toBe(200);
    expect((await post('/v1/sql', { sql: 'REFRESH MATERIALIZED VIEW h_mv' })).statusCode).toBe(200);
    await t.db.raw('DROP TABLE gone_soon');
    const failed = await post('/v1/sql', { sql: 'REFRESH MATERIALIZED VIEW h_mv' });
    expect(failed.statusCode).toBeGreaterThanOrEqual(400);

    const res = await get(`/v1/mviews/${t.database}/h_mv/history`);
    expect(res.statusCode).toBe(200);
    const { items, nextCursor } = res.json() as { items: Array<Record<string, unknown>>; nextCursor: string | null };
    expect(nextCursor).toBeNull();
    expect(items.map((h) => h.status)).toEqual(['FAILED', 'SUCCESS', 'SUCCESS']);
    const fields = ['refreshId', 'trigger', 'method', 'status', 'scheduledTime', 'startTime', 'endTime', 'dataTime', 'rowsInserted', 'rowsDeleted', 'watermarkFrom', 'watermarkTo', 'node', 'reason'];
    for (const h of items) for (const f of fields) expect(h, f).toHaveProperty(f);
    expect(items[0]).toMatchObject({ trigger: 'MANUAL', method: 'COMPLETE', node: 'test', scheduledTime: null, reason: expect.stringMatching(/gone_soon/) });
    expect(Date.parse(items[0]!.endTime as string)).toBeGreaterThanOrEqual(Date.parse(items[0]!.startTime as string));
    expect(items[1]).toMatchObject({ status: 'SUCCESS', reason: null, rowsChanged: 0, dataTime: expect.stringMatching(/^\d{4}-\d\d-\d\dT.*Z$/) });
    expect(items[0]!.dataTime).toBeNull(); // a failed run reflects no snapshot
    const ids = items.map((h) => h.refreshId as number);
    expect([...ids].sort((a, b) => b - a)).toEqual(ids);

    // Page by page, one at a time: the same runs in the same order, then no cursor.
    const paged: number[] = [];
    let cursor: string | null = null;
    do {
      const page = await get(`/v1/mviews/${t.database}/h_mv/history?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.statusCode).toBe(200);
      const body = page.json() as { items: Array<{ refreshId: number }>; nextCursor: string | null };
      expect(body.items.length).toBeLessThanOrEqual(1);
      paged.push(...body.items.map((h) => h.refreshId));
      cursor = body.nextCursor;
    } while (cursor);
    expect(paged).toEqual(ids);

    for (const [q, msg] of [
      ['limit=0', /^limit: expected a whole number from 1 to 10000/],
      ['limit=10001', /^limit: expected a whole number from 1 to 10000/],
      ['limit=abc', /^limit:/],
      ['cursor=not-a-cursor', /^cursor: not a cursor this API gave out/],
    ] as const) {
      const bad = await get(`/v1/mviews/${t.database}/h_mv/history?${q}`);
      expect(bad.statusCode, q).toBe(400);
      expect(bad.json().message, q).toMatch(msg);
    }
    expect((await get(`/v1/mviews/${t.database}/nosuch/history`)).statusCode).toBe(404);
  });

  it('GET /v1/mviews pages with limit and cursor, in name order', async () => {
    for (const n of ['p_a', 'p_b', 'p_c']) expect((await post('/v1/sql', { sql: `CREATE MATERIALIZED VIEW ${n} AS SELECT 1 AS x` })).statusCode).toBe(200);
    const all = (await get('/v1/mviews')).json() as { items: Array<{ name: string }>; nextCursor: string | null };
    expect(all.nextCursor).toBeNull();
    expect(all.items.length).toBeGreaterThanOrEqual(4);
    const names: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const body = (await get(`/v1/mviews?limit=2${cursor ? `&cursor=${cursor}` : ''}`)).json() as { items: Array<{ name: string }>; nextCursor: string | null };
      expect(body.items.length).toBeLessThanOrEqual(2);
      names.push(...body.items.map((m) => m.name));
      cursor = body.nextCursor;
      pages++;
    } while (cursor);
    expect(names).toEqual(all.items.map((m) => m.name));
    expect(pages).toBe(Math.ceil(names.length / 2));
    expect((await get('/v1/mviews?limit=20000')).statusCode).toBe(400);
    expect((await get('/v1/mviews?cursor=eyJ4IjoxfQ')).json()).toMatchObject({ error: 'bad_request', message: expect.stringMatching(/^cursor:/) });
  });

  it('GET /v1/jobs/:id tells the state of a job it enqueued; unknown ids are 404', async () => {
    const res = await post(`/v1/mviews/${t.database}/by_cust/refresh`, { method: 'fast' });
    expect(res.statusCode).toBe(202);
    const job = await get(`/v1/jobs/${res.json().jobId}`);
    expect(job.statusCode).toBe(200);
    // No worker runs in this file: the job waits (a worker completing one: boardMetrics.test.ts).
    expect(job.json()).toMatchObject({ jobId: res.json().jobId, state: 'waiting', name: 'refresh', data: { mview: `${t.database}.by_cust`, method: 'FAST' } });
    const none = await get('/v1/jobs/no-such-job');
    expect(none.statusCode).toBe(404);
    expect(none.json()).toMatchObject({ error: 'not_found', message: expect.stringMatching(/^job no-such-job is not in the requests queue/) });
  });

  it('GET /v1/nodes lists live workers', async () => {
    expect((await get('/v1/nodes')).json()).toEqual({ nodes: [] });
    await new MembershipRegistry(rt.redis, t.prefix).heartbeat('n1', 60_000);
    expect((await get('/v1/nodes')).json()).toEqual({ nodes: ['n1'] });
  });

  it('MV logs: list with purge state and consumers, enqueue a purge, explain a definition', async () => {
    expect((await get('/v1/mlogs')).json()).toEqual({ mlogs: [] });
    const missing = await post(`/v1/mlogs/${t.database}/orders/purge`);
    expect(missing.statusCode).toBe(404);
    expect(missing.json().message).toMatch(/no materialized view log on .*orders/);
    const explainBefore = await post('/v1/explain-mv', { select: 'SELECT id, cust FROM orders' });
    expect(explainBefore.json()).toEqual({ fastRefreshable: false, reason: expect.stringMatching(/has no materialized view log/) });

    expect((await post('/v1/sql', { sql: 'CREATE MATERIALIZED VIEW LOG ON orders (cust) PURGE NEXT 600' })).statusCode).toBe(200);
    expect((await post('/v1/sql', { sql: 'CREATE MATERIALIZED VIEW orders_fast REFRESH FAST AS SELECT id, cust FROM orders' })).statusCode).toBe(200);
    const list = (await get('/v1/mlogs')).json().mlogs as Array<Record<string, unknown>>;
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({
      table: `${t.database}.orders`,
      log: `${t.database}.mlog$orders`,
      columns: ['cust'],
      primaryKey: ['id'],
      purgeMethod: 'SCHEDULED',
      purgeIntervalS: 600,
      consumers: [{ mview: `${t.database}.orders_fast`, refreshMethod: 'FAST', consumedWatermark: expect.any(Number) }],
    });
    const purge = await post(`/v1/mlogs/${t.database}/orders/purge`);
    expect(purge.statusCode).toBe(202);
    expect((await requests.getJob(purge.json().jobId))?.data).toEqual({ mlog: `${t.database}.orders` });
    expect((await post('/v1/explain-mv', { select: 'SELECT id, cust FROM orders' })).json()).toEqual({
      fastRefreshable: true,
      kind: 'spj',
      table: `${t.database}.orders`,
      mlog: `${t.database}.mlog$orders`,
    });
    expect((await post('/v1/explain-mv', { select: 'SELECT nope FROM orders' })).statusCode).toBe(400);
    expect((await post('/v1/explain-mv', {})).json().message).toMatch(/^select:/);
    expect((await post('/v1/sql', { sql: 'DROP MATERIALIZED VIEW LOG ON orders' })).statusCode).toBe(409);
  });

  it('needs the bearer token everywhere but /healthz', async () => {
    expect((await get('/healthz', {})).statusCode).toBe(200);
    for (const url of ['/v1/mviews', '/v1/nodes', '/readyz']) {
      expect((await get(url, {})).statusCode, url).toBe(401);
      expect((await get(url, { authorization: 'Bearer nope' })).statusCode, url).toBe(401);
    }
    const noToken = await post('/v1/sql', { sql: 'DROP MATERIALIZED VIEW by_cust' }, {});
    expect(noToken.statusCode).toBe(401);
    expect(noToken.json()).toEqual({ error: 'unauthorized', message: 'missing or wrong bearer token' });
    // Nothing happened without the token.
    expect((await get(`/v1/mviews/${t.database}/by_cust`)).statusCode).toBe(200);
  });
});
