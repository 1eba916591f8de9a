import { Gauge, type Registry } from 'prom-client';
import type { MlogStatus } from '../mlog/status.js';
import type { MviewStatus } from '../mv/status.js';

// Per-MV and per-log series of /metrics (DESIGN.md §3 "Metrics and alerts"), made at scrape time
// from the status listings, which read every MV and log in a bounded number of queries. Labels:
// mview="schema.name", mlog="schema.table" (the log's base table).

export type MviewFigures = Pick<MviewStatus, 'name' | 'status' | 'lagSeconds' | 'lastSuccessTime' | 'failures' | 'nextSeconds' | 'targetLag'>;
export type MlogFigures = Pick<MlogStatus, 'table' | 'state' | 'backlogRows'>;

/**
 * The MVs to export when at most `max` may be: the worst by lag first (an MV without a data time
 * has no lag series, so it comes last); returns the chosen ones and how many were left out.
 */
export function worstByLag<T extends Pick<MviewFigures, 'lagSeconds' | 'name'>>(mviews: T[], max: number): { shown: T[]; omitted: number } {
  if (mviews.length <= max) return { shown: mviews, omitted: 0 };
  const key = (m: T) => m.lagSeconds ?? Number.NEGATIVE_INFINITY;
  const sorted = [...mviews].sort((a, b) => key(b) - key(a) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { shown: sorted.slice(0, max), omitted: mviews.length - max };
}

export function registerMviewSeries(registers: Registry[], mviews: MviewFigures[], maxMviews: number): void {
  const g = (name: string, help: string) => new Gauge({ name, help, labelNames: ['mview'], registers });
  const lag = g('mvs_mview_lag_seconds', 'Seconds since the data time of the MV (now - data_time, database clock)');
  const success = g('mvs_mview_last_success_timestamp_seconds', 'End of the last successful refresh of the MV (Unix time)');
  const failures = g('mvs_mview_consecutive_failures', 'Refreshes of the MV that failed in a row (0 after a success)');
  const interval = g('mvs_mview_interval_seconds', 'Refresh interval (NEXT) of an active scheduled MV');
  const target = g('mvs_mview_target_lag_seconds', 'TARGET LAG of an active MV refreshed to a target (DOWNSTREAM ones have none)');
  const { shown, omitted } = worstByLag(mviews, maxMviews);
  new Gauge({
    name: 'mvs_mview_series_omitted',
    help: 'MVs left out of the per-MV series by MVS_METRICS_MAX_MVIEWS (the worst by lag are kept)',
    registers,
  }).set(omitted);
  for (const m of shown) {
    const labels = { mview: m.name };
    if (m.lagSeconds !== null) lag.set(labels, m.lagSeconds);
    if (m.lastSuccessTime !== null) success.set(labels, Date.parse(m.lastSuccessTime) / 1000);
    failures.set(labels, m.failures);
    // A suspended MV has no schedule running, so nothing to be late against.
    if (m.status === 'ACTIVE' && m.nextSeconds) interval.set(labels, m.nextSeconds);
    if (m.status === 'ACTIVE' && typeof m.targetLag === 'number') target.set(labels, m.targetLag);
  }
}

export function registerMlogSeries(registers: Registry[], mlogs: MlogFigures[]): void {
  const backlog = new Gauge({
    name: 'mvs_mlog_backlog_rows',
    help: 'Rows the MV log holds that are not purged yet (estimated from sequence numbers)',
    labelNames: ['mlog'],
    registers,
  });
  const broken = new Gauge({ name: 'mvs_mlog_broken', help: '1 while the MV log is BROKEN (cannot have captured every change), else 0', labelNames: ['mlog'], registers });
  for (const l of mlogs) {
    if (l.backlogRows !== null) backlog.set({ mlog: l.table }, l.backlogRows);
    broken.set({ mlog: l.table }, l.state === 'BROKEN' ? 1 : 0);
  }
}
