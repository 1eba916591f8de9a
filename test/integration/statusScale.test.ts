import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import type { RefreshRunner } from '../../src/refresh/runner.js';
import { listMlogStatus } from '../../src/mlog/status.js';
import { listMviewStatus, type MviewStatus } from '../../src/mv/status.js';
import { pageMviewStatus } from '../../src/mv/statusPage.js';
import { mviewRingKey } from '../../src/queue/names.js';
import { HashRing } from '../../src/ring/hashRing.js';
import { partitionStale } from '../../src/versions/freshness.js';
import { baseTableVersions, readVersionMap, tableKey } from '../../src/versions/repository.js';
import { storeVersionReport } from '../../src/versions/reports.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// Status at scale (issue 11): `status`, `GET /v1/mviews` and /metrics read every MV and MV log
// in a number of queries that does not grow with how many there are; the freshness they show is
// the per-MV definition of DESIGN.md §2, and MV logs show their backlog.

let t: TestEnv;
let ddl: DdlExecutor;
let runner: RefreshRunner;
let ring: HashRing;

beforeAll(async () => {
  t = await createTestEnv('status_scale');
  await migrateLatest(t.db);
  ({ ddl, runner } = inProcessRefresh(t));
  ring = new HashRing();
  ring.rebuild(['w1', 'w2']);
  await t.db.raw('CREATE TABLE plain (id INT PRIMARY KEY, v INT)');
  await t.db.raw('CREATE TABLE vt (id INT PRIMARY KEY, v INT)');
  await t.db.raw('INSERT INTO plain VALUES (1, 1), (2, 2)');
  await t.db.raw('INSERT INTO vt VALUES (1, 10)');
  await report('vt', [
    { partitionName: 'p1', partitionId: 1, version: 1 },
    { partitionName: 'p2', partitionId: 2, version: 1 },
  ]);
});

afterAll(async () => {
  await t?.close();
});

async function report(table: string, parts: Array<{ partitionName: string; partitionId: number; version: number }>): Promise<void> {
  await storeVersionReport(
    t.db,
    { schema: t.database, name: table },
    { table: `${t.database}.${table}`, partitions: parts.map((p) => ({ ...p, versionTime: Date.now() })), dataChanged: true },
    systemClock,
  );
}

/** Statements `fn` sends to the database. */
async function queries<T>(fn: () => Promise<T>): Promise<{ n: number; result: T }> {
  let n = 0;
  const count = () => n++;
  t.db.on('query', count);
  try {
    const result = await fn();
    return { n, result };
  } finally {
    t.db.off('query', count);
  }
}

