// FAST vs COMPLETE refresh of an aggregate MV over a 1,000,000-row base table (DESIGN.md §2
// "Refresh"), after 1,000 changed base rows.
//
// Set-up: t (id INT PK, g INT, x INT, note VARCHAR(32), KEY (g)) loaded with N rows (g = n mod
// 1,000, x pseudo-random in 0..100,002) by INSERT ... SELECT from a digits cross join; then
// ANALYZE, then the MV log (g, x) — created after loading, so the load does not go through the
// triggers — and two FAST MVs (their first build is a COMPLETE one):
//   mv_agg  SELECT g, COUNT(*), SUM(x), AVG(x), MIN(x), MAX(x) FROM t GROUP BY g
//   mv_sum  SELECT g, COUNT(*), COUNT(x), SUM(x) FROM t GROUP BY g     (no MIN/MAX to recompute)
// A change batch is 1,000 rows changed in one transaction — a third inserted (new ids at the
// end), a third updated (half change x, half move the row to another group), a third deleted,
// ids and groups drawn from a seeded PRNG, so spread over the groups. Each change batch is
// followed by a refresh of both MVs, so every timed refresh applies exactly one batch. Each
// repetition: a change batch and REFRESH ... COMPLETE of both MVs (out-of-place rebuild and
// swap); a change batch and REFRESH ... FAST of both, the MVs exactly as those COMPLETE builds
// left them seconds earlier, then both MVs compared with their definitions; a change batch,
// ANALYZE TABLE on both MVs (not timed) and FAST of both again, compared again. Why both FAST
// variants: a COMPLETE build leaves the InnoDB statistics of an empty table behind (optimizer
// estimate: 1 row) until InnoDB's background recalculation ~10 s later, and with them FAST's
// UPDATE/DELETE ... JOIN delta plans scan the delta once per MV row. Times are
// RefreshRunner.run() wall times, in this process (lock, history and refresh-info writes
// included, exactly what `REFRESH MATERIALIZED VIEW` costs); one warm-up round is not counted.
// Also measured: a FAST refresh with nothing to apply (the fixed cost), and the bare defining
// SELECT (the floor of a COMPLETE refresh). Finally one instrumented round times every SQL
// statement of a FAST refresh (knex query events) and sums them by phase.
//
// From bench/run.ts: `npm run bench -- fast`.
// Env: BENCH_FAST_ROWS=1000000 BENCH_FAST_GROUPS=1000 BENCH_FAST_CHANGES=1000 BENCH_FAST_REPS=5
import type { Knex } from 'knex';
import type { RefreshOutcome } from '../src/refresh/runner.js';
import type { CpuUse } from './support.js';
import { bulkLoad, CpuMeter, fmtCpu, mlogBench, phases, prng, refreshPhase, settleServer, SqlTimer, type MlogBench, type PhaseRow, type TimedStatement } from './mlogSupport.js';
import {
  createBenchDatabase,
  fmtInt,
  fmtMs,
  fmtRatio,
  loadAvg,
  median,
  progress,
  table,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
  envInt,
  sleep,
} from './support.js';

export interface FastBenchOptions {
  rows: number;
  groups: number;
  changes: number;
  reps: number;
}

export function fastOptionsFromEnv(): FastBenchOptions {
  return {
    rows: envInt('BENCH_FAST_ROWS', 1_000_000),
    groups: envInt('BENCH_FAST_GROUPS', 1_000),
    changes: envInt('BENCH_FAST_CHANGES', 1_000),
    reps: envInt('BENCH_FAST_REPS', 5),
  };
}

const MVS = {
  mv_agg: 'SELECT g, COUNT(*) AS c, SUM(x) AS s, AVG(x) AS a, MIN(x) AS mn, MAX(x) AS mx FROM t GROUP BY g',
  mv_sum: 'SELECT g, COUNT(*) AS c, COUNT(x) AS cx, SUM(x) AS s FROM t GROUP BY g',
} as const;
type MvName = keyof typeof MVS;

interface Timing {
  wallMs: number;
  /** endMs - startMs of the outcome (after the lock and the RUNNING history row, before the commit). */
  runMs: number;
  rows: number;
}

