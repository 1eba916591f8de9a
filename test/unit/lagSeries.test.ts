import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { columns, formatLag } from '../../src/cli/format.js';
import { registerMlogSeries, registerMviewSeries, worstByLag, type MviewFigures } from '../../src/metrics/mviewSeries.js';
import { lagSeconds } from '../../src/mv/lag.js';

// Lag (DESIGN.md §2 "Data time and lag") as status and /metrics compute it, the cap on per-MV
// series (MVS_METRICS_MAX_MVIEWS: the worst by lag are kept), and how the CLI prints a lag.

describe('lagSeconds', () => {
  const now = Date.parse('2026-12-03T10:00:10.000Z');
  it('is now - data time in seconds, in 0.1 s steps', () => {
    expect(lagSeconds(new Date('2026-12-03T10:00:07.540Z'), now)).toBe(2.5);
    expect(lagSeconds(Date.parse('2026-12-03T09:00:10.000Z'), now)).toBe(3600);
  });
  it('is null before any data time, and never negative (a data time just ahead of the reading)', () => {
    expect(lagSeconds(null, now)).toBeNull();
    expect(lagSeconds(undefined, now)).toBeNull();
    expect(lagSeconds(new Date(Number.NaN), now)).toBeNull();
    expect(lagSeconds(now + 300, now)).toBe(0);
  });
});

describe('formatLag', () => {
  it('reads at a glance at every scale', () => {
    expect(formatLag(null)).toBe('-');
    expect(formatLag(0)).toBe('0.0s');
    expect(formatLag(4.24)).toBe('4.2s');
    expect(formatLag(59.9)).toBe('59.9s');
    expect(formatLag(192)).toBe('3m12s');
    expect(formatLag(2 * 3600 + 5 * 60 + 7)).toBe('2h05m');
    expect(formatLag(3 * 86_400 + 4 * 3600 + 1)).toBe('3d04h');
  });
});

describe('columns', () => {
  it('lines up 250,000 rows (more cells than a spread call can take)', () => {
    const body = Array.from({ length: 250_000 }, (_, i) => [`mv_${i}`, 'x']);
    const out = columns(['NAME', 'V'], body);
    expect(out).toHaveLength(250_001);
    expect(out[0]).toBe('NAME       V');
    expect(out[1]).toBe('mv_0       x');
    expect(out[250_000]).toBe('mv_249999  x');
  });
});

const mv = (name: string, lag: number | null, over: Partial<MviewFigures> = {}): MviewFigures => ({
  name,
  status: 'ACTIVE',
  lagSeconds: lag,
  lastSuccessTime: '2026-12-03T10:00:00.000Z',
  failures: 0,
  nextSeconds: 60,
  targetLag: null,
  ...over,
});

async function samples(reg: Registry): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of await reg.getMetricsAsJSON()) {
    for (const v of m.values) {
      const labels = Object.entries(v.labels).map(([k, x]) => `${k}=${String(x)}`).join(',');
      out.set(labels ? `${m.name}{${labels}}` : m.name, v.value);
    }
  }
  return out;
}

describe('per-MV series', () => {
  it('worstByLag keeps the MVs furthest behind; MVs without a data time go last', () => {
    const all = [mv('a', 5), mv('b', null), mv('c', 50), mv('d', 20), mv('e', 50)];
    expect(worstByLag(all, 10)).toEqual({ shown: all, omitted: 0 });
    const { shown, omitted } = worstByLag(all, 3);
    expect(shown.map((m) => m.name)).toEqual(['c', 'e', 'd']);
    expect(omitted).toBe(2);
    expect(worstByLag(all, 0)).toEqual({ shown: [], omitted: 5 });
  });

  it('exports lag, last success, failures and the interval of active scheduled MVs, capped, with the count left out', async () => {
    const reg = new Registry();
    registerMviewSeries([reg], [mv('s.ok', 3), mv('s.off', 900, { status: 'SUSPENDED' }), mv('s.bad', 400, { failures: 3 }), mv('s.new', null, { lastSuccessTime: null })], 3);
    const s = await samples(reg);
    expect(s.get('mvs_mview_lag_seconds{mview=s.off}')).toBe(900);
    expect(s.get('mvs_mview_lag_seconds{mview=s.bad}')).toBe(400);
    expect(s.get('mvs_mview_lag_seconds{mview=s.ok}')).toBe(3);
    expect(s.get('mvs_mview_consecutive_failures{mview=s.bad}')).toBe(3);
    expect(s.get('mvs_mview_last_success_timestamp_seconds{mview=s.ok}')).toBe(Date.parse('2026-12-03T10:00:00.000Z') / 1000);
    expect(s.get('mvs_mview_interval_seconds{mview=s.ok}')).toBe(60);
    // Suspended: no schedule running, so nothing to be late against.
    expect(s.has('mvs_mview_interval_seconds{mview=s.off}')).toBe(false);
    // The cap of 3 leaves out the one without a data time.
    expect([...s.keys()].some((k) => k.includes('s.new'))).toBe(false);
    expect(s.get('mvs_mview_series_omitted')).toBe(1);
  });

  it('exports the target lag of active MVs with a numeric target (none for DOWNSTREAM, suspended or scheduled ones)', async () => {
    const reg = new Registry();
    const target = { nextSeconds: null };
    registerMviewSeries([reg], [
      mv('p.b', 4, { ...target, targetLag: 5 }),
      mv('p.a', 4, { ...target, targetLag: 'DOWNSTREAM' }),
      mv('p.off', 90, { ...target, targetLag: 30, status: 'SUSPENDED' }),
      mv('p.grid', 4),
    ], 10);
    const s = await samples(reg);
    expect(s.get('mvs_mview_target_lag_seconds{mview=p.b}')).toBe(5);
    expect([...s.keys()].filter((k) => k.startsWith('mvs_mview_target_lag_seconds'))).toEqual(['mvs_mview_target_lag_seconds{mview=p.b}']);
    expect(s.has('mvs_mview_interval_seconds{mview=p.b}')).toBe(false);
  });

  it('exports each log\'s backlog (when readable) and whether it is broken', async () => {
    const reg = new Registry();
    registerMlogSeries([reg], [
      { table: 's.t', state: 'OK', backlogRows: 12 },
      { table: 's.u', state: 'BROKEN', backlogRows: null },
    ]);
    const s = await samples(reg);
    expect(s.get('mvs_mlog_backlog_rows{mlog=s.t}')).toBe(12);
    expect(s.has('mvs_mlog_backlog_rows{mlog=s.u}')).toBe(false);
    expect(s.get('mvs_mlog_broken{mlog=s.t}')).toBe(0);
    expect(s.get('mvs_mlog_broken{mlog=s.u}')).toBe(1);
  });
});
