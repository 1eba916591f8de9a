import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { JobPlacer } from '../queue/jobPlacer.js';
import { mviewRingKey, nodeQueueName } from '../queue/names.js';
import type { RedisClient } from '../queue/redis.js';
import type { HashRing } from '../ring/hashRing.js';
import type { PipelineNode } from './graph.js';
import { WaveLedger, type StepResult, type WaveRecord } from './ledger.js';
import { backoffUntil, dueAt, planWave, targetHealth, waveDurationMs, type PlanContext, type WavePlan } from './plan.js';
import { PipelineState } from './state.js';
import { deadlinePriority, WAVE_JOB_OPTS, WAVE_STEP, waveStepJobId, type WaveStepData } from './waveJobs.js';

// The planner's side of pipelines (DESIGN.md §2 "Pipelines", invariant 7): on each tick it reads
// what changed, closes the waves that finished, works out when each target-lag MV must start
// (pipeline/plan.ts), starts one wave for every target due now (MVs several of them need are
// refreshed once) as ordinary jobs in the owners' node queues (pipeline/waveStep.ts runs them),
// and records why a target cannot be met. It tells the planner when it wants the next tick.

/** Targets due within this much of now join the wave being started (one wave, shared upstreams once). */
const BATCH_MS = 200;
/** How often open waves are checked for their end. */
const SUPERVISE_MS = 250;
const MAX_SLEEP_MS = 5_000;
/**
 * A wave is called off when no step of it finished for this long at least (or 4x its expected
 * duration): a slow wave that moves is let finish (calling it off would waste what it did).
 */
const MIN_STALL_MS = 30_000;
/** A waiting step's fallback wake-up comes this long after its inputs are expected to end. */
const FALLBACK_EXTRA_MS = 2_000;

export interface WaveRunnerDeps {
  db: Knex;
  redis: RedisClient;
  placer: JobPlacer;
  ring: HashRing;
  clock: Clock;
  logger: Logger;
  prefix: string;
}

export interface WaveStats {
  waves: number;
  steps: number;
  failedWaves: number;
  cancelledWaves: number;
}

export class WaveRunner {
  private readonly state: PipelineState;
  private readonly ledger: WaveLedger;
  private readonly open = new Map<string, WaveRecord>();
  /** Per open wave: how many steps had finished when last seen, and since when. */
  private readonly progress = new Map<string, { done: number; at: number }>();
  /** MVs with a step in an open wave that has not finished yet: no other wave may take them. */
  private unfinished = new Set<number>();
  /** Start of each target's last wave, database clock. */
  private readonly lastWaveStart = new Map<number, number>();
  private resumed = false;
  readonly stats: WaveStats = { waves: 0, steps: 0, failedWaves: 0, cancelledWaves: 0 };

  constructor(private readonly deps: WaveRunnerDeps) {
    this.state = new PipelineState(deps.db);
    this.ledger = new WaveLedger(deps.redis, deps.prefix);
  }

  markDirty(): void {
    this.state.markDirty();
  }

  /** This planner leads from now on: take over the waves a previous leader left open. */
  leadershipChanged(): void {
    this.resumed = false;
    this.open.clear();
    this.progress.clear();
    this.state.markDirty();
  }

