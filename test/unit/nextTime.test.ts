import { describe, expect, it } from 'vitest';
import { initialNextTime, nextExecTime, nextTimeAfterSuccess, retryDelayMs } from '../../src/schedule/nextTime.js';

const t = (s: string) => Date.parse(`${s}Z`);

describe('nextExecTime (TiDB calcNextExecTime vectors, DESIGN.md §2)', () => {
  const start = t('2026-01-02T03:04:05.123');
  it('last before start -> start (truncated to the second)', () => {
    expect(nextExecTime(start, 10, t('2026-01-02T03:04:04'))).toBe(t('2026-01-02T03:04:05'));
  });
  it('last exactly at start -> start + interval', () => {
    expect(nextExecTime(start, 10, t('2026-01-02T03:04:05'))).toBe(t('2026-01-02T03:04:15'));
  });
  it('last mid-slot -> next grid point, missed slots not replayed', () => {
    expect(nextExecTime(start, 10, t('2026-01-02T03:04:22.5'))).toBe(t('2026-01-02T03:04:25'));
    expect(nextExecTime(start, 10, t('2026-01-02T05:00:00.1'))).toBe(t('2026-01-02T05:00:05'));
  });
  it('no last run -> start', () => {
    expect(nextExecTime(start, 10, null)).toBe(t('2026-01-02T03:04:05'));
  });
  it('no interval -> no recurring schedule once run', () => {
    expect(nextExecTime(start, null, t('2026-01-02T03:04:06'))).toBeNull();
    expect(nextExecTime(start, 0, t('2026-01-02T03:04:06'))).toBeNull();
    expect(nextExecTime(start, -3, t('2026-01-02T03:04:06'))).toBeNull();
  });
});

describe('initial and post-run next_time', () => {
  const created = t('2026-03-01T00:00:00.700');
  it('NEXT alone starts one interval after creation', () => {
    expect(initialNextTime({ startMs: null, intervalS: 60 }, created, null)).toBe(t('2026-03-01T00:01:00'));
  });
  it('START WITH alone runs once, then no schedule', () => {
    const s = t('2026-03-02T00:00:00');
    expect(initialNextTime({ startMs: s, intervalS: null }, created, null)).toBe(s);
    expect(nextTimeAfterSuccess({ startMs: s, intervalS: null }, created, s + 1500)).toBeNull();
  });
  it('neither means manual only', () => {
    expect(initialNextTime({ startMs: null, intervalS: null }, created, null)).toBeNull();
  });
  it('a run lands the next one on the grid of START WITH', () => {
    const s = t('2026-03-01T00:00:00');
    expect(nextTimeAfterSuccess({ startMs: s, intervalS: 2 }, created, t('2026-03-01T00:00:04.9'))).toBe(t('2026-03-01T00:00:06'));
  });
});

describe('retryDelayMs', () => {
  it('is 5 s, doubling, capped at 5 min', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map(retryDelayMs)).toEqual([
      5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000,
    ]);
    expect(retryDelayMs(0)).toBe(5_000);
  });
});
