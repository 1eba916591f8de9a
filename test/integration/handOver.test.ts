import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { MembershipRegistry } from '../../src/membership/registry.js';
import { RingView } from '../../src/membership/ringView.js';
import { Planner } from '../../src/planner/planner.js';
import { JobPlacer } from '../../src/queue/jobPlacer.js';
import { mviewTask, nodeQueueName, redisKeys, taskRingKey, type TaskId } from '../../src/queue/names.js';
import { HashRing } from '../../src/ring/hashRing.js';
import { handOver } from '../../src/worker/handOver.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// A worker hands an MV's next run to the MV's owner on its own view of the ring, which may be a
// poll interval old: the owner may have expired and had its queue drained by the planner already.
// Such a job must not be stranded in a queue nobody reads (scheduling.test.ts saw one, now and
// then, after a SIGKILL). Real Redis and MariaDB; the ring view is refreshed by hand, so it is
// exactly as stale as each case needs.

let t: TestEnv;
let rt: Runtime;
let registry: MembershipRegistry;
let placer: JobPlacer;
const views: RingView[] = [];

beforeAll(async () => {
  t = await createTestEnv('hand_over');
  await migrateLatest(t.db);
  rt = createRuntime(t.config, t.logger);
  registry = new MembershipRegistry(rt.redis, t.prefix);
  placer = new JobPlacer(rt.redis, t.prefix, t.logger);
});

afterAll(async () => {
  for (const v of views) await v.close();
  await placer?.close();
  await rt?.close();
  await t?.close();
});

/** A ring view that only changes when refreshed by the test (no polling, no channel). */
async function staleView(): Promise<RingView> {
  const v = new RingView(registry, rt.newSubscriber(), t.logger);
  views.push(v);
  await v.refresh();
  return v;
}

/** The first MV id (from 1) for which `pick` holds on the ring of `nodes`. */
function taskWhere(nodes: string[], pick: (owner: string | undefined) => boolean): TaskId {
  const ring = new HashRing();
  ring.rebuild(nodes);
  for (let id = 1; id < 10_000; id++) if (pick(ring.getNode(taskRingKey(mviewTask(id))))) return mviewTask(id);
  throw new Error(`no task found for ${nodes.join(',')}`);
}

/** What the planner does to the queue of a node that left (Planner's retireQueue). */
async function drain(node: string): Promise<void> {
  await registry.retireNodeQueue(nodeQueueName(node));
  await placer.obliterate(nodeQueueName(node));
}

async function leftovers(node: string): Promise<{ registered: boolean; keys: string[] }> {
  return {
    registered: (await registry.nodeQueues()).includes(nodeQueueName(node)),
    keys: await rt.redis.keys(`${t.prefix}:${nodeQueueName(node)}:*`),
  };
}

const deps = (ringView: RingView, nodeId: string) => ({ registry, ringView, placer, clock: rt.clock, log: t.logger, nodeId });

