// Purge of 1,000,000 consumed MV-log rows (DESIGN.md §2 "Purge"), and what a concurrent writer
// sees meanwhile.
//
// Set-up, per purge batch size (a fresh database each): p (id INT PK, g INT, x INT, note
// VARCHAR(32), KEY (g)) with N rows, its MV log on (g, x) (purge MANUAL) holding N rows, and one
// FAST MV on it (SELECT g, COUNT(*), SUM(x) FROM p GROUP BY g) that has consumed all of them: its
// watermark — the purge's safe watermark, the MV being the log's only consumer — is the last of
// the N log rows. Two ways to get there (BENCH_PURGE_FILL):
//   direct (default): load p, create the log, INSERT ... SELECT N 'I' rows (the images the
//     triggers would have written, same seq order) straight into the log table, then create the
//     MV, whose first build takes a cut at the log's high-water mark;
//   triggers: create the log and the MV on the empty p, insert N rows into p through the
//     triggers (INSERT ... SELECT, 100,000 rows per statement: about 2 minutes for 1M on 2
//     cores), then refresh the MV FAST.
//
// The writer: one plain mysql2 connection, autocommit, alternating a single-row INSERT of a new
// row and a single-row UPDATE of x of a random existing row (both go through the triggers:
// 1 and 2 log rows, all after the watermark, so never purged). Each statement's latency is
// recorded. Measured: the writer alone for BENCH_PURGE_BASELINE_S seconds (baseline); then the
// writer running while `PurgeRunner.run()` (what PURGE MATERIALIZED VIEW LOG runs) deletes the
// N consumed rows in batches of MVS_PURGE_BATCH; then the writer alone again for half the
// baseline time (InnoDB is still purging the delete-marked rows in the background then).
// Each purge DELETE is timed too (knex query events).
//
// From bench/run.ts: `npm run bench -- purge`.
// Env: BENCH_PURGE_ROWS=1000000 BENCH_PURGE_BATCH=10000 (a comma list runs one variant each)
//      BENCH_PURGE_BASELINE_S=10 BENCH_PURGE_FILL=direct|triggers
import type { Connection } from 'mysql2/promise';
import { bulkLoad, CpuMeter, fmtCpu, mlogBench, prng, SqlTimer, writerConnection } from './mlogSupport.js';
import {
  createBenchDatabase,
  fmtInt,
  fmtMs,
  fmtRatio,
  loadAvg,
  progress,
  sleep,
  summarize,
  table,
  type BenchContext,
  type BenchOutcome,
  type CpuUse,
  type GoalCheck,
  type Summary,
  envInt,
} from './support.js';

export interface PurgeBenchOptions {
  rows: number;
  /** How the N log rows are made: straight INSERT ... SELECT into the log table, or through the triggers (slow). */
  fill: 'direct' | 'triggers';
  batches: number[];
  baselineS: number;
}

export function purgeOptionsFromEnv(): PurgeBenchOptions {
  const batches = (process.env.BENCH_PURGE_BATCH ?? '10000').split(',').map((s) => Number(s.trim()));
  if (batches.some((b) => !Number.isInteger(b) || b <= 0)) throw new Error('BENCH_PURGE_BATCH must be positive integers');
  const fill = process.env.BENCH_PURGE_FILL ?? 'direct';
  if (fill !== 'direct' && fill !== 'triggers') throw new Error('BENCH_PURGE_FILL must be direct or triggers');
  return { rows: envInt('BENCH_PURGE_ROWS', 1_000_000), fill, batches, baselineS: envInt('BENCH_PURGE_BASELINE_S', 10) };
}

export interface WriterStats {
  statements: number;
  perSec: number;
  latency: Summary;
  /** Statements slower than 10 ms / 100 ms. */
  over10ms: number;
  over100ms: number;
  cpu?: CpuUse;
}

export interface PurgeVariant {
  batch: number;
  fill: 'direct' | 'triggers';
  loadMs: number;
  /** The FAST refresh (fill=triggers) or the MV's first build (fill=direct) that consumed the log. */
  consumeMs: number;
  purgedRows: number;
  purgeMs: number;
  /** PurgeRunner.run() wall time (lock, history rows and commit included). */
  purgeWallMs: number;
  rowsPerSec: number;
  deletes: { n: number; p50: number; max: number };
  watermark: number;
  leftInLog: number;
  minSeqLeft: number | null;
  before: WriterStats;
  during: WriterStats;
  after: WriterStats;
}

