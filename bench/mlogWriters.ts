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
// A fourth table, w_binlog, has a BINLOG log (no triggers): a `mvsched capture` child process
// fills it from the binary log (on for every table: the local servers run with it). Its work
// competes with the writers for the machine's cores. It is measured twice per round: with
// capture running, and with capture paused (SIGSTOP: the writers pay only the binary log, which
// every table pays). After each of those slots, capture is let catch up, untimed, so its backlog
// never falls on another table's slot; the catch-up time is reported beside the ratio.
// Each workload runs in rounds, the tables in rotating order so that drift in the machine's load
// falls on all of them; rows/s = rows / summed time per table. One small warm-up round per
// workload is not counted. No MV reads the log and nothing is purged while measuring.
// Then: capture's lag under the multi-connection load (commit to log row, sampled every 20 ms;
// and bytes behind as capture publishes them), its throughput draining a backlog, and FAST
// refresh latency over a BINLOG log against a TRIGGERS log (bench/binlogFastLatency.ts).
//
// From bench/run.ts: `npm run bench -- mlog-writers`.
// Env: BENCH_WRITERS_ROWS=1000 (single-row statements per round and table) BENCH_WRITERS_ROUNDS=10
//      BENCH_WRITERS_CONC=4 BENCH_CAPTURE_BACKLOG=100000 (rows for the drain measurement), and
//      bench/binlogFastLatency.ts's BENCH_FASTLAT_*
import type { Connection } from 'mysql2/promise';
import { CpuMeter, fmtCpu, mariadbPid, mlogBench, prng, writerConnection } from './mlogSupport.js';
import { readCaptureStatus } from '../src/capture/status.js';
import { fastLatencyReport, measureFastLatency, type FastLatencyResult } from './binlogFastLatency.js';
import {
  benchRedis,
  closeRedis,
  redisEnv,
  freshPrefix,
  sleep,
  spawnMvsched,
  stopMvsched,
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
  backlog: number;
}

export function writersOptionsFromEnv(): WritersOptions {
  return {
    rows: envInt('BENCH_WRITERS_ROWS', 1_000),
    rounds: envInt('BENCH_WRITERS_ROUNDS', 10),
    concurrency: envInt('BENCH_WRITERS_CONC', 4),
    backlog: envInt('BENCH_CAPTURE_BACKLOG', 100_000),
  };
}

const TABLES = ['w_plain', 'w_logged', 'w_nogate', 'w_binlog'] as const;
type Tbl = (typeof TABLES)[number];
/** What a slot of a round measures: a table, or w_binlog with capture paused. */
const SLOTS = ['w_plain', 'w_logged', 'w_nogate', 'w_binlog', 'w_binlog_paused'] as const;
type Slot = (typeof SLOTS)[number];
const tableOf = (s: Slot): Tbl => (s === 'w_binlog_paused' ? 'w_binlog' : s);

/** Goals of issue 14 for BINLOG logs with capture running, against no log. */
const BINLOG_GOALS = [0.95, 0.9, 0.95, 0.9];

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
  /** BINLOG log, capture running / paused. */
  binlog: SideResult;
  binlogPaused: SideResult;
  /** with-log throughput / without-log throughput */
  ratio: number;
  nogateRatio: number;
  binlogRatio: number;
  binlogPausedRatio: number;
  /** BINLOG with capture running, the untimed catch-up after each slot counted in. */
  binlogWithCatchUpRatio: number;
  /** Median over rounds of (with-log rows/s / no-log rows/s) in the same round: robust to bursts of foreign load. */
  roundRatioMedian: number;
  binlogRoundRatioMedian: number;
  /** Catch-up after a slot with capture running: median and max ms. */
  catchUpMs: { p50: number; max: number };
  logRows: number;
}

export interface CaptureFigures {
  /** Commit-to-log-row lag under the multi-connection load, from 100 ms samples (ms). */
  lagMs: { p50: number; p99: number; max: number };
  /** As capture publishes it (1 s samples) during that load. */
  publishedLagSeconds: { max: number | null };
  publishedLagBytes: { p50: number | null; max: number | null };
  /** Draining a backlog of `rows` log rows written while capture was paused. */
  drain: { rows: number; ms: number; rowsPerSec: number };
  /** CPU of the capture process over all workloads (cores). */
  cpuCores: number | null;
}

