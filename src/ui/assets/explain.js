import { h } from './dom.js';

// "Why not FAST?": what explain-mv says about the MV's definition now (logs may have been
// created or dropped since the MV was), and what was recorded when it last changed.

export function explainBlock(x) {
  const ex = x.explain;
  const now = ex
    ? ex.fastRefreshable
      ? h('p', { class: 'ok-text' }, 'Fast-refreshable now', ex.kind ? `: ${ex.kind === 'spj' ? 'select-project-join' : ex.kind}` : '', ex.table ? ` over ${ex.table}` : ex.join?.length ? ` over a join of ${ex.join.length} tables` : '', ex.mlog ? `, from the log ${ex.mlog}` : '', '.')
      : h('p', {}, h('b', {}, 'Not fast-refreshable: '), h('span', { class: 'reason' }, ex.reason ?? 'no reason given'))
    : h('p', { class: 'reason' }, `explain-mv could not plan the definition: ${x.explainError ?? 'unknown error'}`);
  const methodNote =
    x.method === 'FAST'
      ? 'It refreshes FAST only.'
      : x.method === 'FORCE'
        ? 'REFRESH FORCE: FAST when it can, COMPLETE otherwise.'
        : 'It refreshes COMPLETE (rebuilt from its definition each time).';
  // A join: each table occurrence with its log, and how a FAST refresh applies changes.
  const join = ex?.join?.length
    ? h('ul', { class: 'join' }, ...ex.join.map((j) => h('li', {}, `${j.alias}: ${j.table}`, h('span', { class: 'sub' }, ` (log ${j.mlog})`))))
    : null;
  const rules = ex?.rules?.length ? h('ul', { class: 'rules sub' }, ...ex.rules.map((r) => h('li', {}, r))) : null;
  return h(
    'div',
    { class: 'explain' },
    h('h3', {}, 'Refresh method'),
    h('p', {}, h('b', {}, x.method), ' — ', methodNote),
    now,
    join,
    rules,
    x.fastReason && x.fastReason !== ex?.reason ? h('p', { class: 'sub' }, `Recorded for the MV: ${x.fastReason}`) : null,
  );
}
