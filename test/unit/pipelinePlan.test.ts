import { describe, expect, it } from 'vitest';
import { PipelineGraph, type PipelineNode } from '../../src/pipeline/graph.js';
import {
  backoffUntil,
  dueAt,
  marginMs,
  MIN_WAVE_GAP_MS,
  planWave,
  targetHealth,
  waveDurationMs,
  type MvRuntime,
  type PlanContext,
} from '../../src/pipeline/plan.js';
import { deadlinePriority } from '../../src/pipeline/waveJobs.js';

function node(id: number, upstream: number[] = [], over: Partial<PipelineNode> = {}): PipelineNode {
  return { id, name: `s.m${id}`, status: 'ACTIVE', kind: 'DOWNSTREAM', targetLagS: null, intervalS: null, upstream, readsTables: upstream.length === 0, ...over };
}

const NOW = 1_000_000;
const rt = (dataTimeMs: number | null, over: Partial<MvRuntime> = {}): MvRuntime => ({
  dataTimeMs,
  lastStartMs: dataTimeMs,
  lastEndMs: dataTimeMs,
  lastResult: 'SUCCESS',
  failures: 0,
  lastFailedReason: null,
  ...over,
});

function ctx(nodes: PipelineNode[], state: Record<number, MvRuntime>, opts: { stepMs?: number; overheadMs?: number; now?: number } = {}): PlanContext {
  return {
    graph: new PipelineGraph(nodes),
    runtime: (id) => state[id],
    stepMs: () => opts.stepMs ?? 200,
    overheadMs: opts.overheadMs ?? 100,
    nowMs: opts.now ?? NOW,
  };
}

// raw -> 1 (DOWNSTREAM) -> 2 (TARGET LAG 5)
const chain = () => [node(1), node(2, [1], { kind: 'TARGET', targetLagS: 5, readsTables: false })];

describe('when a target-lag MV must start', () => {
  it('starts as late as it can: data time + target - the wave\'s expected duration - the margin', () => {
    const c = ctx(chain(), { 1: rt(NOW - 3000), 2: rt(NOW - 3000) });
    // Two steps on the critical path, each 100 ms of overhead + 200 ms of run.
    expect(waveDurationMs(c, 2)).toBe(600);
    expect(marginMs(5000)).toBe(750);
    expect(dueAt(c, c.graph.node(2)!, null, false)).toBe(NOW - 3000 + 5000 - 600 - 750);
  });

  it('counts the longest path of a diamond, not the sum of its steps', () => {
    const nodes = [node(1), node(2, [1]), node(3, [1]), node(4, [2, 3], { kind: 'TARGET', targetLagS: 60, readsTables: false })];
    const c = ctx(nodes, {}, { stepMs: 1000, overheadMs: 0 });
    expect(waveDurationMs(c, 4)).toBe(3000);
  });

  it('keeps a minimum gap after its previous wave; a blocked target waits a whole period', () => {
    const c = ctx(chain(), { 1: rt(NOW - 60_000), 2: rt(NOW - 60_000) });
    const t = c.graph.node(2)!;
    expect(dueAt(c, t, NOW - 200, false)).toBe(NOW - 200 + MIN_WAVE_GAP_MS);
    expect(dueAt(c, t, NOW - 200, true)).toBe(NOW - 200 + 5000 - 600 - 750);
  });

  it('backs off after a failure in its waves: 5 s after the first, doubling', () => {
    const state = { 1: rt(NOW - 9000, { lastResult: 'FAILED', failures: 2, lastEndMs: NOW - 1000 }), 2: rt(NOW - 9000) };
    const c = ctx(chain(), state);
    expect(backoffUntil(c, c.graph.node(2)!)).toBe(NOW - 1000 + 10_000);
    expect(dueAt(c, c.graph.node(2)!, null, false)).toBe(NOW + 9000);
  });
});