export interface WritersResult {
  options: WritersOptions;
  workloads: WorkloadResult[];
  capture: CaptureFigures;
  fastLatency: FastLatencyResult;
  cpu: CpuUse;
  loadAvgAtStart: number[];
  loadAvgAtEnd: number[];
}

type Work = (conns: Connection[], table: Tbl, count: number, lat: number[]) => Promise<number>;

/** A `mvsched capture` child process on the bench database, pausable with SIGSTOP. */
interface CaptureChild {
  pid: number | undefined;
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
  status(): Promise<{ lagSeconds: number | null; lagBytes: number | null } | null>;
}

export async function runMlogWriters(ctx: BenchContext, opts: WritersOptions = writersOptionsFromEnv()): Promise<BenchOutcome<WritersResult>> {
  const loadAvgAtStart = loadAvg();
  const bdb = await createBenchDatabase(ctx, 'writers', 8);
  const { db } = bdb;
  const conns: Connection[] = [];
  let capture: CaptureChild | undefined;
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
    await mb.ddl.execute('CREATE MATERIALIZED VIEW LOG ON w_binlog (g, x) USING BINLOG');
    capture = await startCaptureChild(ctx, bdb.url);
    for (let i = 0; i < opts.concurrency; i++) conns.push(await writerConnection(bdb.url));
    const rnd = prng(7);
    const int = (n: number) => Math.floor(rnd() * n);
    const nextId: Record<Tbl, number> = { w_plain: 1, w_logged: 1, w_nogate: 1, w_binlog: 1 };
    // While capture's lag is sampled: when each row written to w_binlog committed, in order.
    let commitTimes: number[] | undefined;
    const timed = async (lat: number[], rows: number, fn: () => Promise<unknown>) => {
      const t = performance.now();
      await fn();
      const done = performance.now();
      lat.push(done - t);
      if (commitTimes) for (let i = 0; i < rows; i++) commitTimes.push(done);
    };

    const singleInsert: Work = async ([c], table, count, lat) => {
      for (let i = 0; i < count; i++) {
        await timed(lat, 1, () => c!.query(`INSERT INTO ${table} (id, g, x, note) VALUES (?, ?, ?, ?)`, [nextId[table]++, int(1000), int(100_003), 'single']));
      }
      return count;
    };
    const batchInsert: Work = async ([c], table, count, lat) => {
      for (let done = 0; done < count; done += 100) {
        const n = Math.min(100, count - done);
        const values: unknown[] = [];
        for (let i = 0; i < n; i++) values.push(nextId[table]++, int(1000), int(100_003), 'batch');
        await timed(lat, n, () => c!.query(`INSERT INTO ${table} (id, g, x, note) VALUES ${Array.from({ length: n }, () => '(?, ?, ?, ?)').join(', ')}`, values));
      }
      return count;
    };
    const singleUpdate: Work = async ([c], table, count, lat) => {
      const maxId = nextId[table] - 1;
      for (let i = 0; i < count; i++) {
        await timed(lat, 1, () => c!.query(`UPDATE ${table} SET x = ? WHERE id = ?`, [100_003 + int(100_003), 1 + int(maxId)]));
      }
      return count;
    };
    const concurrentInsert: Work = async (cs, table, count, lat) => {
      const per = Math.ceil(count / cs.length);
      await Promise.all(
        cs.map(async (c) => {
          for (let i = 0; i < per; i++) {
            const id = nextId[table]++;
            await timed(lat, 1, () => c.query(`INSERT INTO ${table} (id, g, x, note) VALUES (?, ?, ?, ?)`, [id, int(1000), int(100_003), 'conc']));
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
    // What capture has written so far: the log's sequence is gap-free here (one writer, no rollbacks).
    const binlogSeq = async () => Number(((await db.raw('SELECT COALESCE(MAX(`_mlog$seq`), 0) AS n FROM `mlog$w_binlog`')) as [Array<{ n: number }>])[0][0]!.n);
    let binlogExpected = 0;
    const catchUp = async () => {
      const t0 = performance.now();
      while ((await binlogSeq()) < binlogExpected) {
        if (performance.now() - t0 > 120_000) throw new Error(`capture did not catch up in 120 s (${await binlogSeq()} of ${binlogExpected} log rows)`);
        await sleep(5);
      }
      return performance.now() - t0;
    };
    const lagSamples: { ms: number[]; publishedSeconds: number[]; publishedBytes: number[] } = { ms: [], publishedSeconds: [], publishedBytes: [] };
    const results: WorkloadResult[] = [];
    const cpu = new CpuMeter({ mariadbd: await mariadbPid(db), bench: process.pid, capture: capture.pid });
    cpu.start();
    for (const w of workloads) {
      progress(`mlog-writers: ${w.name}`);
      const cs = conns.slice(0, w.conns);
      // Warm-up, not counted.
      for (const t of TABLES) {
        const n = await w.work(cs, t, Math.max(w.conns, Math.floor(w.rows / 10)), []);
        if (t === 'w_binlog') binlogExpected += n * w.logPerRow;
      }
      await catchUp();
      const logBefore = await logCount();
      const nogateBefore = await count('w_nogate_log');
      const binlogBefore = await count('mlog$w_binlog');
      const sides = Object.fromEntries(SLOTS.map((sl) => [sl, { rows: 0, ms: 0, perRound: [], statements: 0, latencies: [] } as Side])) as Record<Slot, Side>;
      const catchUps: number[] = [];
      const sampled = w.conns > 1;
      for (let r = 0; r < opts.rounds; r++) {
        const order: Slot[] = [...SLOTS.slice(r % SLOTS.length), ...SLOTS.slice(0, r % SLOTS.length)];
        if (r % 2 === 1) order.reverse();
        for (const sl of order) {
          const lat: number[] = [];
          if (sl === 'w_binlog_paused') capture.pause();
          if (sl === 'w_binlog' && sampled) commitTimes = [];
          const stopSampler = commitTimes ? sampleLag(commitTimes, binlogSeq, binlogExpected, capture, lagSamples) : undefined;
          const t0 = performance.now();
          const n = await w.work(cs, tableOf(sl), w.rows, lat);
          const ms = performance.now() - t0;
          if (tableOf(sl) === 'w_binlog') binlogExpected += n * w.logPerRow;
          if (sl === 'w_binlog_paused') capture.resume();
          if (sl === 'w_binlog' || sl === 'w_binlog_paused') {
            const c = await catchUp();
            if (sl === 'w_binlog') catchUps.push(c);
          }
          await stopSampler?.();
          commitTimes = undefined;
          sides[sl].ms += ms;
          sides[sl].perRound.push((n / ms) * 1000);
          sides[sl].rows += n;
          sides[sl].statements += lat.length;
          sides[sl].latencies.push(...lat);
        }
      }
      const logRows = (await logCount()) - logBefore;
      const expected = sides.w_logged.rows * w.logPerRow;
      if (logRows !== expected) throw new Error(`${w.name}: ${logRows} log rows, expected ${expected}`);
      const nogateRows = (await count('w_nogate_log')) - nogateBefore;
      if (nogateRows !== sides.w_nogate.rows * w.logPerRow) throw new Error(`${w.name}: ${nogateRows} rows in w_nogate_log, expected ${sides.w_nogate.rows * w.logPerRow}`);
      const binlogRows = (await count('mlog$w_binlog')) - binlogBefore;
      const binlogWant = (sides.w_binlog.rows + sides.w_binlog_paused.rows) * w.logPerRow;
      if (binlogRows !== binlogWant) throw new Error(`${w.name}: capture wrote ${binlogRows} log rows, expected ${binlogWant}`);
      const plainUs = (sides.w_plain.ms * 1000) / sides.w_plain.rows;
      const side = (sd: Side): SideResult => {
        const sum = summarize(sd.latencies);
        return { rowsPerSec: (sd.rows / sd.ms) * 1000, p50Ms: sum.p50, p99Ms: sum.p99, extraUsPerRow: (sd.ms * 1000) / sd.rows - plainUs };
      };
      const plain = side(sides.w_plain);
      const logged = side(sides.w_logged);
      const nogate = side(sides.w_nogate);
      const binlog = side(sides.w_binlog);
      const binlogPaused = side(sides.w_binlog_paused);
      const catchUpTotal = catchUps.reduce((a, b) => a + b, 0);
      const sortedCatchUps = [...catchUps].sort((a, b) => a - b);
      results.push({
        name: w.name,
        rowsPerRound: w.rows,
        plain,
        logged,
        nogate,
        binlog,
        binlogPaused,
        ratio: logged.rowsPerSec / plain.rowsPerSec,
        nogateRatio: nogate.rowsPerSec / plain.rowsPerSec,
        binlogRatio: binlog.rowsPerSec / plain.rowsPerSec,
        binlogPausedRatio: binlogPaused.rowsPerSec / plain.rowsPerSec,
        binlogWithCatchUpRatio: ((sides.w_binlog.rows / (sides.w_binlog.ms + catchUpTotal)) * 1000) / plain.rowsPerSec,
        roundRatioMedian: median(sides.w_logged.perRound.map((x, i) => x / sides.w_plain.perRound[i]!)),
        binlogRoundRatioMedian: median(sides.w_binlog.perRound.map((x, i) => x / sides.w_plain.perRound[i]!)),
        catchUpMs: { p50: median(sortedCatchUps), max: sortedCatchUps[sortedCatchUps.length - 1] ?? 0 },
        logRows,
      });
      progress(
        `mlog-writers: ${w.name}: no log ${fmtInt(plain.rowsPerSec)}, triggers ${fmtInt(logged.rowsPerSec)}, ` +
          `binlog ${fmtInt(binlog.rowsPerSec)} (paused ${fmtInt(binlogPaused.rowsPerSec)}) rows/s`,
      );
    }
    const cpuUse = cpu.stop();
    progress(`mlog-writers: capture draining a backlog of ${fmtInt(opts.backlog)} log rows`);
    const drain = await measureDrain(conns[0]!, capture, opts.backlog, nextId, catchUp, (n) => (binlogExpected += n));
    progress('mlog-writers: FAST refresh latency, BINLOG against TRIGGERS logs');
    const fastLatency = await measureFastLatency(bdb, mb);
    const sorted = [...lagSamples.ms].sort((a, b) => a - b);
    const q = (xs: number[], f: number) => xs[Math.min(xs.length - 1, Math.floor(f * xs.length))] ?? 0;
    const pubBytes = [...lagSamples.publishedBytes].sort((a, b) => a - b);
    const captureFigures: CaptureFigures = {
      lagMs: { p50: q(sorted, 0.5), p99: q(sorted, 0.99), max: sorted[sorted.length - 1] ?? 0 },
      publishedLagSeconds: { max: lagSamples.publishedSeconds.length ? Math.max(...lagSamples.publishedSeconds) : null },
      publishedLagBytes: { p50: pubBytes.length ? q(pubBytes, 0.5) : null, max: pubBytes.length ? pubBytes[pubBytes.length - 1]! : null },
      drain,
      cpuCores: cpuUse.byProcess.capture ?? null,
    };
    const result: WritersResult = { options: opts, workloads: results, capture: captureFigures, fastLatency, cpu: cpuUse, loadAvgAtStart, loadAvgAtEnd: loadAvg() };
    const goals: GoalCheck[] = results.flatMap((w, i) => [
      {
        name: `mlog-writers: throughput with / without MV log (triggers), ${w.name}`,
        value: w.ratio,
        goal: 'informational',
        met: null,
      },
      {
        name: `mlog-writers: throughput with a BINLOG log, capture running / without a log, ${w.name}`,
        value: w.binlogRatio,
        goal: `>= ${BINLOG_GOALS[i]}x`,
        met: w.binlogRatio >= BINLOG_GOALS[i]!,
        note: `capture paused ${fmtRatio(w.binlogPausedRatio, 2)}; with its catch-up counted ${fmtRatio(w.binlogWithCatchUpRatio, 2)}`,
      },
    ]);
    const lat = fastLatency.figures;
    goals.push(
      ...(['oneRow', 'batch'] as const).map((c) => ({
        name: `mlog-writers: FAST refresh latency BINLOG / TRIGGERS (p50), ${c === 'oneRow' ? 'a single-row UPDATE' : `${fastLatency.options.batch} changed rows`}, then REFRESH`,
        value: lat[c].BINLOG.p50 / lat[c].TRIGGERS.p50,
        goal: 'informational',
        met: null,
        note: `${fmtMs(lat[c].BINLOG.p50)} against ${fmtMs(lat[c].TRIGGERS.p50)}`,
      })),
    );
    return { result, goals, report: `${report(result)}\n\n${fastLatencyReport(fastLatency)}` };
  } finally {
    await Promise.allSettled(conns.map((c) => c.end()));
    await capture?.stop();
    await bdb.drop();
  }
}

async function startCaptureChild(ctx: BenchContext, url: string): Promise<CaptureChild> {
  const prefix = freshPrefix('writers');
  const redis = benchRedis(ctx);
  // The only capture of its own prefix: a lease long enough that a pause never loses it.
  const proc = spawnMvsched('capture', ['capture'], { DATABASE_URL: url, ...redisEnv(ctx), MVS_PREFIX: prefix, MVS_NODE_TTL_S: '3600', LOG_LEVEL: 'warn' });
  const t0 = performance.now();
  while (!(await readCaptureStatus(redis, prefix))?.active) {
    if (proc.child.exitCode !== null) throw new Error(`mvsched capture exited: ${proc.lines.join('\n')}`);
    if (performance.now() - t0 > 60_000) throw new Error('mvsched capture did not start in 60 s');
    await sleep(100);
  }
  let paused = false;
  return {
    pid: proc.child.pid,
    pause() {
      proc.child.kill('SIGSTOP');
      paused = true;
    },
    resume() {
      proc.child.kill('SIGCONT');
      paused = false;
    },
    async stop() {
      if (paused) proc.child.kill('SIGCONT');
      await stopMvsched(proc);
      await closeRedis(redis);
      if (proc.errors > 0) progress(`mvsched capture logged ${proc.errors} errors: ${proc.lines.slice(-5).join('\n')}`);
    },
    async status() {
      return readCaptureStatus(redis, prefix);
    },
  };
}

/**
 * Sample capture's lag every 20 ms while a slot runs: the age of the oldest row the writers
 * committed that capture has not written yet (commit to log row); and what capture publishes.
 */
function sampleLag(
  commitTimes: number[],
  captured: () => Promise<number>,
  offset: number,
  capture: CaptureChild,
  out: { ms: number[]; publishedSeconds: number[]; publishedBytes: number[] },
): () => Promise<void> {
  let stop = false;
  const loop = (async () => {
    let tick = 0;
    while (!stop) {
      const have = (await captured()) - offset;
      const t = performance.now();
      out.ms.push(have < commitTimes.length ? t - commitTimes[Math.max(0, have)]! : 0);
      if (tick++ % 50 === 0) {
        const st = await capture.status();
        if (st?.lagSeconds !== null && st?.lagSeconds !== undefined) out.publishedSeconds.push(st.lagSeconds);
        if (st?.lagBytes !== null && st?.lagBytes !== undefined) out.publishedBytes.push(st.lagBytes);
      }
      await sleep(20);
    }
  })();
  return async () => {
    stop = true;
    await loop;
  };
}

/** Rows capture writes per second from a backlog: written with capture paused, then timed to drain. */
async function measureDrain(
  c: Connection,
  capture: CaptureChild,
  rows: number,
  nextId: Record<Tbl, number>,
  catchUp: () => Promise<number>,
  expect: (n: number) => void,
): Promise<{ rows: number; ms: number; rowsPerSec: number }> {
  capture.pause();
  try {
    for (let done = 0; done < rows; done += 100) {
      const values: unknown[] = [];
      for (let i = 0; i < 100; i++) values.push(nextId.w_binlog++, i, done + i, 'backlog');
      await c.query(`INSERT INTO w_binlog (id, g, x, note) VALUES ${Array.from({ length: 100 }, () => '(?, ?, ?, ?)').join(', ')}`, values);
    }
    expect(Math.ceil(rows / 100) * 100);
  } finally {
    capture.resume();
  }
  const ms = await catchUp();
  const n = Math.ceil(rows / 100) * 100;
  return { rows: n, ms, rowsPerSec: (n / ms) * 1000 };
}

function report(r: WritersResult): string {
  const o = r.options;
  const lines: string[] = [];
  lines.push(
    `Tables of one shape (id INT PK, g INT, x INT, note VARCHAR(32), KEY (g)): w_plain without a log, w_logged with an MV log on (g, x) ` +
      `filled by triggers, w_nogate with copies of that log's triggers minus the gate read (ablation), w_binlog with a BINLOG log on (g, x) ` +
      `filled by a \`mvsched capture\` process (measured with capture running, and paused). The binary log is on for every table. ` +
      `${o.rounds} rounds per workload, slots in rotating order; latencies (p50 / p99) are per statement, client side; ` +
      `"+µs/row" is the extra time per row against w_plain.`,
  );
  lines.push('');
  lines.push(
    table(
      [
        'workload',
        'rows / round / table',
        'no log: rows/s (p50 / p99)',
        'BINLOG, capture running: rows/s (p50 / p99)',
        '**BINLOG / no log**',
        'per-round median',
        'capture paused / no log',
        'incl. catch-up',
        'catch-up after a slot, p50 / max',
        'TRIGGERS: rows/s (p50 / p99)',
        'TRIGGERS / no log',
        'ablation, no gate read / no log',
      ],
      r.workloads.map((w) => [
        w.name,
        fmtInt(w.rowsPerRound),
        `${fmtInt(w.plain.rowsPerSec)} (${fmtMs(w.plain.p50Ms)} / ${fmtMs(w.plain.p99Ms)})`,
        `${fmtInt(w.binlog.rowsPerSec)} (${fmtMs(w.binlog.p50Ms)} / ${fmtMs(w.binlog.p99Ms)})`,
        `**${fmtRatio(w.binlogRatio, 2)}**`,
        fmtRatio(w.binlogRoundRatioMedian, 2),
        fmtRatio(w.binlogPausedRatio, 2),
        fmtRatio(w.binlogWithCatchUpRatio, 2),
        `${fmtMs(w.catchUpMs.p50)} / ${fmtMs(w.catchUpMs.max)}`,
        `${fmtInt(w.logged.rowsPerSec)} (${fmtMs(w.logged.p50Ms)} / ${fmtMs(w.logged.p99Ms)})`,
        `${fmtRatio(w.ratio, 2)} (${fmtRatio(w.roundRatioMedian, 2)})`,
        fmtRatio(w.nogateRatio, 2),
      ]),
    ),
  );
  const c = r.capture;
  lines.push('');
  lines.push(
    `Capture lag under the ${o.concurrency}-connection load (commit to log row, 20 ms samples): p50 ${fmtMs(c.lagMs.p50)}, ` +
      `p99 ${fmtMs(c.lagMs.p99)}, max ${fmtMs(c.lagMs.max)}; as capture published it (1 s samples): max ${c.publishedLagSeconds.max ?? '-'} s, ` +
      `bytes behind p50 ${fmtInt(c.publishedLagBytes.p50)} / max ${fmtInt(c.publishedLagBytes.max)}.`,
  );
  lines.push(
    `Capture throughput draining a backlog of ${fmtInt(c.drain.rows)} log rows (100-row INSERTs written while it was paused): ` +
      `${fmtInt(c.drain.rowsPerSec)} rows/s (${fmtMs(c.drain.ms)}). Capture process CPU over the workloads: ${c.cpuCores ?? '?'} cores.`,
  );
  lines.push('');
  lines.push(`CPU over all workloads: ${fmtCpu(r.cpu)}.`);
  lines.push('');
  lines.push(`load avg ${r.loadAvgAtStart.join(' ')} at start, ${r.loadAvgAtEnd.join(' ')} at end`);
  return lines.join('\n');
}
