import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { cookieAccepted, isBrowserArea } from '../../src/server/auth.js';
import { CsrfGuard } from '../../src/ui/csrf.js';
import { allowance, judge, matchesFilter, parseHealthFilter, type HealthInput } from '../../src/ui/health.js';
import { parseOverviewQuery } from '../../src/ui/overview.js';
import { loadStatic } from '../../src/ui/assets.js';
// The client's pure helpers are plain ES modules, the same file the browser loads.
import { fmtDuration, lagSeries, normalizeRun, runRows } from '../../src/ui/assets/format.js';

const base: HealthInput = { status: 'ACTIVE', lastResult: 'SUCCESS', failures: 0, lagSeconds: 3, intervalS: 10, targetLag: null };

describe('dashboard health rules', () => {
  it('holds a grid MV to its interval: behind past interval + a quarter (at least 5 s), late past twice it', () => {
    expect(allowance({ intervalS: 10, targetLag: null })).toEqual({ lateAfterS: 20, behindAfterS: 15 });
    expect(allowance({ intervalS: 600, targetLag: null })).toEqual({ lateAfterS: 1200, behindAfterS: 750 });
    expect(judge({ ...base, lagSeconds: 15 }).health).toBe('ok');
    expect(judge({ ...base, lagSeconds: 15.1 }).health).toBe('behind');
    expect(judge({ ...base, lagSeconds: 20.1 }).health).toBe('late');
  });

  it('holds a target-lag MV to its target; DOWNSTREAM and on-demand MVs are never late', () => {
    expect(judge({ ...base, targetLag: 30, intervalS: null, lagSeconds: 29 }).health).toBe('behind');
    expect(judge({ ...base, targetLag: 30, intervalS: null, lagSeconds: 20 }).health).toBe('ok');
    expect(judge({ ...base, targetLag: 30, intervalS: null, lagSeconds: 31 })).toMatchObject({ health: 'late', lateAfterS: 30 });
    expect(judge({ ...base, targetLag: 'DOWNSTREAM', intervalS: null, lagSeconds: 1e6 }).health).toBe('unscheduled');
    expect(judge({ ...base, intervalS: null, lagSeconds: 1e6 }).health).toBe('unscheduled');
  });

  it('puts suspended before failing, failing before lag, and never-run MVs apart', () => {
    expect(judge({ ...base, status: 'SUSPENDED', failures: 3 }).health).toBe('suspended');
    expect(judge({ ...base, failures: 2, lastResult: 'SUCCESS' }).health).toBe('failing');
    expect(judge({ ...base, lastResult: 'FAILED', lagSeconds: 1 }).health).toBe('failing');
    expect(judge({ ...base, lastResult: null, lagSeconds: null }).health).toBe('pending');
  });

  it('filters: attention is failing or late; bad names are refused', () => {
    expect(matchesFilter('failing', 'attention')).toBe(true);
    expect(matchesFilter('late', 'attention')).toBe(true);
    expect(matchesFilter('behind', 'attention')).toBe(false);
    expect(matchesFilter('ok', 'all')).toBe(true);
    expect(parseHealthFilter('late')).toBe('late');
    expect(parseHealthFilter('')).toBe('all');
    expect(parseHealthFilter('broken')).toBeUndefined();
  });

  it('parses the overview query, naming a bad parameter', () => {
    expect(parseOverviewQuery({})).toEqual({ filter: 'all', sort: 'name', offset: 0, limit: 100 });
    expect(parseOverviewQuery({ filter: 'attention', q: '  sales ', schema: 'app', sort: 'lag', offset: '200', limit: '50' })).toEqual({
      filter: 'attention',
      q: 'sales',
      schema: 'app',
      sort: 'lag',
      offset: 200,
      limit: 50,
    });
    expect(() => parseOverviewQuery({ limit: '501' })).toThrow(/^limit:/);
    expect(() => parseOverviewQuery({ offset: 'x' })).toThrow(/^offset:/);
    expect(() => parseOverviewQuery({ filter: 'bad' })).toThrow(/^filter:/);
  });
});