  /** One pass; returns how long to wait before the next one (ms). */
  async tick(): Promise<number> {
    const now = this.deps.clock.now();
    if (!this.resumed) {
      for (const w of await this.ledger.openWaves()) {
        this.open.set(w.id, w);
        this.progress.set(w.id, { done: 0, at: now });
      }
      this.resumed = true;
    }
    await this.state.refresh(now);
    await this.supervise(now);
    const dbNow = now + this.state.dbOffsetMs;
    const ctx = this.state.context(dbNow);
    const due: PipelineNode[] = [];
    let next = dbNow + MAX_SLEEP_MS;
    for (const t of this.state.graph.all()) {
      if (t.kind !== 'TARGET') continue;
      const health = targetHealth(ctx, t);
      await this.writeReason(t.id, health.reason);
      if (t.status !== 'ACTIVE') continue;
      // A failure's backoff is kept to the letter (run times are on the workers' clocks, like this one).
      const hold = backoffUntil(ctx, t);
      if (hold > now) {
        next = Math.min(next, hold + this.state.dbOffsetMs);
        continue;
      }
      const last = this.lastWaveStart.get(t.id) ?? this.state.runtime.get(t.id)?.lastStartMs ?? null;
      const at = dueAt(ctx, t, last, health.blocked);
      if (at <= dbNow + BATCH_MS) due.push(t);
      else next = Math.min(next, at - BATCH_MS);
    }
    if (due.length) {
      const plan = planWave(ctx, due, this.unfinished);
      for (const id of plan.idle) this.lastWaveStart.set(id, dbNow);
      if (plan.steps.length) await this.launch(plan, ctx, now);
    }
    const wait = this.open.size ? Math.min(next - dbNow, SUPERVISE_MS) : next - dbNow;
    return Math.max(50, Math.min(MAX_SLEEP_MS, wait));
  }

  /** Nodes left the ring and their queues were drained: their waves cannot finish; call them off. */
  async queuesGone(queues: string[]): Promise<void> {
    const gone = new Set(queues);
    for (const w of [...this.open.values()]) {
      if (w.steps.some((s) => gone.has(s.queue))) await this.callOff(w, 'a node running its steps left');
    }
  }

  private ownerQueue(mviewId: number): string | undefined {
    const node = this.deps.ring.getNode(mviewRingKey(mviewId));
    return node === undefined ? undefined : nodeQueueName(node);
  }

  /** Put one job per step in its owner's queue: first steps ready, the others delayed until woken. */
  private async launch(plan: WavePlan, ctx: PlanContext, now: number): Promise<void> {
    const queues = new Map(plan.steps.map((s) => [s.id, this.ownerQueue(s.id)]));
    if ([...queues.values()].some((q) => q === undefined)) return; // no live node: nothing can run them
    const targets = plan.steps.filter((s) => s.target).map((s) => s.id);
    const expected = Math.max(...targets.map((t) => waveDurationMs(ctx, t)));
    const w: WaveRecord = {
      id: await this.ledger.nextId(),
      startMs: now,
      stallMs: Math.max(MIN_STALL_MS, 4 * expected),
      targets,
      steps: plan.steps.map((s) => ({ ...s, queue: queues.get(s.id)! })),
    };
    await this.ledger.open(w);
    this.open.set(w.id, w);
    this.progress.set(w.id, { done: 0, at: now });
    const finish = new Map<number, number>();
    const deadline = new Map<number, number>();
    for (const t of targets) {
      const d = (ctx.runtime(t)?.dataTimeMs ?? ctx.nowMs) + (ctx.graph.node(t)!.targetLagS ?? 0) * 1000;
      for (const id of [t, ...ctx.graph.waveUpstream(t)]) if (queues.has(id)) deadline.set(id, Math.min(deadline.get(id) ?? d, d));
    }
    // Waiting steps go in first: a first step that finishes at once then finds its readers' jobs.
    const byQueue = new Map<string, Array<{ name: string; data: WaveStepData; opts: object }>>();
    const readyByQueue = new Map<string, Array<{ name: string; data: WaveStepData; opts: object }>>();
    for (const s of w.steps) {
      const ready = Math.max(0, ...s.preds.map((p) => finish.get(p)!));
      finish.set(s.id, ready + ctx.overheadMs + ctx.stepMs(s.id));
      const next = w.steps.filter((r) => r.preds.includes(s.id)).map((r) => ({ mviewId: r.id, queue: r.queue, preds: r.preds }));
      const data: WaveStepData = {
        waveId: w.id,
        mviewId: s.id,
        mview: ctx.graph.node(s.id)!.name,
        target: s.target,
        preds: s.preds,
        next,
        startMs: w.startMs,
        dueAt: w.startMs,
      };
      const delay = s.preds.length ? ready + FALLBACK_EXTRA_MS : 0;
      const group = s.preds.length ? byQueue : readyByQueue;
      const list = group.get(s.queue) ?? [];
      const priority = deadlinePriority(deadline.get(s.id) ?? ctx.nowMs);
      list.push({ name: WAVE_STEP, data, opts: { ...WAVE_JOB_OPTS, jobId: waveStepJobId(w.id, s.id), delay, priority } });
      group.set(s.queue, list);
    }
    for (const group of [byQueue, readyByQueue]) for (const [q, jobs] of group) await this.deps.placer.queue(q).addBulk(jobs);
    for (const t of targets) this.lastWaveStart.set(t, ctx.nowMs);
    for (const st of w.steps) this.unfinished.add(st.id);
    this.stats.waves++;
    this.stats.steps += w.steps.length;
    this.deps.logger.debug({ wave_id: w.id, targets, steps: w.steps.map((s) => s.id), expected_ms: expected }, 'wave started');
  }