describe('what a wave refreshes', () => {
  it('refreshes the chain upstream first, each step waiting for the ones it reads', () => {
    const c = ctx(chain(), { 1: rt(NOW - 4000), 2: rt(NOW - 4000) });
    expect(planWave(c, [c.graph.node(2)!], new Set())).toEqual({
      steps: [
        { id: 1, target: false, preds: [] },
        { id: 2, target: true, preds: [1] },
      ],
      deferred: [],
      idle: [],
    });
  });

  it('refreshes a diamond\'s shared upstream once', () => {
    const nodes = [node(1), node(2, [1]), node(3, [1]), node(4, [2, 3], { kind: 'TARGET', targetLagS: 10, readsTables: false })];
    const c = ctx(nodes, { 1: rt(NOW - 9000), 2: rt(NOW - 9000), 3: rt(NOW - 9000), 4: rt(NOW - 9000) });
    const plan = planWave(c, [c.graph.node(4)!], new Set());
    expect(plan.steps).toEqual([
      { id: 1, target: false, preds: [] },
      { id: 2, target: false, preds: [1] },
      { id: 3, target: false, preds: [1] },
      { id: 4, target: true, preds: [2, 3] },
    ]);
  });

  it('merges targets due together: a shared upstream once, a target that another reads is still a target', () => {
    // 1 -> 2 (TARGET 10) -> 3 (TARGET 5); 1 -> 4 (TARGET 20)
    const nodes = [
      node(1),
      node(2, [1], { kind: 'TARGET', targetLagS: 10 }),
      node(3, [2], { kind: 'TARGET', targetLagS: 5, readsTables: false }),
      node(4, [1], { kind: 'TARGET', targetLagS: 20, readsTables: false }),
    ];
    const c = ctx(nodes, { 1: rt(NOW - 9000), 2: rt(NOW - 9000), 3: rt(NOW - 9000), 4: rt(NOW - 9000) });
    const plan = planWave(c, [c.graph.node(3)!, c.graph.node(4)!, c.graph.node(2)!], new Set());
    expect(plan.steps).toEqual([
      { id: 1, target: false, preds: [] },
      { id: 2, target: true, preds: [1] },
      { id: 3, target: true, preds: [2] },
      { id: 4, target: true, preds: [1] },
    ]);
  });

  it('reads an upstream refreshed a moment ago as it is, and stops walking there', () => {
    // 1 -> 2 -> 3 (TARGET 10): 2 was refreshed 1 s ago (under 20 % of 10 s), 1 long ago.
    const nodes = [node(1), node(2, [1]), node(3, [2], { kind: 'TARGET', targetLagS: 10, readsTables: false })];
    const c = ctx(nodes, { 1: rt(NOW - 60_000), 2: rt(NOW - 1000), 3: rt(NOW - 9000) });
    expect(planWave(c, [c.graph.node(3)!], new Set()).steps).toEqual([{ id: 3, target: true, preds: [] }]);
  });

  it('never refreshes an MV on a grid, on demand or suspended: those are read as they are', () => {
    const nodes = [node(1, [], { kind: 'FIXED', intervalS: 2 }), node(2, [], { kind: 'MANUAL' }), node(3, [], { status: 'SUSPENDED' }), node(4, [1, 2, 3], { kind: 'TARGET', targetLagS: 10, readsTables: true })];
    const c = ctx(nodes, { 1: rt(NOW - 9000), 2: rt(NOW - 9000), 3: rt(NOW - 9000), 4: rt(NOW - 9000) });
    expect(planWave(c, [c.graph.node(4)!], new Set()).steps).toEqual([{ id: 4, target: true, preds: [] }]);
  });

  it('defers a target whose upstream is in a wave still running', () => {
    const c = ctx(chain(), { 1: rt(NOW - 9000), 2: rt(NOW - 9000) });
    expect(planWave(c, [c.graph.node(2)!], new Set([1]))).toEqual({ steps: [], deferred: [2], idle: [] });
    expect(planWave(c, [c.graph.node(2)!], new Set([2]))).toEqual({ steps: [], deferred: [2], idle: [] });
  });

  it('leaves a target idle when nothing it reads can be newer than it (its only source suspended)', () => {
    const nodes = [node(1, [], { status: 'SUSPENDED' }), node(2, [1], { kind: 'TARGET', targetLagS: 5, readsTables: false })];
    const c = ctx(nodes, { 1: rt(NOW - 60_000), 2: rt(NOW - 60_000) });
    expect(planWave(c, [c.graph.node(2)!], new Set())).toEqual({ steps: [], deferred: [], idle: [2] });
  });
});

