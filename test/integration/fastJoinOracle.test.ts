import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRunners } from '../../src/app/runtime.js';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import { JoinOracle, SHAPES } from '../support/joinOracle.js';
import { emptyStats, type Stats } from '../support/joinWorkload.js';
import { testSeed } from '../support/prng.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// The oracle for FAST refresh over joins (DESIGN.md §2 "FAST refresh over joins", §4 invariant 3),
// in the style of fastOracle.test.ts: test/support/joinOracle.ts says what each seed does and
// checks. fastJoinMutations.test.ts shows that these checks catch a broken delta rule or cut.
//
// Replay a failure with MVS_TEST_SEED=<base seed> (printed in every assertion message).
// MVS_JOIN_ORACLE_SEEDS sets the number of seeds (default 12, about a minute on an idle 2-core host;
// `npm run bench -- join-oracle` runs 100).

const SEEDS = Number(process.env.MVS_JOIN_ORACLE_SEEDS ?? 12);
const TIMEOUT_MS = Number(process.env.MVS_JOIN_ORACLE_TIMEOUT_MS ?? 600_000);

let t: TestEnv;
let oracle: JoinOracle;

beforeAll(async () => {
  t = await createTestEnv('fast_join_oracle');
  await migrateLatest(t.db);
  const { runner, purger } = createRunners({ db: t.db, logger: t.logger, clock: systemClock, purgeBatch: 1000 }, 'join-oracle-node');
  const ddl = new DdlExecutor({ db: t.db, logger: t.logger, clock: systemClock, runner, purger, defaultSchema: t.database, notify: async () => {} });
  oracle = new JoinOracle(t, ddl, testSeed());
});

afterAll(async () => {
  await t?.close();
});

describe('FAST refresh over joins: oracle', () => {
  let conns: Connection[] = [];

  beforeAll(async () => {
    conns = await oracle.writerConnections();
  });

  afterAll(async () => {
    await Promise.allSettled(conns.map((c) => c.end()));
  });

  it(`${SHAPES.map((s) => s.name).join(', ')}: every MV equals its definition at every refresh's cut`, async () => {
    const base = oracle.baseSeed;
    const total = emptyStats();
    const started = Date.now();
    for (let i = 0; i < SEEDS; i++) {
      const seed = (base + i * 7919) >>> 0;
      const stats = await oracle.runSeed(seed, i, conns).catch((e: unknown) => {
        if (e instanceof Error && !e.message.includes(oracle.label(seed, i))) e.message = `${oracle.label(seed, i)} ${e.message}`;
        throw e;
      });
      for (const k of Object.keys(total) as Array<keyof Stats>) total[k] += stats[k];
    }
    console.info(`fast join oracle: ${SEEDS} seeds from MVS_TEST_SEED=${base} in ${Date.now() - started} ms`, total);
    if (SEEDS < 5) return;
    // The workload did what it is meant to.
    expect(total.heldAcross + total.lateWriters, `MVS_TEST_SEED=${base}`).toBeGreaterThan(0);
    expect(total.rollbacks, `MVS_TEST_SEED=${base}`).toBeGreaterThan(0);
    expect(total.multiTable, `MVS_TEST_SEED=${base}`).toBeGreaterThan(0);
    expect(total.multiLogRefreshes, `MVS_TEST_SEED=${base}`).toBeGreaterThan(0);
  }, TIMEOUT_MS);
});

describe('one cut covers every log an MV reads', () => {
  it('a transaction in flight on a dimension while a later one commits: the cut waits for it, nothing is skipped', async () => {
    await oracle.oneCutCase('c');
  });
});
