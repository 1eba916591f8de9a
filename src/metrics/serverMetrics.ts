import { Queue } from 'bullmq';
import type { Knex } from 'knex';
import { AggregatorRegistry, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { MembershipRegistry } from '../membership/registry.js';
import { addCaptureGauges } from './captureMetrics.js';
import { listMlogStatus } from '../mlog/status.js';
import { listMviewStatus } from '../mv/status.js';
import { bullQueueName, redisKeys, REPAIR_QUEUE, REQUESTS_QUEUE } from '../queue/names.js';
import { isCluster, scanKeys, type RedisClient } from '../queue/redis.js';
import { registerMlogSeries, registerMviewSeries } from './mviewSeries.js';
import { metricsKeyPattern, RunMetrics } from './runMetrics.js';

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** A scheduled MV this far past its slot counts as stale even without version reports. */
const OVERDUE_MS = 60_000;
/** MVS_METRICS_MAX_MVIEWS' default. */
const DEFAULT_MAX_MVIEWS = 10_000;
const JOB_STATES = ['waiting', 'delayed', 'active', 'prioritized', 'waiting-children', 'failed', 'completed'] as const;

/**
 * GET /metrics of `mvsched server`: state read at scrape time (queue depths, MVs by state, live
 * nodes), the server's own runs (DDL REFRESH / PURGE statements), and every worker's run figures
 * as published to Redis (one series per node), merged with prom-client's AggregatorRegistry.
 */
export class ServerMetrics {
  /** Runs carried out by this process (CREATE / REFRESH / PURGE statements over HTTP). */
  readonly own = new RunMetrics({ node: 'server' });
  private readonly membership: MembershipRegistry;
  private readonly queues = new Map<string, Queue>();
  private readonly cluster: boolean;

  constructor(private readonly deps: { db: Knex; redis: RedisClient; prefix: string; maxMviews?: number }) {
    this.cluster = isCluster(deps.redis);
    this.membership = new MembershipRegistry(deps.redis, deps.prefix);
  }

  private queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(bullQueueName(name, this.cluster), { connection: this.deps.redis, prefix: this.deps.prefix });
      this.queues.set(name, q);
    }
    return q;
  }

  private async stateRegistry(): Promise<Registry> {
    const reg = new Registry();
    const registers = [reg];
    const live = await this.membership.live();
    new Gauge({ name: 'mvs_live_nodes', help: 'Worker nodes in the ring', registers }).set(live.length);
    // The lease key exists while a planner leads (it expires MVS_NODE_TTL_S after the leader stops renewing).
    const leader = await this.deps.redis.exists(redisKeys(this.deps.prefix, this.cluster).plannerLeader);
    new Gauge({ name: 'mvs_planner_leader_present', help: '1 while a planner holds the leader lease, else 0', registers }).set(leader > 0 ? 1 : 0);

    const depth = new Gauge({ name: 'mvs_queue_jobs', help: 'Jobs per queue and state', labelNames: ['queue', 'state'], registers });
    const names = [REQUESTS_QUEUE, REPAIR_QUEUE, ...(await this.membership.nodeQueues())];
    await Promise.all(
      [...new Set(names)].map(async (name) => {
        const counts = await this.queue(name).getJobCounts(...JOB_STATES);
        for (const state of JOB_STATES) depth.set({ queue: name, state }, counts[state] ?? 0);
      }),
    );

    const byState = new Gauge({ name: 'mvs_mviews', help: 'Materialized views by state (fresh, stale, failing, suspended)', labelNames: ['state'], registers });
    const counts = { fresh: 0, stale: 0, failing: 0, suspended: 0 };
    const now = Date.now();
    // Every MV and log in a few queries (never one per MV): the counts and per-MV series below.
    const [mviews, mlogs] = await Promise.all([listMviewStatus(this.deps.db, undefined), listMlogStatus(this.deps.db)]);
    for (const mv of mviews) {
      if (mv.status === 'SUSPENDED') counts.suspended++;
      else if (mv.failures > 0) counts.failing++;
      else if (mv.freshness === 'stale' || (mv.nextTime !== null && Date.parse(mv.nextTime) < now - OVERDUE_MS)) counts.stale++;
      else counts.fresh++;
    }
    for (const [state, n] of Object.entries(counts)) byState.set({ state }, n);

    new Gauge({ name: 'mvs_mlogs', help: 'Materialized view logs', registers }).set(mlogs.length);
    registerMviewSeries(registers, mviews, this.deps.maxMviews ?? DEFAULT_MAX_MVIEWS);
    registerMlogSeries(registers, mlogs);
    await addCaptureGauges(reg, this.deps);
    return reg;
  }

  /** Figures published by live workers (a worker that left took its key with it). */
  private async workerFigures(): Promise<MetricsJson[]> {
    // SCAN over every master: on a cluster one node's SCAN sees only its own slots.
    const keys = await scanKeys(this.deps.redis, metricsKeyPattern(this.deps.prefix, this.cluster), 200);
    if (!keys.length) return [];
    // One MGET: on a cluster the keys share the {mvs} hash tag, hence one slot.
    const values = await this.deps.redis.mget(...keys);
    const out: MetricsJson[] = [];
    for (const v of values) {
      if (!v) continue;
      try {
        out.push(JSON.parse(v) as MetricsJson);
      } catch {
        // A half-written or foreign key: skip it rather than fail the scrape.
      }
    }
    return out;
  }

  async scrape(): Promise<{ contentType: string; body: string }> {
    const [state, workers, own] = await Promise.all([this.stateRegistry(), this.workerFigures(), this.own.registry.getMetricsAsJSON()]);
    const merged = AggregatorRegistry.aggregate([await state.getMetricsAsJSON(), own, ...workers] as never);
    return { contentType: merged.contentType, body: await merged.metrics() };
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
  }
}
