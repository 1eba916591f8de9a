import { crc32 } from 'node:zlib';

/** Maps a string to an unsigned 32-bit integer. */
export type HashFn = (s: string) => number;

/**
 * Plain CRC32 (IEEE) over the UTF-8 bytes, as TiDB's pkg/mvs uses. Kept so a ring can be made to
 * agree point-for-point with TiDB, but it places virtual nodes badly: CRC32 is affine over GF(2),
 * so the points of "node-1#i" and "node-2#i" are XOR-translates of each other and consecutive
 * "#i" suffixes land in structured clusters. Measured (bench/ringBalance.ts, 10 nodes): the
 * largest node's ring share stays >= 1.26x the mean at every vnode count from 16 to 8192, and
 * CRC32 keys hashed against CRC32 points do worse still (up to 2.25x at 8192).
 */
export const crc32Hash: HashFn = (s) => crc32(s);

/**
 * murmur3's 32-bit finalizer: a bijection on uint32 with full avalanche, so it destroys CRC32's
 * linear structure without adding collisions (fmix32(a) === fmix32(b) iff a === b).
 */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The default placement hash: fmix32(CRC32(utf8(s))). Chosen over a JS-side byte hash because it
 * is trivially portable (any language has CRC32 and the five-line finalizer is on every murmur3
 * page) and the CRC itself runs in native code.
 */
export const mixedCrc32Hash: HashFn = (s) => fmix32(crc32(s));

/**
 * FNV-1a over UTF-16 code units followed by fmix32. Pure JS; kept as an alternative measured in
 * the balance study. Not byte-compatible with an FNV-1a over UTF-8 for non-ASCII input.
 */
export const fnv1aMixHash: HashFn = (s) => {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
};