describe('why a target cannot be met', () => {
  const t = (upstream: number[], over: Partial<PipelineNode> = {}) => node(9, upstream, { kind: 'TARGET', targetLagS: 5, readsTables: false, ...over });

  it('is met when nothing holds it back', () => {
    const c = ctx(chain(), { 1: rt(NOW - 1000), 2: rt(NOW - 1000) });
    expect(targetHealth(c, c.graph.node(2)!)).toEqual({ reason: null, blocked: false });
  });

  it('names a suspended upstream', () => {
    const c = ctx([node(1, [], { status: 'SUSPENDED' }), t([1])], { 1: rt(NOW - 1000), 9: rt(NOW - 1000) });
    expect(targetHealth(c, c.graph.node(9)!)).toEqual({ reason: expect.stringMatching(/^upstream s\.m1 is SUSPENDED/), blocked: true });
  });

  it('names an upstream on a slower grid, but not one on a faster grid', () => {
    const slow = ctx([node(1, [], { kind: 'FIXED', intervalS: 60 }), t([1])], { 1: rt(NOW - 100), 9: rt(NOW - 100) });
    expect(targetHealth(slow, slow.graph.node(9)!).reason).toMatch(/^upstream s\.m1 refreshes every 60 s \(NEXT 60\)/);
    const fast = ctx([node(1, [], { kind: 'FIXED', intervalS: 2 }), t([1])], { 1: rt(NOW - 100), 9: rt(NOW - 100) });
    expect(targetHealth(fast, fast.graph.node(9)!).reason).toBeNull();
  });

  it('names an on-demand upstream only once its data is too old', () => {
    const fresh = ctx([node(1, [], { kind: 'MANUAL' }), t([1])], { 1: rt(NOW - 1000), 9: rt(NOW - 1000) });
    expect(targetHealth(fresh, fresh.graph.node(9)!).reason).toBeNull();
    const old = ctx([node(1, [], { kind: 'MANUAL' }), t([1])], { 1: rt(NOW - 60_000), 9: rt(NOW - 60_000) });
    expect(targetHealth(old, old.graph.node(9)!)).toEqual({ reason: expect.stringMatching(/^upstream s\.m1 is refreshed only on demand/), blocked: true });
  });

  it('names a failing upstream of its waves and the failure', () => {
    const c = ctx(chain(), { 1: rt(NOW - 9000, { lastResult: 'FAILED', failures: 3, lastFailedReason: "Table 's.raw' doesn't exist" }), 2: rt(NOW - 9000) });
    expect(targetHealth(c, c.graph.node(2)!)).toEqual({
      reason: "upstream s.m1 failed, which stops its waves there (3 in a row, retried with backoff): Table 's.raw' doesn't exist",
      blocked: false,
    });
  });

  it('says when its waves take more than half the target (they do not fit in it)', () => {
    const slow = ctx(chain(), { 1: rt(NOW - 100), 2: rt(NOW - 100) }, { stepMs: 1300 });
    expect(targetHealth(slow, slow.graph.node(2)!).reason).toBe('its waves take about 2.8 s (s.m2 1.3 s, s.m1 1.3 s), more than half its target lag of 5 s');
    const fits = ctx(chain(), { 1: rt(NOW - 100), 2: rt(NOW - 100) }, { stepMs: 1100 });
    expect(targetHealth(fits, fits.graph.node(2)!).reason).toBeNull();
  });

  it('never starts waves closer than half the target, however long they are expected to take', () => {
    const c = ctx(chain(), { 1: rt(NOW - 100), 2: rt(NOW - 100) }, { stepMs: 4000 });
    expect(dueAt(c, c.graph.node(2)!, null, false)).toBe(NOW - 100 + 2500);
  });
});

describe('wave step priority', () => {
  it('is the deadline in seconds, earlier first, within BullMQ\'s 1..2^21-1', () => {
    const t = Date.UTC(2026, 11, 3, 10, 0, 0);
    expect(deadlinePriority(t + 5_000)).toBeLessThan(deadlinePriority(t + 60_000));
    expect(deadlinePriority(t + 60_000) - deadlinePriority(t + 5_000)).toBe(55);
    for (const ms of [0, t, t + 999, 2_000_000_000 - 1, 2_000_000_000 * 1000 + 17]) {
      expect(deadlinePriority(ms)).toBeGreaterThanOrEqual(1);
      expect(deadlinePriority(ms)).toBeLessThan(2 ** 21);
    }
  });
});
