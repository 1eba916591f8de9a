import { Counter, Histogram, Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { PurgeOutcome, PurgeRequest } from '../purge/purgeRunner.js';
import type { RefreshOutcome, RefreshRequest } from '../refresh/types.js';
import { redisKeys } from '../queue/names.js';
import type { RedisClient } from '../queue/redis.js';

// Figures of the runs a process carries out (refreshes, purges, repairs). Each worker keeps its
// own prom-client registry and publishes it to Redis every few seconds (key per node, with a
// TTL), so one scrape of `mvsched server` /metrics sees every worker (see serverMetrics.ts).

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const LATENESS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function metricsKey(prefix: string, nodeId: string, cluster: boolean): string {
  return redisKeys(prefix, cluster).metrics(nodeId);
}

export function metricsKeyPattern(prefix: string, cluster: boolean): string {
  return redisKeys(prefix, cluster).metricsPattern;
}

/** Observes outcomes of refresh and purge runs (RefreshRunner / PurgeRunner call it). */
export interface RunObserver {
  refreshed(req: RefreshRequest, outcome: RefreshOutcome): void;
  purged(req: PurgeRequest, outcome: PurgeOutcome): void;
  repaired?(outcome: 'applied' | 'skipped' | 'waiting' | 'dropped', count: number): void;
}

export class RunMetrics implements RunObserver {
  readonly registry = new Registry();
  private readonly refreshRuns: Counter<'result' | 'method' | 'trigger'>;
  private readonly refreshDuration: Histogram<'method'>;
  private readonly refreshRows: Counter<'method'>;
  private readonly lateness: Histogram;
  private readonly purgeRuns: Counter<'result' | 'trigger'>;
  private readonly purgeDuration: Histogram;
  private readonly purgeRows: Counter;
  private readonly repairs: Counter<'outcome'>;
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Timeout | undefined;

  constructor(labels: Record<string, string> = {}) {
    this.registry.setDefaultLabels(labels);
    const registers = [this.registry];
    this.refreshRuns = new Counter({
      name: 'mvs_refresh_runs_total',
      help: 'Refresh runs by result (SUCCESS, FAILED, SKIPPED), method and trigger',
      labelNames: ['result', 'method', 'trigger'],
      registers,
    });
    this.refreshDuration = new Histogram({
      name: 'mvs_refresh_duration_seconds',
      help: 'Duration of refresh runs that recomputed something (SUCCESS or FAILED)',
      labelNames: ['method'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.refreshRows = new Counter({ name: 'mvs_refresh_rows_total', help: 'MV rows written by refreshes', labelNames: ['method'], registers });
    this.lateness = new Histogram({
      name: 'mvs_dispatch_lateness_seconds',
      help: 'Start of a scheduled run minus the time it was scheduled for',
      buckets: LATENESS_BUCKETS,
      registers,
    });
    this.purgeRuns = new Counter({ name: 'mvs_purge_runs_total', help: 'MV-log purge runs by result and trigger', labelNames: ['result', 'trigger'], registers });
    this.purgeDuration = new Histogram({ name: 'mvs_purge_duration_seconds', help: 'Duration of MV-log purges', buckets: DURATION_BUCKETS, registers });
    this.purgeRows = new Counter({ name: 'mvs_purge_rows_total', help: 'MV-log rows purged', registers });
    this.repairs = new Counter({
      name: 'mvs_repairs_total',
      help: 'Version-map repair infos by outcome (applied, skipped, waiting for an earlier link, dropped)',
      labelNames: ['outcome'],
      registers,
    });
  }

  refreshed(req: RefreshRequest, o: RefreshOutcome): void {
    if (o.kind === 'SUCCESS' || o.kind === 'FAILED' || o.kind === 'SKIPPED') {
      const method = o.kind === 'SKIPPED' ? 'NONE' : o.method;
      this.refreshRuns.inc({ result: o.kind, method, trigger: req.trigger });
    }
    if (o.kind === 'SUCCESS') {
      this.refreshDuration.observe({ method: o.method }, (o.endMs - o.startMs) / 1000);
      this.refreshRows.inc({ method: o.method }, o.rows);
      if (req.trigger === 'SCHEDULED' && req.scheduledFor !== undefined) this.lateness.observe(Math.max(0, o.startMs - req.scheduledFor) / 1000);
    }
    this.changed();
  }

  purged(req: PurgeRequest, o: PurgeOutcome): void {
    if (o.kind === 'SUCCESS' || o.kind === 'FAILED') this.purgeRuns.inc({ result: o.kind, trigger: req.trigger });
    if (o.kind === 'SUCCESS') {
      this.purgeDuration.observe(o.durationMs / 1000);
      this.purgeRows.inc(o.rows);
    }
    this.changed();
  }

  repaired(outcome: 'applied' | 'skipped' | 'waiting' | 'dropped', count: number): void {
    if (count > 0) this.repairs.inc({ outcome }, count);
    this.changed();
  }

  /** Publish shortly after a change too, not only on the period: a scrape sees a run at once. */
  private changed(): void {
    if (this.soon || !this.timer) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      void this.publishNow().catch(() => {});
    }, 250);
    this.soon.unref();
  }

  /** Publish this registry to Redis every `everyMs`, for the server's scrape (TTL 3 periods). */
  startPublishing(redis: RedisClient, key: string, logger: Logger, everyMs = 5_000): void {
    const publish = async () => {
      const json = await this.registry.getMetricsAsJSON();
      await redis.set(key, JSON.stringify(json), 'PX', everyMs * 3);
    };
    this.timer = setInterval(() => {
      publish().catch((err: unknown) => logger.debug({ err }, 'could not publish metrics'));
    }, everyMs);
    this.timer.unref();
    this.publishNow = publish;
  }

  /** Push the figures now (after a run the test or the server wants to see at once). */
  publishNow: () => Promise<void> = async () => {};

  async stopPublishing(redis: RedisClient, key: string): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.soon);
    this.timer = undefined;
    // A clean leave takes this node's figures with it, like its ring membership.
    await redis.del(key).catch(() => 0);
  }
}
