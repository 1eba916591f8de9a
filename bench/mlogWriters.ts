// Writer overhead of an MV log (DESIGN.md §2 "MV logs"): the same writes into two tables of the
// same shape, one without and one with `CREATE MATERIALIZED VIEW LOG ON w_logged (g, x)` (its
// AFTER triggers take the log's gate row in share mode and insert the log rows in the writer's
// transaction). Writers are plain mysql2 connections (no knex, no pool), autocommit:
//   - single-row INSERTs, 1 connection;
//   - 100-row multi-row INSERTs, 1 connection;
//   - single-row UPDATEs of x by primary key (2 log rows each), 1 connection;
//   - single-row INSERTs from 4 connections at once.
// A third table, w_nogate, is an ablation (not something mvsched makes): the log's own triggers
// copied from information_schema.TRIGGERS onto it, writing into a copy of the log table, with the
// gate read (`SELECT ... FROM mvs_mlog_gates ... LOCK IN SHARE MODE`) removed; it splits the
// overhead into "gate read" and "trigger + log row".
// Each workload runs in rounds, the tables in rotating order so that drift in the machine's load
// falls on all of them; rows/s = rows / summed time per table. One small warm-up round per
// workload is not counted. No MV reads the log and nothing is purged while measuring.
//
// From bench/run.ts: `npm run bench -- mlog-writers`.
// Env: BENCH_WRITERS_ROWS=1000 (single-row statements per round and table) BENCH_WRITERS_ROUNDS=10
//      BENCH_WRITERS_CONC=4
import type { Connection } from 'mysql2/promise';
import { CpuMeter, fmtCpu, mlogBench, prng, writerConnection } from './mlogSupport.js';
import {
  createBenchDatabase,
  fmtInt,
  fmtMs,
  fmtRatio,
  loadAvg,
  median,
  progress,
  summarize,
  table,
  type BenchContext,
  type BenchOutcome,
  type CpuUse,
  type GoalCheck,
  envInt,
} from './support.js';

export interface WritersOptions {
  rows: number;
  rounds: number;
  concurrency: number;
}

export function writersOptionsFromEnv(): WritersOptions {
  return { rows: envInt('BENCH_WRITERS_ROWS', 1_000), rounds: envInt('BENCH_WRITERS_ROUNDS', 10), concurrency: envInt('BENCH_WRITERS_CONC', 4) };
}

const TABLES = ['w_plain', 'w_logged', 'w_nogate'] as const;
type Tbl = (typeof TABLES)[number];

interface Side {
  rows: number;
  ms: number;
  /** rows/s of each round */
  perRound: number[];
  statements: number;
  latencies: number[];
}

export interface SideResult {
  rowsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** Extra time per row against the table without a log, µs (from the throughputs). */
  extraUsPerRow: number;
}

export interface WorkloadResult {
  name: string;
  rowsPerRound: number;
  /** Latencies are per statement (a 100-row INSERT is one statement). */
  plain: SideResult;
  logged: SideResult;
  /** Ablation: the log's triggers without the gate read. */
  nogate: SideResult;
  /** with-log throughput / without-log throughput */
  ratio: number;
  nogateRatio: number;
  /** Median over rounds of (with-log rows/s / no-log rows/s) in the same round: robust to bursts of foreign load. */
  roundRatioMedian: number;
  logRows: number;
}

