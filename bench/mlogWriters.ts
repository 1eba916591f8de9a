// Writer overhead of an MV log (DESIGN.md §2 "MV logs"): the same writes into two tables of the
// same shape, one without and one with `CREATE MATERIALIZED VIEW LOG ON w_logged (g, x)` (its
// AFTER triggers take the log's gate row in share mode and insert the log rows in the writer's
// transaction). Writers are plain mysql2 connections (no knex, no pool), autocommit:
//   - single-row INSERTs, 1 connection;
//   - 100-row multi-row INSERTs, 1 connection;
//   - single-row UPDATEs of x by primary key (2 log rows each), 1 connection;
//   - single-row INSERTs from 4 connections at once.
// Each workload runs in rounds, the two tables alternating (A B B A A B ...) so that drift in the
// machine's load falls on both; rows/s = rows / summed time per table. One small warm-up round
// per workload is not counted. No MV reads the log and nothing is purged while measuring.
//
// From bench/run.ts: `npm run bench -- mlog-writers`.
// Env: BENCH_WRITERS_ROWS=5000 (single-row statements per round and table) BENCH_WRITERS_ROUNDS=4
//      BENCH_WRITERS_CONC=4
import type { Connection } from 'mysql2/promise';
import { mlogBench, prng, writerConnection } from './mlogSupport.js';
import {
  createBenchDatabase,
  fmtInt,
  fmtMs,
  fmtRatio,
  loadAvg,
  progress,
  summarize,
  table,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
} from './support.js';

