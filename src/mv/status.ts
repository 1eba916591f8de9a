import type { Knex } from 'knex';
import type { HashRing } from '../ring/hashRing.js';
import { mviewRingKey } from '../queue/names.js';
import { freshnessOf, mviewsFreshness } from '../versions/freshness.js';
import { dbNowMs, lagSeconds } from './lag.js';
import { loadEdges, mviewNames } from '../pipeline/repository.js';

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

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

type PipelineFields = Pick<MviewStatus, 'dataTime' | 'lagSeconds' | 'targetLag' | 'targetUnmetReason' | 'dependsOn' | 'readBy'>;

function pipelineFields(r: Record<string, unknown>, nowMs: number, deps: { dependsOn: string[]; readBy: string[] } | undefined): PipelineFields {
  const dataTime = r.data_time as Date | null;
  return {
    dataTime: iso(dataTime),
    lagSeconds: lagSeconds(dataTime, nowMs),
    targetLag: r.target_downstream ? 'DOWNSTREAM' : r.target_lag === null || r.target_lag === undefined ? null : Number(r.target_lag),
    targetUnmetReason: (r.target_unmet_reason as string | null) ?? null,
    dependsOn: deps?.dependsOn ?? [],
    readBy: deps?.readBy ?? [],
  };
}

/** For each MV of `ids`: the MVs it reads and the MVs that read it, by display name, sorted. */
async function dependencyNames(db: Knex, ids: number[]): Promise<Map<number, { dependsOn: string[]; readBy: string[] }>> {
  const wanted = new Set(ids);
  // A page or one MV: only their edges; the whole listing: every edge at once.
  const edges = (await loadEdges(db, ids.length <= 1000 ? ids : undefined)).filter((e) => wanted.has(e.reader) || wanted.has(e.upstream));
  const names = await mviewNames(db, [...new Set(edges.flatMap((e) => [e.reader, e.upstream]))]);
  const out = new Map<number, { dependsOn: string[]; readBy: string[] }>();
  const entry = (id: number) => out.get(id) ?? out.set(id, { dependsOn: [], readBy: [] }).get(id)!;
  for (const e of edges) {
    const up = names.get(e.upstream);
    const reader = names.get(e.reader);
    if (up && reader) {
      entry(e.reader).dependsOn.push(up);
      entry(e.upstream).readBy.push(reader);
    }
  }
  for (const v of out.values()) {
    v.dependsOn.sort();
    v.readBy.sort();
  }
  return out;
}

/** A slice of the listing in its (schema, name) order: rows after `after`, at most `limit`. */
export interface StatusSlice {
  after?: { schema: string; name: string };
  limit: number;
}

/**
 * One row per MV for `mvsched status`, the HTTP API and /metrics; owner from the caller's ring.
 * A bounded number of queries whatever the number of MVs (the listing, the database clock,
 * freshness in at most three, dependency edges and their names): never one per MV.
 */
export async function listMviewStatus(
  db: Knex,
  ring: HashRing | undefined,
  filter?: { schema: string; name: string },
  slice?: StatusSlice,
): Promise<MviewStatus[]> {
  const q = db('mvs_mviews as m')
    .leftJoin('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id')
    .select(
      'm.mview_id', 'm.table_schema', 'm.mview_name', 'm.refresh_method', 'm.status', 'm.refresh_start', 'm.refresh_interval',
      'ri.last_refresh_result', 'ri.refresh_endtime', 'ri.last_refresh_type', 'ri.next_time', 'ri.consecutive_failures',
      'ri.last_failed_reason', 'ri.refresh_count', 'ri.last_success_endtime', 'ri.data_time',
      'm.target_lag', 'm.target_downstream', 'ri.target_unmet_reason',
    )
    .orderBy(['m.table_schema', 'm.mview_name']);
  if (filter) q.where({ 'm.table_schema': filter.schema, 'm.mview_name': filter.name });
  const after = slice?.after;
  if (after) {
    q.where((w) =>
      w.where('m.table_schema', '>', after.schema).orWhere((w2) => w2.where('m.table_schema', after.schema).andWhere('m.mview_name', '>', after.name)),
    );
  }
  if (slice) q.limit(slice.limit);
  const [rows, nowMs] = await Promise.all([q as Promise<Array<Record<string, unknown>>>, dbNowMs(db)]);
  const deps = await dependencyNames(db, rows.map((r) => Number(r.mview_id)));
  // A page or one MV: the freshness of those; the whole listing: of every MV at once.
  const fresh = await mviewsFreshness(db, filter || slice ? rows.map((r) => Number(r.mview_id)) : undefined);
  const out: MviewStatus[] = [];
  for (const r of rows) {
    const id = Number(r.mview_id);
    const f = freshnessOf(fresh, id);
    // Its scheduled job, or its wave steps (a target lag), go to its owner's queue.
    const scheduled = r.status === 'ACTIVE' && (r.next_time || r.target_lag !== null || r.target_downstream);
    out.push({
      mviewId: id,
      name: `${String(r.table_schema)}.${String(r.mview_name)}`,
      schema: String(r.table_schema),
      mview: String(r.mview_name),
      method: String(r.refresh_method),
      status: String(r.status),
      startWith: iso(r.refresh_start as Date | null),
      nextSeconds: r.refresh_interval === null ? null : Number(r.refresh_interval),
      lastResult: (r.last_refresh_result as string | null) ?? null,
      lastRefreshEnd: iso(r.refresh_endtime as Date | null),
      lastRefreshType: (r.last_refresh_type as string | null) ?? null,
      lastSuccessTime: iso(r.last_success_endtime as Date | null),
      nextTime: iso(r.next_time as Date | null),
      owner: scheduled && ring ? (ring.getNode(mviewRingKey(id)) ?? null) : null,
      failures: Number(r.consecutive_failures ?? 0),
      lastFailedReason: (r.last_failed_reason as string | null) ?? null,
      refreshCount: Number(r.refresh_count ?? 0),
      freshness: !f.versioned ? 'unversioned' : f.stale.length ? 'stale' : 'fresh',
      stalePartitions: f.stale,
      versionsReportedAt: f.reportedAt === null ? null : new Date(f.reportedAt).toISOString(),
      ...pipelineFields(r, nowMs, deps.get(id)),
    });
  }
  return out;
}
