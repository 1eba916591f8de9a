// Balance and speed study for src/ring/hashRing.ts. Run: npx tsx bench/ringBalance.ts
// Everything except the throughput section is deterministic, so the balance figures are facts
// about the hash functions, reproducible on any machine.
import { HashRing, DEFAULT_VNODES, DEFAULT_HASH, type HashFn } from '../src/ring/hashRing.js';
import { crc32Hash, mixedCrc32Hash, fnv1aMixHash } from '../src/ring/placementHash.js';
import { prng } from '../test/support/prng.js';

// The brief's range, plus the larger counts the balance goal turned out to need.
const VNODES = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];
const NODE_COUNT = 10;
const KEY_COUNT = 10_000;

// Seeded so the "random-looking" id sets are the same on every run.
const mulberry32 = prng;

function randStr(rnd: () => number, alphabet: string, len: number): string {
  let s = '';
  for (let i = 0; i < len; i++) s += alphabet[Math.floor(rnd() * alphabet.length)];
  return s;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

const r1 = mulberry32(1);
const r2 = mulberry32(2);
const r3 = mulberry32(3);
const hex = '0123456789abcdef';
const k8s = 'bcdfghjklmnpqrstvwxz2456789';

export const NODE_SETS: Record<string, string[]> = {
  'node-N': range(NODE_COUNT).map((n) => `node-${n}`),
  'worker-host-N': range(NODE_COUNT).map((n) => `worker-mvs-prod-db${(n % 3) + 1}-${n}`),
  'worker-ip': range(NODE_COUNT).map(
    (n) => `worker-ip-10-0-${Math.floor(r1() * 256)}-${Math.floor(r1() * 256)}-${n}`,
  ),
  'k8s-pod': range(NODE_COUNT).map(
    () => `mvsched-worker-${randStr(r2, k8s, 10)}-${randStr(r2, k8s, 5)}`,
  ),
  uuid: range(NODE_COUNT).map(
    () =>
      `${randStr(r3, hex, 8)}-${randStr(r3, hex, 4)}-4${randStr(r3, hex, 3)}-a${randStr(r3, hex, 3)}-${randStr(r3, hex, 12)}`,
  ),
  'wN': range(NODE_COUNT).map((n) => `w${n}`),
};

const MV_KEYS = range(KEY_COUNT).map((n) => `mv:${n}`);

function maxOverMean(ring: HashRing, keys: string[]): number {
  const load = new Map<string, number>();
  for (const n of ring.nodes()) load.set(n, 0);
  for (const k of keys) {
    const n = ring.getNode(k)!;
    load.set(n, load.get(n)! + 1);
  }
  const mean = keys.length / ring.size();
  return Math.max(...load.values()) / mean;
}

// Fraction of moved keys when an 11th node joins, relative to the ideal 1/(N+1).
function moveRatio(hash: HashFn, vnodes: number, nodes: string[]): number {
  const ring = new HashRing({ vnodes, hash });
  ring.add(...nodes);
  const before = MV_KEYS.map((k) => ring.getNode(k));
  ring.add('extra-node-11');
  let moved = 0;
  MV_KEYS.forEach((k, i) => {
    if (ring.getNode(k) !== before[i]) moved++;
  });
  return moved / MV_KEYS.length / (1 / (nodes.length + 1));
}

const HASHES: Record<string, HashFn> = {
  crc32: crc32Hash,
  'fmix32(crc32)': mixedCrc32Hash,
  'fmix32(fnv1a)': fnv1aMixHash,
};

function pad(s: string, n: number): string {
  return s.padEnd(n);
}

const setNames = Object.keys(NODE_SETS);
console.log(`# max/mean load, ${NODE_COUNT} nodes x ${KEY_COUNT} keys mv:1..mv:${KEY_COUNT}`);
console.log(`# (worst arc: largest share of the ring one node owns / mean, worst over the six sets;`);
console.log(`#  it excludes key sampling noise, so it isolates how well the points are placed)\n`);
console.log(
  `| ${pad('hash', 14)} | vnodes | ${setNames.map((s) => pad(s, 13)).join(' | ')} | worst | worst arc |`,
);
console.log(`|${'-'.repeat(16)}|--------|${setNames.map(() => '-'.repeat(15)).join('|')}|-------|-----------|`);
for (const [hname, hash] of Object.entries(HASHES)) {
  for (const v of VNODES) {
    const cells: number[] = [];
    for (const s of setNames) {
      const ring = new HashRing({ vnodes: v, hash });
      ring.add(...NODE_SETS[s]!);
      cells.push(maxOverMean(ring, MV_KEYS));
    }
    const worst = Math.max(...cells);
    const worstArc = Math.max(...setNames.map((s) => arcMaxMean(NODE_SETS[s]!, v, hash)));
    console.log(
      `| ${pad(hname, 14)} | ${String(v).padStart(6)} | ${cells.map((c) => pad(c.toFixed(3), 13)).join(' | ')} | ${worst.toFixed(3)} | ${pad(worstArc.toFixed(3), 9)} |`,
    );
  }
}

// Six hand-picked sets can be lucky, so repeat for many generated sets and report the tail.
// The arc share (largest fraction of the ring a node owns, / mean) is what the ring controls;
// the key-level figure adds the sampling noise of 10,000 keys on top.
function generatedSets(count: number): string[][] {
  const out: string[][] = [];
  for (let s = 0; s < count; s++) {
    const r = mulberry32(5000 + s);
    const style = s % 4;
    out.push(
      range(NODE_COUNT).map((n) => {
        const x = Math.floor(r() * 1e9).toString(36);
        if (style === 0) return `worker-${x}-${n}`;
        if (style === 1) return `node-${s}-${n}`;
        if (style === 2) return `mvsched-worker-${x}`;
        return `h${Math.floor(r() * 1e4)}.dc${s}.example.com:${n}`;
      }),
    );
  }
  return out;
}

function arcMaxMean(nodes: string[], vnodes: number, hash: HashFn): number {
  const scale = 2 ** 20;
  const packed = new Float64Array(nodes.length * vnodes);
  let k = 0;
  nodes.forEach((n, j) => {
    for (let i = 0; i < vnodes; i++) packed[k++] = (hash(`${n}#${i}`) >>> 0) * scale + j;
  });
  packed.sort();
  const share = new Array<number>(nodes.length).fill(0);
  let prev = Math.floor(packed[packed.length - 1]! / scale) - 2 ** 32;
  for (const x of packed) {
    const pos = Math.floor(x / scale);
    share[x - pos * scale]! += pos - prev;
    prev = pos;
  }
  return Math.max(...share) / (2 ** 32 / nodes.length);
}

const quantile = (sortedVals: number[], q: number) =>
  sortedVals[Math.min(sortedVals.length - 1, Math.floor(q * sortedVals.length))]!;

const GENERATED = generatedSets(200);
console.log(`\n# tail over ${GENERATED.length} generated node-id sets, default hash, 10 nodes x ${KEY_COUNT} keys\n`);
console.log(`| vnodes | arc med | arc p95 | arc max | load med | load p95 | load max | sets > 1.10 |`);
console.log(`|--------|---------|---------|---------|----------|----------|----------|-------------|`);
for (const v of [512, 1024, 2048, 4096, 8192]) {
  const arcs: number[] = [];
  const loads: number[] = [];
  for (const set of GENERATED) {
    arcs.push(arcMaxMean(set, v, DEFAULT_HASH));
    const ring = new HashRing({ vnodes: v });
    ring.add(...set);
    loads.push(maxOverMean(ring, MV_KEYS));
  }
  arcs.sort((a, b) => a - b);
  loads.sort((a, b) => a - b);
  const f = (x: number) => x.toFixed(3).padEnd(7);
  console.log(
    `| ${String(v).padStart(6)} | ${f(quantile(arcs, 0.5))} | ${f(quantile(arcs, 0.95))} | ${f(arcs.at(-1)!)} | ${f(quantile(loads, 0.5))}  | ${f(quantile(loads, 0.95))}  | ${f(loads.at(-1)!)}  | ${String(loads.filter((x) => x > 1.1).length).padEnd(11)} |`,
  );
}

// The floor no hash ring can beat: perfectly equal arcs, keys landing uniformly at random.
{
  const r = mulberry32(9);
  const trials = 5000;
  const maxes: number[] = [];
  for (let t = 0; t < trials; t++) {
    const c = new Array<number>(NODE_COUNT).fill(0);
    for (let k = 0; k < KEY_COUNT; k++) c[Math.floor(r() * NODE_COUNT)]!++;
    maxes.push(Math.max(...c) / (KEY_COUNT / NODE_COUNT));
  }
  maxes.sort((a, b) => a - b);
  const over = maxes.filter((x) => x > 1.1).length;
  console.log(
    `\nfloor (equal arcs, ${KEY_COUNT} uniform random keys, ${trials} trials): max/mean median ${quantile(maxes, 0.5).toFixed(3)}, p95 ${quantile(maxes, 0.95).toFixed(3)}, P(> 1.10) = ${((over / trials) * 100).toFixed(2)}%`,
  );
}

// Keys of both kinds, as the planner really hashes them.
const MIXED_KEYS = [...range(5000).map((n) => `mv:${n}`), ...range(5000).map((n) => `mlog:${n}`)];
console.log(`\n# default (vnodes=${DEFAULT_VNODES}): other key sets, and movement 10 -> 11 nodes\n`);
console.log(`| node set      | mv:1..5000 + mlog:1..5000 | moved / ideal 1/11 |`);
console.log(`|---------------|---------------------------|--------------------|`);
for (const s of setNames) {
  const ring = new HashRing({ vnodes: DEFAULT_VNODES, hash: DEFAULT_HASH });
  ring.add(...NODE_SETS[s]!);
  console.log(
    `| ${pad(s, 13)} | ${pad(maxOverMean(ring, MIXED_KEYS).toFixed(3), 25)} | ${pad(moveRatio(DEFAULT_HASH, DEFAULT_VNODES, NODE_SETS[s]!).toFixed(3), 18)} |`,
  );
}

// Throughput. The Map baseline is the cheapest conceivable "key -> owner" lookup, so the ratio
// says what the ring costs over a precomputed table.
function timeIt(label: string, keys: string[], fn: (k: string) => string | undefined): number {
  let sink = 0;
  for (let r = 0; r < 3; r++) for (const k of keys) sink += fn(k)!.length; // warm-up
  const rounds = 10;
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < rounds; r++) for (const k of keys) sink += fn(k)!.length;
  const ns = Number(process.hrtime.bigint() - t0);
  const perSec = (keys.length * rounds) / (ns / 1e9);
  if (sink === -1) console.log(label); // keeps the loop observable
  return perSec;
}

