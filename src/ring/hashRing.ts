import { crc32Hash, mixedCrc32Hash, type HashFn } from './placementHash.js';

export type { HashFn };
export { crc32Hash, mixedCrc32Hash };

export interface HashRingOptions {
  /** Virtual points per node. */
  vnodes?: number;
  /**
   * Hash for both point positions (`${node}#${i}`) and keys. Pass `crc32Hash` to reproduce
   * TiDB pkg/mvs placement exactly; the default trades that for much better balance.
   */
  hash?: HashFn;
}

/**
 * From bench/ringBalance.ts (10 nodes, default hash): the ring's own imbalance (largest arc share
 * / mean) shrinks like 1/sqrt(vnodes) and is <= 1.05 over 200 node-id sets only from 4096 on.
 * Past that, the load spread with 10,000 keys is dominated by key sampling noise (about 1.05
 * max/mean even with perfectly equal arcs), so more points buy little and cost build time.
 */
export const DEFAULT_VNODES = 4096;

/** See placementHash.ts for why the default is not TiDB's plain CRC32. */
export const DEFAULT_HASH: HashFn = mixedCrc32Hash;

// Sorting (position, nodeIndex) pairs packed into one float64 lets the engine's numeric typed
// array sort do the work with no comparator; 32 + 20 bits stay below 2^53, so packing is exact.
const NODE_BITS = 20;
const NODE_SCALE = 2 ** NODE_BITS;
const MAX_NODES = NODE_SCALE;

// Checked before membership changes so a refused add leaves the ring as it was.
function checkCount(n: number): void {
  if (n > MAX_NODES) throw new RangeError(`a ring holds at most ${MAX_NODES} nodes, got ${n}`);
}

export class HashRing {
  readonly vnodes: number;
  private readonly hash: HashFn;
  // Each member's point positions, hashed once when it joins: a heartbeat flap or a rebuild()
  // with mostly the same members then costs one sort instead of nodes x vnodes hash calls.
  private readonly members = new Map<string, Uint32Array>();
  private sorted: string[] = [];
  private points = new Uint32Array(0);
  // Index into `sorted` for each entry of `points`.
  private owners = new Uint32Array(0);

  constructor(opts: HashRingOptions = {}) {
    const vnodes = opts.vnodes ?? DEFAULT_VNODES;
    if (!Number.isInteger(vnodes) || vnodes < 1) {
      throw new RangeError(`vnodes must be a positive integer, got ${vnodes}`);
    }
    this.vnodes = vnodes;
    this.hash = opts.hash ?? DEFAULT_HASH;
  }

  add(...nodes: string[]): void {
    const fresh = new Set(nodes.filter((n) => !this.members.has(n)));
    if (fresh.size === 0) return;
    checkCount(this.members.size + fresh.size);
    for (const n of fresh) this.members.set(n, this.pointsOf(n));
    this.build();
  }

  remove(...nodes: string[]): void {
    let changed = false;
    for (const n of nodes) changed = this.members.delete(n) || changed;
    if (changed) this.build();
  }

  rebuild(nodes: Iterable<string>): void {
    const next = new Set(nodes);
    checkCount(next.size);
    for (const n of [...this.members.keys()]) if (!next.has(n)) this.members.delete(n);
    for (const n of next) if (!this.members.has(n)) this.members.set(n, this.pointsOf(n));
    this.build();
  }

  getNode(key: string): string | undefined {
    const points = this.points;
    const len = points.length;
    if (len === 0) return undefined;
    const h = this.hash(key) >>> 0;
    // Lower bound: first point >= h. Ties sort by node index, so the winner is the
    // lexicographically smallest node id, independent of insertion order.
    let lo = 0;
    let hi = len;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return this.sorted[this.owners[lo === len ? 0 : lo]!];
  }

  nodes(): string[] {
    return this.sorted.slice();
  }

  size(): number {
    return this.members.size;
  }

  private pointsOf(node: string): Uint32Array {
    const pts = new Uint32Array(this.vnodes);
    for (let i = 0; i < pts.length; i++) pts[i] = this.hash(`${node}#${i}`) >>> 0;
    return pts;
  }

  private build(): void {
    // Plain code-unit order, not localeCompare: every process must agree regardless of locale.
    const sorted = [...this.members.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const v = this.vnodes;
    const packed = new Float64Array(sorted.length * v);
    let k = 0;
    for (let j = 0; j < sorted.length; j++) {
      const pts = this.members.get(sorted[j]!)!;
      for (let i = 0; i < v; i++) packed[k++] = pts[i]! * NODE_SCALE + j;
    }
    packed.sort();
    const points = new Uint32Array(packed.length);
    const owners = new Uint32Array(packed.length);
    for (let p = 0; p < packed.length; p++) {
      const x = packed[p]!;
      const pos = Math.floor(x / NODE_SCALE);
      points[p] = pos;
      owners[p] = x - pos * NODE_SCALE;
    }
    this.sorted = sorted;
    this.points = points;
    this.owners = owners;
  }
}
