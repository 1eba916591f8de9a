import type { Knex } from 'knex';
import { z } from 'zod';
import { ValidationError } from '../errors.js';
import { listMviewStatus, type MviewStatus } from '../mv/status.js';
import { lagSeconds as lagOf } from '../mv/lag.js';
import { mviewRingKey } from '../queue/names.js';
import type { HashRing } from '../ring/hashRing.js';
import { judge, matchesFilter, parseHealthFilter, SEVERITY, type Health, type HealthFilter, type Judgement } from './health.js';
import { optionalColumns } from './schemaProbe.js';

// The dashboard's overview: every MV judged in one light query (a few columns per MV, so 10,000
// MVs cost one scan), filtered, counted and sorted in memory, and only the page shown enriched
// with the full status the API gives (owner, freshness, reasons, pipeline fields).

export const OVERVIEW_MAX_LIMIT = 500;

const querySchema = z.object({
  filter: z.string().optional(),
  schema: z.string().max(64).optional(),
  q: z.string().max(200).optional(),
  sort: z.enum(['name', 'lag', 'health']).default('name'),
  offset: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(OVERVIEW_MAX_LIMIT).default(100),
});

export interface OverviewQuery {
  filter: HealthFilter;
  schema?: string;
  /** Part of `schema.name`, any case. */
  q?: string;
  sort: 'name' | 'lag' | 'health';
  offset: number;
  limit: number;
}

/** Query-string parameters of GET /ui/api/overview; a bad one is a ValidationError naming it. */
export function parseOverviewQuery(raw: unknown): OverviewQuery {
  const r = querySchema.safeParse(raw ?? {});
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ValidationError(`${issue.path.join('.') || 'query'}: ${issue.message}`);
  }
  const filter = parseHealthFilter(r.data.filter);
  if (!filter) throw new ValidationError(`filter: expected all, attention, failing, late, behind, ok, pending, suspended or unscheduled, got ${JSON.stringify(r.data.filter)}`);
  return {
    filter,
    sort: r.data.sort,
    offset: r.data.offset,
    limit: r.data.limit,
    ...(r.data.schema ? { schema: r.data.schema } : {}),
    ...(r.data.q?.trim() ? { q: r.data.q.trim() } : {}),
  };
}

/** What the overview shows per MV: the API's status plus the dashboard's judgement. */
export type OverviewItem = MviewStatus &
  Judgement & {
    dataTime: string | null;
    lagSeconds: number | null;
    /** A run holds the MV's lock right now. */
    running: boolean;
  };

export interface Overview {
  /** Database time the lags were measured at. */
  now: string;
  total: number;
  matched: number;
  offset: number;
  limit: number;
  counts: Record<Health, number>;
  schemas: string[];
  /** Live nodes and how many scheduled MVs the ring gives each. */
  nodes: Array<{ node: string; mviews: number }>;
  items: OverviewItem[];
}

export interface LightRow {
  id: number;
  schema: string;
  name: string;
  display: string;
  active: boolean;
  scheduled: boolean;
  dataTime: Date | null;
  running: boolean;
  lagSeconds: number | null;
  judgement: Judgement;
}

