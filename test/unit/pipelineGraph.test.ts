import { describe, expect, it } from 'vitest';
import { PipelineGraph, scheduleKind, waveRefreshed, type PipelineNode } from '../../src/pipeline/graph.js';
import { propagateDataTime } from '../../src/pipeline/dataTime.js';

function node(id: number, upstream: number[] = [], over: Partial<PipelineNode> = {}): PipelineNode {
  return { id, name: `s.m${id}`, status: 'ACTIVE', kind: 'DOWNSTREAM', targetLagS: null, intervalS: null, upstream, readsTables: upstream.length === 0, ...over };
}

// raw -> 1 -> 2 -> 4, 1 -> 3 -> 4 (a diamond under 4), 5 alone, 6 reads 4 and 5.
const diamond = () => new PipelineGraph([node(1), node(2, [1]), node(3, [1]), node(4, [2, 3]), node(5), node(6, [4, 5])]);

describe('pipeline graph', () => {
  it('knows readers and closures both ways', () => {
    const g = diamond();
    expect(g.readers(1)).toEqual([2, 3]);
    expect(g.readers(4)).toEqual([6]);
    expect([...g.upstreamClosure(6)].sort()).toEqual([1, 2, 3, 4, 5]);
    expect([...g.downstreamClosure(1)].sort()).toEqual([2, 3, 4, 6]);
    expect([...g.downstreamClosure(6)]).toEqual([]);
  });

  it('orders upstream first, deterministically, and drops edges to MVs it does not know or to itself', () => {
    const g = new PipelineGraph([node(9, [4, 4, 99, 9]), node(4, [1]), node(1)]);
    expect(g.upstream(9)).toEqual([4]);
    expect(g.topoOrder([9, 4, 1])).toEqual([1, 4, 9]);
    expect(diamond().topoOrder([4, 3, 2, 1, 6, 5])).toEqual([1, 2, 3, 4, 5, 6]);
    // Only the ids asked for, in an order that respects the edges among them.
    expect(diamond().topoOrder([6, 2])).toEqual([2, 6]);
  });

  it('refuses to order a cycle (CREATE never makes one, a hand-edited table could)', () => {
    const g = new PipelineGraph([node(1, [2]), node(2, [1])]);
    expect(() => g.topoOrder([1, 2])).toThrow(/cycle/);
  });

  it('walks upstream only through the MVs a predicate accepts', () => {
    const g = new PipelineGraph([node(1), node(2, [1], { kind: 'FIXED' }), node(3, [2]), node(4, [3, 1])]);
    expect([...g.upstreamWhere([4], waveRefreshed)].sort()).toEqual([1, 3]);
    expect([...g.upstreamWhere([4], () => true)].sort()).toEqual([1, 2, 3]);
    // What waves refresh for an MV: the same walk, remembered (the planner asks every tick).
    expect([...g.waveUpstream(4)].sort()).toEqual([1, 3]);
    expect(g.waveUpstream(4)).toBe(g.waveUpstream(4));
    expect([...g.waveUpstream(3)]).toEqual([]);
  });

  it('finds the cycle a new MV would close through a name recorded as a plain table', () => {
    // m2 recorded a table named like the new MV; the new MV reads m3, which reads m2.
    const g = new PipelineGraph([node(1), node(2, [1]), node(3, [2])]);
    expect(g.cycleWith([3], [2])).toEqual([2]);
    expect(g.cycleWith([1], [2])).toEqual([]);
  });

  it('tells the schedule kind from the stored columns', () => {
    expect(scheduleKind({ target_lag: 5, target_downstream: 0, refresh_start: null })).toBe('TARGET');
    expect(scheduleKind({ target_lag: null, target_downstream: 1, refresh_start: null })).toBe('DOWNSTREAM');
    expect(scheduleKind({ target_lag: null, target_downstream: false, refresh_start: new Date() })).toBe('FIXED');
    expect(scheduleKind({ target_lag: null, target_downstream: false, refresh_start: null })).toBe('MANUAL');
    expect(waveRefreshed(node(1, [], { kind: 'TARGET' }))).toBe(true);
    expect(waveRefreshed(node(1, [], { status: 'SUSPENDED' }))).toBe(false);
    expect(waveRefreshed(node(1, [], { kind: 'FIXED' }))).toBe(false);
  });
});

describe('data time over MVs', () => {
  const d = (s: number) => new Date(s * 1000);
  it('is the minimum of its own read and the MVs it read', () => {
    expect(propagateDataTime(d(100), { min: d(90), count: 2 })).toEqual(d(90));
    expect(propagateDataTime(d(100), { min: d(110), count: 1 })).toEqual(d(100));
    expect(propagateDataTime(d(100), undefined)).toEqual(d(100));
    expect(propagateDataTime(null, { min: d(90), count: 1 })).toBeNull();
  });
});
