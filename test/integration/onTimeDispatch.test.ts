// Scheduled runs start at their slot (DESIGN.md §2 "Next run time", §4 invariant 1), with real
// `mvsched planner` / `mvsched worker` processes: a scheduled job becomes ready PROMOTE_LEAD_MS
// before its slot (BullMQ's delayed-job timer fires up to 1000/hz ms late) and the worker holds
// it until the slot, outside its run slots; a closing worker gives such jobs back at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import type { RefreshHistRow } from '../../src/mv/repository.js';
import { PROMOTE_LEAD_MS } from '../../src/queue/jobPlacer.js';
import { mviewJobId, mviewTask, nodeQueueName } from '../../src/queue/names.js';
import { Cluster, collectJobs, inspector, invariant1Violations, type Proc, type QueueInspector } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
let rt: Runtime;
let ddl: DdlExecutor;
let cluster: Cluster;
let ins: QueueInspector;

beforeAll(async () => {
  t = await createTestEnv('on_time', { MVS_NODE_TTL_S: '3' });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE base (id INT PRIMARY KEY, v INT NOT NULL)');
  await t.db('base').insert([
    { id: 1, v: 10 },
    { id: 2, v: 20 },
  ]);
  rt = createRuntime(t.config, t.logger);
  ddl = createDdlExecutor(rt, 'test');
  ins = inspector(t);
  cluster = new Cluster(t);
});

afterAll(async () => {
  await cluster?.closeAll();
  await ins?.close();
  await rt?.close();
  await t?.close();
});

async function waitLive(ids: string[]): Promise<void> {
  await waitFor(async () => {
    const live = await ins.registry.live();
    return ids.every((id) => live.includes(id)) && live.length === ids.length;
  }, { timeoutMs: 60_000, intervalMs: 100, what: `exactly ${ids.join(', ')} live` });
}

async function createMv(name: string): Promise<number> {
  const res = await ddl.execute(`CREATE MATERIALIZED VIEW ${name} NEXT 3600 AS SELECT id, v FROM base`);
  return res.mviewId!;
}

async function scheduledRuns(id: number): Promise<RefreshHistRow[]> {
  return (await t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_trigger: 'SCHEDULED' }).orderBy('refresh_id')) as RefreshHistRow[];
}

/** Set next_time to `ms` from the database's now; returns it (epoch ms). */
async function dueIn(id: number, ms: number): Promise<number> {
  await t.db('mvs_mview_refresh_info')
    .where({ mview_id: id })
    .update({ next_time: t.db.raw(`NOW(3) + INTERVAL ${ms * 1000} MICROSECOND`), updated_at: t.db.fn.now(6) });
  const row = (await t.db('mvs_mview_refresh_info').where({ mview_id: id }).first('next_time')) as { next_time: Date };
  return row.next_time.getTime();
}

