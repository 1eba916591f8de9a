// Batched version repair (DESIGN.md §2 "Base-table versions, freshness and repair"): a group of
// MVs under their locks in one transaction with one compare-and-set per MV, against the real
// MariaDB and Redis; then through `mvsched worker` processes: chains split across groups, jobs
// of the release before groups, and a worker SIGKILLed in the middle of its batches.
import { Redlock } from '@sesamecare-oss/redlock';
import { Queue, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import knexFactory, { type Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { knexConfig } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { REPAIR_MVIEW } from '../../src/jobs/internal.js';
import { REPAIR_QUEUE, REQUESTS_QUEUE } from '../../src/queue/names.js';
import { closeRedis, createRedis } from '../../src/queue/redis.js';
import { RepairBatcher, RepairBusy, type RepairBatcherDeps } from '../../src/repair/batcher.js';
import { applyRepairGroup, CasConflict, type GroupResult, type RepairWork } from '../../src/repair/groupApply.js';
import { Repairer, repairLockKey } from '../../src/repair/repairer.js';
import type { RepairInfo, TableRef } from '../../src/versions/types.js';
import { Cluster, type Proc, logLines } from '../support/cluster.js';
import { prng, testSeed } from '../support/prng.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
let redis: Redis;
let repairer: Repairer;

beforeAll(async () => {
  t = await createTestEnv('repair_batching', { MVS_NODE_TTL_S: '3' });
  await migrateLatest(t.db);
  redis = createRedis(t.redisUrl);
  repairer = new Repairer({ db: t.db, redlock: new Redlock([redis], { retryCount: 50, retryDelay: 50 }), prefix: t.prefix, logger: t.logger, clock: systemClock });
});

afterAll(async () => {
  if (redis) await closeRedis(redis);
  await t?.close();
});

// ---- helpers ----

const BASE_TIME = 1_767_225_600_000;
let nextId = 1;

/**
 * `n` MVs over base table `table` (new ids), each read partitions p0..p(parts-1) at version 5,
 * as a refresh leaves them: metadata, dependency, reported partitions, version map.
 */
async function seed(table: string, n: number, parts = 2): Promise<number[]> {
  const ids = Array.from({ length: n }, () => nextId++);
  const now = new Date();
  const next = new Date(Date.now() + 3_600_000);
  await t.db('mvs_mviews').insert(
    ids.map((id) => ({
      mview_id: id,
      table_schema: t.database,
      mview_name: `mv_${id}`,
      mview_definition: 'SELECT 1 AS x',
      refresh_method: 'COMPLETE',
      refresh_start: next,
      refresh_interval: 3600,
      status: 'ACTIVE',
      created_at: now,
      mview_modify_time: now,
    })),
  );
  await t.db('mvs_mview_refresh_info').insert(ids.map((id) => ({ mview_id: id, next_time: next, updated_at: t.db.fn.now(6) })));
  await t.db('mvs_mview_base_tables').insert(ids.map((id) => ({ mview_id: id, base_table_schema: t.database, base_table_name: table })));
  const partitions = Array.from({ length: parts }, (_, p) => ({ name: `p${p}`, id: 100 + p }));
  await t.db('mvs_base_partitions').insert(
    partitions.map((p) => ({
      base_table_schema: t.database,
      base_table_name: table,
      partition_name: p.name,
      partition_id: p.id,
      version: 5,
      version_time: BASE_TIME,
      data_version: 5,
      updated_at: now,
    })),
  );
  const rows = ids.flatMap((id) =>
    partitions.map((p) => ({
      mview_id: id,
      base_table_schema: t.database,
      base_table_name: table,
      partition_name: p.name,
      partition_id: p.id,
      version: 5,
      last_refresh_time: BASE_TIME,
      ext_last_file_modified_time: -1,
      file_number: -1,
    })),
  );
  for (let i = 0; i < rows.length; i += 1000) await t.db('mvs_mview_version_map').insert(rows.slice(i, i + 1000));
  return ids;
}

const ref = (name: string): TableRef => ({ schema: t.database, name });

/** Compaction step v -> v + 1 of partition p (id 100 + p). */
const link = (p: number, v: number): RepairInfo => ({
  partitionId: 100 + p,
  partitionName: `p${p}`,
  lastVersion: v,
  newVersion: v + 1,
  newVersionTime: BASE_TIME + (v + 1) * 1_000,
});

async function versions(id: number): Promise<Record<string, number>> {
  const rows = (await t.db('mvs_mview_version_map').where({ mview_id: id }).select('partition_name', 'version')) as Array<{ partition_name: string; version: number }>;
  return Object.fromEntries(rows.map((r) => [r.partition_name, Number(r.version)]));
}

async function metaVersion(id: number): Promise<number> {
  return Number(((await t.db('mvs_mviews').where({ mview_id: id }).first('meta_version')) as { meta_version: number }).meta_version);
}

/** The edit-log rows of an MV, oldest first: the fence each carried and the versions it set. */
async function edits(id: number): Promise<Array<{ metaVersion: number; set: Record<string, number> }>> {
  const rows = (await t.db('mvs_edit_log').where({ mview_id: id }).orderBy('id').select('payload')) as Array<{ payload: string }>;
  return rows.map((r) => {
    const p = JSON.parse(r.payload) as { metaVersion: number; partitions: Record<string, { version: number }> };
    return { metaVersion: p.metaVersion, set: Object.fromEntries(Object.entries(p.partitions).map(([k, e]) => [k, e.version])) };
  });
}

function batcher(db: Knex = t.db, opts: Partial<RepairBatcherDeps> = {}): RepairBatcher {
  return new RepairBatcher({ db, redis, prefix: t.prefix, logger: t.logger, clock: systemClock, ...opts });
}

/** A batcher whose next transaction runs `interfere` between its read and its write. */
class InterferedBatcher extends RepairBatcher {
  interfere: (() => Promise<void>) | undefined;
  batches: number[][] = [];

  protected override transact(works: RepairWork[], beforeWrite?: () => Promise<void>): Promise<GroupResult> {
    this.batches.push(works.map((w) => w.mviewId));
    const hook = this.interfere;
    this.interfere = undefined;
    return super.transact(works, hook ?? beforeWrite);
  }
}

// ---- one group, one transaction ----

describe('a group under its locks in one transaction', () => {
  it('one MV of the group loses its CAS to a writer in between: the others are written, it writes nothing', async () => {
    const [a, b, c] = await seed('g1', 3);
    const table = ref('g1');
    const result = await t.db.transaction((trx) =>
      applyRepairGroup(
        trx,
        [a!, b!, c!].map((mviewId) => ({ mviewId, table, infos: [link(0, 5)] })),
        {
          now: Date.now(),
          log: t.logger,
          // A writer that does not hold b's lock (a paused worker whose lease lapsed) commits first.
          beforeWrite: async () => {
            expect((await repairer.applyOnce(b!, table, [link(1, 5)])).applied).toBe(1);
          },
        },
      ),
    );
    expect([...result.lost.keys()]).toEqual([b]);
    expect(result.outcomes.map((o) => o?.applied)).toEqual([1, undefined, 1]);
    for (const id of [a!, c!]) {
      expect(await versions(id)).toEqual({ p0: 6, p1: 5 });
      expect(await metaVersion(id)).toBe(1);
      expect(await edits(id)).toEqual([{ metaVersion: 1, set: { p0: 6 } }]);
    }
    // b: only the other writer's change.
    expect(await versions(b!)).toEqual({ p0: 5, p1: 6 });
    expect(await metaVersion(b!)).toBe(1);
    expect(await edits(b!)).toEqual([{ metaVersion: 1, set: { p1: 6 } }]);
  });

  it('through the batcher the loser is recomputed in the next batch: every MV lands, fences in order', async () => {
    const ids = await seed('g2', 3);
    const table = ref('g2');
    const bt = new InterferedBatcher({ db: t.db, redis, prefix: t.prefix, logger: t.logger, clock: systemClock });
    bt.interfere = async () => {
      expect((await repairer.applyOnce(ids[1]!, table, [link(1, 5)])).applied).toBe(1);
    };
    const outs = await Promise.all(ids.map((mviewId) => bt.submit({ mviewId, table, infos: [link(0, 5)] })));
    await bt.close();
    expect(outs.map((o) => [o.mviewId, o.applied, o.casRetries])).toEqual([
      [ids[0], 1, 0],
      [ids[1], 1, 1],
      [ids[2], 1, 0],
    ]);
    // The first batch had all three; the second only the loser.
    expect(bt.batches).toEqual([ids, [ids[1]]]);
    for (const id of ids) expect(await versions(id)).toEqual(id === ids[1] ? { p0: 6, p1: 6 } : { p0: 6, p1: 5 });
    expect(await edits(ids[1]!)).toEqual([
      { metaVersion: 1, set: { p1: 6 } },
      { metaVersion: 2, set: { p0: 6 } },
    ]);
  });

  it('with innodb_snapshot_isolation=ON the server aborts the whole group: nothing written, and the batcher lands all of it', async () => {
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
      const ids = await seed('g3', 3);
      const table = ref('g3');
      await expect(
        strict.transaction((trx) =>
          applyRepairGroup(trx, ids.map((mviewId) => ({ mviewId, table, infos: [link(0, 5)] })), {
            now: Date.now(),
            log: t.logger,
            beforeWrite: async () => {
              expect((await repairer.applyOnce(ids[2]!, table, [link(1, 5)])).applied).toBe(1);
            },
          }),
        ),
      ).rejects.toBeInstanceOf(CasConflict);
      expect(await Promise.all(ids.map(versions))).toEqual([{ p0: 5, p1: 5 }, { p0: 5, p1: 5 }, { p0: 5, p1: 6 }]);
      expect(await Promise.all(ids.map(metaVersion))).toEqual([0, 0, 1]);

      const bt = new InterferedBatcher({ db: strict, redis, prefix: t.prefix, logger: t.logger, clock: systemClock });
      bt.interfere = async () => {
        expect((await repairer.applyOnce(ids[0]!, table, [link(1, 5)])).applied).toBe(1);
      };
      const outs = await Promise.all(ids.map((mviewId) => bt.submit({ mviewId, table, infos: [link(0, 5)] })));
      await bt.close();
      expect(outs.map((o) => o.applied)).toEqual([1, 1, 1]);
      expect(await Promise.all(ids.map(versions))).toEqual([{ p0: 6, p1: 6 }, { p0: 6, p1: 5 }, { p0: 6, p1: 6 }]);
      expect(await Promise.all(ids.map(metaVersion))).toEqual([2, 1, 2]);
    } finally {
      await strict.destroy();
    }
  });

  it('a chain whose links are in one batch in reverse order lands whole, one fence and one edit-log row per link, in chain order', async () => {
    const [id] = await seed('g4', 1);
    const table = ref('g4');
    const result = await t.db.transaction((trx) =>
      applyRepairGroup(trx, [link(0, 7), link(0, 6), link(0, 5)].map((l) => ({ mviewId: id!, table, infos: [l] })), { now: Date.now(), log: t.logger }),
    );
    expect(result.outcomes.map((o) => [o?.applied, o?.waiting.length])).toEqual([
      [1, 0],
      [1, 0],
      [1, 0],
    ]);
    expect(await versions(id!)).toEqual({ p0: 8, p1: 5 });
    expect(await metaVersion(id!)).toBe(3);
    expect(await edits(id!)).toEqual([
      { metaVersion: 1, set: { p0: 6 } },
      { metaVersion: 2, set: { p0: 7 } },
      { metaVersion: 3, set: { p0: 8 } },
    ]);
  });

  it('an MV whose lock is held elsewhere waits without holding up the others, lands once it is free, or fails as busy', async () => {
    const ids = await seed('g5', 3);
    const table = ref('g5');
    const holder = new Redlock([redis], { retryCount: 0 });
    const lease = await holder.acquire([repairLockKey(t.prefix, ids[1]!)], 10_000);
    const bt = batcher();
    const pending = ids.map((mviewId) => bt.submit({ mviewId, table, infos: [link(0, 5)] }));
    await Promise.all([pending[0], pending[2]]);
    expect(await versions(ids[0]!)).toEqual({ p0: 6, p1: 5 });
    expect(await versions(ids[2]!)).toEqual({ p0: 6, p1: 5 });
    expect(await versions(ids[1]!)).toEqual({ p0: 5, p1: 5 });
    await lease.release();
    expect((await pending[1])!.applied).toBe(1);
    expect(await versions(ids[1]!)).toEqual({ p0: 6, p1: 5 });
    await bt.close();

    const impatient = batcher(t.db, { lockWaitMs: 300 });
    const lease2 = await holder.acquire([repairLockKey(t.prefix, ids[1]!)], 10_000);
    await expect(impatient.submit({ mviewId: ids[1]!, table, infos: [link(0, 6)] })).rejects.toBeInstanceOf(RepairBusy);
    await lease2.release();
    await impatient.close();
    expect(await versions(ids[1]!)).toEqual({ p0: 6, p1: 5 });
  });
});

// ---- worker processes ----

describe('through worker processes', () => {
  let cluster: Cluster;
  let requests: Queue;
  let repairQ: Queue;
  const workers = new Map<string, Proc>();

  async function startWorkers(ids: string[]): Promise<void> {
    const { MembershipRegistry } = await import('../../src/membership/registry.js');
    const registry = new MembershipRegistry(redis, t.prefix);
    for (const id of ids) workers.set(id, cluster.worker(id));
    await waitFor(
      async () => {
        const dead = ids.find((id) => workers.get(id)!.child.exitCode !== null);
        if (dead) throw new Error(`worker ${dead} exited: ${workers.get(dead)!.output().slice(-2000)}`);
        const live = await registry.live();
        return ids.every((id) => live.includes(id));
      },
      { timeoutMs: 90_000, intervalMs: 200, what: `workers ${ids.join(', ')} in the ring` },
    );
  }

  async function drained(expected: number, timeoutMs: number): Promise<{ completed: number; failed: number }> {
    return waitFor(
      async () => {
        const r = await requests.getJobCounts('completed', 'failed');
        if (r.completed! + r.failed! < expected) return undefined;
        const c = await repairQ.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        return Object.values(c).every((n) => n === 0) ? { completed: r.completed!, failed: r.failed! } : undefined;
      },
      { timeoutMs, intervalMs: 200, what: `${expected} requests done and the repair queue empty` },
    );
  }

  beforeAll(async () => {
    cluster = new Cluster(t, { MVS_WORKER_CONCURRENCY: '4' });
    requests = new Queue(REQUESTS_QUEUE, { connection: redis, prefix: t.prefix });
    repairQ = new Queue(REPAIR_QUEUE, { connection: redis, prefix: t.prefix });
    await startWorkers(['b1', 'b2']);
  }, 120_000);

  afterAll(async () => {
    await cluster?.closeAll();
    await requests?.close();
    await repairQ?.close();
  });

  it('a chain split across groups: 250 MVs (3 groups per request), links requested last first, all land in chain order', async () => {
    const ids = await seed('s1', 250, 1);
    const done0 = await requests.getJobCounts('completed', 'failed');
    // Each request fans out to 250 MVs: groups of 100, 100 and 50, on any worker.
    for (const v of [7, 6, 5]) await requests.add('repair', { table: `${t.database}.s1`, partitions: [link(0, v)] });
    await drained(done0.completed! + done0.failed! + 3, 120_000);
    const wrong: string[] = [];
    for (const id of ids) {
      const e = await edits(id);
      const got = { v: (await versions(id)).p0, m: await metaVersion(id), e: e.map((x) => [x.metaVersion, x.set.p0]) };
      const want = { v: 8, m: 3, e: [[1, 6], [2, 7], [3, 8]] };
      if (JSON.stringify(got) !== JSON.stringify(want)) wrong.push(`mv ${id}: ${JSON.stringify(got)}`);
    }
    expect(wrong).toEqual([]);
    expect((await repairQ.getJobCounts('failed')).failed).toBe(0);
  }, 150_000);

  it('repair-mview jobs of the release before groups, still queued after an upgrade, are carried out (a waiting one too)', async () => {
    const [id] = await seed('s2', 1, 1);
    const table = ref('s2');
    // The second link first: it waits for the first, which comes after it.
    for (const l of [link(0, 6), link(0, 5)]) {
      await repairQ.add(REPAIR_MVIEW, { mviewId: id, table, partitions: [l] }, { attempts: 5, backoff: { type: 'exponential', delay: 500 } });
    }
    await waitFor(async () => (await versions(id!)).p0 === 7, { timeoutMs: 30_000, what: 'both old-shaped links applied' });
    expect(await edits(id!)).toEqual([
      { metaVersion: 1, set: { p0: 6 } },
      { metaVersion: 2, set: { p0: 7 } },
    ]);
    await waitFor(async () => Object.values(await repairQ.getJobCounts('waiting', 'active', 'delayed')).every((n) => n === 0), {
      timeoutMs: 30_000,
      what: 'the repair queue to drain',
    });
    expect((await repairQ.getJobCounts('failed')).failed).toBe(0);
  }, 60_000);

  it('a worker SIGKILLed in the middle of its batches: every repair lands exactly once, fences without gap or repeat', async () => {
    const seed0 = testSeed();
    const rnd = prng(seed0);
    const N_MV = 100;
    const PARTS = 4;
    const STEPS = 3;
    const ids = await seed('s3', N_MV, PARTS);
    // One base table per MV would make each request one MV; here all MVs read s3, so give each
    // MV its own table instead: move the dependency and the reported partitions.
    await t.db('mvs_mview_base_tables').whereIn('mview_id', ids).update({ base_table_name: t.db.raw("CONCAT('s3_', mview_id)") });
    await t.db('mvs_mview_version_map').whereIn('mview_id', ids).update({ base_table_name: t.db.raw("CONCAT('s3_', mview_id)") });
    const parts = (await t.db('mvs_base_partitions').where({ base_table_name: 's3' })) as Array<Record<string, unknown>>;
    await t.db('mvs_base_partitions').insert(ids.flatMap((id) => parts.map((p) => ({ ...p, base_table_name: `s3_${id}` }))));

    // Chains in order, interleaved at random: 100 x 4 x 3 = 1,200 requests.
    const chains = ids.flatMap((id) => Array.from({ length: PARTS }, (_, p) => Array.from({ length: STEPS }, (_, k) => ({ id, info: link(p, 5 + k) }))));
    const order: Array<{ id: number; info: RepairInfo }> = [];
    while (chains.some((c) => c.length)) {
      const open = chains.filter((c) => c.length);
      order.push(open[Math.floor(rnd() * open.length)]!.shift()!);
    }
    const done0 = await requests.getJobCounts('completed', 'failed');
    const base = done0.completed! + done0.failed!;
    const jobs = order.map((r) => ({ name: 'repair', data: { table: `${t.database}.s3_${r.id}`, partitions: [r.info] } }));
    for (let i = 0; i < jobs.length; i += 200) await requests.addBulk(jobs.slice(i, i + 200));

    // Kill b1 while it is applying: it has repaired some MVs and has requests in hand.
    const victim = workers.get('b1')!;
    await waitFor(
      async () => {
        const c = await requests.getJobCounts('completed', 'active');
        const working = logLines(victim).some((l) => l.msg === 'version map repaired');
        return c.completed! - base >= jobs.length / 5 && c.active! > 0 && working;
      },
      { timeoutMs: 60_000, intervalMs: 10, what: 'b1 in the middle of its batches' },
    );
    await cluster.stop(victim, 'SIGKILL');
    workers.delete('b1');

    // b2 takes over what b1 held once BullMQ finds it stalled (lock expiry, ~30 s).
    const counts = await drained(base + jobs.length, 150_000);
    expect(counts.failed - done0.failed!, `seed ${seed0}`).toBe(0);
    const done = (await requests.getJobs(['completed'], 0, -1)) as Job[];
    expect(done.some((j) => (j.stalledCounter ?? 0) > 0), 'some requests were in b1 hands when it died').toBe(true);

    const wrong: string[] = [];
    for (const id of ids) {
      const got = await versions(id);
      const e = await edits(id);
      const m = await metaVersion(id);
      const okMap = Object.values(got).length === PARTS && Object.values(got).every((v) => v === 5 + STEPS);
      const okFences = JSON.stringify(e.map((x) => x.metaVersion)) === JSON.stringify(Array.from({ length: PARTS * STEPS }, (_, i) => i + 1));
      if (!okMap || !okFences || m !== PARTS * STEPS) wrong.push(`mv ${id}: map ${JSON.stringify(got)} meta ${m} fences ${JSON.stringify(e.map((x) => x.metaVersion))}`);
    }
    expect(wrong, `seed ${seed0}`).toEqual([]);
  }, 240_000);
});
