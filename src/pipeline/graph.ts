// The dependency graph of MVs that read other MVs (DESIGN.md §2 "Pipelines"). Pure: built from
// rows the caller read (pipeline/repository.ts), so every rule here is unit-tested without a
// database. Edges point from an MV to the MVs it reads ("upstream").

/** How an MV is kept fresh: its own target lag, its readers' needs, a fixed grid, or by hand. */
export type ScheduleKind = 'TARGET' | 'DOWNSTREAM' | 'FIXED' | 'MANUAL';

export interface PipelineNode {
  id: number;
  /** Display name `schema.name`. */
  name: string;
  status: 'ACTIVE' | 'SUSPENDED';
  kind: ScheduleKind;
  /** TARGET: the lag to keep, in seconds. */
  targetLagS: number | null;
  /** FIXED: NEXT in seconds (null: START WITH alone, one run). */
  intervalS: number | null;
  /** MVs this one reads, by id. */
  upstream: number[];
  /** It also reads tables that are not MVs (its own read of them is always news). */
  readsTables: boolean;
}

export function scheduleKind(r: { target_lag: number | null; target_downstream: boolean | number; refresh_start: Date | null }): ScheduleKind {
  if (r.target_downstream) return 'DOWNSTREAM';
  if (r.target_lag !== null && r.target_lag !== undefined) return 'TARGET';
  return r.refresh_start ? 'FIXED' : 'MANUAL';
}

/** Refreshed by waves (for its own target or its readers'), as opposed to a clock or a person. */
export function waveRefreshed(n: PipelineNode): boolean {
  return n.status === 'ACTIVE' && (n.kind === 'TARGET' || n.kind === 'DOWNSTREAM');
}

export class PipelineGraph {
  private readonly nodes = new Map<number, PipelineNode>();
  private readonly readerMap = new Map<number, number[]>();
  /** waveUpstream's answers: the graph does not change once built (a DDL builds a new one). */
  private readonly waveUpstreamMemo = new Map<number, ReadonlySet<number>>();

  constructor(nodes: Iterable<PipelineNode>) {
    for (const n of nodes) this.nodes.set(n.id, n);
    for (const n of this.nodes.values()) {
      // An edge to an MV that is not in the graph (dropped meanwhile) is no edge.
      n.upstream = [...new Set(n.upstream)].filter((u) => u !== n.id && this.nodes.has(u)).sort((a, b) => a - b);
      for (const u of n.upstream) {
        const list = this.readerMap.get(u) ?? [];
        list.push(n.id);
        this.readerMap.set(u, list);
      }
    }
  }

  get size(): number {
    return this.nodes.size;
  }

  all(): IterableIterator<PipelineNode> {
    return this.nodes.values();
  }

  node(id: number): PipelineNode | undefined {
    return this.nodes.get(id);
  }

  /** MVs that read `id` directly, by id. */
  readers(id: number): number[] {
    return this.readerMap.get(id) ?? [];
  }

  upstream(id: number): number[] {
    return this.nodes.get(id)?.upstream ?? [];
  }

  /** Every MV `id` reads, directly or through other MVs (not `id` itself). */
  upstreamClosure(id: number): Set<number> {
    return this.closure(id, (x) => this.upstream(x));
  }

  /** Every MV that reads `id`, directly or through other MVs (not `id` itself). */
  downstreamClosure(id: number): Set<number> {
    return this.closure(id, (x) => this.readers(x));
  }

  private closure(id: number, next: (x: number) => number[]): Set<number> {
    const seen = new Set<number>();
    const stack = [...next(id)];
    while (stack.length) {
      const x = stack.pop()!;
      if (seen.has(x) || x === id) continue;
      seen.add(x);
      stack.push(...next(x));
    }
    return seen;
  }

  /**
   * The MVs upstream of `roots` that `include` accepts, walking up only through accepted ones:
   * what a wave or a cascade refreshes for them (an MV it stops at is read as it is).
   */
  upstreamWhere(roots: Iterable<number>, include: (n: PipelineNode) => boolean): Set<number> {
    const out = new Set<number>();
    const stack = [...roots].flatMap((r) => this.upstream(r));
    while (stack.length) {
      const id = stack.pop()!;
      if (out.has(id)) continue;
      const n = this.nodes.get(id);
      if (!n || !include(n)) continue;
      out.add(id);
      stack.push(...n.upstream);
    }
    return out;
  }

  /** What waves refresh for `id`: upstreamWhere(waveRefreshed), remembered (the planner asks every tick). */
  waveUpstream(id: number): ReadonlySet<number> {
    let set = this.waveUpstreamMemo.get(id);
    if (!set) {
      set = this.upstreamWhere([id], waveRefreshed);
      this.waveUpstreamMemo.set(id, set);
    }
    return set;
  }

  /**
   * `ids` ordered so that every MV comes after the MVs it reads among them (Kahn's algorithm,
   * ties by id, so the order is deterministic). Throws on a cycle, which CREATE prevents.
   */
  topoOrder(ids: Iterable<number>): number[] {
    const set = new Set(ids);
    const pending = new Map<number, number>();
    for (const id of set) pending.set(id, this.upstream(id).filter((u) => set.has(u)).length);
    const ready = [...set].filter((id) => pending.get(id) === 0).sort((a, b) => a - b);
    const out: number[] = [];
    while (ready.length) {
      const id = ready.shift()!;
      out.push(id);
      for (const r of this.readers(id)) {
        if (!set.has(r)) continue;
        const left = pending.get(r)! - 1;
        pending.set(r, left);
        if (left === 0) insertSorted(ready, r);
      }
    }
    if (out.length !== set.size) throw new Error(`materialized views ${[...set].filter((id) => !out.includes(id)).join(', ')} read each other in a cycle`);
    return out;
  }

  /**
   * Would an MV that reads `upstream` close a cycle? Only when an existing MV that names the new
   * MV as a table it reads (`readersOfName`: a table of that name was dropped by hand) is also
   * one the new MV reads, directly or not. Returns the MVs on such a cycle (empty: none).
   */
  cycleWith(upstream: number[], readersOfName: number[]): number[] {
    const reach = new Set(upstream);
    for (const u of upstream) for (const x of this.upstreamClosure(u)) reach.add(x);
    return readersOfName.filter((r) => reach.has(r));
  }
}

function insertSorted(list: number[], v: number): void {
  let i = list.length;
  while (i > 0 && list[i - 1]! > v) i--;
  list.splice(i, 0, v);
}