/** Every MV (or those of `ids`) judged from a few columns each. */
export async function lightRows(db: Knex, ids?: number[]): Promise<{ rows: LightRow[]; nowMs: number }> {
  const opt = await optionalColumns(db);
  const cols = [
    'm.mview_id', 'm.table_schema', 'm.mview_name', 'm.status', 'm.refresh_interval',
    'ri.last_refresh_result', 'ri.consecutive_failures', 'ri.next_time', 'ri.refresh_status',
    ...(opt.dataTime ? ['ri.data_time'] : []),
    ...(opt.targetLag ? ['m.target_lag', 'm.target_downstream'] : []),
  ];
  const q = db('mvs_mviews as m').leftJoin('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id').select(cols).orderBy(['m.table_schema', 'm.mview_name']);
  if (ids) q.whereIn('m.mview_id', ids);
  const [raw, nowRaw] = await Promise.all([q, db.raw('SELECT NOW(3) AS t')]);
  const nowMs = ((nowRaw as [Array<{ t: Date }>])[0][0]!.t).getTime();
  const rows = (raw as Array<Record<string, unknown>>).map((r): LightRow => {
    const dataTime = (r.data_time as Date | null | undefined) ?? null;
    const lagSeconds = lagOf(dataTime, nowMs);
    const targetLag = r.target_downstream ? 'DOWNSTREAM' : r.target_lag === null || r.target_lag === undefined ? null : Number(r.target_lag);
    const schema = String(r.table_schema);
    const name = String(r.mview_name);
    const active = r.status === 'ACTIVE';
    return {
      id: Number(r.mview_id),
      schema,
      name,
      display: `${schema}.${name}`,
      active,
      scheduled: active && (Boolean(r.next_time) || targetLag !== null),
      dataTime,
      running: r.refresh_status === 'RUNNING',
      lagSeconds,
      judgement: judge({
        status: String(r.status),
        lastResult: (r.last_refresh_result as string | null) ?? null,
        failures: Number(r.consecutive_failures ?? 0),
        lagSeconds,
        intervalS: r.refresh_interval === null ? null : Number(r.refresh_interval),
        targetLag,
      }),
    };
  });
  return { rows, nowMs };
}

function compare(sort: OverviewQuery['sort']): (a: LightRow, b: LightRow) => number {
  const byName = (a: LightRow, b: LightRow) => (a.schema < b.schema ? -1 : a.schema > b.schema ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  if (sort === 'lag') return (a, b) => (b.lagSeconds ?? -1) - (a.lagSeconds ?? -1) || byName(a, b);
  if (sort === 'health') return (a, b) => SEVERITY[a.judgement.health] - SEVERITY[b.judgement.health] || byName(a, b);
  return byName;
}

/** Map with at most `n` calls in flight (the page's statuses share the server's small pool). */
async function mapLimit<T, R>(xs: T[], n: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(xs.length);
  let next = 0;
  const lane = async () => {
    while (next < xs.length) {
      const i = next++;
      out[i] = await f(xs[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, xs.length) }, lane));
  return out;
}

export async function overview(db: Knex, ring: HashRing, liveNodes: string[], query: OverviewQuery): Promise<Overview> {
  const { rows, nowMs } = await lightRows(db);
  const counts = Object.fromEntries(Object.keys(SEVERITY).map((h) => [h, 0])) as Record<Health, number>;
  const schemas = new Set<string>();
  const owned = new Map<string, number>(liveNodes.map((n) => [n, 0]));
  for (const r of rows) {
    counts[r.judgement.health]++;
    schemas.add(r.schema);
    if (!r.scheduled) continue;
    const node = ring.getNode(mviewRingKey(r.id));
    if (node !== undefined) owned.set(node, (owned.get(node) ?? 0) + 1);
  }
  const needle = query.q?.toLowerCase();
  const matched = rows
    .filter((r) => matchesFilter(r.judgement.health, query.filter))
    .filter((r) => query.schema === undefined || r.schema === query.schema)
    .filter((r) => needle === undefined || r.display.toLowerCase().includes(needle));
  if (query.sort !== 'name') matched.sort(compare(query.sort));
  const page = matched.slice(query.offset, query.offset + query.limit);
  const items = await mapLimit(page, 4, async (r): Promise<OverviewItem | undefined> => {
    const [status] = await listMviewStatus(db, ring, { schema: r.schema, name: r.name });
    if (!status) return undefined; // dropped since the light read
    // Data time and lag stay those of the light read: the page was ordered and judged by them, at
    // `now`; a refresh that lands between the two reads must not reorder what is shown.
    return {
      ...status,
      ...r.judgement,
      dataTime: r.dataTime ? r.dataTime.toISOString() : null,
      lagSeconds: r.lagSeconds,
      running: r.running,
    };
  });
  return {
    now: new Date(nowMs).toISOString(),
    total: rows.length,
    matched: matched.length,
    offset: query.offset,
    limit: query.limit,
    counts,
    schemas: [...schemas].sort(),
    nodes: [...owned].map(([node, mviews]) => ({ node, mviews })).sort((a, b) => (a.node < b.node ? -1 : 1)),
    items: items.filter((i): i is OverviewItem => i !== undefined),
  };
}
