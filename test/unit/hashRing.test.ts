import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_VNODES,
  HashRing,
  crc32Hash,
  type HashFn,
} from '../../src/ring/hashRing.js';
import { fmix32, mixedCrc32Hash } from '../../src/ring/placementHash.js';

// A hash from a table, so ring positions are chosen by the test, not discovered.
function fakeHash(table: Record<string, number>): HashFn {
  return (s) => {
    const v = table[s];
    if (v === undefined) throw new Error(`fake hash has no entry for ${JSON.stringify(s)}`);
    return v;
  };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
const MV_KEYS = range(10_000).map((n) => `mv:${n}`);

function owners(ring: HashRing, keys: string[]): Map<string, string | undefined> {
  return new Map(keys.map((k) => [k, ring.getNode(k)]));
}

function maxOverMean(ring: HashRing, keys: string[]): number {
  const load = new Map<string, number>(ring.nodes().map((n) => [n, 0]));
  for (const k of keys) {
    const n = ring.getNode(k)!;
    load.set(n, load.get(n)! + 1);
  }
  return Math.max(...load.values()) / (keys.length / ring.size());
}

describe('HashRing placement', () => {
  it('maps a key to the first point clockwise and wraps past the last point', () => {
    const hash = fakeHash({ 'nodeA#0': 10, 'nodeB#0': 20, k5: 5, k15: 15, k25: 25 });
    const ring = new HashRing({ vnodes: 1, hash });
    ring.add('nodeA', 'nodeB');
    expect(ring.getNode('k5')).toBe('nodeA');
    expect(ring.getNode('k15')).toBe('nodeB');
    expect(ring.getNode('k25')).toBe('nodeA');
  });

  it('gives a key that lands exactly on a point to that point', () => {
    const hash = fakeHash({ 'nodeA#0': 10, 'nodeB#0': 20, k10: 10, k20: 20 });
    const ring = new HashRing({ vnodes: 1, hash });
    ring.add('nodeA', 'nodeB');
    expect(ring.getNode('k10')).toBe('nodeA');
    expect(ring.getNode('k20')).toBe('nodeB');
  });

  it('breaks ties between coinciding points by node id, whatever the insertion order', () => {
    const table = { 'b#0': 100, 'a#0': 100, 'c#0': 50, k: 70, kmax: 0xffffffff };
    for (const order of [['a', 'b', 'c'], ['b', 'c', 'a'], ['c', 'b', 'a']]) {
      const ring = new HashRing({ vnodes: 1, hash: fakeHash(table) });
      ring.add(...order);
      expect(ring.getNode('k')).toBe('a');
      expect(ring.getNode('kmax')).toBe('c');
    }
  });

  it('uses zlib CRC32 (IEEE) over `${node}#${i}` when asked for TiDB compatibility', () => {
    expect(crc32Hash('123456789')).toBe(0xcbf43926);
    // With one point per node, the owner of a key is computable by hand from CRC32 alone.
    const ring = new HashRing({ vnodes: 1, hash: crc32Hash });
    ring.add('n1', 'n2', 'n3');
    const pts = ['n1', 'n2', 'n3']
      .map((n) => ({ n, p: crc32(`${n}#0`) }))
      .sort((x, y) => x.p - y.p);
    for (const key of range(200).map((i) => `mv:${i}`)) {
      const h = crc32(key);
      expect(ring.getNode(key)).toBe((pts.find((x) => x.p >= h) ?? pts[0]!).n);
    }
  });

  it('keeps the default placement hash stable across releases', () => {
    // Every planner and worker must compute the same owners during a rolling upgrade, so a
    // change here is a protocol change, not a refactor.
    // murmur3's published vectors: MurmurHash3_x86_32("", seed) is fmix32(seed).
    expect(fmix32(1)).toBe(0x514e28b7);
    expect(fmix32(0xffffffff)).toBe(0x81f16f39);
    expect(mixedCrc32Hash('mv:1')).toBe(fmix32(crc32('mv:1')));
    expect(['mv:1', 'mlog:7', 'node-1#0'].map(mixedCrc32Hash)).toEqual([
      170625642, 638455121, 396548878,
    ]);
  });
});

describe('HashRing membership', () => {
  it('returns undefined on an empty ring', () => {
    const ring = new HashRing();
    expect(ring.getNode('mv:1')).toBeUndefined();
    expect(ring.size()).toBe(0);
    expect(ring.nodes()).toEqual([]);
    ring.add('a');
    ring.remove('a');
    expect(ring.getNode('mv:1')).toBeUndefined();
  });

  it('treats add as idempotent', () => {
    const ring = new HashRing({ vnodes: 64 });
    ring.add('a', 'b', 'c');
    const before = owners(ring, MV_KEYS.slice(0, 1000));
    ring.add('b', 'a');
    ring.add('c', 'c');
    expect(ring.size()).toBe(3);
    expect(ring.nodes()).toEqual(['a', 'b', 'c']);
    expect(owners(ring, MV_KEYS.slice(0, 1000))).toEqual(before);
  });

  it('replaces membership on rebuild', () => {
    const ring = new HashRing({ vnodes: 64 });
    ring.add('a', 'b', 'c');
    ring.rebuild(['d', 'b', 'e']);
    expect(ring.nodes()).toEqual(['b', 'd', 'e']);
    expect(ring.size()).toBe(3);
    const fresh = new HashRing({ vnodes: 64 });
    fresh.add('e', 'd', 'b');
    expect(owners(ring, MV_KEYS)).toEqual(owners(fresh, MV_KEYS));
    ring.rebuild([]);
    expect(ring.getNode('mv:1')).toBeUndefined();
  });

  it('on removal, moves only the removed node’s keys and stops returning it', () => {
    const ring = new HashRing();
    ring.add('w1', 'w2', 'w3', 'w4', 'w5');
    const before = owners(ring, MV_KEYS);
    ring.remove('w3');
    ring.remove('w3', 'not-a-member');
    expect(ring.nodes()).toEqual(['w1', 'w2', 'w4', 'w5']);
    expect(ring.size()).toBe(4);
    let moved = 0;
    const wrong: string[] = [];
    for (const [k, was] of before) {
      const now = ring.getNode(k);
      if (was === 'w3') moved++;
      if (now === 'w3' || (was !== 'w3' && now !== was)) wrong.push(`${k}: ${was} -> ${now}`);
    }
    expect(wrong).toEqual([]);
    expect(moved).toBeGreaterThan(0);
  });

  it('computes the same owners whatever order nodes were added in', () => {
    const nodes = range(10).map((n) => `worker-${n}`);
    const a = new HashRing();
    a.add(...nodes);
    const b = new HashRing();
    for (const n of [...nodes].reverse()) b.add(n);
    const c = new HashRing();
    c.rebuild([...nodes.slice(5), ...nodes.slice(0, 5)]);
    const expected = owners(a, MV_KEYS);
    expect(owners(b, MV_KEYS)).toEqual(expected);
    expect(owners(c, MV_KEYS)).toEqual(expected);
  });

  it('moves about 1/(N+1) of the keys, all to the new node, when an 11th node joins', () => {
    const ring = new HashRing();
    ring.add(...range(10).map((n) => `node-${n}`));
    const before = owners(ring, MV_KEYS);
    ring.add('node-11');
    let moved = 0;
    const elsewhere: string[] = [];
    for (const [k, was] of before) {
      const now = ring.getNode(k);
      if (now === was) continue;
      moved++;
      if (now !== 'node-11') elsewhere.push(`${k}: ${was} -> ${now}`);
    }
    expect(elsewhere).toEqual([]);
    const ideal = MV_KEYS.length / 11;
    expect(moved).toBeGreaterThanOrEqual(ideal / 1.2);
    expect(moved).toBeLessThanOrEqual(ideal * 1.2);
  });

  it('rejects a vnode count that is not a positive integer', () => {
    expect(() => new HashRing({ vnodes: 0 })).toThrow(RangeError);
    expect(() => new HashRing({ vnodes: 1.5 })).toThrow(RangeError);
    expect(new HashRing().vnodes).toBe(DEFAULT_VNODES);
  });
});

describe('HashRing default balance', () => {
  // Fixed literals, not generated: the assertion is about these exact, deterministic placements.
  const SETS: Record<string, string[]> = {
    'node-N': range(10).map((n) => `node-${n}`),
    'worker-ip': [
      'worker-ip-10-0-3-17-1', 'worker-ip-10-0-3-41-2', 'worker-ip-10-0-7-112-3',
      'worker-ip-10-0-7-5-4', 'worker-ip-10-0-12-200-5', 'worker-ip-10-0-12-9-6',
      'worker-ip-10-0-19-77-7', 'worker-ip-10-0-19-140-8', 'worker-ip-10-0-33-61-9',
      'worker-ip-10-0-33-250-10',
    ],
    'k8s-pod': [
      'mvsched-worker-6f7c9d8b5-2xkqp', 'mvsched-worker-6f7c9d8b5-7hz4m',
      'mvsched-worker-6f7c9d8b5-9wlcd', 'mvsched-worker-6f7c9d8b5-bq5nt',
      'mvsched-worker-6f7c9d8b5-f8rjx', 'mvsched-worker-6f7c9d8b5-jm2vs',
      'mvsched-worker-6f7c9d8b5-lt6pg', 'mvsched-worker-6f7c9d8b5-n4dzw',
      'mvsched-worker-6f7c9d8b5-r9kbh', 'mvsched-worker-6f7c9d8b5-x3ctf',
    ],
    uuid: [
      '0b6f3c9e-1d2a-4f5b-9c8d-7e6f5a4b3c2d', '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d',
      '2f8e7d6c-5b4a-4392-a1b0-c9d8e7f6a5b4', '3c1d5e7f-9a0b-4c2d-8e4f-6a8b0c2d4e6f',
      '4d9c8b7a-6f5e-4d3c-b2a1-0f9e8d7c6b5a', '5e2f4a6b-8c0d-4e1f-a3b5-c7d9e1f3a5b7',
      '6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d', '7b3a9c1d-2e4f-4068-8a0b-1c2d3e4f5a6b',
      '8c5d6e7f-8091-4a2b-b3c4-d5e6f7a8b9c0', '9d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a',
    ],
  };

  for (const [name, nodes] of Object.entries(SETS)) {
    it(`keeps max/mean load <= 1.10 over 10 nodes x 10,000 keys (${name})`, () => {
      const ring = new HashRing();
      ring.add(...nodes);
      expect(maxOverMean(ring, MV_KEYS)).toBeLessThanOrEqual(1.1);
    });
  }
});
