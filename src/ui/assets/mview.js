import { ApiError, getJson, mvPath, poll, postJson } from './api.js';
import { historyChart, lagChart } from './charts.js';
import { boardLink, clearError, healthBadge, lagCell, showError, truncate, updatedNow } from './common.js';
import { fill, h, meta } from './dom.js';
import { drawGraph } from './graph.js';
import { fmtCount, fmtDuration, fmtRelative, fmtTime, lagAllowance, normalizeRun, runRows, runSeconds } from './format.js';
import { explainBlock } from './explain.js';

// One MV: its state, the pipeline it belongs to, its refresh history as a timeline and a table,
// its lag over time, its definition and why it is (not) fast-refreshable, and a refresh button.

const HISTORY_LIMIT = 200;
const TABLE_ROWS = 25;

function nameFromPath() {
  const parts = location.pathname.split('/').filter(Boolean); // ui, mv, <schema>, <name>
  return { schema: decodeURIComponent(parts[2] ?? ''), name: decodeURIComponent(parts[3] ?? '') };
}

const api = new Set(meta('mvs-api').split(' '));

/** Newest first. The history API pages; a server without it gives the detail's recent runs. */
async function loadRuns(base, status) {
  if (!api.has('history')) return (status.history ?? []).map(normalizeRun);
  const page = await getJson(`/v1/mviews/${base}/history?limit=${HISTORY_LIMIT}`);
  return page.items.map(normalizeRun);
}

function fact(label, ...value) {
  return [h('dt', {}, label), h('dd', {}, ...value)];
}

function runRow(r) {
  const rows = runRows(r);
  const split = r.rowsInserted !== null || r.rowsDeleted !== null ? ` (+${fmtCount(r.rowsInserted ?? 0)} / −${fmtCount(r.rowsDeleted ?? 0)})` : '';
  return h(
    'tr',
    { 'data-run': r.refreshId, class: `run-${r.status}` },
    h('td', { class: 'num' }, String(r.refreshId)),
    h('td', { title: fmtTime(r.startTime) }, fmtTime(r.startTime)),
    h('td', {}, r.trigger ?? '–'),
    h('td', {}, r.method ?? '–'),
    h('td', {}, h('span', { class: `result r-${r.status}` }, r.status)),
    h('td', { class: 'num' }, r.status === 'RUNNING' ? '…' : fmtDuration(runSeconds(r))),
    h('td', { class: 'num' }, rows === null ? '–' : `${fmtCount(rows)}${split}`),
    h('td', {}, fmtTime(r.dataTime)),
    h('td', {}, r.node ?? '–'),
    h('td', {}, r.reason ? h('span', { class: 'reason', title: r.reason }, truncate(r.reason, 120)) : ''),
  );
}

