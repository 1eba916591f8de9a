import type { Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock, type Clock } from '../../src/clock.js';
import { createDb } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import { createLogger } from '../../src/log.js';
import type { MviewRow, RefreshHistRow, RefreshInfoRow } from '../../src/mv/repository.js';
import { RefreshRunner, type RefreshOutcome } from '../../src/refresh/runner.js';
import { nextExecTime } from '../../src/schedule/nextTime.js';
import { snapshot } from '../support/snapshot.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
/** The runner's pool: big enough that 20 concurrent runs each hold their own lock connection. */
let db: Knex;
let runner: RefreshRunner;
let ddl: DdlExecutor;
const logger = createLogger({ level: 'warn', pretty: false });

beforeAll(async () => {
  t = await createTestEnv('complete_refresh');
  await migrateLatest(t.db);
  db = createDb(t.databaseUrl, { poolMax: 40 });
  runner = new RefreshRunner({ db, logger, clock: systemClock, nodeId: 'test-node' });
  ddl = new DdlExecutor({ db, logger, clock: systemClock, runner, defaultSchema: t.database, notify: async () => {} });
});

afterAll(async () => {
  await db?.destroy();
  await t?.close();
});

// ---- helpers ----

async function createMv(sql: string): Promise<number> {
  const res = await ddl.execute(sql);
  return res.mviewId!;
}

async function mview(id: number): Promise<MviewRow> {
  return (await t.db('mvs_mviews').where({ mview_id: id }).first()) as MviewRow;
}

async function info(id: number): Promise<RefreshInfoRow> {
  const row = (await t.db('mvs_mview_refresh_info').where({ mview_id: id }).first()) as RefreshInfoRow | undefined;
  expect(row, `refresh_info of ${id}`).toBeDefined();
  return row!;
}

async function hist(id: number): Promise<RefreshHistRow[]> {
  const rows = (await t.db('mvs_mview_refresh_hist').where({ mview_id: id }).orderBy('refresh_id')) as RefreshHistRow[];
  return rows.map((r) => ({ ...r, refresh_id: Number(r.refresh_id), mview_id: Number(r.mview_id) }));
}

async function histRow(refreshId: number): Promise<RefreshHistRow> {
  const row = (await t.db('mvs_mview_refresh_hist').where({ refresh_id: refreshId }).first()) as RefreshHistRow | undefined;
  expect(row, `history row ${refreshId}`).toBeDefined();
  return row!;
}

function canon(rows: Array<Record<string, unknown>>): string[] {
  return rows.map((r) => JSON.stringify(r)).sort();
}

async function rowsOf(sql: string): Promise<string[]> {
  const [rows] = (await t.db.raw(sql)) as [Array<Record<string, unknown>>];
  return canon(rows);
}

function expectKind<K extends RefreshOutcome['kind']>(o: RefreshOutcome, kind: K): Extract<RefreshOutcome, { kind: K }> {
  expect(o.kind, JSON.stringify(o)).toBe(kind);
  return o as Extract<RefreshOutcome, { kind: K }>;
}

const ms = (d: Date | null | undefined): number | null => (d ? d.getTime() : null);

/** A clock the test moves by hand: every read returns the same instant until it is advanced. */
function manualClock(start: number): Clock & { set(ms: number): void } {
  let now = start;
  return {
    now: () => now,
    set(v: number) {
      now = v;
    },
  };
}

// ---- invariant 2: one refresh at a time ----

