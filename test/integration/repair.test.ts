import { Redlock } from '@sesamecare-oss/redlock';
import type { Redis } from 'ioredis';
import knexFactory, { type Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { knexConfig } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import type { ReportVersionsPayload } from '../../src/jobs/schemas.js';
import type { MviewRow, RefreshHistRow, RefreshInfoRow } from '../../src/mv/repository.js';
import { closeRedis, createRedis } from '../../src/queue/redis.js';
import { RefreshRunner, type RefreshOutcome } from '../../src/refresh/runner.js';
import { CasConflict, Repairer, type RepairOutcome } from '../../src/repair/repairer.js';
import { nextExecTime } from '../../src/schedule/nextTime.js';
import { mviewFreshness } from '../../src/versions/freshness.js';
import { storeVersionReport, type ReportOutcome } from '../../src/versions/reports.js';
import { readVersionMap } from '../../src/versions/repository.js';
import type { RepairInfo, TableRef } from '../../src/versions/types.js';
import { snapshot } from '../support/snapshot.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// DESIGN.md §2 "Base-table versions, freshness and repair": StarRocks' MVMetaVersionRepairerTest
// cases as facts against a real MariaDB and Redis, plus the scheduler's side of it (a scheduled
// run over a repaired compaction is SKIPPED), chains, fencing and the external-table recreate.

let t: TestEnv;
let redis: Redis;
let redlock: Redlock;
let repairer: Repairer;
let runner: RefreshRunner;
let ddl: DdlExecutor;

beforeAll(async () => {
  t = await createTestEnv('repair');
  await migrateLatest(t.db);
  redis = createRedis(t.redisUrl);
  redlock = new Redlock([redis], { retryCount: 50, retryDelay: 100 });
  repairer = new Repairer({ db: t.db, redlock, prefix: t.prefix, logger: t.logger, clock: systemClock });
  runner = new RefreshRunner({ db: t.db, logger: t.logger, clock: systemClock, nodeId: 'test-node' });
  ddl = new DdlExecutor({ db: t.db, logger: t.logger, clock: systemClock, runner, defaultSchema: t.database, notify: async () => {} });
});

afterAll(async () => {
  if (redis) await closeRedis(redis);
  await t?.close();
});

// ---- helpers ----

type PartitionVersion = ReportVersionsPayload['partitions'][number];

// The base table's partitions as first reported (synthetic version times, epoch ms).
const P1: PartitionVersion = { partitionName: 'p1', partitionId: 11, version: 5, versionTime: 1_000 };
const P2: PartitionVersion = { partitionName: 'p2', partitionId: 12, version: 7, versionTime: 2_000 };
const P3: PartitionVersion = { partitionName: 'p3', partitionId: 13, version: 9, versionTime: 3_000 };

interface Fixture {
  id: number;
  table: TableRef;
  mv: string;
}

const ref = (name: string): TableRef => ({ schema: t.database, name });

function report(table: TableRef, partitions: PartitionVersion[], dataChanged: boolean, tableIdentifier?: string): Promise<ReportOutcome> {
  return storeVersionReport(
    t.db,
    table,
    { table: `${table.schema}.${table.name}`, partitions, dataChanged, ...(tableIdentifier ? { tableIdentifier } : {}) },
    systemClock,
  );
}

function expectKind<K extends RefreshOutcome['kind']>(o: RefreshOutcome, kind: K): Extract<RefreshOutcome, { kind: K }> {
  expect(o.kind, JSON.stringify(o)).toBe(kind);
  return o as Extract<RefreshOutcome, { kind: K }>;
}

/**
 * A base table `name` (rows in p1, p2, p3) and an MV over it. `reported` is stored (as a data
 * change) after the MV is created, then, when `refresh`, a MANUAL refresh records the MV's
 * version map from it.
 */
async function setup(name: string, reported: PartitionVersion[], opts: { refresh?: boolean; ident?: string } = {}): Promise<Fixture> {
  await t.db.raw('CREATE TABLE ?? (id INT PRIMARY KEY, p VARCHAR(8), v INT)', [name]);
  await t.db(name).insert([
    { id: 1, p: 'p1', v: 10 },
    { id: 2, p: 'p2', v: 20 },
    { id: 3, p: 'p3', v: 30 },
  ]);
  const mv = `mv_${name}`;
  const res = await ddl.execute(`CREATE MATERIALIZED VIEW ${mv} NEXT 3600 AS SELECT p, SUM(v) AS s FROM ${name} GROUP BY p`);
  const table = ref(name);
  if (reported.length) await report(table, reported, true, opts.ident);
  if (opts.refresh ?? true) expectKind(await runner.run({ mviewId: res.mviewId!, trigger: 'MANUAL' }), 'SUCCESS');
  return { id: res.mviewId!, table, mv };
}

interface MapRow {
  table: string;
  partition: string;
  partition_id: number;
  version: number;
  last_refresh_time: number;
  ext_last_file_modified_time: number;
  file_number: number;
}

async function versionMap(id: number): Promise<MapRow[]> {
  const rows = (await t.db('mvs_mview_version_map').where({ mview_id: id }).orderBy(['base_table_name', 'partition_name'])) as Array<
    Record<string, unknown>
  >;
  return rows.map((r) => ({
    table: `${String(r.base_table_schema)}.${String(r.base_table_name)}`,
    partition: String(r.partition_name),
    partition_id: Number(r.partition_id),
    version: Number(r.version),
    last_refresh_time: Number(r.last_refresh_time),
    ext_last_file_modified_time: Number(r.ext_last_file_modified_time),
    file_number: Number(r.file_number),
  }));
}

/** The map row a refresh records for a reported partition. */
const refreshed = (table: TableRef, p: PartitionVersion): MapRow => ({
  table: `${table.schema}.${table.name}`,
  partition: p.partitionName,
  partition_id: p.partitionId,
  version: p.version,
  last_refresh_time: p.versionTime,
  ext_last_file_modified_time: -1,
  file_number: -1,
});

async function meta(id: number): Promise<{ metaVersion: number; versionRefreshTime: number | null }> {
  const r = (await t.db('mvs_mviews').where({ mview_id: id }).first('meta_version', 'version_refresh_time')) as Record<string, unknown>;
  return { metaVersion: Number(r.meta_version), versionRefreshTime: r.version_refresh_time === null ? null : Number(r.version_refresh_time) };
}

async function editLog(id: number): Promise<Array<{ op: string; payload: Record<string, unknown> }>> {
  const rows = (await t.db('mvs_edit_log').where({ mview_id: id }).orderBy('id')) as Array<{ op_type: string; payload: string }>;
  return rows.map((r) => ({ op: r.op_type, payload: JSON.parse(r.payload) as Record<string, unknown> }));
}

const repairInfo = (p: PartitionVersion, newVersion: number, newVersionTime: number, lastVersionTime?: number): RepairInfo => ({
  partitionId: p.partitionId,
  partitionName: p.partitionName,
  lastVersion: p.version,
  newVersion,
  newVersionTime,
  ...(lastVersionTime !== undefined ? { lastVersionTime } : {}),
});

function expectNothingApplied(o: RepairOutcome, skipped: RepairOutcome['skipped']): void {
  expect(o.applied, JSON.stringify(o)).toBe(0);
  expect(o.skipped).toEqual(skipped);
  expect(o.waiting).toEqual([]);
}

async function mvRows(mv: string): Promise<string[]> {
  const [rows] = (await t.db.raw('SELECT * FROM ?? ORDER BY p', [mv])) as [Array<Record<string, unknown>>];
  return rows.map((r) => JSON.stringify(r));
}

async function definingRows(table: string): Promise<string[]> {
  const [rows] = (await t.db.raw('SELECT p, SUM(v) AS s FROM ?? GROUP BY p ORDER BY p', [table])) as [Array<Record<string, unknown>>];
  return rows.map((r) => JSON.stringify(r));
}

/** Make the MV's scheduled slot due now; returns the slot (epoch ms). */
async function makeDue(id: number): Promise<number> {
  const due = Date.now();
  await t.db('mvs_mview_refresh_info').where({ mview_id: id }).update({ next_time: new Date(due) });
  return due;
}

// ---- StarRocks' MVMetaVersionRepairerTest cases ----

describe('repair rules against a stored version map (StarRocks cases)', () => {
  it('1. MV refreshed for p1: repair p1 sets version and last_refresh_time, keeps the id, one edit-log row, meta_version + 1', async () => {
    const f = await setup('c1', [P1]);
    await report(f.table, [P2, P3], true); // the table has grown partitions the MV never read
    expect(await versionMap(f.id)).toEqual([refreshed(f.table, P1)]);
    const before = await meta(f.id);
    expect(await editLog(f.id)).toEqual([]);

    const now = Date.now();
    const o = await repairer.repair(f.id, f.table, [repairInfo(P1, 100, now)]);
    expect(o).toEqual({ mviewId: f.id, applied: 1, skipped: {}, waiting: [], casRetries: 0 });

    expect(await versionMap(f.id)).toEqual([{ ...refreshed(f.table, P1), version: 100, last_refresh_time: now }]);
    const map = await readVersionMap(t.db, f.id);
    expect(map.size).toBe(1);
    expect(map.get(`${t.database}.c1`)?.size).toBe(1);

    const log = await editLog(f.id);
    expect(log.map((l) => l.op)).toEqual(['REPAIR_VERSION_MAP']);
    expect(log[0]!.payload).toMatchObject({
      table: `${t.database}.c1`,
      metaVersion: before.metaVersion + 1,
      partitions: { p1: { partitionId: 11, version: 100, lastRefreshTime: now } },
    });
    expect(await meta(f.id)).toEqual({ metaVersion: before.metaVersion + 1, versionRefreshTime: now });
  });

  it('2. MV never refreshed with the table (no map entries): nothing changes, no table added, no edit-log row', async () => {
    const f = await setup('c2', [], { refresh: false });
    await report(f.table, [P1, P2, P3], true);
    expect(await versionMap(f.id)).toEqual([]);
    const before = await snapshot(t.db, t.database);
    const m = await meta(f.id);

    const o = await repairer.repair(f.id, f.table, [repairInfo(P1, 100, Date.now())]);
    expectNothingApplied(o, { 'no-table-entry': 1 });

    expect(await versionMap(f.id)).toEqual([]);
    expect((await readVersionMap(t.db, f.id)).size).toBe(0);
    expect(await editLog(f.id)).toEqual([]);
    expect(await meta(f.id)).toEqual(m);
    expect(await snapshot(t.db, t.database)).toEqual(before);
  });

  it('3. MV refreshed for p1, repair names p2: no p2 entry appears, nothing is written', async () => {
    const f = await setup('c3', [P1]);
    await report(f.table, [P2], true);
    const before = await snapshot(t.db, t.database);

    const o = await repairer.repair(f.id, f.table, [repairInfo(P2, 100, Date.now())]);
    expectNothingApplied(o, { 'no-partition-entry': 1 });

    expect(await versionMap(f.id)).toEqual([refreshed(f.table, P1)]);
    expect(await editLog(f.id)).toEqual([]);
    expect(await snapshot(t.db, t.database)).toEqual(before);
  });

  it('4. base version bumped by a data change since the refresh: the repair changes nothing and is data-changed-since, not waiting', async () => {
    const f = await setup('c4', [P1]);
    const changed = { ...P1, version: P1.version + 1, versionTime: 1_500 };
    await report(f.table, [changed], true);
    const before = await snapshot(t.db, t.database);

    // A compaction of the new version: its lastVersion is ahead of the MV's entry, and no
    // compaction chain can bridge a data change, so it must be dropped, not kept waiting.
    const o = await repairer.repair(f.id, f.table, [repairInfo(changed, changed.version + 1, 1_600)]);
    expectNothingApplied(o, { 'data-changed-since': 1 });

    expect(await versionMap(f.id)).toEqual([refreshed(f.table, P1)]);
    expect(await editLog(f.id)).toEqual([]);
    expect(await snapshot(t.db, t.database)).toEqual(before);
    // Still stale: only a refresh brings it up to date.
    expect((await mviewFreshness(t.db, f.id)).stale).toEqual([`${t.database}.c4.p1`]);
  });

  it('5. lastVersionTime newer than the entry\'s last_refresh_time: nothing changes', async () => {
    const f = await setup('c5', [P1]);
    const before = await snapshot(t.db, t.database);

    const o = await repairer.repair(f.id, f.table, [repairInfo(P1, 100, 5_000, P1.versionTime + 1)]);
    expectNothingApplied(o, { 'last-version-time-newer': 1 });

    expect(await versionMap(f.id)).toEqual([refreshed(f.table, P1)]);
    expect(await editLog(f.id)).toEqual([]);
    expect(await snapshot(t.db, t.database)).toEqual(before);

    // The same info with lastVersionTime = last_refresh_time applies.
    const ok = await repairer.repair(f.id, f.table, [repairInfo(P1, 100, 5_000, P1.versionTime)]);
    expect(ok.applied).toBe(1);
    expect(await versionMap(f.id)).toEqual([{ ...refreshed(f.table, P1), version: 100, last_refresh_time: 5_000 }]);
    expect((await editLog(f.id)).map((l) => l.op)).toEqual(['REPAIR_VERSION_MAP']);
  });

  it('a batch where some infos apply: one transaction, one edit-log row, kept and skipped counted apart', async () => {
    const f = await setup('c6', [P1, P2, P3]);
    const m = await meta(f.id);
    const o = await repairer.repair(f.id, f.table, [
      repairInfo(P1, 6, 1_100),
      repairInfo(P2, 8, 2_100),
      { ...repairInfo(P3, 10, 3_100), partitionId: 99 },
      { ...repairInfo(P1, 7, 9_000), partitionName: 'p9' },
    ]);
    expect(o).toEqual({ mviewId: f.id, applied: 2, skipped: { 'partition-id-mismatch': 1, 'no-partition-entry': 1 }, waiting: [], casRetries: 0 });
    expect(await versionMap(f.id)).toEqual([
      { ...refreshed(f.table, P1), version: 6, last_refresh_time: 1_100 },
      { ...refreshed(f.table, P2), version: 8, last_refresh_time: 2_100 },
      refreshed(f.table, P3),
    ]);
    expect((await editLog(f.id)).map((l) => l.op)).toEqual(['REPAIR_VERSION_MAP']);
    // The MV's last refresh time: the max newVersionTime of the applied infos.
    expect(await meta(f.id)).toEqual({ metaVersion: m.metaVersion + 1, versionRefreshTime: 2_100 });
  });
});

// ---- freshness and the scheduler ----

describe('a scheduled refresh after a repaired compaction', () => {
  let f: Fixture;

  beforeAll(async () => {
    f = await setup('sk', [P1, P2, P3]);
  });

  it('is SKIPPED: history row, next_time on the grid, the MV untouched; after a data change it recomputes', async () => {
    const mv = (await t.db('mvs_mviews').where({ mview_id: f.id }).first()) as MviewRow;
    expect(mv.refresh_start).not.toBeNull();
    const contents = await mvRows(f.mv);
    expect(contents).toEqual(await definingRows('sk'));

    // A compaction of p2: new version, same data.
    const compacted = { ...P2, version: 8, versionTime: 2_500 };
    const out = await report(f.table, [compacted], false);
    expect(out.dependents).toEqual([f.id]);
    expect(out.recreated).toBeUndefined();
    expect(out.repairInfos).toEqual([
      { partitionId: 12, partitionName: 'p2', lastVersion: 7, newVersion: 8, newVersionTime: 2_500, lastVersionTime: 2_000 },
    ]);
    // Until the repair lands, the MV is stale on p2.
    expect(await mviewFreshness(t.db, f.id)).toEqual({ versioned: true, stale: [`${t.database}.sk.p2`], reportedAt: expect.any(Number) });

    const o = await repairer.repair(f.id, f.table, out.repairInfos);
    expect(o).toMatchObject({ applied: 1, waiting: [] });
    expect(await mviewFreshness(t.db, f.id)).toEqual({ versioned: true, stale: [], reportedAt: expect.any(Number) });

    // The base data moves without any report saying so: if the scheduled run recomputed, the MV
    // would pick this row up.
    await t.db('sk').insert({ id: 4, p: 'p1', v: 1_000 });
    const runsBefore = Number(((await t.db('mvs_mview_refresh_info').where({ mview_id: f.id }).first()) as RefreshInfoRow).refresh_count);
    const due = await makeDue(f.id);

    const s = expectKind(await runner.run({ mviewId: f.id, trigger: 'SCHEDULED', scheduledFor: due, jobId: 'sched-skip' }), 'SKIPPED');
    const h = (await t.db('mvs_mview_refresh_hist').where({ refresh_id: s.refreshId }).first()) as RefreshHistRow;
    expect(h).toMatchObject({ refresh_status: 'SKIPPED', refresh_trigger: 'SCHEDULED', refresh_job_id: 'sched-skip', node_id: 'test-node' });
    expect(Number(h.rows_changed)).toBe(0);
    expect(h.scheduled_time!.getTime()).toBe(due);
    const end = h.end_time!.getTime();

    const info = (await t.db('mvs_mview_refresh_info').where({ mview_id: f.id }).first()) as RefreshInfoRow;
    expect(info).toMatchObject({ last_refresh_result: 'SKIPPED', last_refresh_trigger: 'SCHEDULED' });
    const next = info.next_time!.getTime();
    expect(next).toBe(nextExecTime(mv.refresh_start!.getTime(), mv.refresh_interval, end));
    expect(s.nextTime).toBe(next);
    expect(next).toBeGreaterThan(end);
    expect((next - Math.floor(mv.refresh_start!.getTime() / 1000) * 1000) % 3_600_000).toBe(0);
    expect(Number(info.refresh_count)).toBe(runsBefore);

    expect(await mvRows(f.mv)).toEqual(contents);
    expect(await mvRows(f.mv)).not.toEqual(await definingRows('sk'));
    // Still fresh; nothing repaired or recorded by the skip.
    expect((await editLog(f.id)).map((l) => l.op)).toEqual(['REPAIR_VERSION_MAP']);

    // Now a data change on p1 is reported: the next scheduled run recomputes.
    await report(f.table, [{ ...P1, version: 6, versionTime: 1_500 }], true);
    expect((await mviewFreshness(t.db, f.id)).stale).toEqual([`${t.database}.sk.p1`]);
    const due2 = await makeDue(f.id);
    const ok = expectKind(await runner.run({ mviewId: f.id, trigger: 'SCHEDULED', scheduledFor: due2 }), 'SUCCESS');
    expect(ok.nextTime).toBe(nextExecTime(mv.refresh_start!.getTime(), mv.refresh_interval, ok.endMs));
    expect(await mvRows(f.mv)).toEqual(await definingRows('sk'));
    expect(await mvRows(f.mv)).not.toEqual(contents);
    expect(await versionMap(f.id)).toEqual([
      refreshed(f.table, { ...P1, version: 6, versionTime: 1_500 }),
      refreshed(f.table, compacted),
      refreshed(f.table, P3),
    ]);
    expect(await mviewFreshness(t.db, f.id)).toEqual({ versioned: true, stale: [], reportedAt: expect.any(Number) });
  });

  it('a base table that reports no versions at all: no skip, the scheduled run recomputes', async () => {
    const g = await setup('nv', []);
    await t.db('nv').insert({ id: 4, p: 'p1', v: 1_000 });
    const due = await makeDue(g.id);
    expectKind(await runner.run({ mviewId: g.id, trigger: 'SCHEDULED', scheduledFor: due }), 'SUCCESS');
    expect(await mvRows(g.mv)).toEqual(await definingRows('nv'));
    expect(await versionMap(g.id)).toEqual([]);
  });

  it('an MV over a fresh versioned table and an unversioned one: no skip', async () => {
    await t.db.raw('CREATE TABLE uv (id INT PRIMARY KEY, w INT)');
    await t.db('uv').insert([{ id: 1, w: 1 }, { id: 2, w: 2 }]);
    const res = await ddl.execute(
      'CREATE MATERIALIZED VIEW mv_mix NEXT 3600 AS SELECT a.p, SUM(a.v * b.w) AS s FROM sk a JOIN uv b ON a.id = b.id GROUP BY a.p',
    );
    const id = res.mviewId!;
    // The versioned side is fresh for this MV (its creation build recorded the map).
    expect((await versionMap(id)).length).toBe(3);
    expect((await mviewFreshness(t.db, id)).stale).toEqual([]);
    await t.db('uv').insert({ id: 3, w: 3 });
    const due = await makeDue(id);
    expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED', scheduledFor: due }), 'SUCCESS');
    const [rows] = (await t.db.raw('SELECT p, s FROM mv_mix ORDER BY p')) as [Array<Record<string, unknown>>];
    const [want] = (await t.db.raw('SELECT a.p, SUM(a.v * b.w) AS s FROM sk a JOIN uv b ON a.id = b.id GROUP BY a.p ORDER BY a.p')) as [
      Array<Record<string, unknown>>,
    ];
    expect(rows).toEqual(want);
  });
});

// ---- chains ----

describe('repair chains (v -> v+1 -> v+2 -> v+3 on p1)', () => {
  let a: Fixture;
  let b: number;
  let c: number;
  let chain: RepairInfo[];
  const final = { ...P1, version: P1.version + 3, versionTime: 1_300 };

  beforeAll(async () => {
    a = await setup('ch', [P1, P2, P3]);
    // Two more MVs over the same table; their creation builds record the same map.
    b = (await ddl.execute('CREATE MATERIALIZED VIEW mv_ch_b AS SELECT p, COUNT(*) AS n FROM ch GROUP BY p')).mviewId!;
    c = (await ddl.execute('CREATE MATERIALIZED VIEW mv_ch_c AS SELECT p, MAX(v) AS m FROM ch GROUP BY p')).mviewId!;
    // Three compactions in a row, each reported without a data change.
    chain = [];
    for (let i = 1; i <= 3; i++) {
      const out = await report(a.table, [{ ...P1, version: P1.version + i, versionTime: 1_000 + 100 * i }], false);
      expect(out.dependents).toEqual([a.id, b, c].sort((x, y) => x - y));
      expect(out.repairInfos).toHaveLength(1);
      chain.push(out.repairInfos[0]!);
    }
    expect(chain.map((i) => [i.lastVersion, i.newVersion])).toEqual([
      [5, 6],
      [6, 7],
      [7, 8],
    ]);
  });

  const p1Of = async (id: number) => (await versionMap(id)).find((r) => r.partition === 'p1')!;

  it('applied in order, every link lands', async () => {
    for (const link of chain) {
      const o = await repairer.repair(a.id, a.table, [link]);
      expect(o).toEqual({ mviewId: a.id, applied: 1, skipped: {}, waiting: [], casRetries: 0 });
    }
    expect(await p1Of(a.id)).toEqual(refreshed(a.table, final));
    expect((await editLog(a.id)).map((l) => l.op)).toEqual(['REPAIR_VERSION_MAP', 'REPAIR_VERSION_MAP', 'REPAIR_VERSION_MAP']);
    expect(await mviewFreshness(t.db, a.id)).toEqual({ versioned: true, stale: [], reportedAt: expect.any(Number) });
  });

  it('the last link first: returned as waiting, nothing written; once the earlier links land, retrying it lands', async () => {
    const m = await meta(b);
    const early = await repairer.repair(b, a.table, [chain[2]!]);
    expect(early).toEqual({ mviewId: b, applied: 0, skipped: { 'version-ahead': 1 }, waiting: [chain[2]], casRetries: 0 });
    expect(await meta(b)).toEqual(m);
    expect(await editLog(b)).toEqual([]);
    expect(await p1Of(b)).toEqual(refreshed(a.table, P1));

    expect((await repairer.repair(b, a.table, [chain[0]!])).applied).toBe(1);
    expect((await repairer.repair(b, a.table, [chain[1]!])).applied).toBe(1);
    const retried = await repairer.repair(b, a.table, early.waiting);
    expect(retried).toMatchObject({ applied: 1, waiting: [] });
    expect(await p1Of(b)).toEqual(refreshed(a.table, final));
    expect(await mviewFreshness(t.db, b)).toEqual({ versioned: true, stale: [], reportedAt: expect.any(Number) });
    // A link applied twice is version-behind the second time, and writes nothing.
    const again = await repairer.repair(b, a.table, [chain[0]!]);
    expectNothingApplied(again, { 'version-behind': 1 });
  });

  it('three workers, one link each, started last link first, all at once: every link lands, in chain order', async () => {
    const workers = chain.map(() => {
      const lock = new Redlock([redis], { retryCount: 50, retryDelay: 20 });
      return new Repairer({ db: t.db, redlock: lock, prefix: t.prefix, logger: t.logger, clock: systemClock });
    });
    // Each worker retries its link while the repairer says it waits for an earlier one; any
    // other outcome ends its loop and is checked below.
    const outcomes = await Promise.all(
      [2, 1, 0].map((i) =>
        waitFor(
          async () => {
            const o = await workers[i]!.repair(c, a.table, [chain[i]!]);
            return o.applied === 0 && o.waiting.length === 1 ? undefined : o;
          },
          { timeoutMs: 30_000, intervalMs: 20, what: `link ${i} to land` },
        ),
      ),
    );
    expect(outcomes.map((o) => [o.applied, o.waiting.length])).toEqual([
      [1, 0],
      [1, 0],
      [1, 0],
    ]);
    expect(await p1Of(c)).toEqual(refreshed(a.table, final));
    const log = await editLog(c);
    expect(log.map((l) => (l.payload.partitions as Record<string, { version: number }>).p1!.version)).toEqual([6, 7, 8]);
  });
});

// ---- fencing ----

/** A Repairer whose next applyOnce runs `interfere` just before its compare-and-set write. */
class InterferedRepairer extends Repairer {
  interfere: (() => Promise<void>) | undefined;

  override applyOnce(mviewId: number, table: TableRef, infos: RepairInfo[], beforeWrite?: () => Promise<void>): Promise<RepairOutcome> {
    const hook = this.interfere;
    this.interfere = undefined;
    return super.applyOnce(mviewId, table, infos, hook ?? beforeWrite);
  }
}

describe('fencing: the compare-and-set on meta_version', () => {
  it('another repair of the MV commits between read and write: CasConflict, nothing written; repair() then lands', async () => {
    const f = await setup('fe', [P1, P2, P3]);
    const m = await meta(f.id);
    const mine = repairInfo(P1, 50, 5_000);
    const theirs = repairInfo(P2, 70, 7_000);
    let calls = 0;
    await expect(
      repairer.applyOnce(f.id, f.table, [mine], async () => {
        calls++;
        if (calls === 1) expect((await repairer.applyOnce(f.id, f.table, [theirs])).applied).toBe(1);
      }),
    ).rejects.toBeInstanceOf(CasConflict);
    expect(calls).toBe(1);
    // Only the other writer's change is there.
    expect(await versionMap(f.id)).toEqual([
      refreshed(f.table, P1),
      { ...refreshed(f.table, P2), version: 70, last_refresh_time: 7_000 },
      refreshed(f.table, P3),
    ]);
    expect((await editLog(f.id)).map((l) => Object.keys(l.payload.partitions as object))).toEqual([['p2']]);
    expect((await meta(f.id)).metaVersion).toBe(m.metaVersion + 1);

    const o = await repairer.repair(f.id, f.table, [mine]);
    expect(o).toMatchObject({ applied: 1, casRetries: 0 });
    expect(await versionMap(f.id)).toEqual([
      { ...refreshed(f.table, P1), version: 50, last_refresh_time: 5_000 },
      { ...refreshed(f.table, P2), version: 70, last_refresh_time: 7_000 },
      refreshed(f.table, P3),
    ]);
    expect((await editLog(f.id)).map((l) => Object.keys(l.payload.partitions as object))).toEqual([['p2'], ['p1']]);
    expect((await meta(f.id)).metaVersion).toBe(m.metaVersion + 2);
  });

  it('repair() recomputes after losing the CAS to a writer without the lock (a paused worker whose lease lapsed)', async () => {
    const f = await setup('fr2', [P1, P2, P3]);
    const m = await meta(f.id);
    const r = new InterferedRepairer({ db: t.db, redlock, prefix: t.prefix, logger: t.logger, clock: systemClock });
    // applyOnce takes no lock: it is the stale writer here.
    r.interfere = async () => {
      expect((await repairer.applyOnce(f.id, f.table, [repairInfo(P3, 90, 9_000)])).applied).toBe(1);
    };
    const o = await r.repair(f.id, f.table, [repairInfo(P1, 60, 6_000)]);
    expect(o).toMatchObject({ applied: 1, casRetries: 1, waiting: [] });
    expect(await versionMap(f.id)).toEqual([
      { ...refreshed(f.table, P1), version: 60, last_refresh_time: 6_000 },
      refreshed(f.table, P2),
      { ...refreshed(f.table, P3), version: 90, last_refresh_time: 9_000 },
    ]);
    expect((await editLog(f.id)).map((l) => Object.keys(l.payload.partitions as object))).toEqual([['p3'], ['p1']]);
    expect((await meta(f.id)).metaVersion).toBe(m.metaVersion + 2);
  });

  it('a refresh that commits between a repair\'s read and its write makes the repair lose: the refresh\'s map stands', async () => {
    const f = await setup('frf', [P1, P2, P3]);
    const m = await meta(f.id);
    const changed = { ...P1, version: 6, versionTime: 1_500 };
    // The repair was computed against version 5; meanwhile p1's data changes and a refresh
    // records version 6.
    const stale = repairInfo(P1, 50, 5_000);
    let calls = 0;
    await expect(
      repairer.applyOnce(f.id, f.table, [stale], async () => {
        calls++;
        await report(f.table, [changed], true);
        expectKind(await runner.run({ mviewId: f.id, trigger: 'MANUAL' }), 'SUCCESS');
      }),
    ).rejects.toBeInstanceOf(CasConflict);
    expect(calls).toBe(1);
    expect(await versionMap(f.id)).toEqual([refreshed(f.table, changed), refreshed(f.table, P2), refreshed(f.table, P3)]);
    expect(await editLog(f.id)).toEqual([]);
    expect((await meta(f.id)).metaVersion).toBe(m.metaVersion + 1);

    // Retried, the repair now sees the refresh's entry and has nothing to do.
    const o = await repairer.repair(f.id, f.table, [stale]);
    expectNothingApplied(o, { 'version-behind': 1 });
    expect(await versionMap(f.id)).toEqual([refreshed(f.table, changed), refreshed(f.table, P2), refreshed(f.table, P3)]);
    expect(await mviewFreshness(t.db, f.id)).toEqual({ versioned: true, stale: [], reportedAt: expect.any(Number) });
  });

  it('with innodb_snapshot_isolation=ON (the MariaDB 11.6+ default) a lost race is still a CasConflict that repair() retries', async () => {
    const [vars] = (await t.db.raw("SHOW VARIABLES LIKE 'innodb_snapshot_isolation'")) as [Array<{ Value: string }>];
    // Every server this suite runs on (MariaDB 10.11.8+) has the variable; fail loudly if not.
    expect(vars.length, 'innodb_snapshot_isolation is not supported by this server').toBe(1);
    const base = knexConfig(t.databaseUrl, { poolMax: 4 });
    const strict: Knex = knexFactory({
      ...base,
      pool: {
        ...base.pool,
        afterCreate(raw: { query: (sql: string, cb: (err: Error | null) => void) => void }, done: (err: Error | null, c: unknown) => void) {
          raw.query("SET time_zone = '+00:00', innodb_snapshot_isolation = ON", (err) => done(err, raw));
        },
      },
    });
    try {
      const f = await setup('fsi', [P1, P2, P3]);
      const m = await meta(f.id);
      const r = new InterferedRepairer({ db: strict, redlock, prefix: t.prefix, logger: t.logger, clock: systemClock });
      await expect(
        r.applyOnce(f.id, f.table, [repairInfo(P1, 50, 5_000)], async () => {
          expect((await repairer.applyOnce(f.id, f.table, [repairInfo(P2, 70, 7_000)])).applied).toBe(1);
        }),
      ).rejects.toBeInstanceOf(CasConflict);
      expect((await meta(f.id)).metaVersion).toBe(m.metaVersion + 1);

      r.interfere = async () => {
        expect((await repairer.applyOnce(f.id, f.table, [repairInfo(P3, 90, 9_000)])).applied).toBe(1);
      };
      const o = await r.repair(f.id, f.table, [repairInfo(P1, 50, 5_000)]);
      expect(o).toMatchObject({ applied: 1, casRetries: 1 });
      expect(await versionMap(f.id)).toEqual([
        { ...refreshed(f.table, P1), version: 50, last_refresh_time: 5_000 },
        { ...refreshed(f.table, P2), version: 70, last_refresh_time: 7_000 },
        { ...refreshed(f.table, P3), version: 90, last_refresh_time: 9_000 },
      ]);
      expect((await meta(f.id)).metaVersion).toBe(m.metaVersion + 3);
    } finally {
      await strict.destroy();
    }
  });
});

// ---- a dead lock holder ----

describe('the per-MV Redlock', () => {
  it('a holder that died without releasing does not wedge the MV: the repair completes after the lease expires', async () => {
    const f = await setup('dl', [P1, P2, P3]);
    const dead = new Redlock([redis], { retryCount: 0 });
    // Taken and never released, as by a worker that was SIGKILLed mid-repair.
    const lease = await dead.acquire([repairer.lockKey(f.id)], 1_500);

    const o = await repairer.repair(f.id, f.table, [repairInfo(P1, 6, 1_100)]);
    const finished = Date.now();
    expect(o).toMatchObject({ applied: 1, waiting: [] });
    expect(finished).toBeGreaterThanOrEqual(lease.expiration);
    expect(await versionMap(f.id)).toEqual([
      { ...refreshed(f.table, P1), version: 6, last_refresh_time: 1_100 },
      refreshed(f.table, P2),
      refreshed(f.table, P3),
    ]);
    // The repair released its own lock: the next one does not wait for a lease.
    const next = await new Redlock([redis], { retryCount: 0 }).acquire([repairer.lockKey(f.id)], 1_000);
    await next.release();
  });
});

// ---- external tables dropped and recreated ----

describe('external table recreated (new table identifier)', () => {
  it('the MV moves to the new identifier: updated partitions keep their entry, the others get version = last_refresh_time = T', async () => {
    const f = await setup('ext', [P1, P2, P3], { ident: 'id-1' });
    // File statistics an external-table refresh would have recorded for p2 and p3.
    await t.db('mvs_mview_version_map').where({ mview_id: f.id, partition_name: 'p2' }).update({ ext_last_file_modified_time: 777, file_number: 4 });
    await t.db('mvs_mview_version_map').where({ mview_id: f.id, partition_name: 'p3' }).update({ ext_last_file_modified_time: 888, file_number: 6 });
    const m = await meta(f.id);

    const T = 9_000;
    const out = await report(f.table, [{ partitionName: 'p1', partitionId: 21, version: 1, versionTime: T }], true, 'id-2');
    expect(out.recreated).toEqual({ oldIdent: 'id-1', newIdent: 'id-2', updatedPartitions: ['p1'], newModifiedTime: T });
    expect(out.repairInfos).toEqual([]);
    expect(out.dependents).toEqual([f.id]);

    expect(await repairer.moveToNewIdentifier(f.id, f.table, out.recreated!)).toBe(true);
    const map = await versionMap(f.id);
    expect(map[0]).toEqual(refreshed(f.table, P1)); // kept: stays stale
    expect(map.slice(1)).toMatchObject([
      { partition: 'p2', version: T, last_refresh_time: T, ext_last_file_modified_time: 777, file_number: 4 },
      { partition: 'p3', version: T, last_refresh_time: T, ext_last_file_modified_time: 888, file_number: 6 },
    ]);
    expect(map).toHaveLength(3);
    const dep = (await t.db('mvs_mview_base_tables').where({ mview_id: f.id }).select('base_table_name', 'base_table_ident')) as Array<
      Record<string, unknown>
    >;
    expect(dep).toEqual([{ base_table_name: 'ext', base_table_ident: 'id-2' }]);
    const log = await editLog(f.id);
    expect(log.map((l) => l.op)).toEqual(['EXTERNAL_TABLE_RECREATED']);
    expect(log[0]!.payload).toMatchObject({ table: `${t.database}.ext`, newIdentifier: 'id-2', keptStale: ['p1'] });
    expect((await meta(f.id)).metaVersion).toBe(m.metaVersion + 1);
    expect((await mviewFreshness(t.db, f.id)).stale).toContain(`${t.database}.ext.p1`);
  });

  it('later reports under the new identifier are not another recreation, whichever partition the recreation named', async () => {
    const f = await setup('ext2', [P1, P2, P3], { ident: 'id-1' });
    const first = await report(f.table, [{ partitionName: 'p3', partitionId: 33, version: 1, versionTime: 9_000 }], true, 'id-2');
    expect(first.recreated).toMatchObject({ oldIdent: 'id-1', newIdent: 'id-2', updatedPartitions: ['p3'] });
    for (const p of [P1, P2]) {
      const later = await report(f.table, [{ ...p, version: p.version + 1, versionTime: 9_500 }], false, 'id-2');
      expect(later.recreated, `report of ${p.partitionName} under id-2`).toBeUndefined();
      // A compaction under the same identifier yields its repair as usual.
      expect(later.repairInfos).toEqual([
        { partitionId: p.partitionId, partitionName: p.partitionName, lastVersion: p.version, newVersion: p.version + 1, newVersionTime: 9_500, lastVersionTime: p.versionTime },
      ]);
    }
  });
});

describe('version reports arriving out of order', () => {
  it('a late report with an older version of the same partition is ignored', async () => {
    const table = ref('late_t');
    await t.db.raw('CREATE TABLE late_t (id INT PRIMARY KEY, p VARCHAR(8), v INT)');
    await report(table, [P1], true);
    const newer = { ...P1, version: P1.version + 2, versionTime: P1.versionTime + 20 };
    await report(table, [newer], false);
    const late = await report(table, [{ ...P1, version: P1.version + 1, versionTime: P1.versionTime + 10 }], false);
    expect(late.ignoredStale).toEqual(['p1']);
    expect(late.repairInfos).toEqual([]);
    const stored = await t.db('mvs_base_partitions').where({ base_table_schema: t.database, base_table_name: 'late_t' }).first();
    expect(Number(stored.version)).toBe(newer.version);
    expect(Number(stored.version_time)).toBe(newer.versionTime);
  });
});
