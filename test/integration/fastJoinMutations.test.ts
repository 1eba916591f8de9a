import type { Connection } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createRunners } from '../../src/app/runtime.js';
import { systemClock } from '../../src/clock.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import type { DeltaInput, SourceKind, Term } from '../../src/fast/joinDelta.js';
import { JoinOracle, ORACLE_MISMATCH } from '../support/joinOracle.js';
import { testSeed } from '../support/prng.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// Mutation checks of the join oracle (test/support/joinOracle.ts): the same checks, run against
// code broken on purpose, must fail. Each mutation wraps the real module (vi.mock) and is on
// only while its test runs; the code under test is otherwise the real one, against the real
// MariaDB:
// - a term of the delta rule dropped (the first, or the last, when a refresh has more than one);
// - the pre-change state of the tables after the changing one taken from the live table at the
//   cut instead of rebuilt from the table and its log;
// - the consistent cut gating only the first of an MV's logs (the others' high-water marks read
//   in its snapshot without waiting for their writers).
// A broken delta may also add a joined row twice, which a select-project-join MV's unique key
// refuses before the check runs: that failure counts as caught too.

type Mutation = 'drop-first-term' | 'drop-last-term' | 'live-pre-change' | 'one-log-cut';
const mutation = vi.hoisted(() => ({ current: null as Mutation | null }));

vi.mock('../../src/fast/joinDelta.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/fast/joinDelta.js')>();
  const mutate = (terms: Term[]): Term[] => {
    switch (mutation.current) {
      case 'drop-first-term':
        return terms.length > 1 ? terms.slice(1) : terms;
      case 'drop-last-term':
        return terms.length > 1 ? terms.slice(0, -1) : terms;
      case 'live-pre-change':
        return terms.map((t) => {
          const live = t.subterms.map((kinds) => kinds.map((k): SourceKind => (k === 'kept' || k === 'old' || k === 'pre' ? 'post' : k)));
          return { ...t, subterms: [...new Map(live.map((k) => [k.join(), k])).values()] };
        });
      default:
        return terms;
    }
  };
  return {
    ...real,
    // Every delta query is built here, whether read whole or in parts on several snapshots.
    deltaUnionParts: (input: DeltaInput, select: (term: Term) => string[], parts: number): string[] => {
      if (mutation.current === null || mutation.current === 'one-log-cut') return real.deltaUnionParts(input, select, parts);
      const groups: string[][] = [];
      mutate(real.deltaTerms(input))
        .flatMap((t) => t.subterms.map((kinds) => real.subtermSql(input, kinds, select(t))))
        .forEach((sql, i) => (groups[i % parts] ??= []).push(sql));
      return groups.map((g) => g.join(' UNION ALL '));
    },
  };
});

vi.mock('../../src/mlog/cut.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/mlog/cut.js')>();
  return {
    ...real,
    takeCut: async (...args: Parameters<typeof real.takeCut>) => {
      const [db, logs, waitMs, capture, opts] = args;
      if (mutation.current !== 'one-log-cut' || logs.length < 2) return real.takeCut(...args);
      const [first, ...rest] = [...logs].sort((a, b) => a.mlog_id - b.mlog_id);
      // Extra snapshots gated on the first log only, like the main one.
      const cut = await real.takeCut(db, [first!], waitMs, capture, opts);
      for (const l of rest) {
        const [rows] = (await cut.snapshot.raw('SELECT COALESCE(MAX(`_mlog$seq`), 0) AS h FROM ??.??', [l.table_schema, l.mlog_name])) as [Array<{ h: number | string }>];
        cut.highWater.set(Number(l.mlog_id), Number(rows[0]!.h));
      }
      return cut;
    },
  };
});

/** Seeds tried per mutation: each must make the oracle fail within these. */
const SEEDS_PER_MUTATION = 3;

let t: TestEnv;
let oracle: JoinOracle;
let conns: Connection[] = [];

beforeAll(async () => {
  t = await createTestEnv('fast_join_mutations');
  await migrateLatest(t.db);
  const { runner, purger } = createRunners({ db: t.db, logger: t.logger, clock: systemClock, purgeBatch: 1000 }, 'join-mutations-node');
  const ddl = new DdlExecutor({ db: t.db, logger: t.logger, clock: systemClock, runner, purger, defaultSchema: t.database, notify: async () => {} });
  oracle = new JoinOracle(t, ddl, testSeed());
  conns = await oracle.writerConnections();
});

afterEach(() => {
  mutation.current = null;
});

afterAll(async () => {
  await Promise.allSettled(conns.map((c) => c.end()));
  await t?.close();
});

/** The error the random-workload oracle ends with under `m` (undefined: it passed every seed). */
async function oracleUnder(m: Mutation, firstIndex: number): Promise<{ error: unknown; seeds: number } | undefined> {
  mutation.current = m;
  for (let i = 0; i < SEEDS_PER_MUTATION; i++) {
    const seed = (oracle.baseSeed + (firstIndex + i) * 7919) >>> 0;
    try {
      await oracle.runSeed(seed, firstIndex + i, conns);
    } catch (error) {
      return { error, seeds: i + 1 };
    }
  }
  return undefined;
}

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * How the oracle run failed: its check (the MV differs from its definition at the cut), or a
 * select-project-join MV's unique key refusing a joined row the broken delta adds twice.
 */
const CAUGHT = new RegExp(`${ORACLE_MISMATCH}|refresh of \\S+ failed: Duplicate entry .* for key '__mvs_key'`);

describe('the join oracle catches a broken delta rule', () => {
  const cases: Array<[Mutation, string, number]> = [
    ['drop-first-term', 'the first term of the delta rule dropped (the fact table\'s changes)', 100],
    ['drop-last-term', 'the last term of the delta rule dropped (a dimension\'s changes)', 200],
    ['live-pre-change', 'the pre-change state of the later tables taken from the live table at the cut', 300],
  ];
  for (const [m, what, index] of cases) {
    it(`${what}: the oracle fails`, async () => {
      const failed = await oracleUnder(m, index);
      expect(failed, `${m}: the oracle passed ${SEEDS_PER_MUTATION} seeds from MVS_TEST_SEED=${oracle.baseSeed}`).toBeDefined();
      expect(messageOf(failed!.error)).toMatch(CAUGHT);
      console.info(`mutation ${m}: caught after ${failed!.seeds} seed(s): ${messageOf(failed!.error).split('\n')[0]}`);
    }, 600_000);
  }
});

describe('the join oracle catches a cut that covers only one log', () => {
  it('the dimension\'s log read without waiting for its writers: a transaction in flight on it is skipped, and the oracle fails', async () => {
    mutation.current = 'one-log-cut';
    const caught = await oracle.oneCutCase('m1').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(caught, 'the one-cut case passed with a cut over one log').toBeDefined();
    expect(messageOf(caught)).toContain(ORACLE_MISMATCH);
  });

  it('unmutated, the same case passes (the check above fails for the mutation, not for the case)', async () => {
    await oracle.oneCutCase('m2');
  });
});
