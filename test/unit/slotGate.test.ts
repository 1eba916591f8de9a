import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { GateClosed, GateFull, SlotGate } from '../../src/worker/slotGate.js';

// The worker's run slots (src/worker/slotGate.ts): scheduled jobs reach the worker before their
// slot and must start at it, never before; at most `slots` run at once; waiting jobs hold no
// slot; close() lets every waiter go. Fake timers drive setTimeout and Date.now together.

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(new Date('2026-12-03T10:00:00.000Z'));
});

afterEach(() => {
  vi.useRealTimers();
});

/** A run that records when it started and finishes when told. */
function run(log: Array<[string, number]>, name: string) {
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  return {
    fn: async () => {
      log.push([name, Date.now()]);
      await done;
      return name;
    },
    finish: () => finish(),
  };
}

describe('SlotGate', () => {
  it('starts a run at its time, not a millisecond before, even when timers fire early', async () => {
    const gate = new SlotGate(2, systemClock);
    const log: Array<[string, number]> = [];
    const t0 = Date.now();
    const a = run(log, 'a');
    const p = gate.run(a.fn, t0 + 250);
    await vi.advanceTimersByTimeAsync(249);
    expect(log).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(log).toEqual([['a', t0 + 250]]);
    a.finish();
    expect(await p).toBe('a');

    // The timer fires when the wall clock still reads before the slot (it was set back 5 ms
    // meanwhile): the gate waits for the rest instead of starting early.
    let skew = 0;
    const skewed = new SlotGate(1, { now: () => Date.now() + skew });
    const b = run(log, 'b');
    const at = Date.now() + 250;
    const q = skewed.run(b.fn, at);
    skew = -5;
    await vi.advanceTimersByTimeAsync(250);
    expect(log.map(([n]) => n)).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(5);
    expect(log.map(([n]) => n)).toEqual(['a', 'b']);
    expect(log[1]![1] + skew).toBe(at);
    b.finish();
    await q;
  });

  it('runs at most `slots` at once, the others start in the order they became due; waiting for a time takes no slot', async () => {
    const gate = new SlotGate(2, systemClock);
    const log: Array<[string, number]> = [];
    const t0 = Date.now();
    const runs = ['a', 'b', 'c', 'd'].map((n) => run(log, n));
    // a and b are due now and take both slots; c is due at +100, d at +50.
    const ps = [gate.run(runs[0]!.fn), gate.run(runs[1]!.fn), gate.run(runs[2]!.fn, t0 + 100), gate.run(runs[3]!.fn, t0 + 50)];
    await vi.advanceTimersByTimeAsync(0);
    expect(log.map(([n]) => n)).toEqual(['a', 'b']);
    expect(gate.waiting).toBe(2);
    await vi.advanceTimersByTimeAsync(200);
    // Due, but no slot: nothing more started.
    expect(log.map(([n]) => n)).toEqual(['a', 'b']);
    runs[1]!.finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(log.map(([n]) => n)).toEqual(['a', 'b', 'd']);
    runs[0]!.finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(log.map(([n]) => n)).toEqual(['a', 'b', 'd', 'c']);
    runs[2]!.finish();
    runs[3]!.finish();
    expect(await Promise.all(ps)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('close() lets every waiter go with GateClosed at once; runs in progress finish; nothing starts after', async () => {
    const gate = new SlotGate(1, systemClock);
    const log: Array<[string, number]> = [];
    const t0 = Date.now();
    const a = run(log, 'a');
    const pa = gate.run(a.fn);
    const early = gate.run(run(log, 'early').fn, t0 + 60_000); // waiting for its time
    const queued = gate.run(run(log, 'queued').fn); // due, waiting for the slot
    const settledEarly = early.catch((e: unknown) => e);
    const settledQueued = queued.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(0);
    gate.close();
    expect(await settledEarly).toBeInstanceOf(GateClosed);
    expect(await settledQueued).toBeInstanceOf(GateClosed);
    expect(gate.waiting).toBe(0);
    a.finish();
    expect(await pa).toBe('a');
    await expect(gate.run(run(log, 'late').fn)).rejects.toBeInstanceOf(GateClosed);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(log.map(([n]) => n)).toEqual(['a']);
  });

  it('with maxWaiting, a run that would queue behind that many others is refused with GateFull (and runs nothing)', async () => {
    const gate = new SlotGate(1, systemClock);
    const log: Array<[string, number]> = [];
    const a = run(log, 'a');
    const b = run(log, 'b');
    const pa = gate.run(a.fn, undefined, 1);
    const pb = gate.run(b.fn, undefined, 1);
    await vi.advanceTimersByTimeAsync(0);
    await expect(gate.run(run(log, 'c').fn, undefined, 1)).rejects.toBeInstanceOf(GateFull);
    a.finish();
    await pa;
    await vi.advanceTimersByTimeAsync(0);
    // b took the slot; one may wait again.
    const d = run(log, 'd');
    const pd = gate.run(d.fn, undefined, 1);
    b.finish();
    await pb;
    await vi.advanceTimersByTimeAsync(0);
    d.finish();
    await pd;
    expect(log.map(([n]) => n)).toEqual(['a', 'b', 'd']);
  });
});