const LOOKUP_KEYS = [...range(50_000).map((n) => `mv:${n}`), ...range(50_000).map((n) => `mlog:${n}`)];
const defaultRing = new HashRing();
defaultRing.add(...NODE_SETS['k8s-pod']!);
const crcRing = new HashRing({ hash: crc32Hash });
crcRing.add(...NODE_SETS['k8s-pod']!);
const table = new Map<string, string>();
for (const k of LOOKUP_KEYS) table.set(k, defaultRing.getNode(k)!);

const mapRate = timeIt('map', LOOKUP_KEYS, (k) => table.get(k));
const ringRate = timeIt('ring', LOOKUP_KEYS, (k) => defaultRing.getNode(k));
const crcRate = timeIt('crc', LOOKUP_KEYS, (k) => crcRing.getNode(k));
const buildT0 = process.hrtime.bigint();
for (let i = 0; i < 20; i++) new HashRing().rebuild(NODE_SETS['k8s-pod']!);
const buildMs = Number(process.hrtime.bigint() - buildT0) / 1e6 / 20;

console.log(`\n# getNode throughput, 10 nodes, ${LOOKUP_KEYS.length} distinct keys, 10 rounds (${process.version})\n`);
console.log(`| lookup                               | lookups/s    | Map / this |`);
console.log(`|--------------------------------------|--------------|------------|`);
const row = (l: string, r: number) =>
  console.log(`| ${pad(l, 36)} | ${pad((r / 1e6).toFixed(2) + ' M', 12)} | ${pad((mapRate / r).toFixed(2) + 'x', 10)} |`);
row('Map<string,string>.get (baseline)', mapRate);
row(`HashRing default (vnodes=${DEFAULT_VNODES})`, ringRate);
row(`HashRing crc32Hash (vnodes=${DEFAULT_VNODES})`, crcRate);
const joinT0 = process.hrtime.bigint();
for (let i = 0; i < 20; i++) {
  defaultRing.add('joiner');
  defaultRing.remove('joiner');
}
const joinMs = Number(process.hrtime.bigint() - joinT0) / 1e6 / 20;
console.log(`\nfresh ring, 10 nodes x ${DEFAULT_VNODES} vnodes: ${buildMs.toFixed(2)} ms`);
console.log(`one node joins then leaves an existing ring (points of members cached): ${joinMs.toFixed(2)} ms`);