let made = 0;
/** `k` MVs of each kind: plain, over the versioned table, over both, FAST over a logged table. */
async function createMviews(k: number): Promise<void> {
  for (let i = 0; i < k; i++) {
    const n = made++;
    await ddl.execute(`CREATE MATERIALIZED VIEW p_${n} NEXT 3600 AS SELECT SUM(v) AS s FROM plain`);
    await ddl.execute(`CREATE MATERIALIZED VIEW v_${n} NEXT 3600 AS SELECT SUM(v) AS s FROM vt`);
    await ddl.execute(`CREATE MATERIALIZED VIEW b_${n} AS SELECT p.id, p.v + x.v AS w FROM plain p JOIN vt x ON x.id = p.id`);
    await t.db.raw(`CREATE TABLE lg_${n} (id INT PRIMARY KEY, g INT, x INT)`);
    await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON lg_${n} (g, x)`);
    await ddl.execute(`CREATE MATERIALIZED VIEW f_${n} REFRESH FAST NEXT 60 AS SELECT g, SUM(x) AS s, COUNT(*) AS c FROM lg_${n} GROUP BY g`);
  }
}

/** DESIGN.md §2 freshness of one MV, computed the plain per-MV way (the oracle). */
async function referenceFreshness(db: Knex, mviewId: number) {
  const bases = await baseTableVersions(db, mviewId);
  const map = await readVersionMap(db, mviewId);
  let versioned = bases.length > 0;
  const stale: string[] = [];
  for (const { table, partitions } of bases) {
    if (partitions.size === 0) versioned = false;
    for (const p of partitions.values()) if (partitionStale(p, map.get(tableKey(table))?.get(p.partitionName))) stale.push(`${tableKey(table)}.${p.partitionName}`);
  }
  return { freshness: !versioned ? 'unversioned' : stale.length ? 'stale' : 'fresh', stalePartitions: stale };
}

describe('status of many MVs', () => {
  it('takes the same number of queries for 4 MVs as for 60, listed whole, by page, and for MV logs', async () => {
    await createMviews(1);
    const small = await queries(() => listMviewStatus(t.db, ring));
    const smallPage = await queries(() => pageMviewStatus(t.db, ring, { limit: 2 }));
    const smallLogs = await queries(() => listMlogStatus(t.db));
    expect(small.result).toHaveLength(4);
    expect(smallLogs.result).toHaveLength(1);

    await createMviews(14);
    const big = await queries(() => listMviewStatus(t.db, ring));
    const bigPage = await queries(() => pageMviewStatus(t.db, ring, { limit: 20 }));
    const bigLogs = await queries(() => listMlogStatus(t.db));
    expect(big.result).toHaveLength(60);
    expect(bigPage.result.items).toHaveLength(20);
    expect(bigLogs.result).toHaveLength(15);
    expect(big.n).toBe(small.n);
    expect(bigPage.n).toBe(smallPage.n);
    expect(bigLogs.n).toBe(smallLogs.n);
    // The listing, the database clock, freshness in at most three reads, the dependency edges
    // between MVs and their names (pipelines).
    expect(big.n).toBeLessThanOrEqual(7);
    expect(bigLogs.n).toBeLessThanOrEqual(5);
  });

  it('shows the freshness of the per-MV definition for every MV, whole and by page', async () => {
    // p2 moves: every MV over vt is stale on p2 (those over vt and plain stay unversioned).
    await report('vt', [{ partitionName: 'p2', partitionId: 2, version: 2 }]);
    const [first] = (await t.db('mvs_mviews').where({ mview_name: 'v_0' }).pluck('mview_id')) as number[];
    await ddl.execute('REFRESH MATERIALIZED VIEW v_0');
    const all = await listMviewStatus(t.db, ring);
    const paged = [];
    let cursor: string | undefined;
    do {
      const page = await pageMviewStatus(t.db, ring, { limit: 7, ...(cursor ? { cursor } : {}) });
      paged.push(...page.items);
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(paged.map((m) => m.name)).toEqual(all.map((m) => m.name));
    const kinds = new Set<string>();
    for (const [i, m] of all.entries()) {
      const want = await referenceFreshness(t.db, m.mviewId);
      expect({ freshness: m.freshness, stalePartitions: m.stalePartitions }, m.name).toEqual(want);
      expect({ freshness: paged[i]!.freshness, stalePartitions: paged[i]!.stalePartitions }, m.name).toEqual(want);
      kinds.add(want.freshness);
    }
    expect([...kinds].sort()).toEqual(['fresh', 'stale', 'unversioned']);
    expect(all.find((m) => m.mviewId === first)).toMatchObject({ freshness: 'fresh', versionsReportedAt: expect.any(String) });
    expect(all.find((m) => m.mview === 'v_1')).toMatchObject({ freshness: 'stale', stalePartitions: [`${t.database}.vt.p2`] });
    expect(all.find((m) => m.mview === 'b_1')).toMatchObject({ freshness: 'unversioned', stalePartitions: [`${t.database}.vt.p2`] });
  });

  it('gives every MV its data time, last success and lag on the database clock, and an owner when scheduled', async () => {
    const all = await listMviewStatus(t.db, ring);
    const [now] = ((await t.db.raw('SELECT NOW(3) AS t')) as [Array<{ t: Date }>])[0];
    for (const m of all) {
      // Numbers are numbers (JSON clients and /metrics read them so), times ISO 8601.
      expect(m, m.name).toMatchObject({ mviewId: expect.any(Number), failures: 0, refreshCount: expect.any(Number) });
      expect(m.nextSeconds === null || typeof m.nextSeconds === 'number', m.name).toBe(true);
      expect(m.dataTime, m.name).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(m.dataTime, m.name).toBe(new Date(m.dataTime!).toISOString());
      expect(m.lastSuccessTime, m.name).toBe(m.lastRefreshEnd);
      const lag = (now!.t.getTime() - Date.parse(m.dataTime!)) / 1000;
      expect(m.lagSeconds!, m.name).toBeGreaterThanOrEqual(0);
      expect(Math.abs(m.lagSeconds! - lag), m.name).toBeLessThan(5);
      expect(m.owner, m.name).toBe(m.nextTime ? ring.getNode(mviewRingKey(m.mviewId)) ?? null : null);
    }
  });
});

describe('every field of the listing', () => {
  /** The listing's columns read per MV the plain way: times as the driver's Dates, made ISO here. */
  async function referenceRow(mviewId: number) {
    const r = (await t.db('mvs_mviews as m').leftJoin('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id').where('m.mview_id', mviewId).first(
      'm.table_schema', 'm.mview_name', 'm.refresh_method', 'm.status', 'm.refresh_start', 'm.refresh_interval', 'm.target_lag', 'm.target_downstream',
      'ri.last_refresh_result', 'ri.refresh_endtime', 'ri.last_refresh_type', 'ri.last_success_endtime', 'ri.data_time', 'ri.next_time',
      'ri.consecutive_failures', 'ri.last_failed_reason', 'ri.refresh_count', 'ri.target_unmet_reason',
    )) as Record<string, unknown>;
    const iso = (v: unknown) => (v === null ? null : (v as Date).toISOString());
    return {
      mviewId,
      name: `${String(r.table_schema)}.${String(r.mview_name)}`,
      schema: r.table_schema,
      mview: r.mview_name,
      method: r.refresh_method,
      status: r.status,
      startWith: iso(r.refresh_start),
      nextSeconds: r.refresh_interval === null ? null : Number(r.refresh_interval),
      lastResult: r.last_refresh_result,
      lastRefreshEnd: iso(r.refresh_endtime),
      lastRefreshType: r.last_refresh_type,
      lastSuccessTime: iso(r.last_success_endtime),
      dataTime: iso(r.data_time),
      nextTime: iso(r.next_time),
      failures: Number(r.consecutive_failures),
      lastFailedReason: r.last_failed_reason,
      refreshCount: Number(r.refresh_count),
      targetLag: r.target_downstream ? 'DOWNSTREAM' : r.target_lag === null ? null : Number(r.target_lag),
      targetUnmetReason: r.target_unmet_reason,
    };
  }

  /** Everything but the lag, which moves with the clock between two reads. */
  const steady = (m: MviewStatus) => ({ ...m, lagSeconds: m.lagSeconds === null ? null : 'some' });

  it('is the same whole, by page and for one MV, and each column is what a per-MV read gives, in every state', async () => {
    // Beside the MVs made above (COMPLETE, FAST, over versioned tables): a pipeline with a target
    // lag, one waiting on DOWNSTREAM, a failing MV, a suspended one and one on a START WITH grid.
    await t.db.raw('CREATE TABLE gone (id INT PRIMARY KEY, v INT)');
    await ddl.execute('CREATE MATERIALIZED VIEW st_up TARGET LAG 3600 AS SELECT SUM(v) AS s FROM plain');
    await ddl.execute('CREATE MATERIALIZED VIEW st_down TARGET LAG DOWNSTREAM AS SELECT s FROM st_up');
    await ddl.execute('CREATE MATERIALIZED VIEW st_fail NEXT 600 AS SELECT SUM(v) AS s FROM gone');
    await ddl.execute('CREATE MATERIALIZED VIEW st_susp NEXT 600 AS SELECT SUM(v) AS s FROM plain');
    await ddl.execute('ALTER MATERIALIZED VIEW st_susp SUSPEND');
    await ddl.execute("CREATE MATERIALIZED VIEW st_grid START WITH '2030-01-02 03:04:05.678' NEXT 3600 AS SELECT SUM(v) AS s FROM plain");
    await ddl.execute('REFRESH MATERIALIZED VIEW f_1');
    await t.db.raw('DROP TABLE gone');
    const [failing] = (await t.db('mvs_mviews').where({ mview_name: 'st_fail' }).pluck('mview_id')) as number[];
    expect((await runner.run({ mviewId: failing!, trigger: 'MANUAL' })).kind).toBe('FAILED');

    const all = await listMviewStatus(t.db, ring);
    const paged: MviewStatus[] = [];
    let cursor: string | undefined;
    do {
      const page = await pageMviewStatus(t.db, ring, { limit: 3, ...(cursor ? { cursor } : {}) });
      paged.push(...page.items);
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    expect(paged.map(steady)).toEqual(all.map(steady));
    const byName = new Map(all.map((m) => [m.mview, m]));
    for (const m of all) {
      const [one] = await listMviewStatus(t.db, ring, { schema: m.schema, name: m.mview });
      expect(steady(one!), m.name).toEqual(steady(m));
      expect(m, m.name).toMatchObject(await referenceRow(m.mviewId));
      // The same keys in the same order as the type declares (the JSON clients read).
      expect(Object.keys(m), m.name).toEqual(Object.keys(all[0]!));
    }
    const db = t.database;
    expect(byName.get('st_up')).toMatchObject({ targetLag: 3600, dependsOn: [], readBy: [`${db}.st_down`] });
    expect(byName.get('st_down')).toMatchObject({ targetLag: 'DOWNSTREAM', dependsOn: [`${db}.st_up`], readBy: [] });
    expect(byName.get('st_fail')).toMatchObject({ lastResult: 'FAILED', failures: 1, lastFailedReason: expect.stringMatching(/gone/) });
    expect(byName.get('st_susp')).toMatchObject({ status: 'SUSPENDED', owner: null });
    expect(byName.get('st_grid')).toMatchObject({ startWith: '2030-01-02T03:04:05.678Z' });
    expect(byName.get('f_1')).toMatchObject({ method: 'FAST', lastResult: 'SUCCESS', lastRefreshType: expect.any(String), dataTime: expect.any(String) });
    expect(new Set(all.map((m) => m.freshness))).toEqual(new Set(['fresh', 'stale', 'unversioned']));
  });
});

describe('MV log backlog', () => {
  it('counts unpurged rows from sequence numbers; a log whose table is gone has none, the others still do', async () => {
    await t.db(`lg_0`).insert([{ id: 1, g: 1, x: 1 }, { id: 2, g: 1, x: 2 }]);
    await t.db(`lg_1`).insert({ id: 1, g: 1, x: 1 });
    await ddl.execute('REFRESH MATERIALIZED VIEW f_0');
    await ddl.execute('PURGE MATERIALIZED VIEW LOG ON lg_0');
    await t.db(`lg_0`).where({ id: 1 }).update({ x: 5 });
    const before = new Map((await listMlogStatus(t.db)).map((l) => [l.tableName, l]));
    expect(before.get('lg_0')).toMatchObject({ backlogRows: 2, purgeWatermark: 2 });
    expect(before.get('lg_1')).toMatchObject({ backlogRows: 1, purgeWatermark: 0 });
    expect(before.get('lg_2')).toMatchObject({ backlogRows: 0 });

    await t.db.raw(`DROP TABLE ??`, ['mlog$lg_2']);
    const after = new Map((await listMlogStatus(t.db)).map((l) => [l.tableName, l]));
    expect(after.get('lg_2')).toMatchObject({ backlogRows: null });
    expect(after.get('lg_0')).toMatchObject({ backlogRows: 2 });
    expect(after.get('lg_1')).toMatchObject({ backlogRows: 1 });
  });
});
