import type { Knex } from 'knex';
import { PipelineGraph } from './graph.js';
import type { MvRuntime, PlanContext } from './plan.js';
import { loadGraph } from './repository.js';

// What the leading planner keeps in memory to plan waves: the graph (reloaded after DDL and every
// GRAPH_RELOAD_MS), each MV's last runs (read incrementally, by refresh-info's updated_at, like the
// reconciler's scan), and the duration estimates learnt from them.

const GRAPH_RELOAD_MS = 30_000;
/** Commits that set updated_at just before a scan may become visible after it (see reconciler.ts). */
const SCAN_OVERLAP_MS = 10_000;
/** Runs remembered per MV; an MV's expected run time is the longest of them (a wave's tail decides). */
const DURATION_SAMPLES = 8;
/** Steps remembered for the dispatch overhead; its estimate is their 90th percentile. */
const OVERHEAD_SAMPLES = 64;
const DEFAULT_STEP_MS = 500;
const DEFAULT_OVERHEAD_MS = 300;

interface InfoRow {
  mview_id: number | string;
  data_time: Date | null;
  refresh_time: Date | null;
  refresh_endtime: Date | null;
  last_refresh_result: string | null;
  consecutive_failures: number | string;
  last_failed_reason: string | null;
  target_unmet_reason?: string | null;
}

export class PipelineState {
  graph = new PipelineGraph([]);
  readonly runtime = new Map<number, MvRuntime>();
  /** target_unmet_reason as stored, by MV id. */
  readonly storedReasons = new Map<number, string | null>();
  /** Database clock minus this process's clock, from the last scan. */
  dbOffsetMs = 0;
  private dirty = true;
  private graphAt = 0;
  private lastScanDbMs: number | undefined;
  private readonly durations = new Map<number, number[]>();
  private readonly overheads: number[] = [];

  constructor(private readonly db: Knex) {}

  /** DDL happened: reload the graph on the next refresh. */
  markDirty(): void {
    this.dirty = true;
  }

  async refresh(nowMs: number): Promise<void> {
    const full = this.dirty || nowMs - this.graphAt > GRAPH_RELOAD_MS || this.lastScanDbMs === undefined;
    if (full) {
      this.dirty = false;
      this.graphAt = nowMs;
      this.graph = await loadGraph(this.db);
    }
    const [clock] = (await this.db.raw('SELECT NOW(3) AS now')) as [Array<{ now: Date }>];
    const scanDbMs = clock[0]!.now.getTime();
    this.dbOffsetMs = scanDbMs - nowMs;
    const q = this.db('mvs_mview_refresh_info').select(
      'mview_id', 'data_time', 'refresh_time', 'refresh_endtime', 'last_refresh_result', 'consecutive_failures', 'last_failed_reason',
      ...(full ? ['target_unmet_reason'] : []),
    );
    if (!full) void q.where('updated_at', '>=', new Date(this.lastScanDbMs! - SCAN_OVERLAP_MS));
    const rows = (await q) as InfoRow[];
    if (full) {
      for (const id of [...this.runtime.keys()]) if (!this.graph.node(id)) this.forget(id);
    }
    for (const r of rows) this.apply(r);
    this.lastScanDbMs = scanDbMs;
  }

  private forget(id: number): void {
    this.runtime.delete(id);
    this.durations.delete(id);
    this.storedReasons.delete(id);
  }

  private apply(r: InfoRow): void {
    const id = Number(r.mview_id);
    const prev = this.runtime.get(id);
    const next: MvRuntime = {
      dataTimeMs: r.data_time?.getTime() ?? null,
      lastStartMs: r.refresh_time?.getTime() ?? null,
      lastEndMs: r.refresh_endtime?.getTime() ?? null,
      lastResult: r.last_refresh_result,
      failures: Number(r.consecutive_failures ?? 0),
      lastFailedReason: r.last_failed_reason,
    };
    const newRun = next.lastStartMs !== null && next.lastStartMs !== prev?.lastStartMs;
    if (newRun && next.lastResult === 'SUCCESS' && next.lastEndMs !== null) this.addDuration(id, next.lastEndMs - next.lastStartMs!);
    this.runtime.set(id, next);
    if (r.target_unmet_reason !== undefined) this.storedReasons.set(id, r.target_unmet_reason);
  }

  private addDuration(id: number, ms: number): void {
    const list = this.durations.get(id) ?? [];
    list.push(Math.max(0, ms));
    if (list.length > DURATION_SAMPLES) list.shift();
    this.durations.set(id, list);
  }

  /** How long a ready step waited before its run started (queues, promotion, the worker's pick-up). */
  addOverhead(ms: number): void {
    this.overheads.push(Math.max(0, ms));
    if (this.overheads.length > OVERHEAD_SAMPLES) this.overheads.shift();
  }

  stepMs(id: number): number {
    const list = this.durations.get(id);
    return list?.length ? Math.max(50, ...list) : DEFAULT_STEP_MS;
  }

  /**
   * The 90th percentile, not the maximum: a wave of many targets at once (after a start-up, say)
   * queues its steps behind each other, which says nothing about the next wave of one target.
   */
  get overheadMs(): number {
    if (this.overheads.length === 0) return DEFAULT_OVERHEAD_MS;
    const sorted = [...this.overheads].sort((a, b) => a - b);
    return Math.min(5_000, Math.max(50, sorted[Math.ceil(0.9 * sorted.length) - 1]!));
  }

  context(dbNowMs: number): PlanContext {
    return {
      graph: this.graph,
      runtime: (id) => this.runtime.get(id),
      stepMs: (id) => this.stepMs(id),
      overheadMs: this.overheadMs,
      nowMs: dbNowMs,
    };
  }
}
