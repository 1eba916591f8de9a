import dagre from '../vendor/dagre.js';
import { svg } from './dom.js';
import { fmtCount, fmtDuration, HEALTH_LABELS } from './format.js';

// The pipeline around an MV, drawn as SVG from a dagre layout (left to right: base tables and
// their logs, the MVs that read them, the MVs that read those). MV boxes are coloured by health
// and link to their own pages; the MV of the page is outlined.

const LINE_H = 16;
let ruler;

/** Width of a label as the SVG will draw it (the same font as app.css gives svg.graph text). */
function textWidth(text, bold) {
  ruler ??= document.createElement('canvas').getContext('2d');
  ruler.font = `${bold ? '600 ' : ''}12px ${getComputedStyle(document.body).fontFamily}`;
  return ruler.measureText(text).width;
}

function lines(n) {
  if (n.kind === 'table') {
    const log = n.log;
    return [n.name, log ? `log ${log.capture} ${log.state}${log.backlogRows !== null ? ` · backlog ≈ ${fmtCount(log.backlogRows)}` : ''}` : 'table (no MV log)'];
  }
  const lag = n.lagSeconds === null || n.lagSeconds === undefined ? '' : `lag ${fmtDuration(n.lagSeconds)} · `;
  return [n.name, `${lag}${HEALTH_LABELS[n.health] ?? n.health}`];
}

function box(n, layout) {
  const { x, y, width, height } = layout;
  const cls = n.kind === 'table' ? `gnode table${n.log?.state === 'BROKEN' ? ' broken' : ''}` : `gnode mview h-${n.health}${n.current ? ' current' : ''}`;
  const text = svg('text', { x: x - width / 2 + 10, y: y - height / 2 + 18 });
  layout.lines.forEach((l, i) => text.append(svg('tspan', { x: x - width / 2 + 10, dy: i === 0 ? 0 : LINE_H, class: i === 0 ? 'title' : 'sub' }, l)));
  const g = svg('g', { class: cls, 'data-node': n.name, 'data-kind': n.kind }, svg('rect', { x: x - width / 2, y: y - height / 2, width, height, rx: n.kind === 'table' ? 2 : 8 }), text);
  if (n.kind !== 'mview' || n.current) return g;
  return svg('a', { href: `/ui/mv/${encodeURIComponent(n.schema)}/${encodeURIComponent(n.objectName)}` }, g);
}

/** Replace `container`'s content with the drawing of `graph` ({nodes, edges, truncated}). */
export function drawGraph(container, graph) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 16, ranksep: 56, marginx: 8, marginy: 8 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of graph.nodes) {
    const ls = lines(n);
    g.setNode(n.id, { width: Math.ceil(Math.max(...ls.map((l, i) => textWidth(l, i === 0)))) + 22, height: ls.length * LINE_H + 12, lines: ls });
  }
  for (const e of graph.edges) g.setEdge(e.from, e.to);
  dagre.layout(g);
  const { width, height } = g.graph();
  const root = svg(
    'svg',
    { class: 'graph', width: Math.ceil(width), height: Math.ceil(height), viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, role: 'img', 'aria-label': 'Pipeline: what this MV reads and what reads it' },
    svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }))),
  );
  for (const e of g.edges()) {
    const pts = g.edge(e).points;
    const d = pts.map((p, i) => `${i === 0 ? 'M' : 'L'} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(' ');
    root.append(svg('path', { d, class: 'gedge', 'marker-end': 'url(#arrow)', 'data-from': e.v, 'data-to': e.w }));
  }
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  for (const id of g.nodes()) root.append(box(byId.get(id), g.node(id)));
  container.replaceChildren(root);
}