describe('on-time dispatch', () => {
  it('jobs wake PROMOTE_LEAD_MS before the slot, and every run starts at its slot, never before it', async () => {
    const planner = cluster.planner();
    const w = cluster.worker('o1');
    try {
      await onTime();
    } finally {
      await cluster.stop(w, 'SIGTERM');
      await cluster.stop(planner, 'SIGTERM');
    }
  }, 120_000);

  async function onTime(): Promise<void> {
    await waitLive(['o1']);
    const ids: number[] = [];
    for (let i = 0; i < 12; i++) ids.push(await createMv(`mv_on_${i}`));
    await waitFor(async () => (await invariant1Violations(t.db, ins)).length === 0, { timeoutMs: 20_000, what: 'jobs placed' });

    // Slots 3-4.1 s ahead, 100 ms apart; the planner moves the jobs on the DDL wake-up.
    const due = new Map<number, number>();
    for (const [i, id] of ids.entries()) due.set(id, await dueIn(id, 3_000 + i * 100));
    for (const id of ids) await rt.publishDdl({ kind: 'mview', id, change: 'altered' });
    const delayedKey = `${t.prefix}:${nodeQueueName('o1')}:delayed`;
    // changeDelay() takes BullMQ's own clock reading, so a moved job may sit a few ms off.
    const near = (a: number | undefined, b: number) => a !== undefined && Math.abs(a - b) <= 50;
    await waitFor(
      async () => {
        const jobs = await collectJobs(ins);
        return ids.every((id) => jobs.get(id)?.[0]?.state === 'delayed' && near(jobs.get(id)?.[0]?.dueAt, due.get(id)!));
      },
      { timeoutMs: 10_000, intervalMs: 50, what: 'jobs moved to the new slots' },
    );
    // In Redis, each job wakes PROMOTE_LEAD_MS before its slot (BullMQ scores delayed jobs by ms * 4096 + a counter).
    for (const id of ids) {
      const score = Number(await ins.redis.zscore(delayedKey, mviewJobId(id)));
      expect(near(Math.floor(score / 0x1000), due.get(id)! - PROMOTE_LEAD_MS), `mv ${id}: wakes at ${Math.floor(score / 0x1000)}, due ${due.get(id)}`).toBe(true);
    }

    const runs = await waitFor(
      async () => {
        const all = await Promise.all(ids.map(scheduledRuns));
        return all.every((r) => r.length > 0 && r[0]!.refresh_status !== 'RUNNING') ? all.map((r) => r[0]!) : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: 'the scheduled runs' },
    );
    for (const [k, r] of runs.entries()) {
      const id = ids[k]!;
      expect(r.refresh_status, `mv ${id}`).toBe('SUCCESS');
      expect(r.scheduled_time!.getTime(), `mv ${id}`).toBe(due.get(id));
      expect(r.start_time.getTime(), `mv ${id} started before its slot`).toBeGreaterThanOrEqual(due.get(id)!);
    }
    // Back on the hourly grid, one job each.
    await waitFor(async () => (await invariant1Violations(t.db, ins)).length === 0, { timeoutMs: 20_000, what: 'invariant 1 after the runs' });
  }

  it('a closing worker gives back jobs waiting for their slot at once (they do not run), and one far too early goes back to wait', async () => {
    const soon = await createMv('mv_close_soon');
    const later = await createMv('mv_close_later');
    const w = cluster.worker('o2');
    try {
      await giveBack(soon, later, w);
    } finally {
      await cluster.closeAll();
    }
  }, 120_000);

  async function giveBack(soon: number, later: number, w: Proc): Promise<void> {
    await waitLive(['o2']);
    const queue = ins.placer.queue(nodeQueueName('o2'));
    // No planner here: place the jobs as it would, then make them ready now (as if BullMQ woke
    // them early): `soon` is due in 1.5 s, `later` in 60 s.
    const dueSoon = await dueIn(soon, 1_500);
    const dueLater = await dueIn(later, 60_000);
    for (const [id, due] of [[soon, dueSoon], [later, dueLater]] as const) {
      await ins.placer.ensure(nodeQueueName('o2'), mviewTask(id), due, Date.now());
      await (await queue.getJob(mviewJobId(id)))!.promote();
    }
    // The worker holds `soon` until its slot; `later` goes back to wait for its own.
    await waitFor(async () => (await queue.getJobState(mviewJobId(soon))) === 'active', { timeoutMs: 1_000, intervalMs: 10, what: 'the worker to hold mv_close_soon' });
    await waitFor(
      async () => {
        const jobs = await collectJobs(ins);
        return jobs.get(later)?.[0]?.state === 'delayed' && jobs.get(later)?.[0]?.dueAt === dueLater;
      },
      { timeoutMs: 5_000, intervalMs: 20, what: 'mv_close_later back in delayed at its slot' },
    );

    const exit = await cluster.stop(w, 'SIGTERM');
    expect(exit.code).toBe(0);
    // It did not wait for the slot: nothing ran, and the job is back, due at the same slot.
    expect(await scheduledRuns(soon)).toEqual([]);
    const jobs = await collectJobs(ins);
    expect(jobs.get(soon)).toEqual([{ queue: nodeQueueName('o2'), state: 'delayed', dueAt: dueSoon }]);
    expect(jobs.get(later)).toEqual([{ queue: nodeQueueName('o2'), state: 'delayed', dueAt: dueLater }]);

    // The next worker of the node runs it at its slot (or at once, if that has passed).
    const again: Proc = cluster.worker('o2');
    const run = await waitFor(async () => (await scheduledRuns(soon))[0], { timeoutMs: 30_000, intervalMs: 50, what: 'mv_close_soon to run' });
    expect(run.start_time.getTime()).toBeGreaterThanOrEqual(dueSoon);
    await cluster.stop(again, 'SIGTERM');
  }
});