export interface FastBenchResult {
  options: FastBenchOptions;
  loadMs: number;
  bareSelectMs: number;
  createLogMs: number;
  firstBuildMs: Record<MvName, number>;
  logRowsPerRound: number;
  noopFast: Record<MvName, number[]>;
  /** The same once the server's background clean-up after the builds is done. */
  noopSteady: Record<MvName, number[]>;
  /** Median time of `SELECT 1` on the same pool: the unit of a fixed cost. */
  roundTripMs: number;
  /** FAST right after a COMPLETE refresh (the MV as the build left it). */
  fast: Record<MvName, Timing[]>;
  /** FAST after ANALYZE TABLE on the MV (not timed). */
  fastAnalyzed: Record<MvName, Timing[]>;
  /** EXPLAIN SELECT * FROM mv row estimates before the FAST refreshes of each kind. */
  estimates: { asBuilt: number[]; analyzed: number[] };
  /** CPU over the timed rounds. */
  cpu: CpuUse;
  complete: Record<MvName, Timing[]>;
  checks: number;
  mismatches: string[];
  phases: Record<string, { wallMs: number; rows: PhaseRow[]; top: TimedStatement[] }>;
  loadAvgAtStart: number[];
  loadAvgAtEnd: number[];
}

class Changer {
  private readonly rnd = prng(20260101);
  private readonly alive: number[];
  private nextId: number;

  constructor(
    private readonly db: Knex,
    rows: number,
    private readonly groups: number,
  ) {
    this.alive = Array.from({ length: rows }, (_, i) => i + 1);
    this.nextId = rows + 1;
  }

  private int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  /** `count` changed rows in one transaction: a third inserts, a third updates, a third deletes. */
  async apply(count: number): Promise<void> {
    const ins = Math.ceil(count / 3);
    const upd = Math.floor(count / 3);
    const del = count - ins - upd;
    await this.db.transaction(async (trx) => {
      const rows = Array.from({ length: ins }, () => ({ id: this.nextId++, g: this.int(this.groups), x: this.int(100_003), note: 'new' }));
      await trx('t').insert(rows);
      this.alive.push(...rows.map((r) => r.id));
      for (let i = 0; i < upd; i++) {
        const id = this.alive[this.int(this.alive.length)]!;
        if (i % 2 === 0) await trx.raw('UPDATE t SET x = ? WHERE id = ?', [this.int(100_003), id]);
        else await trx.raw('UPDATE t SET g = ?, x = ? WHERE id = ?', [this.int(this.groups), this.int(100_003), id]);
      }
      const gone: number[] = [];
      for (let i = 0; i < del; i++) {
        const k = this.int(this.alive.length);
        gone.push(this.alive[k]!);
        this.alive[k] = this.alive[this.alive.length - 1]!;
        this.alive.pop();
      }
      await trx('t').whereIn('id', gone).delete();
    });
  }
}

async function refresh(mb: MlogBench, id: number, method: 'FAST' | 'COMPLETE'): Promise<Timing> {
  const t = performance.now();
  const out: RefreshOutcome = await mb.runner.run({ mviewId: id, trigger: 'MANUAL', method });
  const wallMs = performance.now() - t;
  if (out.kind !== 'SUCCESS') throw new Error(`refresh ${method} of MV ${id}: ${out.kind}${out.kind === 'FAILED' ? `: ${out.error}` : ''}`);
  if (out.method !== method) throw new Error(`asked for ${method}, ran ${out.method}`);
  return { wallMs, runMs: out.endMs - out.startMs, rows: out.rows };
}

/** undefined when the MV equals its definition, else a description of the difference. */
async function differences(db: Knex, mv: MvName): Promise<string | undefined> {
  const [a] = (await db.raw(`SELECT * FROM ${mv} ORDER BY g`)) as [Array<Record<string, unknown>>];
  const [b] = (await db.raw(`${MVS[mv]} ORDER BY g`)) as [Array<Record<string, unknown>>];
  const ka = new Map(a.map((r) => [String(r.g), JSON.stringify(r)]));
  const kb = new Map(b.map((r) => [String(r.g), JSON.stringify(r)]));
  const diff = [...new Set([...ka.keys(), ...kb.keys()])].filter((g) => ka.get(g) !== kb.get(g));
  if (!diff.length) return undefined;
  const g = diff[0]!;
  return `${diff.length} groups differ, e.g. MV ${ka.get(g) ?? '(missing)'} vs definition ${kb.get(g) ?? '(missing)'}`;
}