export function renderMview(main) {
  const { schema, name } = nameFromPath();
  const base = mvPath(schema, name);
  const board = meta('mvs-board');
  const cluster = meta('mvs-cluster') === '1';
  const queueName = (q) => (cluster ? `{${q}}` : q);
  const badge = h('span');
  const error = h('div', { class: 'error', hidden: true });
  const facts = h('dl', { class: 'facts' });
  const method = h('select', { id: 'method', 'aria-label': 'Refresh method' }, h('option', { value: '' }, 'its own method'), h('option', { value: 'FAST' }, 'FAST'), h('option', { value: 'COMPLETE' }, 'COMPLETE'));
  const button = h('button', { type: 'button', id: 'refresh', class: 'primary' }, 'Refresh now');
  const job = h('span', { id: 'job', class: 'sub' });
  const boardJob = h('a', { id: 'board-job', href: board }, 'Jobs in Bull Board');
  const graphBox = h('div', { id: 'graph', class: 'graphbox' }, h('p', { class: 'muted' }, 'Loading…'));
  const graphNote = h('p', { class: 'sub' });
  const historyBox = h('div', { id: 'history-chart', class: 'chart' });
  const lagBox = h('div', { id: 'lag-chart', class: 'chart' });
  const runsBody = h('tbody', { id: 'runs' });
  let allRuns = false;
  const moreRuns = h('button', { type: 'button', id: 'more-runs', hidden: true }, 'Show more');
  const definition = h('pre', { id: 'definition', class: 'sql' });
  const explain = h('div', { id: 'explain' });
  fill(
    main,
    h('p', { class: 'crumbs' }, h('a', { href: '/ui' }, 'Materialized views'), ' › ', schema),
    h('h1', {}, name, ' ', badge),
    h('div', { class: 'actions' }, button, ' with ', method, ' ', job, ' · ', boardJob),
    error,
    facts,
    h('section', {}, h('h2', {}, 'Pipeline'), graphNote, graphBox),
    h('section', {}, h('h2', {}, 'Refresh history'), h('p', { class: 'sub' }, 'Each run at its start: its length (failed runs red, skipped grey) and the rows it wrote (bars).'), historyBox),
    h('section', {}, h('h2', {}, 'Lag over time'), h('p', { class: 'sub' }, 'How old the data the MV showed was, from the data time each run recorded; dashed: late past this.'), lagBox),
    h('section', {}, h('h2', {}, 'Runs'), h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ...['#', 'Started', 'Trigger', 'Method', 'Result', 'Took', 'Rows', 'Data time', 'Node', 'Reason'].map((t) => h('th', {}, t)))), runsBody), moreRuns),
    h('section', {}, h('h2', {}, 'Definition'), definition, explain),
  );

  let charts;
  let maxRunId = 0;
  let waitingFor; // the refresh this page asked for: { jobId, after }
  let explained = false;

  const load = async () => {
    const status = await getJson(`/v1/mviews/${base}`);
    const [runs, graph] = await Promise.all([loadRuns(base, status), getJson(`/ui/api/mviews/${base}/graph`)]);
    const self = graph.nodes.find((n) => n.current) ?? {};
    const mv = { ...status, health: self.health ?? 'ok', lagSeconds: status.lagSeconds ?? self.lagSeconds ?? null };
    const nowMs = Date.now();
    fill(badge, healthBadge(mv.health));
    const reads = status.dependsOn ?? graph.edges.filter((e) => e.to === self.id).map((e) => e.from.replace(/^(mv|table):/, ''));
    const readBy = status.readBy ?? graph.edges.filter((e) => e.from === self.id).map((e) => graph.nodes.find((n) => n.id === e.to)?.name);
    fill(
      facts,
      ...fact('Status', status.status, status.lastResult === 'FAILED' || status.failures ? h('span', { class: 'sub' }, ` · ${status.failures} failure(s) in a row`) : null),
      ...fact('Lag', lagCell(mv), status.dataTime ? h('span', { class: 'sub', title: fmtTime(status.dataTime) }, ` · data of ${fmtTime(status.dataTime)}`) : null),
      ...fact('Schedule', lagAllowance(status) ?? 'on demand', status.startWith ? h('span', { class: 'sub' }, ` · from ${fmtTime(status.startWith)}`) : null),
      ...fact('Method', status.method, status.lastRefreshType ? h('span', { class: 'sub' }, ` · last run ${status.lastRefreshType}`) : null),
      ...fact('Last refresh', h('span', { class: `result r-${status.lastResult ?? 'none'}` }, status.lastResult ?? '–'), ` ${fmtRelative(status.lastRefreshEnd, nowMs)}`, status.lastFailedReason ? h('div', { class: 'reason' }, status.lastFailedReason) : null),
      ...(status.targetUnmetReason ? fact('Target lag', h('span', { class: 'reason' }, status.targetUnmetReason)) : []),
      ...fact('Next run', status.nextTime ? `${fmtRelative(status.nextTime, nowMs)} (${fmtTime(status.nextTime)})` : '–'),
      ...fact('Owner node', status.owner ?? '–'),
      ...fact('Reads', reads.length ? reads.join(', ') : '–'),
      ...fact('Read by', readBy.length ? readBy.join(', ') : '–'),
      ...fact('Freshness', status.freshness ?? '–', status.stalePartitions?.length ? h('span', { class: 'sub' }, ` · ${status.stalePartitions.length} stale partition(s)`) : null),
      ...fact('Runs', fmtCount(status.refreshCount)),
    );
    boardJob.href = status.owner ? boardLink(board, queueName(`node-${status.owner}`), `mv-${status.mviewId}`) : board;
    fill(definition, status.definition ?? '');

    fill(graphNote, graph.truncated ? 'Only the nearest MVs are drawn: more are connected.' : '');
    drawGraph(graphBox, graph);

    const nowS = status.dataTime && typeof status.lagSeconds === 'number' ? Date.parse(status.dataTime) / 1000 + status.lagSeconds : nowMs / 1000;
    if (!charts) charts = { history: historyChart(historyBox, runs), lag: lagChart(lagBox, runs, nowS, self.lateAfterS ?? null) };
    else {
      charts.history.update(runs);
      charts.lag.update(runs, nowS, self.lateAfterS ?? null);
    }
    fill(runsBody, ...(runs.length ? runs.slice(0, allRuns ? runs.length : TABLE_ROWS).map(runRow) : [h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'No runs yet.'))]));
    moreRuns.hidden = allRuns || runs.length <= TABLE_ROWS;
    fill(moreRuns, `Show all ${runs.length} loaded runs`);
    maxRunId = Math.max(maxRunId, ...runs.map((r) => r.refreshId));
    if (waitingFor) await followRefresh(runs);
    if (!explained) {
      explained = true;
      getJson(`/ui/api/mviews/${base}/explain`).then((x) => fill(explain, explainBlock(x)), (err) => fill(explain, `explain failed: ${err.message}`));
    }
    clearError(error);
    updatedNow();
  };

  /** After our refresh: its job's state when the API has jobs, and the run it added. */
  async function followRefresh(runs) {
    const mine = runs.find((r) => r.refreshId > waitingFor.after && r.trigger !== 'SCHEDULED');
    let state = 'queued';
    if (api.has('jobs')) {
      try {
        state = (await getJson(`/v1/jobs/${encodeURIComponent(waitingFor.jobId)}`)).state ?? state;
      } catch (err) {
        // Finished jobs leave the queue after a while; the run in the history tells the rest.
        if (!(err instanceof ApiError)) throw err;
      }
    }
    const link = h('a', { href: boardLink(board, waitingFor.queue, waitingFor.jobId) }, `job ${waitingFor.jobId}`);
    if (mine && mine.status !== 'RUNNING') {
      fill(job, 'refresh ', link, ': ', h('span', { class: `result r-${mine.status}` }, mine.status), ` (run #${mine.refreshId}, ${fmtDuration(runSeconds(mine))})`);
      waitingFor = undefined;
      button.disabled = false;
    } else fill(job, 'refresh ', link, `: ${mine ? 'running' : state}…`);
  }

  let round;
  moreRuns.addEventListener('click', () => {
    allRuns = true;
    void round();
  });
  button.addEventListener('click', async () => {
    button.disabled = true;
    fill(job, 'asking for a refresh…');
    try {
      const res = await postJson(`/ui/api/mviews/${base}/refresh`, method.value ? { method: method.value } : {});
      waitingFor = { jobId: String(res.jobId), queue: res.queue, after: maxRunId };
      fill(job, 'refresh ', h('a', { href: boardLink(board, res.queue, String(res.jobId)) }, `job ${res.jobId}`), ': queued…');
      void round();
    } catch (err) {
      fill(job, h('span', { class: 'reason' }, `refresh refused: ${err.message}`));
      button.disabled = false;
    }
  });
  round = poll(load, 3_000, (err) => showError(error, err));
}