export interface WritersResult {
  options: WritersOptions;
  workloads: WorkloadResult[];
  cpu: CpuUse;
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
    // Ablation: the same triggers on w_nogate, into a copy of the log, without the gate read.
    await db.raw('CREATE TABLE w_nogate_log LIKE `mlog$w_logged`');
    const [trigs] = (await db.raw(
      'SELECT EVENT_MANIPULATION AS ev, ACTION_STATEMENT AS body FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?',
      [bdb.name, 'w_logged'],
    )) as [Array<{ ev: string; body: string }>];
    if (trigs.length !== 3) throw new Error(`expected 3 triggers on w_logged, found ${trigs.length}`);
    for (const { ev, body } of trigs) {
      const gate = /\s*SELECT mlog_id INTO __mvs_gate FROM [^;]*LOCK IN SHARE MODE;/;
      if (!gate.test(body)) throw new Error(`no gate read in the ${ev} trigger: ${body}`);
      const copy = body.replace(gate, '').replaceAll('`mlog$w_logged`', '`w_nogate_log`');
      await db.raw(`CREATE TRIGGER w_nogate_${ev.toLowerCase()} AFTER ${ev} ON w_nogate FOR EACH ROW ${copy}`);
    }
    for (let i = 0; i < opts.concurrency; i++) conns.push(await writerConnection(bdb.url));
    const rnd = prng(7);
    const int = (n: number) => Math.floor(rnd() * n);
    const nextId: Record<Tbl, number> = { w_plain: 1, w_logged: 1, w_nogate: 1 };
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
    const count = async (t: string) => Number(((await db.raw('SELECT COUNT(*) AS n FROM ??', [t])) as [Array<{ n: number }>])[0][0]!.n);
    const logCount = () => count('mlog$w_logged');
    const results: WorkloadResult[] = [];
    const cpu = await CpuMeter.create(db);
    cpu.start();
    for (const w of workloads) {
      progress(`mlog-writers: ${w.name}`);
      const cs = conns.slice(0, w.conns);
      // Warm-up, not counted.
      for (const t of TABLES) await w.work(cs, t, Math.max(w.conns, Math.floor(w.rows / 10)), []);
      const logBefore = await logCount();
      const nogateBefore = await count('w_nogate_log');
      const sides: Record<Tbl, Side> = {
        w_plain: { rows: 0, ms: 0, perRound: [], statements: 0, latencies: [] },
        w_logged: { rows: 0, ms: 0, perRound: [], statements: 0, latencies: [] },
        w_nogate: { rows: 0, ms: 0, perRound: [], statements: 0, latencies: [] },
      };
      for (let r = 0; r < opts.rounds; r++) {
        const order: Tbl[] = [...TABLES.slice(r % TABLES.length), ...TABLES.slice(0, r % TABLES.length)];
        if (r % 2 === 1) order.reverse();
        for (const t of order) {
          const lat: number[] = [];
          const t0 = performance.now();
          const n = await w.work(cs, t, w.rows, lat);
          const ms = performance.now() - t0;
          sides[t].ms += ms;
          sides[t].perRound.push((n / ms) * 1000);
          sides[t].rows += n;
          sides[t].statements += lat.length;
          sides[t].latencies.push(...lat);
        }
      }
      const logRows = (await logCount()) - logBefore;
      const expected = sides.w_logged.rows * w.logPerRow;
      if (logRows !== expected) throw new Error(`${w.name}: ${logRows} log rows, expected ${expected}`);
      const nogateRows = (await count('w_nogate_log')) - nogateBefore;
      if (nogateRows !== sides.w_nogate.rows * w.logPerRow) throw new Error(`${w.name}: ${nogateRows} rows in w_nogate_log, expected ${sides.w_nogate.rows * w.logPerRow}`);
      const plainUs = (sides.w_plain.ms * 1000) / sides.w_plain.rows;
      const side = (s: Side): SideResult => {
        const sum = summarize(s.latencies);
        return { rowsPerSec: (s.rows / s.ms) * 1000, p50Ms: sum.p50, p99Ms: sum.p99, extraUsPerRow: (s.ms * 1000) / s.rows - plainUs };
      };
      const plain = side(sides.w_plain);
      const logged = side(sides.w_logged);
      const nogate = side(sides.w_nogate);
      results.push({
        name: w.name,
        rowsPerRound: w.rows,
        plain,
        logged,
        nogate,
        ratio: logged.rowsPerSec / plain.rowsPerSec,
        nogateRatio: nogate.rowsPerSec / plain.rowsPerSec,
        roundRatioMedian: median(sides.w_logged.perRound.map((x, i) => x / sides.w_plain.perRound[i]!)),
        logRows,
      });
      progress(`mlog-writers: ${w.name}: ${fmtInt(plain.rowsPerSec)} vs ${fmtInt(logged.rowsPerSec)} rows/s`);
    }
    const result: WritersResult = { options: opts, workloads: results, cpu: cpu.stop(), loadAvgAtStart, loadAvgAtEnd: loadAvg() };
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
    `Tables of one shape (id INT PK, g INT, x INT, note VARCHAR(32), KEY (g)): w_plain without a log, w_logged with an MV log on (g, x), ` +
      `w_nogate with copies of that log's triggers minus the gate read (ablation). ${o.rounds} rounds per workload, tables in rotating order; ` +
      `latencies (p50 / p99) are per statement, client side; "+µs/row" is the extra time per row against w_plain.`,
  );
  lines.push('');
  lines.push(
    table(
      [
        'workload',
        'rows / round / table',
        'no log: rows/s (p50 / p99)',
        'MV log: rows/s (p50 / p99)',
        'MV log / no log',
        'per-round median',
        '+µs/row',
        'ablation, no gate read: rows/s',
        'ablation / no log',
        '+µs/row',
      ],
      r.workloads.map((w) => [
        w.name,
        fmtInt(w.rowsPerRound),
        `${fmtInt(w.plain.rowsPerSec)} (${fmtMs(w.plain.p50Ms)} / ${fmtMs(w.plain.p99Ms)})`,
        `${fmtInt(w.logged.rowsPerSec)} (${fmtMs(w.logged.p50Ms)} / ${fmtMs(w.logged.p99Ms)})`,
        `**${fmtRatio(w.ratio, 2)}**`,
        fmtRatio(w.roundRatioMedian, 2),
        w.logged.extraUsPerRow.toFixed(0),
        `${fmtInt(w.nogate.rowsPerSec)} (${fmtMs(w.nogate.p50Ms)} / ${fmtMs(w.nogate.p99Ms)})`,
        fmtRatio(w.nogateRatio, 2),
        w.nogate.extraUsPerRow.toFixed(0),
      ]),
    ),
  );
  lines.push('');
  lines.push(`CPU over all workloads: ${fmtCpu(r.cpu)}.`);
  lines.push('');
  lines.push(`load avg ${r.loadAvgAtStart.join(' ')} at start, ${r.loadAvgAtEnd.join(' ')} at end`);
  return lines.join('\n');
}
