// FAST vs COMPLETE refresh of MVs over a star join (DESIGN.md §2 "FAST refresh over joins").
//
// Set-up: fact f (id PK, d1, d2, amt, qty, note; KEY (d1), KEY (d2)) with 1,000,000 rows; dimension
// d1 with 10,000 rows (region: 20 values, seg) and d2 with 100 rows (cat: 10 values, active: half
// of them). Every d1 row is used by ~100 fact rows, every d2 row by ~10,000. Loaded by INSERT ...
// SELECT, then ANALYZE, then the three MV logs (after loading: the load does not go through the
// triggers) and two REFRESH FAST MVs (their first build is a COMPLETE one):
//   mv_agg  SELECT d1.region, d2.cat, COUNT(*), SUM(f.amt), AVG(f.qty) FROM f JOIN d1 .. JOIN d2 ..
//           GROUP BY d1.region, d2.cat                        (200 groups, aggregate over the join)
//   mv_spj  SELECT f.id, d1.id, d2.id, f.amt, d1.region, d2.cat FROM f JOIN d1 .. JOIN d2 ..
//           WHERE d2.active = 1                                (~500,000 rows, select-project-join)
// Batch A (one per refresh): 1,000 fact changes in one transaction (a third inserted, a third
// updated: half the amount, half moved to another d1 row; a third deleted) and 10 d1 rows given
// another region (each moves ~100 fact rows between groups). Batch B: one d2 row given another
// category (~10,000 fact rows change group / value).
// Each repetition: a batch and REFRESH COMPLETE of both MVs; a batch and REFRESH FAST of both,
// then both MVs compared with their definitions (mv_agg row by row, mv_spj by its row count and
// two checksums over every row). Times are RefreshRunner.run() wall times in this process (lock, history and
// refresh-info writes included: what `REFRESH MATERIALIZED VIEW` costs); median of the reps.
// Also: a FAST refresh with nothing to apply (fixed cost), the bare defining SELECTs, and one
// instrumented FAST refresh per MV and batch, its SQL statements summed by phase.
//
// From bench/run.ts: `npm run bench -- fast-join`.
// Env: BENCH_JOIN_FACT_ROWS=1000000 BENCH_JOIN_DIM1_ROWS=10000 BENCH_JOIN_DIM2_ROWS=100
//      BENCH_JOIN_FACT_CHANGES=1000 BENCH_JOIN_DIM_CHANGES=10 BENCH_JOIN_REPS=5 BENCH_JOIN_B_REPS=5
import type { Knex } from 'knex';
import type { RefreshOutcome } from '../src/refresh/runner.js';
import { bulkLoad, CpuMeter, fmtCpu, mlogBench, prng, refreshPhase, SqlTimer, type MlogBench, type TimedStatement } from './mlogSupport.js';
import {
  createBenchDatabase,
  envInt,
  fmtInt,
  fmtMs,
  fmtRatio,
  loadAvg,
  median,
  progress,
  table,
  type BenchContext,
  type BenchOutcome,
  type CpuUse,
  type GoalCheck,
} from './support.js';

export interface FastJoinOptions {
  factRows: number;
  dim1Rows: number;
  dim2Rows: number;
  factChanges: number;
  dimChanges: number;
  reps: number;
  repsB: number;
}

export function fastJoinOptionsFromEnv(): FastJoinOptions {
  return {
    factRows: envInt('BENCH_JOIN_FACT_ROWS', 1_000_000),
    dim1Rows: envInt('BENCH_JOIN_DIM1_ROWS', 10_000),
    dim2Rows: envInt('BENCH_JOIN_DIM2_ROWS', 100),
    factChanges: envInt('BENCH_JOIN_FACT_CHANGES', 1_000),
    dimChanges: envInt('BENCH_JOIN_DIM_CHANGES', 10),
    reps: envInt('BENCH_JOIN_REPS', 5),
    repsB: envInt('BENCH_JOIN_B_REPS', 5),
  };
}

const JOIN = 'FROM f JOIN d1 ON f.d1 = d1.id JOIN d2 ON f.d2 = d2.id';
const MVS = {
  mv_agg: `SELECT d1.region, d2.cat, COUNT(*) AS n, SUM(f.amt) AS amt, AVG(f.qty) AS q ${JOIN} GROUP BY d1.region, d2.cat`,
  mv_spj: `SELECT f.id, d1.id AS d1_id, d2.id AS d2_id, f.amt, d1.region, d2.cat ${JOIN} WHERE d2.active = 1`,
} as const;
type MvName = keyof typeof MVS;
const NAMES = Object.keys(MVS) as MvName[];

