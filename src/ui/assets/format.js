// Pure helpers of the dashboard's client: how times, lags and runs read. No DOM here, so the
// unit tests import this module in Node.

/** "850 ms", "4.2 s", "3 min 5 s", "2 h 10 min", "3 d 4 h". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  const s = Math.abs(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) {
    const m = Math.floor(s / 60);
    const r = Math.round(s - m * 60);
    return r ? `${m} min ${r} s` : `${m} min`;
  }
  if (s < 86_400) {
    const h = Math.floor(s / 3600);
    const m = Math.round((s - h * 3600) / 60);
    return m ? `${h} h ${m} min` : `${h} h`;
  }
  const d = Math.floor(s / 86_400);
  const h = Math.round((s - d * 86_400) / 3600);
  return h ? `${d} d ${h} h` : `${d} d`;
}

/** "5 s ago" / "in 5 s" relative to nowMs; "–" for no time. */
export function fmtRelative(iso, nowMs) {
  if (!iso) return '–';
  const diff = (Date.parse(iso) - nowMs) / 1000;
  if (Math.abs(diff) < 1) return 'now';
  return diff < 0 ? `${fmtDuration(-diff)} ago` : `in ${fmtDuration(diff)}`;
}

/** Local date and time to the second, for tooltips and tables. */
export function fmtTime(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtCount(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US');
}

export const HEALTH_LABELS = {
  failing: 'failing',
  late: 'late',
  behind: 'behind',
  ok: 'on time',
  pending: 'not refreshed yet',
  suspended: 'suspended',
  unscheduled: 'on demand',
};

/** What the MV's lag is held against: "target 30 s", "every 5 s", or null (on demand). */
export function lagAllowance(mv) {
  if (typeof mv.targetLag === 'number') return `target ${fmtDuration(mv.targetLag)}`;
  if (mv.targetLag === 'DOWNSTREAM') return 'target: as its readers need';
  if (mv.nextSeconds) return `every ${fmtDuration(mv.nextSeconds)}`;
  return null;
}

/**
 * One run of the history API (`{refreshId, trigger, ...}`); rows of the older detail answer
 * (`refresh_id`, `refresh_status`, ...) are read the same way, so the page works with either.
 */
export function normalizeRun(r) {
  const pick = (...keys) => {
    for (const k of keys) if (r[k] !== undefined) return r[k];
    return null;
  };
  const iso = (v) => (v === null || v === undefined ? null : new Date(v).toISOString());
  const num = (v) => (v === null || v === undefined ? null : Number(v));
  return {
    refreshId: Number(pick('refreshId', 'refresh_id')),
    trigger: pick('trigger', 'refresh_trigger'),
    method: pick('method', 'refresh_method'),
    status: pick('status', 'refresh_status'),
    scheduledTime: iso(pick('scheduledTime', 'scheduled_time')),
    startTime: iso(pick('startTime', 'start_time')),
    endTime: iso(pick('endTime', 'end_time')),
    dataTime: iso(pick('dataTime', 'data_time')),
    rowsInserted: num(pick('rowsInserted', 'rows_inserted')),
    rowsDeleted: num(pick('rowsDeleted', 'rows_deleted')),
    rowsChanged: num(pick('rowsChanged', 'rows_changed')),
    node: pick('node', 'node_id'),
    reason: pick('reason', 'failed_reason'),
  };
}

/** Rows a run wrote: inserted + deleted when recorded apart, else the older total. */
export function runRows(run) {
  if (run.rowsInserted !== null || run.rowsDeleted !== null) return (run.rowsInserted ?? 0) + (run.rowsDeleted ?? 0);
  return run.rowsChanged;
}

export function runSeconds(run) {
  if (!run.startTime || !run.endTime) return null;
  return (Date.parse(run.endTime) - Date.parse(run.startTime)) / 1000;
}

/**
 * Lag over time from the runs (any order) that recorded a data time: it drops to end - dataTime
 * when a run ends and grows one second per second until the next, so each run gives two points
 * (just before its end, on the previous data time; at its end, on its own). Times in epoch
 * seconds; `nowS` closes the last segment.
 */
export function lagSeries(runs, nowS) {
  const done = runs
    .filter((r) => (r.status === 'SUCCESS' || r.status === 'SKIPPED') && r.dataTime && r.endTime)
    .map((r) => ({ end: Date.parse(r.endTime) / 1000, data: Date.parse(r.dataTime) / 1000 }))
    .sort((a, b) => a.end - b.end);
  const xs = [];
  const ys = [];
  let prev = null;
  for (const r of done) {
    // A run's data time never moves back; one that reads older data than the last keeps the newer.
    const data = prev === null ? r.data : Math.max(prev, r.data);
    if (prev !== null) {
      xs.push(r.end - 0.001);
      ys.push(Math.max(0, r.end - 0.001 - prev));
    }
    xs.push(r.end);
    ys.push(Math.max(0, r.end - data));
    prev = data;
  }
  if (prev !== null && nowS > xs[xs.length - 1]) {
    xs.push(nowS);
    ys.push(Math.max(0, nowS - prev));
  }
  return { xs, ys };
}
