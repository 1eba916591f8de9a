import type { Knex } from 'knex';
import type { HashRing } from '../ring/hashRing.js';
import { mviewRingKey } from '../queue/names.js';
import { FRESHNESS_COLUMNS, freshnessQuery, judgeFreshness, type Freshness } from '../versions/freshness.js';
import { dataAgeUsSql, lagOfAge } from './lag.js';
import { NAMED_EDGE_COLUMNS, namedEdgesOf, namedEdgesSql, type NamedEdge, type NamedEdgeRow } from '../pipeline/repository.js';

export interface MviewStatus {
  mviewId: number;
  /** Display name `schema.name`; also apart in `schema` and `mview`. */
  name: string;
  schema: string;
  mview: string;
  method: string;
  status: string;
  startWith: string | null;
  nextSeconds: number | null;
  lastResult: string | null;
  lastRefreshEnd: string | null;
  lastRefreshType: string | null;
  /** End of the last SUCCESS run (a SKIPPED run is no success, though it moves dataTime). */
  lastSuccessTime: string | null;
  /** Database time of the snapshot its contents reflect (DESIGN.md §2 "Data time and lag"). */
  dataTime: string | null;
  /** now - dataTime on the database's clock, in seconds (src/mv/lag.ts); null before any data time. */
  lagSeconds: number | null;
  nextTime: string | null;
  owner: string | null;
  failures: number;
  lastFailedReason: string | null;
  refreshCount: number;
  /** From reported base-table versions: fresh / stale, or unversioned when a base table reports none. */
  freshness: 'fresh' | 'stale' | 'unversioned';
  stalePartitions: string[];
  /** When versions of its base tables were last reported (freshness is per those reports). */
  versionsReportedAt: string | null;
  /** TARGET LAG: seconds, "DOWNSTREAM", or null (a grid or on demand). */
  targetLag: number | 'DOWNSTREAM' | null;
  /** Why its target lag cannot be met now (the leading planner says); null when it is met. */
  targetUnmetReason: string | null;
  /** Display names of the MVs it reads, and of the MVs that read it. */
  dependsOn: string[];
  readBy: string[];
}

/** The ring that names owners, or a promise of it (read from Redis while the database answers). */
export type RingSource = HashRing | Promise<HashRing> | undefined;

/** A slice of the listing in its (schema, name) order: rows after `after`, at most `limit`. */
export interface StatusSlice {
  after?: { schema: string; name: string };
  limit: number;
}

/**
 * SQL for a DATETIME(3) column as ISO 8601 text ('2026-12-03T10:00:05.123Z'; the session is UTC):
 * the column's own text ('2026-12-03 10:00:05.123', three digits as its precision says) with a T
 * and a Z. DATE_FORMAT took about a quarter of the database's time per listing page; doing it in
 * JavaScript cost the API process as much. Only for DATETIME(3) columns (test/integration/statusListing).
 */
const isoSql = (column: string) => `REPLACE(CONCAT(${column}, 'Z'), ' ', 'T')`;

/**
 * The listing's columns, named and shaped as MviewStatus: the database formats times and names,
 * and each row the driver builds is the answer itself, completed in place (owner, lag, freshness
 * are there as NULL so completing them keeps the rows' shape). Building a second object per MV,
 * and a Date per time, cost more than the query at 100,000 MVs.
 */
function listingColumns(db: Knex): Array<string | Knex.Raw> {
  return [
    'm.mview_id as mviewId',
    db.raw("CONCAT(m.table_schema, '.', m.mview_name) AS name"),
    'm.table_schema as schema',
    'm.mview_name as mview',
    'm.refresh_method as method',
    'm.status as status',
    db.raw(`${isoSql('m.refresh_start')} AS startWith`),
    'm.refresh_interval as nextSeconds',
    'ri.last_refresh_result as lastResult',
    db.raw(`${isoSql('ri.refresh_endtime')} AS lastRefreshEnd`),
    'ri.last_refresh_type as lastRefreshType',
    db.raw(`${isoSql('ri.last_success_endtime')} AS lastSuccessTime`),
    db.raw(`${isoSql('ri.data_time')} AS dataTime`),
    // The data's age in microseconds, made a lag in place (src/mv/lag.ts).
    db.raw(`${dataAgeUsSql('ri.data_time')} AS lagSeconds`),
    db.raw(`${isoSql('ri.next_time')} AS nextTime`),
    db.raw('NULL AS owner'),
    'ri.consecutive_failures as failures',
    'ri.last_failed_reason as lastFailedReason',
    'ri.refresh_count as refreshCount',
    db.raw('NULL AS freshness'),
    db.raw('NULL AS stalePartitions'),
    db.raw('NULL AS versionsReportedAt'),
    db.raw("CASE WHEN m.target_downstream THEN 'DOWNSTREAM' ELSE m.target_lag END AS targetLag"),
    'ri.target_unmet_reason as targetUnmetReason',
    db.raw('NULL AS dependsOn'),
    db.raw('NULL AS readBy'),
  ];
}

/**
 * One row per MV for `mvsched status`, the HTTP API and /metrics; owner from the caller's ring.
 * A bounded number of queries whatever the number of MVs (the listing, freshness in at most
 * three, dependency edges and their names): never one per MV.
 */
export async function listMviewStatus(
  db: Knex,
  ring: RingSource,
  filter?: { schema: string; name: string },
  slice?: StatusSlice,
): Promise<MviewStatus[]> {
  const [{ rows, fresh, edges }, owners] = await Promise.all([readListing(db, filter, slice), ring]);
  const deps = dependencyNames(edges);
  for (const r of rows) complete(r, fresh.get(Number(r.mviewId)), owners, deps.get(Number(r.mviewId)));
  return rows as unknown as MviewStatus[];
}