interface Timing {
  wallMs: number;
  rows: number;
}

interface PhaseReport {
  wallMs: number;
  rows: Array<{ phase: string; statements: number; ms: number }>;
  top: Array<{ sql: string; ms: number }>;
}

export interface FastJoinResult {
  options: FastJoinOptions;
  loadMs: number;
  bareSelectMs: Record<MvName, number>;
  firstBuildMs: Record<MvName, number>;
  logRowsA: { f: number; d1: number };
  noopFast: Record<MvName, number[]>;
  fastA: Record<MvName, Timing[]>;
  completeA: Record<MvName, Timing[]>;
  fastB: Record<MvName, Timing[]>;
  completeB: Record<MvName, Timing[]>;
  cpu: CpuUse;
  checks: number;
  mismatches: string[];
  phases: Record<string, PhaseReport>;
  loadAvgAtStart: number[];
  loadAvgAtEnd: number[];
}

/** Seeded changes: batch A (facts and d1 regions) and batch B (one d2 category). */
class Changer {
  private readonly rnd = prng(20261203);
  private readonly alive: number[];
  private nextId: number;
  private flip = 0;

  constructor(
    private readonly db: Knex,
    private readonly o: FastJoinOptions,
  ) {
    this.alive = Array.from({ length: o.factRows }, (_, i) => i + 1);
    this.nextId = o.factRows + 1;
  }

  private int(n: number): number {
    return Math.floor(this.rnd() * n);
  }

  async batchA(): Promise<void> {
    const { factChanges: count, dim1Rows, dim2Rows, dimChanges } = this.o;
    const ins = Math.ceil(count / 3);
    const upd = Math.floor(count / 3);
    const del = count - ins - upd;
    await this.db.transaction(async (trx) => {
      const rows = Array.from({ length: ins }, () => ({
        id: this.nextId++,
        d1: 1 + this.int(dim1Rows),
        d2: 1 + this.int(dim2Rows),
        amt: this.int(1000),
        qty: this.int(17),
        note: 'new',
      }));
      await trx('f').insert(rows);
      this.alive.push(...rows.map((r) => r.id));
      for (let i = 0; i < upd; i++) {
        const id = this.alive[this.int(this.alive.length)]!;
        if (i % 2 === 0) await trx.raw('UPDATE f SET amt = ? WHERE id = ?', [this.int(1000), id]);
        else await trx.raw('UPDATE f SET d1 = ? WHERE id = ?', [1 + this.int(dim1Rows), id]);
      }
      const gone: number[] = [];
      for (let i = 0; i < del; i++) {
        const k = this.int(this.alive.length);
        gone.push(this.alive[k]!);
        this.alive[k] = this.alive[this.alive.length - 1]!;
        this.alive.pop();
      }
      await trx('f').whereIn('id', gone).delete();
    });
    await this.db.transaction(async (trx) => {
      for (let i = 0; i < dimChanges; i++) {
        await trx.raw("UPDATE d1 SET region = CONCAT('r', ?) WHERE id = ?", [this.int(20), 1 + this.int(dim1Rows)]);
      }
    });
  }

  /** One active d2 row (odd id) changes category: every fact row that uses it changes. */
  async batchB(): Promise<void> {
    this.flip++;
    await this.db.raw("UPDATE d2 SET cat = CONCAT('c', ?) WHERE id = 1", [this.flip % 10]);
  }
}

async function refresh(mb: MlogBench, id: number, method: 'FAST' | 'COMPLETE'): Promise<Timing> {
  const t = performance.now();
  const out: RefreshOutcome = await mb.runner.run({ mviewId: id, trigger: 'MANUAL', method });
  const wallMs = performance.now() - t;
  if (out.kind !== 'SUCCESS') throw new Error(`refresh ${method} of MV ${id}: ${out.kind}${out.kind === 'FAILED' ? `: ${out.error}` : ''}`);
  if (out.method !== method) throw new Error(`asked for ${method}, ran ${out.method}`);
  return { wallMs, rows: out.rows };
}

