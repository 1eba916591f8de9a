import type { Knex } from 'knex';
import { PipelineGraph, scheduleKind, type PipelineNode } from './graph.js';

// Reads of the dependency graph. An MV that reads another MV has a row in mvs_mview_base_tables
// naming it (schema, name), written at CREATE; the unique key of mvs_mviews on (table_schema,
// mview_name) turns that name into an MV id, so the edges need no table of their own.

type Executor = Knex | Knex.Transaction;

export interface MviewNodeRow {
  mview_id: number | string;
  table_schema: string;
  mview_name: string;
  status: string;
  refresh_start: Date | null;
  refresh_interval: number | null;
  target_lag: number | null;
  target_downstream: number | boolean;
}

export const NODE_COLUMNS = [
  'm.mview_id',
  'm.table_schema',
  'm.mview_name',
  'm.status',
  'm.refresh_start',
  'm.refresh_interval',
  'm.target_lag',
  'm.target_downstream',
] as const;

export function nodeOf(r: MviewNodeRow, upstream: number[] = [], readsTables = true): PipelineNode {
  return {
    id: Number(r.mview_id),
    name: `${r.table_schema}.${r.mview_name}`,
    status: r.status === 'SUSPENDED' ? 'SUSPENDED' : 'ACTIVE',
    kind: scheduleKind(r),
    targetLagS: r.target_lag === null ? null : Number(r.target_lag),
    intervalS: r.refresh_interval === null ? null : Number(r.refresh_interval),
    upstream,
    readsTables,
  };
}

/** Every (reader, upstream MV) pair. */
export async function loadEdges(db: Executor): Promise<Array<{ reader: number; upstream: number }>> {
  const rows = (await db('mvs_mview_base_tables as b')
    .join('mvs_mviews as u', function () {
      this.on('u.table_schema', 'b.base_table_schema').andOn('u.mview_name', 'b.base_table_name');
    })
    .select({ reader: 'b.mview_id', upstream: 'u.mview_id' })) as Array<{ reader: number | string; upstream: number | string }>;
  return rows.map((r) => ({ reader: Number(r.reader), upstream: Number(r.upstream) }));
}

export interface NamedEdge {
  reader: number;
  upstream: number;
  readerName: string;
  upstreamName: string;
}

/**
 * Every (reader, upstream MV) pair with both display names, in one statement. Driven from the
 * distinct tables MVs read (a loose scan of their index: one entry per table, however many MVs
 * read it), of which only those that are MVs are expanded: next to nothing when no MV reads an
 * MV, and never a lookup per MV (a join from every dependency row cost 100,000 lookups per
 * status listing at 100,000 MVs).
 */
export async function loadNamedEdges(db: Executor): Promise<NamedEdge[]> {
  const [rows] = (await db.raw(namedEdgesSql())) as [NamedEdgeRow[]];
  return namedEdgesOf(rows);
}

/** The columns of namedEdgesSql's rows. */
export const NAMED_EDGE_COLUMNS = ['reader', 'upstream', 'readerName', 'upstreamName'] as const;

export type NamedEdgeRow = { reader: number | string; upstream: number | string; readerName: string; upstreamName: string };

/**
 * loadNamedEdges' statement; `lead` (SQL of columns, e.g. NULLs) goes before its own columns
 * so it can follow another SELECT in a UNION (the status listing sends both as one statement).
 */
export function namedEdgesSql(lead = ''): string {
  return (
    `SELECT ${lead ? `${lead}, ` : ''}b.mview_id AS reader, u.mview_id AS upstream, ` +
    "CONCAT(r.table_schema, '.', r.mview_name) AS readerName, CONCAT(u.table_schema, '.', u.mview_name) AS upstreamName " +
    'FROM (SELECT DISTINCT base_table_schema, base_table_name FROM mvs_mview_base_tables) AS t ' +
    'STRAIGHT_JOIN mvs_mviews AS u ON u.table_schema = t.base_table_schema AND u.mview_name = t.base_table_name ' +
    'STRAIGHT_JOIN mvs_mview_base_tables AS b ON b.base_table_schema = u.table_schema AND b.base_table_name = u.mview_name ' +
    'STRAIGHT_JOIN mvs_mviews AS r ON r.mview_id = b.mview_id'
  );
}

