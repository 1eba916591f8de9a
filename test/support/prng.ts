/** mulberry32: a small seeded PRNG, so a failing random sequence can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed to use: MVS_TEST_SEED when set (to replay), else a fresh random one. */
export function testSeed(): number {
  return process.env.MVS_TEST_SEED ? Number(process.env.MVS_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
}
