import { describe, expect, it } from 'vitest';
import { Notifier } from '../../src/planner/notifier.js';

describe('Notifier', () => {
  it('coalesces wake-ups that arrive while nobody waits into one', async () => {
    const n = new Notifier();
    n.wake();
    n.wake();
    n.wake();
    expect(await n.wait(10_000)).toBe(true);
    // The burst was consumed by one wait: the next wait times out.
    expect(await n.wait(5)).toBe(false);
  });

  it('wakes a waiter at once', async () => {
    const n = new Notifier();
    const p = n.wait(60_000);
    n.wake();
    expect(await p).toBe(true);
  });
});
