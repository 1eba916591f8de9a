import { getJson, mvPath, poll } from './api.js';
import { clearError, healthBadge, lagCell, showError, truncate, updatedNow } from './common.js';
import { fill, h } from './dom.js';
import { fmtCount, fmtDuration, fmtRelative, fmtTime, HEALTH_LABELS } from './format.js';

// The overview: every MV with its state, lag, last result, next run and owner, a page at a time
// (the server filters, counts and sorts, so 10,000 MVs cost the browser one page of rows), then
// the MV logs and the live nodes. Filters live in the URL, so a reload or a link keeps them.

const PAGE_SIZE = 100;
const LOG_PAGE = 50;
const CHIPS = ['all', 'attention', 'failing', 'late', 'behind', 'ok', 'pending', 'suspended', 'unscheduled'];
const CHIP_LABEL = { all: 'All', attention: 'Needs attention', ...HEALTH_LABELS, ok: 'On time' };

function readState() {
  const p = new URLSearchParams(location.search);
  return {
    filter: p.get('filter') || 'all',
    q: p.get('q') || '',
    schema: p.get('schema') || '',
    sort: p.get('sort') || 'name',
    page: Math.max(1, Number(p.get('page')) || 1),
    logPage: Math.max(1, Number(p.get('logPage')) || 1),
  };
}

function writeState(s) {
  const p = new URLSearchParams();
  if (s.filter !== 'all') p.set('filter', s.filter);
  if (s.q) p.set('q', s.q);
  if (s.schema) p.set('schema', s.schema);
  if (s.sort !== 'name') p.set('sort', s.sort);
  if (s.page > 1) p.set('page', String(s.page));
  if (s.logPage > 1) p.set('logPage', String(s.logPage));
  const qs = p.toString();
  history.replaceState(null, '', qs ? `?${qs}` : location.pathname);
}

function mvRow(mv, nowMs) {
  const href = `/ui/mv/${mvPath(mv.schema, mv.mview)}`;
  const reason = mv.lastFailedReason || mv.targetUnmetReason || '';
  return h(
    'tr',
    { 'data-mv': mv.name, 'data-health': mv.health },
    h('td', {}, h('a', { href }, mv.name)),
    h('td', {}, healthBadge(mv.health), mv.running ? h('span', { class: 'sub' }, ' refreshing…') : null),
    h('td', {}, lagCell(mv)),
    h(
      'td',
      {},
      h('span', { class: `result r-${mv.lastResult ?? 'none'}` }, mv.lastResult ?? '–'),
      mv.lastRefreshEnd ? h('span', { class: 'sub', title: fmtTime(mv.lastRefreshEnd) }, ` ${fmtRelative(mv.lastRefreshEnd, nowMs)}`) : null,
      reason ? h('div', { class: 'reason', title: reason }, truncate(reason, 140)) : null,
    ),
    h('td', { title: fmtTime(mv.nextTime) }, mv.status === 'SUSPENDED' ? '–' : mv.nextTime ? fmtRelative(mv.nextTime, nowMs) : typeof mv.targetLag === 'number' ? 'by target lag' : '–'),
    h('td', {}, mv.owner ?? '–'),
    h('td', {}, mv.method, mv.lastRefreshType && mv.lastRefreshType !== mv.method ? h('span', { class: 'sub' }, ` (last ${mv.lastRefreshType})`) : null),
  );
}

function logRow(l) {
  const backlog = l.backlogRows === null ? '–' : `≈ ${fmtCount(l.backlogRows)}`;
  return h(
    'tr',
    { 'data-log': l.log },
    h('td', {}, l.table),
    h('td', {}, l.capture),
    h('td', {}, h('span', { class: `badge s-${l.state}` }, l.state), l.brokenReason ? h('div', { class: 'reason', title: l.brokenReason }, truncate(l.brokenReason, 140)) : null),
    h('td', { class: 'num' }, backlog),
    h('td', { class: 'num' }, l.unpurgedRows === null ? '–' : `≈ ${fmtCount(l.unpurgedRows)}`),
    h('td', { class: 'num' }, String(l.consumers)),
    h('td', {}, l.lastPurgeResult ?? '–', l.lastPurgeTime ? h('span', { class: 'sub' }, ` ${fmtRelative(l.lastPurgeTime, Date.now())}`) : null),
  );
}

/** Binlog capture, when there is any: who captures and how far behind, or that nobody does. */
function captureLine(c) {
  if (!c) return null;
  if (!c.active) {
    return h('span', { class: 'reason' }, `Binlog capture is not running: ${c.binlogLogs} BINLOG log(s) are not being filled (start mvsched capture); stopped at GTID ${c.gtid ?? '–'}.`);
  }
  const bytes = c.lagBytes === null ? '–' : `${fmtCount(c.lagBytes)} bytes`;
  return [h('b', {}, 'Binlog capture: '), `active (${c.holder ?? '–'}), behind by ${c.lagSeconds === null ? '–' : fmtDuration(c.lagSeconds)} / ${bytes}, at GTID ${c.gtid ?? '–'}`];
}

