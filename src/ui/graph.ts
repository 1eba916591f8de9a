import type { Knex } from 'knex';
import type { Health } from './health.js';
import { listUiMlogs } from './mlogs.js';
import { lightRows } from './overview.js';

// The pipeline around one MV for the MV page's graph: every MV it reads (transitively, down to
// the base tables and their logs) and every MV that reads it (transitively). Dependencies are
// the tables each definition reads, as recorded at CREATE (mvs_mview_base_tables); a table that
// is itself an MV is an MV-over-MV edge. One query per level; the layout is the browser's.

export const GRAPH_MAX_NODES = 200;

export interface GraphNode {
  /** `mv:<id>` or `table:<schema>.<name>` */
  id: string;
  kind: 'mview' | 'table';
  /** Display name `schema.name`; also apart. */
  name: string;
  schema: string;
  objectName: string;
  /** The MV the page is about. */
  current?: boolean;
  health?: Health;
  lagSeconds?: number | null;
  lateAfterS?: number | null;
  /** A base table's MV log, when it has one. */
  log?: { capture: string; state: string; backlogRows: number | null } | null;
}

export interface Graph {
  nodes: GraphNode[];
  edges: Array<{ from: string; to: string }>;
  /** More MVs are connected than GRAPH_MAX_NODES; the graph shows the nearest. */
  truncated: boolean;
}

type Name = { schema: string; name: string };
const key = (n: Name) => `${n.schema}.${n.name}`;

export async function pipelineGraph(db: Knex, mviewId: number): Promise<Graph> {
  const mvs = new Map<number, Name>();
  const tables = new Map<string, Name>();
  const edges = new Map<string, { from: string; to: string }>();
  const edge = (from: string, to: string) => edges.set(`${from}>${to}`, { from, to });
  const full = () => mvs.size + tables.size >= GRAPH_MAX_NODES;
  let truncated = false;

  const [self] = (await db('mvs_mviews').where({ mview_id: mviewId }).select('table_schema', 'mview_name')) as Array<{ table_schema: string; mview_name: string }>;
  if (!self) return { nodes: [], edges: [], truncated: false };
  mvs.set(mviewId, { schema: self.table_schema, name: self.mview_name });

  // Upstream: what the frontier reads; MVs among them are read further.
  let frontier = [mviewId];
  while (frontier.length && !truncated) {
    const reads = (await db('mvs_mview_base_tables as b')
      .leftJoin('mvs_mviews as u', function () {
        this.on('u.table_schema', 'b.base_table_schema').andOn('u.mview_name', 'b.base_table_name');
      })
      .whereIn('b.mview_id', frontier)
      .select('b.mview_id', 'b.base_table_schema', 'b.base_table_name', 'u.mview_id as upstream')) as Array<Record<string, unknown>>;
    const next: number[] = [];
    for (const r of reads) {
      const reader = `mv:${Number(r.mview_id)}`;
      const n = { schema: String(r.base_table_schema), name: String(r.base_table_name) };
      if (r.upstream !== null && r.upstream !== undefined) {
        const id = Number(r.upstream);
        if (!mvs.has(id)) {
          if (full()) {
            truncated = true;
            continue;
          }
          mvs.set(id, n);
          next.push(id);
        }
        edge(`mv:${id}`, reader);
      } else {
        if (!tables.has(key(n))) {
          if (full()) {
            truncated = true;
            continue;
          }
          tables.set(key(n), n);
        }
        edge(`table:${key(n)}`, reader);
      }
    }
    frontier = next;
  }

  // Downstream: the MVs that read the frontier, and what reads them.
  frontier = [mviewId];
  const seenDown = new Set([mviewId]);
  while (frontier.length && !truncated) {
    const names = frontier.map((id) => mvs.get(id)!);
    const readers = (await db('mvs_mview_base_tables as b')
      .join('mvs_mviews as m', 'm.mview_id', 'b.mview_id')
      .whereIn(['b.base_table_schema', 'b.base_table_name'], names.map((n) => [n.schema, n.name]))
      .select('b.mview_id', 'b.base_table_schema', 'b.base_table_name', 'm.table_schema', 'm.mview_name')) as Array<Record<string, unknown>>;
    const byName = new Map(frontier.map((id) => [key(mvs.get(id)!), id]));
    const next: number[] = [];
    for (const r of readers) {
      const id = Number(r.mview_id);
      const up = byName.get(`${String(r.base_table_schema)}.${String(r.base_table_name)}`);
      if (up === undefined) continue;
      if (!mvs.has(id)) {
        if (full()) {
          truncated = true;
          continue;
        }
        mvs.set(id, { schema: String(r.table_schema), name: String(r.mview_name) });
      }
      edge(`mv:${up}`, `mv:${id}`);
      if (!seenDown.has(id)) {
        seenDown.add(id);
        next.push(id);
      }
    }
    frontier = next;
  }

  const [{ rows }, logs] = await Promise.all([
    lightRows(db, [...mvs.keys()]),
    listUiMlogs(db, { offset: 0, limit: GRAPH_MAX_NODES, tables: [...tables.values()] }),
  ]);
  const judged = new Map(rows.map((r) => [r.id, r]));
  const logOf = new Map(logs.items.map((l) => [l.table, l]));
  const nodes: GraphNode[] = [
    ...[...mvs].map(([id, n]): GraphNode => {
      const j = judged.get(id);
      return {
        id: `mv:${id}`,
        kind: 'mview',
        name: key(n),
        schema: n.schema,
        objectName: n.name,
        ...(id === mviewId ? { current: true } : {}),
        health: j?.judgement.health ?? 'pending',
        lagSeconds: j?.lagSeconds ?? null,
        lateAfterS: j?.judgement.lateAfterS ?? null,
      };
    }),
    ...[...tables.values()].map((n): GraphNode => {
      const l = logOf.get(key(n));
      return {
        id: `table:${key(n)}`,
        kind: 'table',
        name: key(n),
        schema: n.schema,
        objectName: n.name,
        log: l ? { capture: l.capture, state: l.state, backlogRows: l.backlogRows } : null,
      };
    }),
  ];
  return { nodes, edges: [...edges.values()], truncated };
}
