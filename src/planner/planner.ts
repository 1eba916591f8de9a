import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { MembershipRegistry } from '../membership/registry.js';
import { RingView } from '../membership/ringView.js';
import { JobPlacer } from '../queue/jobPlacer.js';
import { taskNamesFromDb } from '../queue/taskNames.js';
import { redisKeys, mlogTask, mviewTask, nodeIdOfQueue, nodeQueueName } from '../queue/names.js';
import { isCluster, type RedisClient } from '../queue/redis.js';
import { LeaderLease } from './leaderLease.js';
import { Notifier } from './notifier.js';
import { Reconciler, type ReconcileStats } from './reconciler.js';
import type { DriftChecker } from '../drift/driftChecker.js';
import type { HistoryRetention } from './retention.js';
import { WaveRunner } from '../pipeline/waveRunner.js';

/** Every this many periodic (MVS_RECONCILE_S) passes, one is a full reconcile. */
const FULL_PASS_EVERY = 20;

/** Longer than the membership poll interval (1 s) plus a run's hand-over. */
const SWEEP_AFTER_RING_CHANGE_MS = 3_000;

export interface PlannerDeps {
  db: Knex;
  /** Commands connection. */
  redis: RedisClient;
  /** A second connection, used only for pub/sub. */
  subscriber: RedisClient;
  logger: Logger;
  clock: Clock;
  prefix: string;
  reconcileIntervalS: number;
  /** Lease TTL: a standby takes over within this long after the leader dies. */
  leaseTtlMs: number;
  vnodes?: number;
  membershipPollMs?: number;
  /** Checks MV logs for changes made behind mvsched's back, every intervalS while leading. */
  drift?: { checker: DriftChecker; intervalS: number };
  /** Trims history and the edit log, every intervalS while leading. */
  retention?: { trimmer: HistoryRetention; intervalS: number };
}

/**
 * The planner process: leader-elected by a Redis lease; the leader keeps the queues in line
 * with the metadata (see Reconciler). Woken by DDL events and membership changes (coalesced),
 * and every MVS_RECONCILE_S as a safety net.
 */
export class Planner {
  readonly id = `planner-${randomUUID().slice(0, 8)}`;
  private readonly lease: LeaderLease;
  private readonly notifier = new Notifier();
  private readonly registry: MembershipRegistry;
  private readonly ringView: RingView;
  private readonly placer: JobPlacer;
  private readonly reconciler: Reconciler;
  private readonly keys: ReturnType<typeof redisKeys>;
  private readonly log: Logger;
  private leading = false;
  private needFull = true;
  private goneNodes = new Set<string>();
  private ringDirty = false;
  private droppedIds = new Set<number>();
  private leaseTimer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  private closed = false;
  private passes = 0;
  private sweepTimer: NodeJS.Timeout | undefined;
  private lastStats: ReconcileStats | undefined;
  private readonly chores: Array<{ timer?: NodeJS.Timeout; running?: Promise<void> }> = [];
  /** Pipeline waves (pipeline/waveRunner.ts) run on their own clock, next to the reconcile loop. */
  private readonly waves: WaveRunner;
  private readonly wavesWake = new Notifier();
  private wavesLoop: Promise<void> | undefined;

  constructor(private readonly deps: PlannerDeps) {
    this.log = deps.logger.child({ component: 'planner', planner_id: this.id });
    this.keys = redisKeys(deps.prefix, isCluster(deps.redis));
    this.lease = new LeaderLease(deps.redis, this.keys.plannerLeader, this.id, deps.leaseTtlMs);
    this.registry = new MembershipRegistry(deps.redis, deps.prefix);
    this.ringView = new RingView(this.registry, deps.subscriber, this.log, {
      ...(deps.vnodes !== undefined ? { vnodes: deps.vnodes } : {}),
      pollMs: deps.membershipPollMs ?? 1000,
    });
    this.placer = new JobPlacer(deps.redis, deps.prefix, this.log, taskNamesFromDb(deps.db, { preload: true }));
    this.reconciler = new Reconciler({
      db: deps.db,
      placer: this.placer,
      ring: this.ringView.ring,
      clock: deps.clock,
      logger: this.log,
      knownQueues: () => this.registry.nodeQueues(),
      retireQueue: async (q) => {
        // Unregistered first: a worker handing a job to the gone node registers the queue again
        // after its write (worker/handOver.ts), so whatever lands after the drain is found.
        await this.registry.retireNodeQueue(q);
        try {
          await this.placer.obliterate(q);
        } catch (err) {
          await this.registry.registerNodeQueue(q).catch(() => {});
          throw err;
        }
        this.log.info({ queue: q }, 'drained the queue of a node that left');
      },
    });
    this.waves = new WaveRunner({
      db: deps.db,
      redis: deps.redis,
      placer: this.placer,
      ring: this.ringView.ring,
      clock: deps.clock,
      logger: this.log.child({ component: 'pipeline' }),
      prefix: deps.prefix,
    });
  }