function pager(offset, shown, total, onPage) {
  const first = total === 0 ? 0 : offset + 1;
  return h(
    'div',
    { class: 'pager' },
    h('button', { type: 'button', disabled: offset === 0, onclick: () => onPage(-1) }, '‹ Previous'),
    h('span', {}, ` ${fmtCount(first)}–${fmtCount(offset + shown)} of ${fmtCount(total)} `),
    h('button', { type: 'button', disabled: offset + shown >= total, onclick: () => onPage(1) }, 'Next ›'),
  );
}

export function renderOverview(main) {
  const state = readState();
  const summary = h('div', { class: 'chips', id: 'summary' });
  const search = h('input', { type: 'search', id: 'search', placeholder: 'Search schema.name', value: state.q, 'aria-label': 'Search' });
  const schema = h('select', { id: 'schema', 'aria-label': 'Schema' }, h('option', { value: '' }, 'All schemas'));
  const sort = h(
    'select',
    { id: 'sort', 'aria-label': 'Sort' },
    h('option', { value: 'name' }, 'By name'),
    h('option', { value: 'health' }, 'Worst first'),
    h('option', { value: 'lag' }, 'Largest lag first'),
  );
  sort.value = state.sort;
  const error = h('div', { class: 'error', hidden: true });
  const tbody = h('tbody', { id: 'mviews' });
  const pagerBox = h('div');
  const logsBody = h('tbody', { id: 'mlogs' });
  const logsPager = h('div');
  const logsTitle = h('h2', {}, 'MV logs');
  const captureBox = h('p', { id: 'capture' });
  const nodesBox = h('div', { id: 'nodes', class: 'nodes' });
  fill(
    main,
    h('h1', {}, 'Materialized views'),
    summary,
    h('div', { class: 'controls' }, search, schema, sort),
    error,
    h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ...['Materialized view', 'State', 'Lag', 'Last refresh', 'Next run', 'Owner', 'Method'].map((t) => h('th', {}, t)))), tbody),
    pagerBox,
    h('div', { class: 'columns' },
      h('section', { class: 'wide' }, logsTitle, captureBox, h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ...['Table', 'Capture', 'State', 'Backlog (rows)', 'Not purged', 'MVs', 'Last purge'].map((t) => h('th', {}, t)))), logsBody), logsPager),
      h('section', {}, h('h2', {}, 'Live nodes'), nodesBox),
    ),
  );

  let round;
  const change = (patch) => {
    Object.assign(state, patch);
    writeState(state);
    void round();
  };
  let debounce;
  search.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => change({ q: search.value.trim(), page: 1 }), 250);
  });
  schema.addEventListener('change', () => change({ schema: schema.value, page: 1 }));
  sort.addEventListener('change', () => change({ sort: sort.value, page: 1 }));

  const load = async () => {
    const p = new URLSearchParams({ filter: state.filter, sort: state.sort, offset: String((state.page - 1) * PAGE_SIZE), limit: String(PAGE_SIZE) });
    if (state.q) p.set('q', state.q);
    if (state.schema) p.set('schema', state.schema);
    const [data, logs] = await Promise.all([getJson(`/ui/api/overview?${p}`), getJson(`/ui/api/mlogs?offset=${(state.logPage - 1) * LOG_PAGE}&limit=${LOG_PAGE}`)]);
    const nowMs = Date.parse(data.now);
    const count = (f) => (f === 'all' ? data.total : f === 'attention' ? data.counts.failing + data.counts.late : data.counts[f]);
    fill(
      summary,
      ...CHIPS.filter((f) => f === 'all' || f === state.filter || count(f) > 0).map((f) =>
        h('button', { type: 'button', class: `chip c-${f}${state.filter === f ? ' on' : ''}`, 'data-filter': f, onclick: () => change({ filter: f, page: 1 }) }, `${CHIP_LABEL[f]} ${fmtCount(count(f))}`),
      ),
    );
    if (schema.options.length - 1 !== data.schemas.length) {
      fill(schema, h('option', { value: '' }, 'All schemas'), ...data.schemas.map((s) => h('option', { value: s }, s)));
    }
    schema.value = state.schema;
    fill(tbody, ...(data.items.length ? data.items.map((mv) => mvRow(mv, nowMs)) : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, data.total ? 'No materialized view matches.' : 'No materialized views yet: CREATE MATERIALIZED VIEW ... (mvsched sql).'))]));
    fill(pagerBox, data.matched > data.limit || state.page > 1 ? pager(data.offset, data.items.length, data.matched, (d) => change({ page: state.page + d })) : null);
    fill(logsTitle, `MV logs (${fmtCount(logs.total)}${logs.broken ? `, ${logs.broken} broken` : ''})`);
    fill(captureBox, captureLine(logs.capture));
    captureBox.hidden = !logs.capture;
    fill(logsBody, ...(logs.items.length ? logs.items.map(logRow) : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No MV logs.'))]));
    fill(logsPager, logs.total > logs.limit ? pager(logs.offset, logs.items.length, logs.total, (d) => change({ logPage: state.logPage + d })) : null);
    fill(nodesBox, ...(data.nodes.length ? data.nodes.map((n) => h('div', { class: 'node', 'data-node': n.node }, h('b', {}, n.node), h('span', { class: 'sub' }, ` ${fmtCount(n.mviews)} MVs`))) : [h('p', { class: 'error' }, 'No live worker: nothing is being refreshed.')]));
    clearError(error);
    updatedNow();
  };
  round = poll(load, 5_000, (err) => showError(error, err));
}