describe('handing a next run to its owner', () => {
  it('places the job in a live owner’s queue', async () => {
    await registry.heartbeat('a1', 60_000);
    await registry.heartbeat('b1', 60_000);
    const view = await staleView();
    const task = taskWhere(['a1', 'b1'], (o) => o === 'b1');
    const dueAt = Date.now() + 600_000;
    expect(await handOver(deps(view, 'a1'), task, dueAt)).toBe('b1');
    expect((await placer.snapshot(nodeQueueName('b1'))).delayed.get(task)).toBe(dueAt);
    expect((await leftovers('b1')).registered).toBe(true);
  });

  it('takes the job back from an owner that expired and was drained, and passes it on', async () => {
    await registry.heartbeat('a2', 60_000);
    await registry.heartbeat('b2', 300);
    const view = await staleView();
    expect(view.liveNodes()).toEqual(expect.arrayContaining(['a2', 'b2']));
    const task = taskWhere(view.liveNodes(), (o) => o === 'b2');
    await waitFor(async () => !(await registry.live()).includes('b2'), { what: 'b2 to expire' });
    await drain('b2');
    // The view still shows b2: the hand-over must notice it is gone and pass the job on.
    const kept = await handOver(deps(view, 'a2'), task, Date.now() + 600_000);
    const next = new HashRing();
    next.rebuild(view.liveNodes());
    const expected = next.getNode(taskRingKey(task));
    expect(next.nodes()).not.toContain('b2');
    expect(kept).toBe(expected === 'a2' ? undefined : expected);
    const snap = await placer.snapshot(nodeQueueName('b2'));
    expect(snap.delayed.has(task) || snap.ready.has(task), 'no job left in the gone node’s queue').toBe(false);
    // Whatever the write left behind in Redis is registered, for the planner to drain.
    const left = await leftovers('b2');
    expect(left.keys.length === 0 || left.registered, JSON.stringify(left)).toBe(true);
  });

  it('moves on to the next live owner when the first one is gone', async () => {
    for (const n of ['a3', 'c3']) await registry.heartbeat(n, 60_000);
    await registry.heartbeat('b3', 300);
    const view = await staleView();
    const after = view.liveNodes().filter((n) => n !== 'b3');
    // Owned by b3 now and, once b3 is gone, by c3: the job must end up in c3's queue.
    const task = taskWhere(view.liveNodes(), (o) => o === 'b3');
    const ring = new HashRing();
    ring.rebuild(after);
    const heir = ring.getNode(taskRingKey(task))!;
    await waitFor(async () => !(await registry.live()).includes('b3'), { what: 'b3 to expire' });
    await drain('b3');
    const dueAt = Date.now() + 600_000;
    const to = await handOver(deps(view, 'a3'), task, dueAt);
    expect(to).toBe(heir === 'a3' ? undefined : heir);
    if (to) expect((await placer.snapshot(nodeQueueName(to))).delayed.get(task)).toBe(dueAt);
    const snap = await placer.snapshot(nodeQueueName('b3'));
    expect(snap.delayed.has(task)).toBe(false);
  });
});

describe('the planner and a job written to a drained queue', () => {
  it('drains a registered queue of a gone node within a pass and puts the MV’s job at its owner', async () => {
    await rt.db.raw('CREATE TABLE base (id INT PRIMARY KEY, v INT NOT NULL)');
    const ddl = createDdlExecutor(rt, 'test');
    const id = (await ddl.execute('CREATE MATERIALIZED VIEW hv NEXT 3600 AS SELECT COUNT(*) AS n FROM base')).mviewId!;
    const keys = redisKeys(t.prefix, false);
    for (const n of ['a1', 'a2', 'a3', 'b1', 'c3']) await registry.leave(n);
    await registry.heartbeat('p1', 60_000);
    const planner = new Planner({
      db: rt.db,
      redis: rt.redis,
      subscriber: rt.newSubscriber(),
      logger: t.logger,
      clock: rt.clock,
      prefix: t.prefix,
      // Only wake-ups run passes here: the periodic full pass must not be what cleans up.
      reconcileIntervalS: 3600,
      leaseTtlMs: 10_000,
      membershipPollMs: 100,
    });
    try {
      await planner.start();
      await waitFor(async () => (await rt.redis.get(keys.plannerEpoch)) !== null, { what: 'the first full pass' });
      await waitFor(async () => (await placer.snapshot(nodeQueueName('p1'))).delayed.has(mviewTask(id)), { what: 'the MV job at p1' });
      const passes = planner.passCount;

      // A worker with a stale ring wrote the MV's next run to q9, gone and drained long ago.
      await registry.registerNodeQueue(nodeQueueName('q9'));
      await placer.ensure(nodeQueueName('q9'), mviewTask(id), Date.now() + 600_000);
      planner.wake();
      await waitFor(async () => planner.passCount > passes, { what: 'a pass after the stray write' });
      await waitFor(
        async () => {
          const left = await leftovers('q9');
          return !left.registered && left.keys.length === 0;
        },
        { what: 'the queue of q9 to be drained and unregistered' },
      );
      expect((await placer.snapshot(nodeQueueName('p1'))).delayed.has(mviewTask(id)), 'the MV keeps its job at p1').toBe(true);
    } finally {
      await planner.close();
    }
  });
});