describe('concurrency (invariant 2)', () => {
  let id: number;

  beforeAll(async () => {
    await t.db.raw('CREATE TABLE one_row (id INT PRIMARY KEY)');
    await t.db('one_row').insert({ id: 1 });
    // Every build sleeps 0.3 s on its single row, so runs started together certainly overlap.
    id = await createMv('CREATE MATERIALIZED VIEW mv_conc AS SELECT id, SLEEP(0.3) AS z FROM one_row');
    // Open the connections up front, so the 20 runs below race for the lock, not for a connection.
    await Promise.all(Array.from({ length: 25 }, () => db.raw('SELECT SLEEP(0.05)')));
  });

  function expectDisjoint(rows: RefreshHistRow[]): void {
    const done = rows.filter((r) => r.refresh_status === 'SUCCESS' || r.refresh_status === 'FAILED');
    expect(done.every((r) => r.end_time !== null)).toBe(true);
    const sorted = [...done].sort((a, b) => a.start_time.getTime() - b.start_time.getTime() || a.refresh_id - b.refresh_id);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1]!;
      const cur = sorted[i]!;
      expect(
        cur.start_time.getTime(),
        `run ${cur.refresh_id} [${cur.start_time.toISOString()}, ${cur.end_time!.toISOString()}] overlaps run ${prev.refresh_id} [${prev.start_time.toISOString()}, ${prev.end_time!.toISOString()}]`,
      ).toBeGreaterThanOrEqual(prev.end_time!.getTime());
      // History ids follow the lock order too.
      expect(cur.refresh_id).toBeGreaterThan(prev.refresh_id);
    }
  }

  it('20 runs started at once: the non-DEFERRED ones, and only they, wrote history; no two overlap', async () => {
    const before = await hist(id);
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => runner.run({ mviewId: id, trigger: 'MANUAL' })));
    const ran = outcomes.filter((o): o is Extract<RefreshOutcome, { kind: 'SUCCESS' | 'FAILED' }> => o.kind === 'SUCCESS' || o.kind === 'FAILED');
    const deferred = outcomes.filter((o) => o.kind === 'DEFERRED');
    expect(ran.length + deferred.length, JSON.stringify(outcomes.map((o) => o.kind))).toBe(20);
    expect(ran.length).toBeGreaterThanOrEqual(1);
    expect(deferred.length).toBeGreaterThanOrEqual(1);
    expect(ran.every((o) => o.kind === 'SUCCESS')).toBe(true);

    const after = await hist(id);
    const added = after.slice(before.length);
    expect(added.map((r) => r.refresh_id).sort((a, b) => a - b)).toEqual(ran.map((o) => o.refreshId).sort((a, b) => a - b));
    expect(added.every((r) => r.refresh_status === 'SUCCESS' && r.refresh_trigger === 'MANUAL')).toBe(true);
    expectDisjoint(after);
    expect(Number((await info(id)).refresh_count)).toBe(after.length);
    expect(await rowsOf('SELECT * FROM mv_conc')).toEqual(['{"id":1,"z":0}']);
  });

  it('callers that retry after DEFERRED all get their run, one after the other', async () => {
    const before = await hist(id);
    const attempts: RefreshOutcome['kind'][] = [];
    const callers = 6;
    const results = await Promise.all(
      Array.from({ length: callers }, () =>
        waitFor(
          async () => {
            const o = await runner.run({ mviewId: id, trigger: 'MANUAL' });
            attempts.push(o.kind);
            return o.kind === 'DEFERRED' ? undefined : o;
          },
          { timeoutMs: 60_000, intervalMs: 25, what: 'a run that is not deferred' },
        ),
      ),
    );
    expect(results.every((o) => o.kind === 'SUCCESS')).toBe(true);
    expect(attempts.filter((k) => k === 'DEFERRED').length).toBeGreaterThanOrEqual(1);
    const after = await hist(id);
    // Exactly one history row per non-deferred attempt.
    expect(after.length - before.length).toBe(attempts.filter((k) => k !== 'DEFERRED').length);
    expect(after.length - before.length).toBe(callers);
    expectDisjoint(after);
  });
});

// ---- readers see the old contents or the new ones ----