  get waveStats(): WaveRunner['stats'] {
    return this.waves.stats;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  get passCount(): number {
    return this.passes;
  }

  get lastReconcile(): ReconcileStats | undefined {
    return this.lastStats;
  }

  async start(): Promise<void> {
    this.ringView.onChange((nodes, previous) => {
      for (const n of previous) if (!nodes.includes(n)) this.goneNodes.add(n);
      for (const n of nodes) this.goneNodes.delete(n);
      this.ringDirty = true;
      // With no live node, passes drop every placement (no owner to queue for), and a ring
      // change only moves placements it has: after the ring was empty, place everything anew.
      if (previous.length === 0 && nodes.length > 0) this.needFull = true;
      this.notifier.wake();
    });
    this.deps.subscriber.on('message', (channel: string, message: string) => {
      if (channel !== this.keys.ddlChannel) return;
      try {
        const ev = JSON.parse(message) as { kind?: string; id?: number; change?: string };
        if (ev.change === 'dropped' && typeof ev.id === 'number') {
          if (ev.kind === 'mview') this.droppedIds.add(mviewTask(ev.id));
          if (ev.kind === 'mlog') this.droppedIds.add(mlogTask(ev.id));
        }
      } catch {
        // Any message is a wake-up; a malformed one just carries no detail.
      }
      this.notifier.wake();
      this.waves.markDirty();
      this.wavesWake.wake();
    });
    await this.deps.subscriber.subscribe(this.keys.ddlChannel);
    await this.ringView.start();
    await this.leaseTick();
    this.leaseTimer = setInterval(() => void this.leaseTick(), Math.max(100, Math.floor(this.deps.leaseTtlMs / 3)));
    this.leaseTimer.unref();
    this.loop = this.run();
    this.wavesLoop = this.runWaves();
    const { drift, retention } = this.deps;
    if (drift) {
      this.chore('drift check', drift.intervalS, async () => {
        const r = await drift.checker.check();
        return r.broken.length || r.systemRefreshes.length ? r : undefined;
      });
    }
    if (retention) {
      this.chore('history retention', retention.intervalS, async () => {
        const r = await retention.trimmer.run();
        return r.refreshRows + r.purgeRows + r.editLogRows > 0 ? r : undefined;
      });
    }
  }

  /**
   * A leader's periodic chore on a clock of its own (never behind a long reconcile, one run at a
   * time); what it returns, when anything, is logged.
   */
  private chore(name: string, intervalS: number, work: () => Promise<object | undefined>): void {
    const c: { timer?: NodeJS.Timeout; running?: Promise<void> } = {};
    this.chores.push(c);
    const next = () => {
      if (this.closed) return;
      c.timer = setTimeout(() => {
        c.running = (async () => {
          if (!this.leading || this.closed) return;
          try {
            const r = await work();
            if (r) this.log.info(r, name);
          } catch (err) {
            this.log.warn({ err }, `${name} failed; the next one retries`);
          }
        })().finally(next);
      }, intervalS * 1000);
      c.timer.unref();
    };
    next();
  }

  private async leaseTick(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.leading) {
        if (!(await this.lease.renew())) {
          this.leading = false;
          this.log.warn('lost the planner lease; standing by');
        }
      } else if (await this.lease.tryAcquire()) {
        this.leading = true;
        this.needFull = true;
        this.log.info('became the leading planner');
        this.waves.leadershipChanged();
        this.notifier.wake();
        this.wavesWake.wake();
      }
    } catch (err) {
      this.log.warn({ err }, 'planner lease check failed');
    }
  }

  /** Ask for a pass now (tests, CLI); coalesces with other wake-ups. */
  wake(full = false): void {
    if (full) this.needFull = true;
    this.notifier.wake();
  }

  private async run(): Promise<void> {
    let quietPasses = 0;
    while (!this.closed) {
      const woken = await this.notifier.wait(this.deps.reconcileIntervalS * 1000);
      if (this.closed) break;
      if (!this.leading) continue;
      // A last line of defence against drift nobody announced (a job lost to a Redis failover,
      // a bug): every FULL_PASS_EVERY-th periodic pass compares everything. Incremental passes
      // cost what changed; this one costs the MV count, a few times an hour at the default.
      if (!woken && ++quietPasses >= FULL_PASS_EVERY) {
        quietPasses = 0;
        this.needFull = true;
      }
      try {
        await this.pass();
      } catch (err) {
        this.needFull = true;
        this.log.error({ err }, 'reconcile failed; the next pass rebuilds from scratch');
        await new Promise((r) => setTimeout(r, 500));
        this.notifier.wake();
      }
    }
  }

  /** The leader's wave ticks; each says when it wants the next one (DDL wakes it sooner). */
  private async runWaves(): Promise<void> {
    while (!this.closed) {
      let waitMs = 1_000;
      if (this.leading) {
        try {
          waitMs = await this.waves.tick();
        } catch (err) {
          this.log.warn({ err }, 'pipeline tick failed; the next one retries');
        }
      }
      await this.wavesWake.wait(waitMs);
    }
  }

  private async pass(): Promise<void> {
    // A missing epoch key means Redis lost its data (FLUSHALL, failover without persistence).
    if (!this.needFull && (await this.deps.redis.exists(this.keys.plannerEpoch)) === 0) {
      this.log.warn('Redis lost the planner state; rebuilding every job from MySQL');
      this.needFull = true;
    }
    await this.ringView.refresh();
    const expired = await this.registry.prune();
    if (expired.length) this.log.info({ nodes: expired }, 'nodes missed their heartbeats');

    if (!this.needFull && (await this.strayQueues()).length > 0) this.needFull = true;

    const dropped = [...this.droppedIds];
    this.droppedIds.clear();
    let stats: ReconcileStats;
    if (this.needFull) {
      this.needFull = false;
      this.ringDirty = false;
      this.goneNodes.clear();
      stats = await this.reconciler.full();
      await this.deps.redis.set(this.keys.plannerEpoch, String(this.deps.clock.now()));
    } else {
      if (this.ringDirty) {
        this.ringDirty = false;
        const gone = [...this.goneNodes];
        this.goneNodes.clear();
        const rs = await this.reconciler.ringChanged(gone);
        this.log.info(rs, 'moved jobs after a membership change');
        await this.waves.queuesGone(gone.map(nodeQueueName));
        this.scheduleSweep();
      }
      for (const id of dropped) await this.reconciler.forget(id);
      stats = await this.reconciler.incremental();
    }
    this.passes++;
    this.lastStats = stats;
    const changed = stats.added + stats.rescheduled + stats.removed + stats.moved;
    this.log[stats.kind === 'full' || changed > 0 ? 'info' : 'debug'](stats, 'reconciled');
  }

  /**
   * Registered queues of nodes that are not live: written to after their drain (a worker's late
   * hand-over, worker/handOver.ts). A full pass moves what they hold and drains them. Liveness is
   * read after the registrations, so a node that joins meanwhile is not taken for gone.
   */
  private async strayQueues(): Promise<string[]> {
    const registered = await this.registry.nodeQueues();
    if (registered.length === 0) return [];
    const live = new Set((await this.registry.live()).map(nodeQueueName));
    const stray = registered.filter((q) => !live.has(q) && !this.goneNodes.has(nodeIdOfQueue(q) ?? q));
    if (stray.length) this.log.info({ queues: stray }, 'queues of gone nodes were written to after their drain; a full pass drains them');
    return stray;
  }

  /**
   * Workers learn of a membership change up to a poll interval apart, and one that finishes a
   * run in that window may hand its MV to a node that is no longer the owner. One full pass
   * shortly after the change, when every view has converged, clears such strays.
   */
  private scheduleSweep(): void {
    clearTimeout(this.sweepTimer);
    this.sweepTimer = setTimeout(() => {
      this.needFull = true;
      this.notifier.wake();
    }, SWEEP_AFTER_RING_CHANGE_MS);
    this.sweepTimer.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.leaseTimer);
    clearTimeout(this.sweepTimer);
    for (const c of this.chores) clearTimeout(c.timer);
    await Promise.all(this.chores.map((c) => c.running?.catch(() => {})));
    this.notifier.wake();
    this.wavesWake.wake();
    await this.loop?.catch(() => {});
    await this.wavesLoop?.catch(() => {});
    if (this.leading) await this.lease.release().catch(() => {});
    this.leading = false;
    await this.ringView.close();
    await this.deps.subscriber.unsubscribe().catch(() => {});
    await this.placer.close();
  }
}