export interface WritersOptions {
  rows: number;
  rounds: number;
  concurrency: number;
}

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  const n = v ? Number(v) : dflt;
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer`);
  return n;
}

export function writersOptionsFromEnv(): WritersOptions {
  return { rows: envInt('BENCH_WRITERS_ROWS', 5_000), rounds: envInt('BENCH_WRITERS_ROUNDS', 4), concurrency: envInt('BENCH_WRITERS_CONC', 4) };
}

const TABLES = ['w_plain', 'w_logged'] as const;
type Tbl = (typeof TABLES)[number];

interface Side {
  rows: number;
  ms: number;
  statements: number;
  latencies: number[];
}

export interface WorkloadResult {
  name: string;
  rowsPerRound: number;
  /** Latencies are per statement (a 100-row INSERT is one statement). */
  plain: { rowsPerSec: number; p50Ms: number; p99Ms: number };
  logged: { rowsPerSec: number; p50Ms: number; p99Ms: number };
  /** with-log throughput / without-log throughput */
  ratio: number;
  logRows: number;
}

export interface WritersResult {
  options: WritersOptions;
  workloads: WorkloadResult[];
  loadAvgAtStart: number[];
  loadAvgAtEnd: number[];
}

type Work = (conns: Connection[], table: Tbl, count: number, lat: number[]) => Promise<number>;

export async function runMlogWriters(ctx: BenchContext, opts: WritersOptions = writersOptionsFromEnv()): Promise<BenchOutcome<WritersResult>> {
  const loadAvgAtStart = loadAvg();
  const bdb = await createBenchDatabase(ctx, 'writers', 4);
  const { db } = bdb;
  const conns: Connection[] = [];
  try {
    const mb = mlogBench(bdb);
    for (const t of TABLES) {
      await db.raw(`CREATE TABLE ${t} (id INT NOT NULL PRIMARY KEY, g INT NOT NULL, x INT NOT NULL, note VARCHAR(32) NULL, KEY idx_${t}_g (g)) ENGINE=InnoDB`);
    }
    await mb.ddl.execute('CREATE MATERIALIZED VIEW LOG ON w_logged (g, x)');
    for (let i = 0; i < opts.concurrency; i++) conns.push(await writerConnection(bdb.url));
    const rnd = prng(7);
    const int = (n: number) => Math.floor(rnd() * n);
    const nextId: Record<Tbl, number> = { w_plain: 1, w_logged: 1 };
    const timed = async (lat: number[], fn: () => Promise<unknown>) => {
      const t = performance.now();
      await fn();
      lat.push(performance.now() - t);
    };

    const singleInsert: Work = async ([c], table, count, lat) => {
      for (let i = 0; i < count; i++) {
        await timed(lat, () => c!.query(`INSERT INTO ${table} (id, g, x, note) VALUES (?, ?, ?, ?)`, [nextId[table]++, int(1000), int(100_003), 'single']));
      }
      return count;
    };
    const batchInsert: Work = async ([c], table, count, lat) => {
      for (let done = 0; done < count; done += 100) {
        const n = Math.min(100, count - done);
        const values: unknown[] = [];
        for (let i = 0; i < n; i++) values.push(nextId[table]++, int(1000), int(100_003), 'batch');
        await timed(lat, () => c!.query(`INSERT INTO ${table} (id, g, x, note) VALUES ${Array.from({ length: n }, () => '(?, ?, ?, ?)').join(', ')}`, values));
      }
      return count;
    };
    const singleUpdate: Work = async ([c], table, count, lat) => {
      const maxId = nextId[table] - 1;
      for (let i = 0; i < count; i++) {
        await timed(lat, () => c!.query(`UPDATE ${table} SET x = ? WHERE id = ?`, [100_003 + int(100_003), 1 + int(maxId)]));
      }
      return count;
    };
    const concurrentInsert: Work = async (cs, table, count, lat) => {
      const per = Math.ceil(count / cs.length);
      await Promise.all(
        cs.map(async (c) => {
          for (let i = 0; i < per; i++) {
            const id = nextId[table]++;
            await timed(lat, () => c.query(`INSERT INTO ${table} (id, g, x, note) VALUES (?, ?, ?, ?)`, [id, int(1000), int(100_003), 'conc']));
          }
        }),
      );
      return per * cs.length;
    };

    const workloads: Array<{ name: string; work: Work; conns: number; rows: number; logPerRow: number }> = [
      { name: 'single-row INSERT, autocommit, 1 connection', work: singleInsert, conns: 1, rows: opts.rows, logPerRow: 1 },
      { name: '100-row multi-row INSERT, autocommit, 1 connection', work: batchInsert, conns: 1, rows: opts.rows * 4, logPerRow: 1 },
      { name: 'single-row UPDATE of x by id, autocommit, 1 connection', work: singleUpdate, conns: 1, rows: opts.rows, logPerRow: 2 },
      { name: `single-row INSERT, autocommit, ${opts.concurrency} connections`, work: concurrentInsert, conns: opts.concurrency, rows: opts.rows * 2, logPerRow: 1 },
    ];
    const logCount = async () => Number(((await db.raw('SELECT COUNT(*) AS n FROM `mlog$w_logged`')) as [Array<{ n: number }>])[0][0]!.n);
    const results: WorkloadResult[] = [];
    for (const w of workloads) {
      progress(`mlog-writers: ${w.name}`);
      const cs = conns.slice(0, w.conns);
      // Warm-up, not counted.
      for (const t of TABLES) await w.work(cs, t, Math.max(w.conns, Math.floor(w.rows / 10)), []);
      const logBefore = await logCount();
      const sides: Record<Tbl, Side> = {
        w_plain: { rows: 0, ms: 0, statements: 0, latencies: [] },
        w_logged: { rows: 0, ms: 0, statements: 0, latencies: [] },
      };
      for (let r = 0; r < opts.rounds; r++) {
        const order: Tbl[] = r % 2 === 0 ? ['w_plain', 'w_logged'] : ['w_logged', 'w_plain'];
        for (const t of order) {
          const lat: number[] = [];
          const t0 = performance.now();
          const n = await w.work(cs, t, w.rows, lat);
          sides[t].ms += performance.now() - t0;
          sides[t].rows += n;
          sides[t].statements += lat.length;
          sides[t].latencies.push(...lat);
        }
      }
      const logRows = (await logCount()) - logBefore;
      const expected = sides.w_logged.rows * w.logPerRow;
      if (logRows !== expected) throw new Error(`${w.name}: ${logRows} log rows, expected ${expected}`);
      const side = (s: Side) => {
        const sum = summarize(s.latencies);
        return { rowsPerSec: (s.rows / s.ms) * 1000, p50Ms: sum.p50, p99Ms: sum.p99 };
      };
      const plain = side(sides.w_plain);
      const logged = side(sides.w_logged);
      results.push({ name: w.name, rowsPerRound: w.rows, plain, logged, ratio: logged.rowsPerSec / plain.rowsPerSec, logRows });
      progress(`mlog-writers: ${w.name}: ${fmtInt(plain.rowsPerSec)} vs ${fmtInt(logged.rowsPerSec)} rows/s`);
    }
    const result: WritersResult = { options: opts, workloads: results, loadAvgAtStart, loadAvgAtEnd: loadAvg() };
    const goals: GoalCheck[] = results.map((w) => ({
      name: `mlog-writers: throughput with / without MV log, ${w.name}`,
      value: w.ratio,
      goal: 'informational',
      met: null,
    }));
    return { result, goals, report: report(result) };
  } finally {
    await Promise.allSettled(conns.map((c) => c.end()));
    await bdb.drop();
  }
}

function report(r: WritersResult): string {
  const o = r.options;
  const lines: string[] = [];
  lines.push(
    `Two tables (id INT PK, g INT, x INT, note VARCHAR(32), KEY (g)); the second has an MV log on (g, x). ` +
      `${o.rounds} rounds per workload, tables alternating; latencies (p50 / p99) are per statement, client side.`,
  );
  lines.push('');
  lines.push(
    table(
      ['workload', 'rows / round / table', 'without log: rows/s (p50 / p99)', 'with log: rows/s (p50 / p99)', 'with / without', 'log rows written'],
      r.workloads.map((w) => [
        w.name,
        fmtInt(w.rowsPerRound),
        `${fmtInt(w.plain.rowsPerSec)} (${fmtMs(w.plain.p50Ms)} / ${fmtMs(w.plain.p99Ms)})`,
        `${fmtInt(w.logged.rowsPerSec)} (${fmtMs(w.logged.p50Ms)} / ${fmtMs(w.logged.p99Ms)})`,
        `**${fmtRatio(w.ratio, 2)}**`,
        fmtInt(w.logRows),
      ]),
    ),
  );
  lines.push('');
  lines.push(`load avg ${r.loadAvgAtStart.join(' ')} at start, ${r.loadAvgAtEnd.join(' ')} at end`);
  return lines.join('\n');
}