export interface PurgeBenchResult {
  options: PurgeBenchOptions;
  variants: PurgeVariant[];
  loadAvgAtStart: number[];
  loadAvgAtEnd: number[];
}

/** The writer loop: runs until stop() resolves, recording each statement's latency. */
function startWriter(conn: Connection, firstId: number, maxExistingId: number, seed: number) {
  const rnd = prng(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  let nextId = firstId;
  let stopped = false;
  const lat: number[] = [];
  const t0 = performance.now();
  const loop = (async () => {
    for (let i = 0; !stopped; i++) {
      const t = performance.now();
      if (i % 2 === 0) await conn.query('INSERT INTO p (id, g, x, note) VALUES (?, ?, ?, ?)', [nextId++, int(1000), int(100_003), 'writer']);
      else await conn.query('UPDATE p SET x = ? WHERE id = ?', [int(100_003), 1 + int(maxExistingId)]);
      lat.push(performance.now() - t);
    }
  })();
  return {
    get nextId() {
      return nextId;
    },
    async stop(): Promise<WriterStats> {
      stopped = true;
      await loop;
      const ms = performance.now() - t0;
      return {
        statements: lat.length,
        perSec: (lat.length / ms) * 1000,
        latency: summarize(lat),
        over10ms: lat.filter((x) => x > 10).length,
        over100ms: lat.filter((x) => x > 100).length,
      };
    },
  };
}

async function runVariant(ctx: BenchContext, opts: PurgeBenchOptions, batch: number): Promise<PurgeVariant> {
  const bdb = await createBenchDatabase(ctx, 'purge', 8);
  const { db } = bdb;
  const timer = new SqlTimer(db);
  let conn: Connection | undefined;
  try {
    const mb = mlogBench(bdb, batch);
    await db.raw('CREATE TABLE p (id INT NOT NULL PRIMARY KEY, g INT NOT NULL, x INT NOT NULL, note VARCHAR(32) NULL, KEY idx_p_g (g)) ENGINE=InnoDB');
    const cols = ['id', 'g', 'x', 'note'];
    const exprs = ['n + 1', 'n % 1000', '(n * 7919 + 13) % 100003', "CONCAT('row-', n)"];
    const mvDef = 'SELECT g, COUNT(*) AS c, SUM(x) AS s FROM p GROUP BY g';
    let loadMs: number;
    let consumeMs: number;
    let mvId: number;
    let mlogId: number;
    if (opts.fill === 'triggers') {
      await mb.ddl.execute('CREATE MATERIALIZED VIEW LOG ON p (g, x)');
      await mb.ddl.execute(`CREATE MATERIALIZED VIEW p_mv REFRESH FAST AS ${mvDef}`);
      mvId = await mb.mviewId('p_mv');
      mlogId = await mb.mlogId('p');
      progress(`purge (batch ${fmtInt(batch)}): inserting ${fmtInt(opts.rows)} rows through the MV log triggers`);
      loadMs = await bulkLoad(db, 'p', cols, exprs, opts.rows, { label: 'purge: load' });
      await db.raw('ANALYZE TABLE p');
      progress('purge: FAST refresh consuming the log');
      const t0 = performance.now();
      const out = await mb.runner.run({ mviewId: mvId, trigger: 'MANUAL', method: 'FAST' });
      consumeMs = performance.now() - t0;
      if (out.kind !== 'SUCCESS' || out.method !== 'FAST') throw new Error(`FAST refresh: ${JSON.stringify(out)}`);
    } else {
      // The base rows first (no log yet), then the log with one 'I' row per base row written
      // straight into the log table (the rows the triggers would have written, in the same seq
      // order), then the MV: its first (COMPLETE) build takes a cut at the log's high-water mark
      // and records it as its watermark, so all N log rows are consumed.
      progress(`purge (batch ${fmtInt(batch)}): loading ${fmtInt(opts.rows)} base rows and ${fmtInt(opts.rows)} log rows`);
      loadMs = await bulkLoad(db, 'p', cols, exprs, opts.rows, { label: 'purge: base rows' });
      await db.raw('ANALYZE TABLE p');
      await mb.ddl.execute('CREATE MATERIALIZED VIEW LOG ON p (g, x)');
      mlogId = await mb.mlogId('p');
      loadMs += await bulkLoad(db, 'mlog$p', ['id', 'g', 'x', 'dml_type', 'old_new'], ['n + 1', 'n % 1000', '(n * 7919 + 13) % 100003', "'I'", '1'], opts.rows, {
        label: 'purge: log rows',
      });
      progress('purge: CREATE MATERIALIZED VIEW (its build consumes the log)');
      const t0 = performance.now();
      await mb.ddl.execute(`CREATE MATERIALIZED VIEW p_mv REFRESH FAST AS ${mvDef}`);
      consumeMs = performance.now() - t0;
      mvId = await mb.mviewId('p_mv');
    }
    let t: number;
    const wm = Number((await db('mvs_mview_base_tables').where({ mview_id: mvId, mlog_id: mlogId }).first('consumed_watermark')).consumed_watermark);
    const [[cnt]] = (await db.raw('SELECT COUNT(*) AS n, MAX(`_mlog$seq`) AS mx FROM `mlog$p`')) as [Array<{ n: number; mx: number }>];
    if (Number(cnt!.n) !== opts.rows || Number(cnt!.mx) !== wm) throw new Error(`log has ${cnt!.n} rows up to ${cnt!.mx}; watermark ${wm}`);

    conn = await writerConnection(bdb.url);
    let nextId = opts.rows + 1;
    const cpu = await CpuMeter.create(db);
    const writerPhase = async (seconds: number, seed: number) => {
      const w = startWriter(conn!, nextId, opts.rows, seed);
      cpu.start();
      await sleep(seconds * 1000);
      const s = await w.stop();
      s.cpu = cpu.stop();
      nextId = w.nextId;
      return s;
    };
    progress(`purge: writer alone for ${opts.baselineS} s`);
    await writerPhase(1, 1); // warm-up
    const before = await writerPhase(opts.baselineS, 2);

    progress(`purge: PurgeRunner.run() of ${fmtInt(opts.rows)} rows, batch ${fmtInt(batch)}, writer running`);
    const w = startWriter(conn, nextId, opts.rows, 3);
    cpu.start();
    await sleep(200);
    timer.start();
    t = performance.now();
    const res = await mb.purger.run({ mlogId, trigger: 'MANUAL' });
    const purgeWall = performance.now() - t;
    const stmts = timer.stop();
    const during = await w.stop();
    during.cpu = cpu.stop();
    nextId = w.nextId;
    if (res.kind !== 'SUCCESS') throw new Error(`purge: ${JSON.stringify(res)}`);
    const dels = stmts.filter((s) => s.ms !== null && /^delete from/i.test(s.sql.trim())).map((s) => s.ms!);
    const delSum = summarize(dels);

    progress(`purge: writer alone again for ${Math.ceil(opts.baselineS / 2)} s`);
    const after = await writerPhase(Math.ceil(opts.baselineS / 2), 4);

    const [[left]] = (await db.raw('SELECT COUNT(*) AS n, MIN(`_mlog$seq`) AS mn FROM `mlog$p`')) as [Array<{ n: number; mn: number | null }>];
    if (left!.mn !== null && Number(left!.mn) <= wm) throw new Error(`log rows at or below the watermark ${wm} survived the purge`);
    if (res.rows !== opts.rows) throw new Error(`purged ${res.rows} rows, expected ${opts.rows}`);
    return {
      batch,
      fill: opts.fill,
      loadMs,
      consumeMs,
      purgedRows: res.rows,
      purgeMs: res.durationMs,
      rowsPerSec: (res.rows / res.durationMs) * 1000,
      deletes: { n: dels.length, p50: delSum.p50, max: delSum.max },
      watermark: res.watermark,
      leftInLog: Number(left!.n),
      minSeqLeft: left!.mn === null ? null : Number(left!.mn),
      before,
      during,
      after,
      purgeWallMs: purgeWall,
    };
  } finally {
    timer.detach();
    await conn?.end().catch(() => {});
    await bdb.drop();
  }
}

export async function runMlogPurge(ctx: BenchContext, opts: PurgeBenchOptions = purgeOptionsFromEnv()): Promise<BenchOutcome<PurgeBenchResult>> {
  const loadAvgAtStart = loadAvg();
  const variants: PurgeVariant[] = [];
  for (const b of opts.batches) variants.push(await runVariant(ctx, opts, b));
  const result: PurgeBenchResult = { options: opts, variants, loadAvgAtStart, loadAvgAtEnd: loadAvg() };
  const goals: GoalCheck[] = [];
  for (const v of variants) {
    goals.push({
      name: `purge: writer max latency during purge / without (batch ${fmtInt(v.batch)})`,
      value: v.during.latency.max / v.before.latency.max,
      goal: 'informational',
      met: null,
      note: `${fmtMs(v.during.latency.max)} vs ${fmtMs(v.before.latency.max)}; ${fmtInt(v.rowsPerSec)} rows/s`,
    });
  }
  return { result, goals, report: report(result) };
}

function report(r: PurgeBenchResult): string {
  const o = r.options;
  const lines: string[] = [];
  lines.push(
    (o.fill === 'triggers'
      ? `${fmtInt(o.rows)} log rows written by INSERT ... SELECT into the base table through the triggers, then consumed by a FAST refresh of the MV `
      : `${fmtInt(o.rows)} log rows ('I' images of the ${fmtInt(o.rows)} base rows) written by INSERT ... SELECT straight into the log table, then consumed by the MV's first (COMPLETE) build `) +
      `(the MV is the log's only consumer; its watermark is the purge's safe watermark). Writer: 1 connection, autocommit, alternating single-row INSERT / UPDATE.`,
  );
  lines.push('');
  lines.push(
    table(
      ['batch', o.fill === 'triggers' ? 'load through triggers' : 'load base + log', o.fill === 'triggers' ? 'FAST refresh of all' : 'MV build', 'purged', 'purge time', 'rows/s', 'DELETE batches (p50 / max)', 'left in log'],
      r.variants.map((v) => [
        fmtInt(v.batch),
        fmtMs(v.loadMs),
        fmtMs(v.consumeMs),
        fmtInt(v.purgedRows),
        fmtMs(v.purgeMs),
        `**${fmtInt(v.rowsPerSec)}**`,
        `${v.deletes.n} (${fmtMs(v.deletes.p50)} / ${fmtMs(v.deletes.max)})`,
        `${fmtInt(v.leftInLog)} (all after the watermark)`,
      ]),
    ),
  );
  lines.push('');
  const rows: string[][] = [];
  for (const v of r.variants) {
    const row = (label: string, s: WriterStats) => [
      fmtInt(v.batch),
      label,
      fmtInt(s.statements),
      fmtInt(s.perSec),
      fmtMs(s.latency.p50),
      fmtMs(s.latency.p90),
      fmtMs(s.latency.p99),
      fmtMs(s.latency.max),
      `${fmtInt(s.over10ms)} / ${fmtInt(s.over100ms)}`,
    ];
    rows.push(row(`alone, before (${o.baselineS} s)`, v.before));
    rows.push(row('during the purge', v.during));
    rows.push(row(`alone, after (${Math.ceil(o.baselineS / 2)} s)`, v.after));
    rows.push([fmtInt(v.batch), 'during / before', '', fmtRatio(v.during.perSec / v.before.perSec), fmtRatio(v.during.latency.p50 / v.before.latency.p50), fmtRatio(v.during.latency.p90 / v.before.latency.p90), fmtRatio(v.during.latency.p99 / v.before.latency.p99), fmtRatio(v.during.latency.max / v.before.latency.max), '']);
  }
  lines.push(table(['batch', 'writer', 'statements', 'per s', 'p50', 'p90', 'p99', 'max', '> 10 ms / > 100 ms'], rows));
  lines.push('');
  for (const v of r.variants) {
    lines.push(`CPU, batch ${fmtInt(v.batch)}: before: ${fmtCpu(v.before.cpu)}; during: ${fmtCpu(v.during.cpu)}; after: ${fmtCpu(v.after.cpu)}.`);
  }
  lines.push('');
  lines.push(`load avg ${r.loadAvgAtStart.join(' ')} at start, ${r.loadAvgAtEnd.join(' ')} at end`);
  return lines.join('\n');
}