export async function runFastRefresh(ctx: BenchContext, opts: FastBenchOptions = fastOptionsFromEnv()): Promise<BenchOutcome<FastBenchResult>> {
  const loadAvgAtStart = loadAvg();
  const bdb = await createBenchDatabase(ctx, 'fast', 8);
  const { db } = bdb;
  const settle = () => settleServer(db);
  const timer = new SqlTimer(db);
  try {
    const mb = mlogBench(bdb);
    await db.raw('CREATE TABLE t (id INT NOT NULL PRIMARY KEY, g INT NOT NULL, x INT NOT NULL, note VARCHAR(32) NULL, KEY idx_t_g (g)) ENGINE=InnoDB');
    progress(`fast: loading ${fmtInt(opts.rows)} rows`);
    const loadMs = await bulkLoad(db, 't', ['id', 'g', 'x', 'note'], ['n + 1', `n % ${opts.groups}`, '(n * 7919 + 13) % 100003', "CONCAT('row-', n)"], opts.rows, {
      label: 'fast: load',
    });
    await db.raw('ANALYZE TABLE t');

    const bare: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      await db.raw(MVS.mv_agg);
      bare.push(performance.now() - t);
    }
    let t = performance.now();
    await mb.ddl.execute('CREATE MATERIALIZED VIEW LOG ON t (g, x)');
    const createLogMs = performance.now() - t;
    const firstBuildMs = {} as Record<MvName, number>;
    const ids = {} as Record<MvName, number>;
    for (const mv of Object.keys(MVS) as MvName[]) {
      progress(`fast: CREATE MATERIALIZED VIEW ${mv} REFRESH FAST (first build)`);
      t = performance.now();
      await mb.ddl.execute(`CREATE MATERIALIZED VIEW ${mv} REFRESH FAST AS ${MVS[mv]}`);
      firstBuildMs[mv] = performance.now() - t;
      ids[mv] = await mb.mviewId(mv);
    }

    const changer = new Changer(db, opts.rows, opts.groups);
    const logRows = async () => Number(((await db.raw('SELECT COUNT(*) AS n FROM `mlog$t`')) as [Array<{ n: number }>])[0][0]!.n);
    const mismatches: string[] = [];
    let checks = 0;
    const check = async (mv: MvName, label: string) => {
      checks++;
      const d = await differences(db, mv);
      if (d) mismatches.push(`${mv} after ${label}: ${d}`);
    };

    // Warm-up round (not counted).
    progress('fast: warm-up round');
    const before = await logRows();
    await changer.apply(opts.changes);
    const logRowsPerRound = (await logRows()) - before;
    for (const mv of Object.keys(MVS) as MvName[]) await refresh(mb, ids[mv], 'FAST');
    for (const mv of Object.keys(MVS) as MvName[]) await check(mv, 'warm-up FAST');
    for (const mv of Object.keys(MVS) as MvName[]) await refresh(mb, ids[mv], 'COMPLETE');

    const noopFast = { mv_agg: [], mv_sum: [] } as Record<MvName, number[]>;
    for (let i = 0; i < 20; i++) for (const mv of Object.keys(MVS) as MvName[]) noopFast[mv].push((await refresh(mb, ids[mv], 'FAST')).wallMs);
    // The unit of a fixed cost: one round trip to the server on the same pool, in the same run.
    const roundTrip: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t0 = performance.now();
      await db.raw('SELECT 1');
      roundTrip.push(performance.now() - t0);
    }

    // The optimizer's row estimate for the MV (EXPLAIN SELECT * FROM mv): a COMPLETE build leaves
    // the statistics of an empty table behind (see the report).
    const estimate = async (mv: MvName) => Number(((await db.raw(`EXPLAIN SELECT * FROM ${mv}`)) as [Array<{ rows: number }>])[0][0]!.rows);
    const analyze = async () => {
      for (const mv of Object.keys(MVS) as MvName[]) await db.raw(`ANALYZE TABLE ${mv}`);
    };
    const fast = { mv_agg: [], mv_sum: [] } as Record<MvName, Timing[]>;
    const fastAnalyzed = { mv_agg: [], mv_sum: [] } as Record<MvName, Timing[]>;
    const complete = { mv_agg: [], mv_sum: [] } as Record<MvName, Timing[]>;
    const estimates = { asBuilt: [] as number[], analyzed: [] as number[] };
    const cpu = await CpuMeter.create(db);
    cpu.start();
    for (let rep = 1; rep <= opts.reps; rep++) {
      // Every change batch is followed by a refresh of both MVs, so each timed refresh applies
      // exactly one batch.
      await changer.apply(opts.changes);
      for (const mv of Object.keys(MVS) as MvName[]) complete[mv].push(await refresh(mb, ids[mv], 'COMPLETE'));
      // FAST on the MVs exactly as those COMPLETE builds left them, seconds earlier.
      await changer.apply(opts.changes);
      for (const mv of Object.keys(MVS) as MvName[]) {
        estimates.asBuilt.push(await estimate(mv));
        fast[mv].push(await refresh(mb, ids[mv], 'FAST'));
      }
      for (const mv of Object.keys(MVS) as MvName[]) await check(mv, `FAST rep ${rep}`);
      // FAST after ANALYZE TABLE on the MVs (not timed): what FAST costs with fresh statistics.
      await changer.apply(opts.changes);
      await analyze();
      for (const mv of Object.keys(MVS) as MvName[]) {
        estimates.analyzed.push(await estimate(mv));
        fastAnalyzed[mv].push(await refresh(mb, ids[mv], 'FAST'));
      }
      for (const mv of Object.keys(MVS) as MvName[]) await check(mv, `FAST (analyzed) rep ${rep}`);
      progress(
        `fast: rep ${rep}/${opts.reps} (mv_agg / mv_sum): FAST ${fmtMs(fast.mv_agg.at(-1)!.wallMs)} / ${fmtMs(fast.mv_sum.at(-1)!.wallMs)}, ` +
          `FAST after ANALYZE ${fmtMs(fastAnalyzed.mv_agg.at(-1)!.wallMs)} / ${fmtMs(fastAnalyzed.mv_sum.at(-1)!.wallMs)}, ` +
          `COMPLETE ${fmtMs(complete.mv_agg.at(-1)!.wallMs)} / ${fmtMs(complete.mv_sum.at(-1)!.wallMs)}`,
      );
    }

    const cpuUse = cpu.stop();

    // Instrumented round: every statement's time, by phase.
    const phaseOut: FastBenchResult['phases'] = {};
    const instrumented = async (label: string, fn: () => Promise<unknown>) => {
      timer.start();
      const t0 = performance.now();
      await fn();
      const wallMs = performance.now() - t0;
      const stmts = timer.stop();
      phaseOut[label] = {
        wallMs,
        rows: phases(stmts, refreshPhase),
        top: stmts.filter((x) => x.ms !== null).sort((a, b) => b.ms! - a.ms!).slice(0, 5),
      };
    };
    progress('fast: instrumented round');
    await changer.apply(opts.changes);
    await refresh(mb, ids.mv_agg, 'COMPLETE');
    await refresh(mb, ids.mv_sum, 'COMPLETE');
    await changer.apply(opts.changes);
    const est0 = await estimate('mv_agg');
    await instrumented(`FAST mv_agg, ${fmtInt(opts.changes)} changes, right after a COMPLETE build (MV row estimate ${est0})`, () => refresh(mb, ids.mv_agg, 'FAST'));
    await refresh(mb, ids.mv_sum, 'FAST');
    await changer.apply(opts.changes);
    await analyze();
    await instrumented(`FAST mv_agg, ${fmtInt(opts.changes)} changes, after ANALYZE TABLE mv_agg`, () => refresh(mb, ids.mv_agg, 'FAST'));
    await instrumented(`FAST mv_sum, ${fmtInt(opts.changes)} changes, after ANALYZE TABLE mv_sum`, () => refresh(mb, ids.mv_sum, 'FAST'));
    await instrumented('FAST mv_agg, nothing to apply', () => refresh(mb, ids.mv_agg, 'FAST'));
    await instrumented('COMPLETE mv_agg', () => refresh(mb, ids.mv_agg, 'COMPLETE'));
    for (const mv of Object.keys(MVS) as MvName[]) await check(mv, 'instrumented round');
    // The fixed cost again once the server is idle: the runs above follow COMPLETE builds, whose
    // clean-up (old table dropped, undo purged) the server does in the background meanwhile.
    progress('fast: empty FAST refreshes on a settled server');
    await settle();
    const noopSteady = { mv_agg: [], mv_sum: [] } as Record<MvName, number[]>;
    for (let i = 0; i < 20; i++) for (const mv of Object.keys(MVS) as MvName[]) noopSteady[mv].push((await refresh(mb, ids[mv], 'FAST')).wallMs);

    const result: FastBenchResult = {
      options: opts,
      loadMs,
      bareSelectMs: median(bare),
      createLogMs,
      firstBuildMs,
      logRowsPerRound,
      noopFast,
      noopSteady,
      roundTripMs: median(roundTrip),
      fast,
      fastAnalyzed,
      complete,
      estimates,
      cpu: cpuUse,
      checks,
      mismatches,
      phases: phaseOut,
      loadAvgAtStart,
      loadAvgAtEnd: loadAvg(),
    };
    const goals: GoalCheck[] = [];
    for (const mv of Object.keys(MVS) as MvName[]) {
      const c = median(complete[mv].map((x) => x.wallMs));
      const ratio = c / median(fast[mv].map((x) => x.wallMs));
      const analyzed = c / median(fastAnalyzed[mv].map((x) => x.wallMs));
      goals.push({
        name: `fast: COMPLETE / FAST time, ${mv} (${fmtInt(opts.rows)} rows, ${fmtInt(opts.changes)} changes), FAST right after COMPLETE`,
        value: ratio,
        goal: '>= 100x',
        met: ratio >= 100,
        note: `(${fmtRatio(analyzed, 1)} with the MV's statistics fresh)`,
      });
    }
    const noop = median([...noopFast.mv_agg, ...noopFast.mv_sum]);
    const steady = median([...noopSteady.mv_agg, ...noopSteady.mv_sum]);
    goals.push({
      name: 'fast: FAST refresh with nothing to apply, right after COMPLETE builds (median of 40, RefreshRunner.run() wall)',
      value: noop,
      goal: '<= 5 ms',
      met: noop <= 5,
      note: `= ${fmtRatio(noop / result.roundTripMs, 1)} the time of one SELECT 1 round trip (${fmtMs(result.roundTripMs)}) in the same run`,
    });
    goals.push({
      name: 'fast: FAST refresh with nothing to apply, settled server (median of 40, RefreshRunner.run() wall)',
      value: steady,
      goal: '<= 5 ms',
      met: steady <= 5,
      note: `= ${fmtRatio(steady / result.roundTripMs, 1)} the time of one SELECT 1 round trip`,
    });
    goals.push({
      name: 'fast: MV equals its definition after every FAST refresh',
      value: null,
      goal: 'all equal',
      met: mismatches.length === 0,
      note: `${checks - mismatches.length}/${checks} checks`,
    });
    return { result, goals, report: report(result) };
  } finally {
    timer.detach();
    if (process.env.BENCH_KEEP_DB) {
      progress(`fast: keeping database ${bdb.name} (BENCH_KEEP_DB)`);
      await db.destroy();
    } else await bdb.drop();
  }
}