describe('readers never see a half-done MV', () => {
  it('counts during a slow COMPLETE refresh are the old N or the new N, switching once', async () => {
    const N = 40;
    const N2 = 70;
    await t.db.raw('CREATE TABLE rbase (id INT PRIMARY KEY, v INT NOT NULL)');
    await t.db('rbase').insert(Array.from({ length: N }, (_, i) => ({ id: i + 1, v: i })));
    // SLEEP per row: the build of the new contents takes about 20 ms x rows.
    const id = await createMv('CREATE MATERIALIZED VIEW mv_read AS SELECT id, v FROM rbase WHERE SLEEP(0.02) = 0');
    await t.db('rbase').insert(Array.from({ length: N2 - N }, (_, i) => ({ id: N + i + 1, v: N + i })));

    const reader = createDb(t.databaseUrl, { poolMax: 1 });
    try {
      const samples: Array<{ n: number; running: boolean }> = [];
      let done = false;
      const refresh = runner.run({ mviewId: id, trigger: 'MANUAL' }).finally(() => {
        done = true;
      });
      const read = (async () => {
        while (!done) {
          const running = await reader('mvs_mview_refresh_hist').where({ mview_id: id, refresh_status: 'RUNNING' }).first('refresh_id');
          const [[row]] = (await reader.raw('SELECT COUNT(*) AS n FROM mv_read')) as [[{ n: number }]];
          samples.push({ n: Number(row.n), running: running !== undefined });
        }
      })();
      const [outcome] = await Promise.all([refresh, read]);
      expectKind(outcome, 'SUCCESS');

      const counts = samples.map((s) => s.n);
      expect(counts.filter((n) => n !== N && n !== N2), `counts seen: ${counts.join(',')}`).toEqual([]);
      // Readers were served the old contents while the build was under way ...
      expect(samples.some((s) => s.running && s.n === N)).toBe(true);
      // ... and once the new contents appeared, the old ones never came back.
      const firstNew = counts.indexOf(N2);
      if (firstNew >= 0) expect(counts.slice(firstNew).every((n) => n === N2)).toBe(true);
      const [[fin]] = (await reader.raw('SELECT COUNT(*) AS n FROM mv_read')) as [[{ n: number }]];
      expect(Number(fin.n)).toBe(N2);
      expect(await rowsOf('SELECT * FROM mv_read')).toEqual(await rowsOf('SELECT id, v FROM rbase'));
    } finally {
      await reader.destroy();
    }
  });
});

// ---- the lock ----

describe('the refresh lock', () => {
  it('a run that finds the lock held returns DEFERRED and writes nothing', async () => {
    await t.db.raw('CREATE TABLE lbase (id INT PRIMARY KEY)');
    await t.db('lbase').insert([{ id: 1 }, { id: 2 }]);
    const id = await createMv("CREATE MATERIALIZED VIEW mv_lock START WITH '2020-01-01 00:00:00' NEXT 60 AS SELECT id FROM lbase");
    await t.db('lbase').insert({ id: 3 });

    const holder = await t.db.transaction();
    try {
      await holder.raw('SELECT * FROM mvs_mview_refresh_info WHERE mview_id = ? FOR UPDATE', [id]);
      const before = await snapshot(t.db, t.database);
      // MANUAL, a due SCHEDULED run (next_time is 2020) and a REQUEST: all deferred.
      expectKind(await runner.run({ mviewId: id, trigger: 'MANUAL' }), 'DEFERRED');
      expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED' }), 'DEFERRED');
      expectKind(await runner.run({ mviewId: id, trigger: 'REQUEST', requestedAt: Date.now() }), 'DEFERRED');
      expect(await snapshot(t.db, t.database)).toEqual(before);
      expect(await rowsOf('SELECT * FROM mv_lock')).toEqual(['{"id":1}', '{"id":2}']);
    } finally {
      await holder.rollback();
    }
    // Released: the next run goes ahead.
    expectKind(await runner.run({ mviewId: id, trigger: 'MANUAL' }), 'SUCCESS');
    expect(await rowsOf('SELECT * FROM mv_lock')).toEqual(['{"id":1}', '{"id":2}', '{"id":3}']);
  });

  it('a RUNNING history row left by a dead worker is marked FAILED (abandoned) by the next run, which succeeds', async () => {
    await t.db.raw('CREATE TABLE abase (id INT PRIMARY KEY)');
    await t.db('abase').insert([{ id: 1 }]);
    const id = await createMv('CREATE MATERIALIZED VIEW mv_abandon AS SELECT id FROM abase');
    const [deadId] = (await t.db('mvs_mview_refresh_hist').insert({
      mview_id: id,
      refresh_method: 'COMPLETE',
      refresh_trigger: 'SCHEDULED',
      refresh_status: 'RUNNING',
      node_id: 'dead-node',
      start_time: new Date(Date.now() - 60_000),
    })) as number[];
    await t.db('abase').insert([{ id: 2 }]);

    const o = expectKind(await runner.run({ mviewId: id, trigger: 'MANUAL' }), 'SUCCESS');
    expect(o.refreshId).toBeGreaterThan(Number(deadId));
    const dead = await histRow(Number(deadId));
    expect(dead.refresh_status).toBe('FAILED');
    expect(dead.failed_reason).toContain('abandoned');
    expect(dead.end_time).not.toBeNull();
    expect(dead.end_time!.getTime()).toBeGreaterThanOrEqual(dead.start_time.getTime());
    const fresh = await histRow(o.refreshId);
    expect(fresh).toMatchObject({ refresh_status: 'SUCCESS', refresh_trigger: 'MANUAL', node_id: 'test-node' });
    expect(dead.end_time!.getTime()).toBeLessThanOrEqual(fresh.start_time.getTime());
    expect((await hist(id)).filter((r) => r.refresh_status === 'RUNNING')).toEqual([]);
    expect(await rowsOf('SELECT * FROM mv_abandon')).toEqual(['{"id":1}', '{"id":2}']);
  });
});