  /**
   * Close the waves that ended (every step recorded, or called off) and learn how long their
   * steps waited; call off a wave that stopped progressing; note the steps still to finish.
   */
  private async supervise(now: number): Promise<void> {
    const unfinished = new Set<number>();
    for (const w of [...this.open.values()]) {
      const st = await this.ledger.read(w.id);
      const ended = !st.open || st.cancelled !== null || w.steps.every((s) => st.steps.has(s.id));
      if (!ended) {
        const p = this.progress.get(w.id) ?? { done: 0, at: now };
        if (st.steps.size > p.done) this.progress.set(w.id, { done: st.steps.size, at: now });
        else if (now - p.at > w.stallMs) {
          await this.callOff(w, `no step finished for ${Math.round((now - p.at) / 1000)} s`);
          continue;
        }
        for (const s of w.steps) if (!st.steps.has(s.id)) unfinished.add(s.id);
        continue;
      }
      for (const s of w.steps) {
        const r = st.steps.get(s.id);
        if (r?.r !== 'done' || r.how !== 'ran') continue;
        const inputsEnd = Math.max(w.startMs, ...s.preds.map((p) => doneEnd(st.steps.get(p))));
        this.state.addOverhead(r.start - inputsEnd);
      }
      const failed = [...st.steps.entries()].filter(([, r]) => r.r === 'failed');
      if (failed.length) {
        this.stats.failedWaves++;
        this.deps.logger.info({ wave_id: w.id, failed: failed.map(([id, r]) => ({ mview_id: id, reason: (r as { reason: string }).reason })) }, 'wave stopped below a failed step');
      }
      await this.close(w.id);
    }
    this.unfinished = unfinished;
  }

  private async close(waveId: string): Promise<void> {
    await this.ledger.close(waveId);
    this.open.delete(waveId);
    this.progress.delete(waveId);
  }

  private async callOff(w: WaveRecord, why: string): Promise<void> {
    this.stats.cancelledWaves++;
    this.deps.logger.warn({ wave_id: w.id, targets: w.targets }, `wave called off: ${why}`);
    await this.ledger.cancel(w.id, why);
    const st = await this.ledger.read(w.id);
    for (const s of w.steps) {
      if (!st.steps.has(s.id)) await this.deps.placer.queue(s.queue).remove(waveStepJobId(w.id, s.id)).catch(() => 0);
    }
    await this.close(w.id);
  }

  private async writeReason(id: number, reason: string | null): Promise<void> {
    if ((this.state.storedReasons.get(id) ?? null) === reason) return;
    // Not updated_at: the reason is the planner's own output, not a change for it to scan.
    await this.deps.db('mvs_mview_refresh_info').where({ mview_id: id }).update({ target_unmet_reason: reason });
    this.state.storedReasons.set(id, reason);
    if (reason) this.deps.logger.info({ mview_id: id, reason }, 'target lag cannot be met');
  }
}

function doneEnd(r: StepResult | undefined): number {
  return r?.r === 'done' ? r.end : 0;
}