/** undefined when the MV equals its definition, else what differs. */
async function differences(db: Knex, mv: MvName): Promise<string | undefined> {
  if (mv === 'mv_agg') {
    const [a] = (await db.raw('SELECT * FROM mv_agg ORDER BY region, cat')) as [Array<Record<string, unknown>>];
    const [b] = (await db.raw(`${MVS.mv_agg} ORDER BY region, cat`)) as [Array<Record<string, unknown>>];
    const sa = a.map((r) => JSON.stringify(r));
    const sb = b.map((r) => JSON.stringify(r));
    const diff = sa.filter((x, i) => x !== sb[i]).length + Math.abs(sa.length - sb.length);
    return diff ? `${diff} groups differ (MV ${sa.length} rows, definition ${sb.length})` : undefined;
  }
  // Rows are unique (they carry every table's key): a count and two checksums over every row.
  const cols = "CONCAT_WS('|', id, d1_id, d2_id, amt, region, cat)";
  const sums = async (from: string) =>
    JSON.stringify(((await db.raw(`SELECT COUNT(*) AS n, SUM(CRC32(${cols})) AS a, SUM(CRC32(CONCAT(${cols}, '#'))) AS b FROM (${from}) AS x`)) as [unknown[]])[0][0]);
  const got = await sums('SELECT * FROM mv_spj');
  const def = await sums(MVS.mv_spj);
  return got === def ? undefined : `MV ${got} vs definition ${def} (rows, checksums)`;
}