export function namedEdgesOf(rows: NamedEdgeRow[]): NamedEdge[] {
  return rows.map((r) => ({ reader: Number(r.reader), upstream: Number(r.upstream), readerName: r.readerName, upstreamName: r.upstreamName }));
}

/** The whole graph: every MV (a node even when it reads no MV) and every edge. */
export async function loadGraph(db: Executor): Promise<PipelineGraph> {
  const [rows, edges, tableCounts] = await Promise.all([
    db('mvs_mviews as m').select(...NODE_COLUMNS) as Promise<MviewNodeRow[]>,
    loadEdges(db),
    db('mvs_mview_base_tables').groupBy('mview_id').select('mview_id', db.raw('COUNT(*) AS n')) as Promise<Array<{ mview_id: number | string; n: number | string }>>,
  ]);
  const up = new Map<number, number[]>();
  for (const e of edges) up.set(e.reader, [...(up.get(e.reader) ?? []), e.upstream]);
  const tables = new Map(tableCounts.map((r) => [Number(r.mview_id), Number(r.n)]));
  return new PipelineGraph(
    rows.map((r) => {
      const id = Number(r.mview_id);
      const ups = up.get(id) ?? [];
      // A definition whose tables the parser could not list (no rows) may read anything.
      const readsTables = !tables.has(id) || tables.get(id)! > ups.length;
      return nodeOf(r, ups, readsTables);
    }),
  );
}

/** MVs that record `schema.name` as a table they read, by id. */
export async function readersOfName(db: Executor, schema: string, name: string): Promise<number[]> {
  const ids = await db('mvs_mview_base_tables').where({ base_table_schema: schema, base_table_name: name }).pluck('mview_id');
  return ids.map(Number).sort((a, b) => a - b);
}

/** Display names of MVs, by id (missing ids are left out). */
export async function mviewNames(db: Executor, ids: number[]): Promise<Map<number, string>> {
  if (ids.length === 0) return new Map();
  const rows = (await db('mvs_mviews').whereIn('mview_id', ids).select('mview_id', 'table_schema', 'mview_name')) as MviewNodeRow[];
  return new Map(rows.map((r) => [Number(r.mview_id), `${r.table_schema}.${r.mview_name}`]));
}

/**
 * The MV and every MV upstream of it, with the edges among them: a few queries, one per level,
 * instead of the whole graph (a cascade or a fixed-schedule run needs only this part).
 */
export async function loadUpstreamGraph(db: Executor, mviewId: number): Promise<PipelineGraph> {
  const root = (await db('mvs_mviews as m').where('m.mview_id', mviewId).first(...NODE_COLUMNS)) as MviewNodeRow | undefined;
  if (!root) return new PipelineGraph([]);
  const nodes = new Map<number, PipelineNode>([[mviewId, nodeOf(root)]]);
  let frontier = [mviewId];
  while (frontier.length) {
    const rows = (await db('mvs_mview_base_tables as b')
      .join('mvs_mviews as m', function () {
        this.on('m.table_schema', 'b.base_table_schema').andOn('m.mview_name', 'b.base_table_name');
      })
      .whereIn('b.mview_id', frontier)
      .select({ reader: 'b.mview_id' }, ...NODE_COLUMNS)) as Array<MviewNodeRow & { reader: number | string }>;
    frontier = [];
    for (const r of rows) {
      const id = Number(r.mview_id);
      nodes.get(Number(r.reader))?.upstream.push(id);
      if (!nodes.has(id)) {
        nodes.set(id, nodeOf(r));
        frontier.push(id);
      }
    }
  }
  return new PipelineGraph(nodes.values());
}