type Deps = { dependsOn: string[]; readBy: string[] };

/** For each MV: the MVs it reads and the MVs that read it, by display name, sorted. */
function dependencyNames(edges: NamedEdge[]): Map<number, Deps> {
  // Every edge (few: only MVs over MVs have one); the listed MVs pick theirs.
  const out = new Map<number, Deps>();
  const entry = (id: number) => out.get(id) ?? out.set(id, { dependsOn: [], readBy: [] }).get(id)!;
  for (const e of edges) {
    entry(e.reader).dependsOn.push(e.upstreamName);
    entry(e.upstream).readBy.push(e.readerName);
  }
  for (const v of out.values()) {
    v.dependsOn.sort();
    v.readBy.sort();
  }
  return out;
}

type Row = Record<keyof MviewStatus, unknown>;

/**
 * The listing's rows, their freshness and every dependency edge: two statements sent at once.
 * One MV or a page names its MVs by a query of their ids that freshness starts from (an IN list
 * of thousands of ids would cost more to send and parse); the whole listing reads everything.
 */
async function readListing(db: Knex, filter?: Key, slice?: StatusSlice): Promise<{ rows: Row[]; fresh: Map<number, Freshness>; edges: NamedEdge[] }> {
  const listed = (q: Knex.QueryBuilder) => {
    q.orderBy(['m.table_schema', 'm.mview_name']);
    if (filter) q.where({ 'm.table_schema': filter.schema, 'm.mview_name': filter.name });
    if (slice?.after) after(q, slice.after);
    if (slice) q.limit(slice.limit);
    return q;
  };
  // A page walks the name index: without a cursor the optimizer would sort every MV to keep the
  // first thousand (60 ms instead of 10 at 100,000 MVs). The whole listing sorts them all anyway.
  const from = slice ? db.raw('`mvs_mviews` AS `m` FORCE INDEX (`uniq_mview_name`)') : 'mvs_mviews as m';
  const listing = listed(db.from(from).leftJoin('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id').select(listingColumns(db)));
  const ids = filter || slice ? listed(db('mvs_mviews as m').select('m.mview_id')) : undefined;
  const [rows, { fresh, edges }] = await Promise.all([listing as unknown as Promise<Row[]>, freshnessAndEdges(db, ids)]);
  return { rows, fresh, edges };
}

/**
 * Freshness of the MVs `ids` names (every MV without it) and every dependency edge, as one
 * statement: a UNION ALL whose rows carry NULL in the other side's columns. One statement less
 * per page: at 100 pages a walk, each statement's round trip cost the API more than its rows.
 */
async function freshnessAndEdges(db: Knex, ids?: Knex.QueryBuilder): Promise<{ fresh: Map<number, Freshness>; edges: NamedEdge[] }> {
  const nulls = (columns: readonly string[]) => columns.map((c) => `NULL AS ${c}`).join(', ');
  const both = freshnessQuery(db, ids)
    .select(db.raw(nulls(NAMED_EDGE_COLUMNS)))
    .unionAll(db.raw(namedEdgesSql(nulls(FRESHNESS_COLUMNS))));
  const fresh: Array<Record<string, unknown>> = [];
  const edges: NamedEdgeRow[] = [];
  // A freshness row always names its MV; an edge row never does.
  for (const r of (await both) as Array<Record<string, unknown>>) {
    if (r.mview_id === null) edges.push(r as unknown as NamedEdgeRow);
    else fresh.push(r);
  }
  return { fresh: judgeFreshness(fresh), edges: namedEdgesOf(edges) };
}

type Key = { schema: string; name: string };

/** MVs after `k` in (schema, name) order: written so the unique index serves it as a range. */
function after(q: Knex.QueryBuilder, k: Key): void {
  q.where((w) => w.where('m.table_schema', '>', k.schema).orWhere((w2) => w2.where('m.table_schema', k.schema).andWhere('m.mview_name', '>', k.name)));
}

/** Fill in what SQL left as placeholders (lag from the age, owner, freshness) and make numbers numbers. */
function complete(r: Row, f: Freshness | undefined, ring: HashRing | undefined, deps: Deps | undefined): void {
  // Numbers as numbers (a COALESCE in SQL would make them DECIMAL, which the driver gives as text).
  r.mviewId = Number(r.mviewId);
  r.failures = Number(r.failures ?? 0);
  r.refreshCount = Number(r.refreshCount ?? 0);
  r.nextSeconds = r.nextSeconds === null ? null : Number(r.nextSeconds);
  r.lagSeconds = r.lagSeconds === null ? null : lagOfAge(Number(r.lagSeconds) / 1000);
  r.targetLag = r.targetLag === null || r.targetLag === 'DOWNSTREAM' ? r.targetLag : Number(r.targetLag);
  // Its scheduled job, or its wave steps (a target lag), go to its owner's queue.
  const scheduled = r.status === 'ACTIVE' && (r.nextTime !== null || r.targetLag !== null);
  r.owner = ring && scheduled ? (ring.getNode(mviewRingKey(r.mviewId as number)) ?? null) : null;
  r.freshness = !f?.versioned ? 'unversioned' : f.stale.length ? 'stale' : 'fresh';
  r.stalePartitions = f?.stale ?? [];
  r.versionsReportedAt = f?.reportedAt == null ? null : new Date(f.reportedAt).toISOString();
  r.dependsOn = deps?.dependsOn ?? [];
  r.readBy = deps?.readBy ?? [];
}