/** Phase of a statement of a join refresh (the one-table phases otherwise). */
function joinPhase(sqlRaw: string): string {
  const sql = sqlRaw.replace(/\s+/g, ' ').trim().toLowerCase();
  if (/^select exists \(select 1 from/.test(sql)) return 'delta: which logs changed (EXISTS per log)';
  if (/__mvs_meta limit 0/.test(sql)) return 'apply: binary-column probe of the MV-typed SELECT (LIMIT 0, on the pool)';
  if (/_mlog\$w/.test(sql) && /^select/.test(sql)) return 'delta: the delta query in the snapshot (streamed; until the next statement)';
  if (/^create temporary table `__mvs_join/.test(sql)) return 'apply: CREATE TEMPORARY TABLE (delta / rows)';
  if (/^insert into `__mvs_join/.test(sql)) return 'apply: INSERT the streamed rows into the temporary table';
  if (/^drop temporary table/.test(sql)) return 'apply: DROP TEMPORARY TABLE';
  if (/^update `__mvs_join_delta` as d straight_join/.test(sql)) return 'apply: UPDATE MV groups';
  if (/^delete m from `__mvs_join_delta`/.test(sql)) return 'apply: DELETE emptied groups';
  if (/^insert into .* from `__mvs_join_delta`/.test(sql)) return 'apply: INSERT new groups';
  if (/^delete m from `__mvs_join_rows`/.test(sql)) return 'apply: DELETE rows that go (by key, per term)';
  if (/^insert into .* from `__mvs_join_rows`/.test(sql)) return 'apply: INSERT rows that come (per term)';
  return refreshPhase(sqlRaw);
}

function phaseReport(stmts: TimedStatement[], wallMs: number): PhaseReport {
  const by = new Map<string, { phase: string; statements: number; ms: number }>();
  for (const s of stmts) {
    const phase = joinPhase(s.sql);
    const r = by.get(phase) ?? { phase, statements: 0, ms: 0 };
    r.statements++;
    r.ms += s.ms ?? s.untilNextMs ?? 0;
    by.set(phase, r);
  }
  const top = stmts
    .map((s) => ({ sql: s.sql, ms: s.ms ?? s.untilNextMs ?? 0 }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, 4);
  return { wallMs, rows: [...by.values()].sort((a, b) => b.ms - a.ms), top };
}

async function load(db: Knex, o: FastJoinOptions): Promise<number> {
  await db.raw('CREATE TABLE d2 (id INT NOT NULL PRIMARY KEY, cat VARCHAR(16) NOT NULL, active TINYINT NOT NULL) ENGINE=InnoDB');
  await db.raw('CREATE TABLE d1 (id INT NOT NULL PRIMARY KEY, region VARCHAR(16) NOT NULL, seg VARCHAR(16) NOT NULL) ENGINE=InnoDB');
  await db.raw(
    'CREATE TABLE f (id INT NOT NULL PRIMARY KEY, d1 INT NOT NULL, d2 INT NOT NULL, amt INT NOT NULL, qty INT NOT NULL, note VARCHAR(32) NULL, ' +
      'KEY idx_f_d1 (d1), KEY idx_f_d2 (d2)) ENGINE=InnoDB',
  );
  let ms = await bulkLoad(db, 'd2', ['id', 'cat', 'active'], ['n + 1', "CONCAT('c', (n + 1) % 10)", '(n + 1) % 2'], o.dim2Rows);
  ms += await bulkLoad(db, 'd1', ['id', 'region', 'seg'], ['n + 1', "CONCAT('r', (n + 1) % 20)", "CONCAT('s', (n + 1) % 7)"], o.dim1Rows);
  const perD2 = Math.max(1, Math.floor(o.factRows / o.dim2Rows));
  ms += await bulkLoad(
    db,
    'f',
    ['id', 'd1', 'd2', 'amt', 'qty', 'note'],
    ['n + 1', `n % ${o.dim1Rows} + 1`, `LEAST(n DIV ${perD2}, ${o.dim2Rows - 1}) + 1`, '(n * 7919 + 13) % 1000', 'n % 17', "CONCAT('row-', n)"],
    o.factRows,
    { label: 'fast-join: load f' },
  );
  for (const t of ['f', 'd1', 'd2']) await db.raw(`ANALYZE TABLE ${t}`);
  return ms;
}

export async function runFastJoin(ctx: BenchContext, o: FastJoinOptions = fastJoinOptionsFromEnv()): Promise<BenchOutcome<FastJoinResult>> {
  const loadAvgAtStart = loadAvg();
  const bdb = await createBenchDatabase(ctx, 'fastjoin', 8);
  const { db } = bdb;
  const timer = new SqlTimer(db);
  try {
    const mb = mlogBench(bdb);
    progress(`fast-join: loading f ${fmtInt(o.factRows)}, d1 ${fmtInt(o.dim1Rows)}, d2 ${fmtInt(o.dim2Rows)} rows`);
    const loadMs = await load(db, o);
    const bareSelectMs = {} as Record<MvName, number>;
    for (const mv of NAMES) {
      const xs: number[] = [];
      for (let i = 0; i < 3; i++) {
        const t = performance.now();
        await db.raw(`SELECT COUNT(*) FROM (${MVS[mv]}) AS x`);
        xs.push(performance.now() - t);
      }
      bareSelectMs[mv] = median(xs);
    }
    await mb.ddl.execute('CREATE MATERIALIZED VIEW LOG ON f (d1, d2, amt, qty)');
    await mb.ddl.execute('CREATE MATERIALIZED VIEW LOG ON d1 (region)');
    await mb.ddl.execute('CREATE MATERIALIZED VIEW LOG ON d2 (cat, active)');
    const firstBuildMs = {} as Record<MvName, number>;
    const ids = {} as Record<MvName, number>;
    for (const mv of NAMES) {
      progress(`fast-join: CREATE MATERIALIZED VIEW ${mv} REFRESH FAST (first build)`);
      const t = performance.now();
      await mb.ddl.execute(`CREATE MATERIALIZED VIEW ${mv} REFRESH FAST AS ${MVS[mv]}`);
      firstBuildMs[mv] = performance.now() - t;
      ids[mv] = await mb.mviewId(mv);
    }

    const changer = new Changer(db, o);
    const logRows = async (t: string) => Number(((await db.raw(`SELECT COUNT(*) AS n FROM \`mlog$${t}\``)) as [Array<{ n: number }>])[0][0]!.n);
    const mismatches: string[] = [];
    let checks = 0;
    const check = async (label: string) => {
      for (const mv of NAMES) {
        checks++;
        const d = await differences(db, mv);
        if (d) mismatches.push(`${mv} after ${label}: ${d}`);
      }
    };
    const refreshAll = async (method: 'FAST' | 'COMPLETE', into: Record<MvName, Timing[]> | undefined) => {
      for (const mv of NAMES) {
        const r = await refresh(mb, ids[mv], method);
        into?.[mv].push(r);
      }
    };

    progress('fast-join: warm-up round');
    const before = { f: await logRows('f'), d1: await logRows('d1') };
    await changer.batchA();
    const logRowsA = { f: (await logRows('f')) - before.f, d1: (await logRows('d1')) - before.d1 };
    await refreshAll('FAST', undefined);
    await check('warm-up FAST');
    const noopFast = { mv_agg: [], mv_spj: [] } as Record<MvName, number[]>;
    for (let i = 0; i < 3; i++) for (const mv of NAMES) noopFast[mv].push((await refresh(mb, ids[mv], 'FAST')).wallMs);

    const fastA = { mv_agg: [], mv_spj: [] } as Record<MvName, Timing[]>;
    const completeA = { mv_agg: [], mv_spj: [] } as Record<MvName, Timing[]>;
    const fastB = { mv_agg: [], mv_spj: [] } as Record<MvName, Timing[]>;
    const completeB = { mv_agg: [], mv_spj: [] } as Record<MvName, Timing[]>;
    const cpu = await CpuMeter.create(db);
    cpu.start();
    for (let rep = 1; rep <= o.reps; rep++) {
      await changer.batchA();
      await refreshAll('COMPLETE', completeA);
      await changer.batchA();
      await refreshAll('FAST', fastA);
      await check(`batch A FAST rep ${rep}`);
      progress(`fast-join: batch A rep ${rep}/${o.reps}: FAST ${NAMES.map((m) => fmtMs(fastA[m].at(-1)!.wallMs)).join(' / ')}, COMPLETE ${NAMES.map((m) => fmtMs(completeA[m].at(-1)!.wallMs)).join(' / ')}`);
    }
    for (let rep = 1; rep <= o.repsB; rep++) {
      await changer.batchB();
      await refreshAll('COMPLETE', completeB);
      await changer.batchB();
      await refreshAll('FAST', fastB);
      await check(`batch B FAST rep ${rep}`);
      progress(`fast-join: batch B rep ${rep}/${o.repsB}: FAST ${NAMES.map((m) => fmtMs(fastB[m].at(-1)!.wallMs)).join(' / ')}, COMPLETE ${NAMES.map((m) => fmtMs(completeB[m].at(-1)!.wallMs)).join(' / ')}`);
    }
    const cpuUse = cpu.stop();

    progress('fast-join: instrumented round');
    const phaseOut: Record<string, PhaseReport> = {};
    const instrumented = async (label: string, mv: MvName) => {
      timer.start();
      const t0 = performance.now();
      await refresh(mb, ids[mv], 'FAST');
      phaseOut[label] = phaseReport(timer.stop(), performance.now() - t0);
    };
    await changer.batchA();
    for (const mv of NAMES) await instrumented(`FAST ${mv}, batch A`, mv);
    await changer.batchB();
    for (const mv of NAMES) await instrumented(`FAST ${mv}, batch B`, mv);
    await check('instrumented round');

    const result: FastJoinResult = {
      options: o,
      loadMs,
      bareSelectMs,
      firstBuildMs,
      logRowsA,
      noopFast,
      fastA,
      completeA,
      fastB,
      completeB,
      cpu: cpuUse,
      checks,
      mismatches,
      phases: phaseOut,
      loadAvgAtStart,
      loadAvgAtEnd: loadAvg(),
    };
    const ratio = (c: Timing[], f: Timing[]) => median(c.map((x) => x.wallMs)) / median(f.map((x) => x.wallMs));
    const goals: GoalCheck[] = [];
    for (const mv of NAMES) {
      const r = ratio(completeA[mv], fastA[mv]);
      goals.push({ name: `fast-join: COMPLETE / FAST time, ${mv}, batch A (${fmtInt(o.factChanges)} fact + ${o.dimChanges} d1 changes)`, value: r, goal: '>= 100x', met: r >= 100 });
    }
    for (const mv of NAMES) {
      goals.push({ name: `fast-join: COMPLETE / FAST time, ${mv}, batch B (one d2 row, ~${fmtInt(o.factRows / o.dim2Rows)} fact rows)`, value: ratio(completeB[mv], fastB[mv]), goal: 'informational', met: null });
    }
    goals.push({ name: 'fast-join: MVs equal their definitions after every FAST refresh', value: null, goal: 'all equal', met: mismatches.length === 0, note: `${checks - mismatches.length}/${checks} checks` });
    return { result, goals, report: report(result) };
  } finally {
    timer.detach();
    if (process.env.BENCH_KEEP_DB) {
      progress(`fast-join: keeping database ${bdb.name} (BENCH_KEEP_DB)`);
      await db.destroy();
    } else await bdb.drop();
  }
}

function report(r: FastJoinResult): string {
  const o = r.options;
  const stat = (xs: number[]) => `${fmtMs(median(xs))} (${fmtMs(Math.min(...xs))}-${fmtMs(Math.max(...xs))})`;
  const lines: string[] = [];
  lines.push(
    `Star join: f ${fmtInt(o.factRows)} rows, d1 ${fmtInt(o.dim1Rows)}, d2 ${fmtInt(o.dim2Rows)}; loaded in ${fmtMs(r.loadMs)}. Batch A: ${fmtInt(o.factChanges)} fact changes ` +
      `+ ${o.dimChanges} d1 rows (${fmtInt(r.logRowsA.f)} + ${fmtInt(r.logRowsA.d1)} log rows); batch B: one d2 row. ${o.reps} (A) and ${o.repsB} (B) timed repetitions after one warm-up; median (min-max).`,
  );
  lines.push('');
  lines.push(
    `First builds: ${NAMES.map((m) => `${m} ${fmtMs(r.firstBuildMs[m])}`).join(', ')}; bare defining SELECTs (COUNT(*) over them): ${NAMES.map((m) => `${m} ${fmtMs(r.bareSelectMs[m])}`).join(', ')}.`,
  );
  lines.push('');
  const rows: string[][] = [];
  for (const mv of NAMES) {
    const cA = r.completeA[mv].map((x) => x.wallMs);
    const fA = r.fastA[mv].map((x) => x.wallMs);
    const cB = r.completeB[mv].map((x) => x.wallMs);
    const fB = r.fastB[mv].map((x) => x.wallMs);
    const rowsOf = (xs: Timing[]) => fmtInt(median(xs.map((x) => x.rows)));
    rows.push([mv, 'A', 'COMPLETE', stat(cA), rowsOf(r.completeA[mv]), '1.00x']);
    rows.push([mv, 'A', 'FAST', stat(fA), rowsOf(r.fastA[mv]), `**${fmtRatio(median(cA) / median(fA), 1)}**`]);
    rows.push([mv, 'B', 'COMPLETE', stat(cB), rowsOf(r.completeB[mv]), '1.00x']);
    rows.push([mv, 'B', 'FAST', stat(fB), rowsOf(r.fastB[mv]), `**${fmtRatio(median(cB) / median(fB), 1)}**`]);
    rows.push([mv, '-', 'FAST, nothing to apply', stat(r.noopFast[mv]), '0', fmtRatio(median(cA) / median(r.noopFast[mv]), 1)]);
  }
  lines.push(table(['MV', 'batch', 'refresh', 'RefreshRunner.run() wall', 'MV rows changed', 'COMPLETE / this'], rows));
  lines.push('');
  lines.push(`CPU over the timed rounds: ${fmtCpu(r.cpu)}.`);
  lines.push('');
  lines.push(`Invariant checks (MV = its defining SELECT): ${r.checks - r.mismatches.length}/${r.checks} equal${r.mismatches.length ? ` — MISMATCH: ${r.mismatches.join('; ')}` : ''}.`);
  for (const [label, p] of Object.entries(r.phases)) {
    lines.push('');
    lines.push(`Phases of one ${label}: wall ${fmtMs(p.wallMs)} (client-side time per statement; a streamed read counts until the next statement starts):`);
    lines.push('');
    const sum = p.rows.reduce((a, b) => a + b.ms, 0);
    lines.push(
      table(
        ['phase', 'statements', 'time', 'share of wall'],
        [
          ...p.rows.map((x) => [x.phase, String(x.statements), fmtMs(x.ms), `${((100 * x.ms) / p.wallMs).toFixed(0)}%`]),
          ['(rest: pool, JS)', '-', fmtMs(p.wallMs - sum), `${((100 * (p.wallMs - sum)) / p.wallMs).toFixed(0)}%`],
        ],
      ),
    );
    lines.push('');
    lines.push('Slowest statements:');
    for (const s of p.top) lines.push(`- ${fmtMs(s.ms)}: \`${s.sql.replace(/\s+/g, ' ').slice(0, 140)}${s.sql.length > 140 ? ' ...' : ''}\``);
  }
  lines.push('');
  lines.push(`load avg ${r.loadAvgAtStart.join(' ')} at start, ${r.loadAvgAtEnd.join(' ')} at end`);
  return lines.join('\n');
}