function report(r: FastBenchResult): string {
  const o = r.options;
  const mvs = Object.keys(MVS) as MvName[];
  const stat = (xs: number[]) => `${fmtMs(median(xs))} (${fmtMs(Math.min(...xs))}-${fmtMs(Math.max(...xs))})`;
  const lines: string[] = [];
  lines.push(
    `Base table t: ${fmtInt(o.rows)} rows, ${fmtInt(o.groups)} groups, index on g; loaded in ${fmtMs(r.loadMs)}. ` +
      `A change batch changes ${fmtInt(o.changes)} rows (${fmtInt(r.logRowsPerRound)} log rows). ${o.reps} timed repetitions after one warm-up; median (min-max).`,
  );
  lines.push('');
  lines.push(`CREATE MATERIALIZED VIEW LOG: ${fmtMs(r.createLogMs)}; first builds: ${mvs.map((m) => `${m} ${fmtMs(r.firstBuildMs[m])}`).join(', ')}; ` +
    `bare defining SELECT of mv_agg: ${fmtMs(r.bareSelectMs)} (median of 3).`);
  lines.push('');
  const rows: Array<Array<string>> = [];
  for (const mv of mvs) {
    const f = r.fast[mv].map((x) => x.wallMs);
    const c = r.complete[mv].map((x) => x.wallMs);
    rows.push([mv, 'COMPLETE', stat(c), stat(r.complete[mv].map((x) => x.runMs)), fmtInt(median(r.complete[mv].map((x) => x.rows))), '1.00x']);
    rows.push([mv, `FAST, ${fmtInt(o.changes)} changes, right after COMPLETE`, stat(f), stat(r.fast[mv].map((x) => x.runMs)), fmtInt(median(r.fast[mv].map((x) => x.rows))), `**${fmtRatio(median(c) / median(f), 1)}**`]);
    const fa = r.fastAnalyzed[mv].map((x) => x.wallMs);
    rows.push([mv, `FAST, ${fmtInt(o.changes)} changes, fresh stats`, stat(fa), stat(r.fastAnalyzed[mv].map((x) => x.runMs)), fmtInt(median(r.fastAnalyzed[mv].map((x) => x.rows))), `**${fmtRatio(median(c) / median(fa), 1)}**`]);
    rows.push([mv, 'FAST, nothing to apply', stat(r.noopFast[mv]), '-', '0', fmtRatio(median(c) / median(r.noopFast[mv]), 1)]);
    rows.push([mv, 'FAST, nothing to apply, settled server', stat(r.noopSteady[mv]), '-', '0', fmtRatio(median(c) / median(r.noopSteady[mv]), 1)]);
  }
  lines.push(table(['MV', 'refresh', 'RefreshRunner.run() wall', 'outcome endMs-startMs', 'MV rows changed', 'COMPLETE / this'], rows));
  lines.push('');
  lines.push(`CPU over the timed rounds: ${fmtCpu(r.cpu)}.`);
  lines.push('');
  const range = (xs: number[]) => (xs.length ? `${fmtInt(Math.min(...xs))}-${fmtInt(Math.max(...xs))}` : '-');
  lines.push(
    `Optimizer's row estimate for the MV (EXPLAIN SELECT * FROM mv; each has ${fmtInt(o.groups)} rows): ${range(r.estimates.asBuilt)} right after a COMPLETE build, ` +
      `${range(r.estimates.analyzed)} after ANALYZE TABLE ("fresh stats"; InnoDB's background recalculation gets there ~10 s after the build).`,
  );
  lines.push('');
  lines.push(`Invariant checks (MV = its defining SELECT): ${r.checks - r.mismatches.length}/${r.checks} equal${r.mismatches.length ? ` — MISMATCH: ${r.mismatches.join('; ')}` : ''}.`);
  for (const [label, p] of Object.entries(r.phases)) {
    lines.push('');
    const sum = p.rows.reduce((a, b) => a + b.ms, 0);
    lines.push(`Phases of one ${label}: wall ${fmtMs(p.wallMs)}, ${fmtMs(sum)} in SQL statements (client-side time per statement):`);
    lines.push('');
    lines.push(
      table(
        ['phase', 'statements', 'time', 'share of wall'],
        [
          ...p.rows.map((x) => [
            x.phase,
            String(x.statements),
            x.untimed === x.statements ? '(not timed)' : fmtMs(x.ms),
            x.untimed === x.statements ? '-' : `${((100 * x.ms) / p.wallMs).toFixed(0)}%`,
          ]),
          ['(rest: untimed statements, BEGIN/COMMIT, pool, JS)', '-', fmtMs(p.wallMs - sum), `${((100 * (p.wallMs - sum)) / p.wallMs).toFixed(0)}%`],
        ],
      ),
    );
    lines.push('');
    lines.push('Slowest statements:');
    for (const s of p.top) lines.push(`- ${fmtMs(s.ms ?? NaN)}: \`${s.sql.replace(/\s+/g, ' ').slice(0, 160)}${s.sql.length > 160 ? ' ...' : ''}\``);
  }
  lines.push('');
  lines.push(`load avg ${r.loadAvgAtStart.join(' ')} at start, ${r.loadAvgAtEnd.join(' ')} at end`);
  return lines.join('\n');
}