describe('dashboard client helpers', () => {
  it('formats durations for people', () => {
    expect(fmtDuration(0.25)).toBe('250 ms');
    expect(fmtDuration(4.21)).toBe('4.2 s');
    expect(fmtDuration(42)).toBe('42 s');
    expect(fmtDuration(185)).toBe('3 min 5 s');
    expect(fmtDuration(7800)).toBe('2 h 10 min');
    expect(fmtDuration(3 * 86_400 + 4 * 3600)).toBe('3 d 4 h');
    expect(fmtDuration(null)).toBe('–');
  });

  it('reads runs of the history API and of the older detail answer alike', () => {
    const api = normalizeRun({ refreshId: 7, trigger: 'MANUAL', method: 'FAST', status: 'SUCCESS', startTime: '2026-01-01T00:00:00.000Z', endTime: '2026-01-01T00:00:01.500Z', dataTime: '2026-01-01T00:00:00.100Z', rowsInserted: 3, rowsDeleted: 2, node: 'w1', reason: null });
    const old = normalizeRun({ refresh_id: 7, refresh_trigger: 'MANUAL', refresh_method: 'FAST', refresh_status: 'SUCCESS', start_time: '2026-01-01T00:00:00.000Z', end_time: '2026-01-01T00:00:01.500Z', data_time: '2026-01-01T00:00:00.100Z', rows_inserted: 3, rows_deleted: 2, rows_changed: 5, node_id: 'w1', failed_reason: null });
    expect({ ...old, rowsChanged: null }).toEqual(api);
    expect(runRows(api)).toBe(5);
    expect(runRows(normalizeRun({ refresh_id: 1, rows_changed: 9 }))).toBe(9);
  });

  it('draws lag as a sawtooth from the data times: up one second per second, down at each run end', () => {
    const t = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
    const T0 = Date.UTC(2026, 0, 1) / 1000;
    const runs = [
      { status: 'SUCCESS', dataTime: t(10), endTime: t(12) },
      { status: 'FAILED', dataTime: null, endTime: t(16) },
      { status: 'SKIPPED', dataTime: t(20), endTime: t(21) },
      { status: 'SUCCESS', dataTime: t(0), endTime: t(1) }, // any order
    ];
    const { xs, ys } = lagSeries(runs, T0 + 25);
    expect(xs.map((x: number) => Math.round((x - T0) * 1000) / 1000)).toEqual([1, 11.999, 12, 20.999, 21, 25]);
    expect(ys.map((y: number) => Math.round(y * 1000) / 1000)).toEqual([1, 11.999, 2, 10.999, 1, 5]);
  });
});

describe('dashboard security pieces', () => {
  it('takes the login cookie on browser pages and for API reads only', () => {
    expect(isBrowserArea('/')).toBe(true);
    expect(isBrowserArea('/ui')).toBe(true);
    expect(isBrowserArea('/ui/mv/a/b')).toBe(true);
    expect(isBrowserArea('/uix')).toBe(false);
    expect(isBrowserArea('/admin/queues/api/queues')).toBe(true);
    expect(cookieAccepted('POST', '/ui/api/mviews/a/b/refresh')).toBe(true);
    expect(cookieAccepted('GET', '/v1/mviews')).toBe(true);
    expect(cookieAccepted('POST', '/v1/sql')).toBe(false);
    expect(cookieAccepted('DELETE', '/v1/base-tables/a/b/versions')).toBe(false);
    expect(cookieAccepted('GET', '/metrics')).toBe(false);
  });

  it('CSRF: same token for every replica of a deployment, refused cross-site or without it', async () => {
    const a = new CsrfGuard('secret-token-1');
    expect(new CsrfGuard('secret-token-1').token()).toBe(a.token());
    expect(new CsrfGuard('secret-token-2').token()).not.toBe(a.token());
    expect(new CsrfGuard(undefined).token()).not.toBe(new CsrfGuard(undefined).token());
    const app = Fastify();
    app.post('/x', (req, reply) => reply.send({ refusal: a.refusal(req) ?? null }));
    const refusal = async (headers: Record<string, string>) => (await app.inject({ method: 'POST', url: '/x', headers: { host: 'mvs.example:8080', ...headers } })).json().refusal as string | null;
    expect(await refusal({ 'x-mvs-csrf': a.token() })).toBeNull();
    expect(await refusal({ 'x-mvs-csrf': a.token(), origin: 'http://mvs.example:8080', 'sec-fetch-site': 'same-origin' })).toBeNull();
    expect(await refusal({})).toMatch(/missing x-mvs-csrf/);
    expect(await refusal({ 'x-mvs-csrf': 'nope' })).toMatch(/wrong x-mvs-csrf/);
    expect(await refusal({ 'x-mvs-csrf': a.token(), origin: 'http://evil.example:8080' })).toMatch(/Origin/);
    expect(await refusal({ 'x-mvs-csrf': a.token(), origin: 'null' })).toMatch(/Origin/);
    expect(await refusal({ 'x-mvs-csrf': a.token(), 'sec-fetch-site': 'same-site' })).toMatch(/Sec-Fetch-Site/);
    await app.close();
  });

  it('serves the libraries from node_modules and the page from its template', () => {
    const s = loadStatic();
    expect([...s.vendor.keys()].sort()).toEqual(['dagre.js', 'uplot.css', 'uplot.js']);
    expect(s.vendor.get('uplot.js')!.body.toString()).toMatch(/export\s*\{[^}]*as default/);
    expect(s.vendor.get('dagre.js')!.body.toString()).not.toMatch(/sourceMappingURL/);
    expect(s.template).toContain('%CSRF%');
    expect(s.assets.has('app.js')).toBe(true);
    expect(s.assets.has('page.html')).toBe(false);
    // Nothing the page loads reaches outside this server (the machine may be offline).
    for (const [name, f] of s.assets) expect(f.body.toString(), name).not.toMatch(/https?:\/\/(?!www\.w3\.org)[a-z]/i);
    for (const [name, f] of s.vendor) expect(f.body.toString(), name).not.toMatch(/(\bimport\s*\(?|\bfrom|url\()\s*["']https?:/);
  });
});