// ---- scheduled runs ----

describe('scheduled trigger semantics', () => {
  let id: number;

  beforeAll(async () => {
    await t.db.raw('CREATE TABLE sbase (id INT PRIMARY KEY, v INT)');
    await t.db('sbase').insert([{ id: 1, v: 1 }]);
    id = await createMv('CREATE MATERIALIZED VIEW mv_sched START WITH NOW() + INTERVAL 1 HOUR NEXT 600 AS SELECT id, v FROM sbase');
  });

  it('next_time in the future: NOT_DUE with that next_time, no history, nothing changed', async () => {
    const next = ms((await info(id)).next_time)!;
    expect(next).not.toBeNull();
    const before = await snapshot(t.db, t.database);
    const o = expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED' }), 'NOT_DUE');
    expect(o.nextTime).toBe(next);
    expect(await snapshot(t.db, t.database)).toEqual(before);
  });

  it('no schedule at all (next_time NULL): a scheduled run is NOT_DUE with nextTime null', async () => {
    await t.db.raw('CREATE TABLE mbase (id INT PRIMARY KEY)');
    const manualOnly = await createMv('CREATE MATERIALIZED VIEW mv_manual_only AS SELECT id FROM mbase');
    const before = await hist(manualOnly);
    const o = expectKind(await runner.run({ mviewId: manualOnly, trigger: 'SCHEDULED' }), 'NOT_DUE');
    expect(o.nextTime).toBeNull();
    expect(await hist(manualOnly)).toEqual(before);
  });

  it('SUSPENDED: a due scheduled run answers SUSPENDED and writes nothing', async () => {
    await ddl.execute("ALTER MATERIALIZED VIEW mv_sched REFRESH START WITH NOW() - INTERVAL 95 MINUTE NEXT 600");
    await ddl.execute('ALTER MATERIALIZED VIEW mv_sched SUSPEND');
    expect(ms((await info(id)).next_time)!).toBeLessThan(Date.now());
    const before = await snapshot(t.db, t.database);
    expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED' }), 'SUSPENDED');
    expect(await snapshot(t.db, t.database)).toEqual(before);
    await ddl.execute('ALTER MATERIALIZED VIEW mv_sched RESUME');
  });

  it('a due scheduled run succeeds and moves next_time to the first grid point after its end', async () => {
    // (RESUME put next_time on the grid after the creation build; make it due again.)
    await ddl.execute("ALTER MATERIALIZED VIEW mv_sched REFRESH START WITH NOW() - INTERVAL 95 MINUTE NEXT 600");
    await t.db('sbase').insert({ id: 2, v: 2 });
    const due = ms((await info(id)).next_time)!;
    const mv = await mview(id);
    expect(due).toBe(Math.floor(mv.refresh_start!.getTime() / 1000) * 1000); // catch-up slot = anchor

    const o = expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED', scheduledFor: due, jobId: 'job-1' }), 'SUCCESS');
    const h = await histRow(o.refreshId);
    expect(h).toMatchObject({ refresh_status: 'SUCCESS', refresh_trigger: 'SCHEDULED', refresh_job_id: 'job-1', node_id: 'test-node' });
    expect(ms(h.scheduled_time)).toBe(due);
    const end = h.end_time!.getTime();
    const i = await info(id);
    const next = ms(i.next_time)!;
    expect(next).toBe(nextExecTime(mv.refresh_start!.getTime(), mv.refresh_interval, end));
    expect(o.nextTime).toBe(next);
    expect(next).toBeGreaterThan(end);
    const anchorS = Math.floor(mv.refresh_start!.getTime() / 1000) * 1000;
    expect((next - anchorS) % 600_000).toBe(0);
    expect(next - 600_000).toBeLessThanOrEqual(end); // the first grid point after the end, none skipped
    expect(i).toMatchObject({ last_refresh_result: 'SUCCESS', last_refresh_trigger: 'SCHEDULED', consecutive_failures: 0 });
    expect(ms(i.last_success_endtime)).toBe(end);
    expect(await rowsOf('SELECT * FROM mv_sched')).toEqual(await rowsOf('SELECT id, v FROM sbase'));

    // The slot is consumed: scheduled again right away it is NOT_DUE, for that same next_time.
    const again = expectKind(await runner.run({ mviewId: id, trigger: 'SCHEDULED' }), 'NOT_DUE');
    expect(again.nextTime).toBe(next);
  });

  it('MV dropped (or never there): GONE, and nothing is written', async () => {
    await t.db.raw('CREATE TABLE gbase (id INT PRIMARY KEY)');
    const gone = await createMv('CREATE MATERIALIZED VIEW mv_gone START WITH NOW() - INTERVAL 1 DAY NEXT 60 AS SELECT id FROM gbase');
    await ddl.execute('DROP MATERIALIZED VIEW mv_gone');
    const before = await snapshot(t.db, t.database);
    for (const trigger of ['SCHEDULED', 'MANUAL', 'REQUEST'] as const) {
      expectKind(await runner.run({ mviewId: gone, trigger }), 'GONE');
    }
    expectKind(await runner.run({ mviewId: 987_654_321, trigger: 'SCHEDULED' }), 'GONE');
    expect(await snapshot(t.db, t.database)).toEqual(before);
  });
});

