import uPlot from '../vendor/uplot.js';
import { fmtCount, fmtDuration, lagSeries, runRows, runSeconds } from './format.js';

// The MV page's charts (uPlot): each refresh run as a point at its start time, its height the
// run's length, coloured by outcome (failures red and larger, SKIPPED grey), with the rows it
// wrote as bars on a second axis; and the MV's lag over time, drawn from the runs' data times,
// against the lag past which the MV counts as late.

const COLORS = { SUCCESS: '#2e7d32', FAILED: '#d32f2f', SKIPPED: '#9e9e9e', rows: 'rgba(21, 101, 192, 0.25)', lag: '#6a1b9a', late: '#e65100' };

const secondsAxis = (label) => ({ label, scale: 's', size: 70, values: (_u, vals) => vals.map((v) => (v === null ? '' : fmtDuration(v))) });

function pointsOnly(label, color, size) {
  return { label, scale: 's', stroke: color, width: 0, paths: () => null, points: { show: true, space: 0, size, fill: color, stroke: color }, value: (_u, v) => (v === null ? '–' : fmtDuration(v)) };
}

/** Keep a chart as wide as its box. */
function followWidth(chart, box, height) {
  const ro = new ResizeObserver(() => chart.setSize({ width: Math.max(300, box.clientWidth), height }));
  ro.observe(box);
}

function historyData(runs) {
  const done = runs.filter((r) => r.startTime && r.status !== 'RUNNING').sort((a, b) => Date.parse(a.startTime) - Date.parse(b.startTime));
  const x = [];
  const ok = [];
  const failed = [];
  const skipped = [];
  const rows = [];
  for (const r of done) {
    const t = Date.parse(r.startTime) / 1000;
    // uPlot needs strictly increasing x: runs started in the same millisecond are nudged apart.
    x.push(x.length && t <= x[x.length - 1] ? x[x.length - 1] + 0.001 : t);
    const s = runSeconds(r);
    ok.push(r.status === 'SUCCESS' ? s : null);
    failed.push(r.status === 'FAILED' ? (s ?? 0) : null);
    skipped.push(r.status === 'SKIPPED' ? (s ?? 0) : null);
    rows.push(runRows(r));
  }
  return [x, ok, failed, skipped, rows];
}

export function historyChart(box, runs, height = 240) {
  const opts = {
    width: Math.max(300, box.clientWidth),
    height,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true }, s: { range: (_u, _min, max) => [0, Math.max(1, max ?? 1) * 1.1] }, rows: { range: (_u, _min, max) => [0, Math.max(1, max ?? 1) * 1.1] } },
    axes: [{}, secondsAxis('run length'), { label: 'rows', scale: 'rows', side: 1, size: 60, grid: { show: false }, values: (_u, vals) => vals.map((v) => fmtCount(v)) }],
    series: [
      {},
      pointsOnly('succeeded', COLORS.SUCCESS, 8),
      pointsOnly('failed', COLORS.FAILED, 12),
      pointsOnly('skipped', COLORS.SKIPPED, 8),
      { label: 'rows written', scale: 'rows', fill: COLORS.rows, stroke: COLORS.rows, paths: uPlot.paths.bars({ size: [0.35, 8] }), points: { show: false }, value: (_u, v) => (v === null ? '–' : fmtCount(v)) },
    ],
  };
  const chart = new uPlot(opts, historyData(runs), box);
  followWidth(chart, box, height);
  return { update: (next) => chart.setData(historyData(next)) };
}

function lagData(runs, nowS, lateAfterS) {
  const { xs, ys } = lagSeries(runs, nowS);
  return [xs, ys, xs.map(() => lateAfterS ?? null)];
}

export function lagChart(box, runs, nowS, lateAfterS, height = 200) {
  const opts = {
    width: Math.max(300, box.clientWidth),
    height,
    scales: { x: { time: true }, s: { range: (_u, _min, max) => [0, Math.max(1, max ?? 1, lateAfterS ?? 0) * 1.1] } },
    axes: [{}, secondsAxis('lag')],
    series: [
      {},
      { label: 'lag', scale: 's', stroke: COLORS.lag, width: 2, fill: 'rgba(106, 27, 154, 0.08)', points: { show: false }, value: (_u, v) => (v === null ? '–' : fmtDuration(v)) },
      { label: 'late after', scale: 's', stroke: COLORS.late, width: 1, dash: [6, 4], points: { show: false }, value: (_u, v) => (v === null ? '–' : fmtDuration(v)) },
    ],
  };
  const chart = new uPlot(opts, lagData(runs, nowS, lateAfterS), box);
  followWidth(chart, box, height);
  return { update: (next, now, late) => chart.setData(lagData(next, now, late)) };
}