// ---- failures and backoff ----

describe('failure and backoff', () => {
  it('scheduled failures back off 5 s then 10 s from the run end; manual failures leave next_time; success returns to the grid', async () => {
    await t.db.raw('CREATE TABLE fbase (id INT PRIMARY KEY, v INT)');
    await t.db('fbase').insert([{ id: 1, v: 10 }]);
    const id = await createMv('CREATE MATERIALIZED VIEW mv_fail START WITH NOW() - INTERVAL 95 MINUTE NEXT 600 AS SELECT id, v FROM fbase');
    const mv = await mview(id);
    const clock = manualClock(Date.now());
    const r = new RefreshRunner({ db, logger, clock, nodeId: 'test-node' });

    await t.db.raw('DROP TABLE fbase');

    // Failure 1: retried 5 s after the run ended.
    const f1 = expectKind(await r.run({ mviewId: id, trigger: 'SCHEDULED' }), 'FAILED');
    expect(f1.failures).toBe(1);
    expect(f1.error).toMatch(/fbase' doesn't exist/);
    const h1 = await histRow(f1.refreshId);
    expect(h1).toMatchObject({ refresh_status: 'FAILED', refresh_trigger: 'SCHEDULED' });
    expect(h1.failed_reason).toMatch(/fbase' doesn't exist/);
    let i = await info(id);
    expect(i).toMatchObject({ last_refresh_result: 'FAILED', consecutive_failures: 1 });
    expect(i.last_failed_reason).toMatch(/fbase' doesn't exist/);
    expect(ms(i.next_time)).toBe(h1.end_time!.getTime() + 5_000);
    expect(f1.nextTime).toBe(ms(i.next_time));
    // The MV keeps its previous contents.
    expect(await rowsOf('SELECT * FROM mv_fail')).toEqual(['{"id":1,"v":10}']);

    // Not yet time for the retry.
    expectKind(await r.run({ mviewId: id, trigger: 'SCHEDULED' }), 'NOT_DUE');

    // Failure 2, at the retry time: 10 s.
    clock.set(ms(i.next_time)!);
    const f2 = expectKind(await r.run({ mviewId: id, trigger: 'SCHEDULED' }), 'FAILED');
    expect(f2.failures).toBe(2);
    const h2 = await histRow(f2.refreshId);
    i = await info(id);
    expect(i.consecutive_failures).toBe(2);
    expect(ms(i.next_time)).toBe(h2.end_time!.getTime() + 10_000);
    expect(i.last_failed_reason).toMatch(/fbase' doesn't exist/);

    // A manual run that fails does not move next_time.
    const nextBeforeManual = ms(i.next_time);
    const fm = expectKind(await r.run({ mviewId: id, trigger: 'MANUAL' }), 'FAILED');
    expect(fm.nextTime).toBe(nextBeforeManual);
    expect(await histRow(fm.refreshId)).toMatchObject({ refresh_status: 'FAILED', refresh_trigger: 'MANUAL' });
    i = await info(id);
    expect(ms(i.next_time)).toBe(nextBeforeManual);
    expect(i.last_refresh_result).toBe('FAILED');

    // Base table back: the retry succeeds, the failure count resets and next_time is on the grid again.
    await t.db.raw('CREATE TABLE fbase (id INT PRIMARY KEY, v INT)');
    await t.db('fbase').insert([{ id: 1, v: 11 }, { id: 2, v: 20 }]);
    clock.set(nextBeforeManual!);
    const ok = expectKind(await r.run({ mviewId: id, trigger: 'SCHEDULED' }), 'SUCCESS');
    const hs = await histRow(ok.refreshId);
    i = await info(id);
    expect(i).toMatchObject({ last_refresh_result: 'SUCCESS', consecutive_failures: 0, last_failed_reason: null });
    const next = ms(i.next_time)!;
    expect(next).toBe(nextExecTime(mv.refresh_start!.getTime(), 600, hs.end_time!.getTime()));
    expect(next).toBeGreaterThan(hs.end_time!.getTime());
    expect((next - Math.floor(mv.refresh_start!.getTime() / 1000) * 1000) % 600_000).toBe(0);
    expect(await rowsOf('SELECT * FROM mv_fail')).toEqual(await rowsOf('SELECT id, v FROM fbase'));

    const all = await hist(id);
    expect(all.map((h) => `${h.refresh_trigger}:${h.refresh_status}`)).toEqual([
      'MANUAL:SUCCESS', // CREATE's build
      'SCHEDULED:FAILED',
      'SCHEDULED:FAILED',
      'MANUAL:FAILED',
      'SCHEDULED:SUCCESS',
    ]);
  });
});

// ---- request coalescing ----

describe('request coalescing', () => {
  it('a request made before the last successful run started is COALESCED; a later one runs', async () => {
    await t.db.raw('CREATE TABLE qbase (id INT PRIMARY KEY)');
    await t.db('qbase').insert([{ id: 1 }]);
    const id = await createMv('CREATE MATERIALIZED VIEW mv_req AS SELECT id FROM qbase');
    const first = expectKind(await runner.run({ mviewId: id, trigger: 'MANUAL' }), 'SUCCESS');
    expect(ms((await info(id)).refresh_time)).toBe(first.startMs);

    const before = await snapshot(t.db, t.database);
    const c = expectKind(await runner.run({ mviewId: id, trigger: 'REQUEST', requestedAt: first.startMs - 1 }), 'COALESCED');
    expect(c.lastStartMs).toBe(first.startMs);
    expect(await snapshot(t.db, t.database)).toEqual(before);

    await t.db('qbase').insert([{ id: 2 }]);
    const requestedAt = first.startMs + 1;
    const second = expectKind(await runner.run({ mviewId: id, trigger: 'REQUEST', requestedAt, jobId: 'req-1' }), 'SUCCESS');
    expect(second.startMs).toBeGreaterThanOrEqual(requestedAt);
    expect(await histRow(second.refreshId)).toMatchObject({ refresh_status: 'SUCCESS', refresh_trigger: 'REQUEST', refresh_job_id: 'req-1' });
    expect(await rowsOf('SELECT * FROM mv_req')).toEqual(['{"id":1}', '{"id":2}']);
    // REQUEST runs, like manual ones, leave next_time alone (NULL here).
    expect((await info(id)).next_time).toBeNull();

    // That run serves the same request again: coalesced against the new start.
    const c2 = expectKind(await runner.run({ mviewId: id, trigger: 'REQUEST', requestedAt }), 'COALESCED');
    expect(c2.lastStartMs).toBe(second.startMs);
    // A request without a time always runs.
    expectKind(await runner.run({ mviewId: id, trigger: 'REQUEST' }), 'SUCCESS');
  });
});
