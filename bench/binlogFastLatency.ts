// FAST refresh latency over a BINLOG log against a TRIGGERS log (issue 14), measured inside
// `npm run bench -- mlog-writers` while its `mvsched capture` process runs. Two tables of one
// shape and contents (id INT PK, g INT, x INT, note, KEY (g)), one with a trigger log and one
// with a BINLOG log on (g, x), each read by the same FAST aggregate MV
// (`SELECT g, COUNT(*), SUM(x) ... GROUP BY g`). Per repetition and table, in alternating order:
//   - the consistent cut alone (takeCut, then the snapshot is ended): the trigger gate against
//     the binlog snapshot position plus the wait for capture to pass it;
//   - a REFRESH with nothing to apply;
//   - a single-row UPDATE committed, then at once its REFRESH: write-to-refreshed, where the
//     BINLOG refresh waits for capture to have written the row;
//   - a batch of changes in one transaction (a third inserts, a third updates, a third
//     deletes), then its REFRESH.
// Timed: RefreshRunner.run() wall time (everything REFRESH MATERIALIZED VIEW does), and for the
// two cases with a write also write + refresh (the trigger log's write pays its triggers). Every
// refresh must be FAST and succeed; at the end both MVs are compared with their definitions.
// Env: BENCH_FASTLAT_ROWS=100000 BENCH_FASTLAT_GROUPS=1000 BENCH_FASTLAT_REPS=15 BENCH_FASTLAT_BATCH=1000
import { takeCut } from '../src/mlog/cut.js';
import { bulkLoad, prng, type MlogBench } from './mlogSupport.js';
import { envInt, fmtInt, fmtMs, fmtRatio, progress, summarize, table, type BenchDatabase } from './support.js';

export interface FastLatencyOptions {
  rows: number;
  groups: number;
  reps: number;
  batch: number;
}

export function fastLatencyOptionsFromEnv(): FastLatencyOptions {
  return {
    rows: envInt('BENCH_FASTLAT_ROWS', 100_000),
    groups: envInt('BENCH_FASTLAT_GROUPS', 1_000),
    reps: envInt('BENCH_FASTLAT_REPS', 15),
    batch: envInt('BENCH_FASTLAT_BATCH', 1_000),
  };
}

const MODES = ['TRIGGERS', 'BINLOG'] as const;
type Mode = (typeof MODES)[number];
const CASES = ['cut', 'nothing', 'oneRow', 'batch'] as const;
type Case = (typeof CASES)[number];

export interface LatencyFigures {
  p50: number;
  p90: number;
  max: number;
}

export interface FastLatencyResult {
  options: FastLatencyOptions;
  /** ms per case and mode: the refresh (for `cut`, the cut alone) */
  figures: Record<Case, Record<Mode, LatencyFigures>>;
  /** ms per case and mode: the write and the refresh together (equal to figures without a write) */
  withWrite: Record<Case, Record<Mode, LatencyFigures>>;
  /** MVs equal to their definitions at the end (both). */
  invariantOk: boolean;
}

const tableOf = (m: Mode) => (m === 'TRIGGERS' ? 'fl_trig' : 'fl_binlog');

export async function measureFastLatency(bdb: BenchDatabase, mb: MlogBench, opts: FastLatencyOptions = fastLatencyOptionsFromEnv()): Promise<FastLatencyResult> {
  const { db } = bdb;
  for (const m of MODES) {
    const t = tableOf(m);
    await db.raw(`CREATE TABLE ${t} (id INT NOT NULL PRIMARY KEY, g INT NOT NULL, x INT NOT NULL, note VARCHAR(32) NULL, KEY idx_${t}_g (g)) ENGINE=InnoDB`);
    await bulkLoad(db, t, ['id', 'g', 'x', 'note'], ['n', `n % ${opts.groups}`, '(n * 7919) % 100003', "'load'"], opts.rows, { label: `fast latency: loading ${t}` });
    await mb.ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${t} (g, x) USING ${m}`);
    await mb.ddl.execute(`CREATE MATERIALIZED VIEW ${t}_mv REFRESH FAST AS SELECT g, COUNT(*) AS c, SUM(x) AS s FROM ${t} GROUP BY g`);
  }
  const ids = Object.fromEntries(await Promise.all(MODES.map(async (m) => [m, await mb.mviewId(`${tableOf(m)}_mv`)] as const))) as Record<Mode, number>;
  const logs = Object.fromEntries(
    await Promise.all(MODES.map(async (m) => [m, { mlog_id: await mb.mlogId(tableOf(m)), table_schema: bdb.name, mlog_name: `mlog$${tableOf(m)}` }] as const)),
  ) as Record<Mode, { mlog_id: number; table_schema: string; mlog_name: string }>;

  /** Refresh and return its ms. */
  const refresh = async (m: Mode) => {
    const t0 = performance.now();
    const o = await mb.runner.run({ mviewId: ids[m], trigger: 'MANUAL', method: 'FAST' });
    if (o.kind !== 'SUCCESS' || o.method !== 'FAST') throw new Error(`fast latency: refresh of ${tableOf(m)}_mv: ${JSON.stringify(o)}`);
    return performance.now() - t0;
  };
  // The same changes for both tables: one PRNG per table, same seed.
  const rnd = { TRIGGERS: prng(11), BINLOG: prng(11) };
  const cursor = { TRIGGERS: { next: opts.rows, del: 0 }, BINLOG: { next: opts.rows, del: 0 } };
  const liveId = (m: Mode) => cursor[m].del + Math.floor(rnd[m]() * (cursor[m].next - cursor[m].del));
  // Each returns the ms of its timed part: the cut, or the refresh.
  const steps: Record<Case, (m: Mode) => Promise<number>> = {
    cut: async (m) => {
      const t0 = performance.now();
      const cut = await takeCut(db, [logs[m]]);
      const ms = performance.now() - t0;
      await cut.snapshot.rollback();
      return ms;
    },
    nothing: refresh,
    oneRow: async (m) => {
      await db.raw(`UPDATE ${tableOf(m)} SET x = x + 1 WHERE id = ?`, [liveId(m)]);
      return refresh(m);
    },
    batch: async (m) => {
      const t = tableOf(m);
      const third = Math.floor(opts.batch / 3);
      await db.transaction(async (trx) => {
        const values: unknown[] = [];
        for (let i = 0; i < opts.batch - 2 * third; i++) values.push(cursor[m].next++, Math.floor(rnd[m]() * opts.groups), Math.floor(rnd[m]() * 100_003), 'new');
        await trx.raw(`INSERT INTO ${t} (id, g, x, note) VALUES ${Array.from({ length: values.length / 4 }, () => '(?, ?, ?, ?)').join(', ')}`, values as never[]);
        for (let i = 0; i < third; i++) {
          await trx.raw(`UPDATE ${t} SET x = ?, g = ? WHERE id = ?`, [Math.floor(rnd[m]() * 100_003), Math.floor(rnd[m]() * opts.groups), liveId(m)]);
        }
        await trx.raw(`DELETE FROM ${t} WHERE id >= ? AND id < ?`, [cursor[m].del, cursor[m].del + third]);
        cursor[m].del += third;
      });
      return refresh(m);
    },
  };

  const perCase = () => Object.fromEntries(CASES.map((c) => [c, { TRIGGERS: [] as number[], BINLOG: [] as number[] }])) as Record<Case, Record<Mode, number[]>>;
  const samples = perCase();
  const totals = perCase();
  const warmUp = 2;
  for (let r = 0; r < warmUp + opts.reps; r++) {
    if (r === warmUp) progress(`fast latency: ${opts.reps} repetitions`);
    const order: Mode[] = r % 2 === 0 ? ['TRIGGERS', 'BINLOG'] : ['BINLOG', 'TRIGGERS'];
    for (const c of CASES) {
      for (const m of order) {
        const t0 = performance.now();
        const ms = await steps[c](m);
        if (r >= warmUp) {
          samples[c][m].push(ms);
          totals[c][m].push(c === 'cut' || c === 'nothing' ? ms : performance.now() - t0);
        }
      }
    }
  }

  let invariantOk = true;
  for (const m of MODES) {
    const t = tableOf(m);
    const [mv] = (await db.raw(`SELECT g, c, s FROM ${t}_mv ORDER BY g`)) as [Array<Record<string, unknown>>];
    const [def] = (await db.raw(`SELECT g, COUNT(*) AS c, SUM(x) AS s FROM ${t} GROUP BY g ORDER BY g`)) as [Array<Record<string, unknown>>];
    const canon = (rows: Array<Record<string, unknown>>) => JSON.stringify(rows.map((x) => [Number(x.g), Number(x.c), Number(x.s)]));
    if (canon(mv) !== canon(def)) invariantOk = false;
  }
  if (!invariantOk) throw new Error('fast latency: an MV differs from its definition');
  const figuresOf = (xs: Record<Case, Record<Mode, number[]>>) =>
    Object.fromEntries(
      CASES.map((c) => [
        c,
        Object.fromEntries(
          MODES.map((m) => {
            const s = summarize(xs[c][m]);
            return [m, { p50: s.p50, p90: s.p90, max: s.max }];
          }),
        ),
      ]),
    ) as Record<Case, Record<Mode, LatencyFigures>>;
  return { options: opts, figures: figuresOf(samples), withWrite: figuresOf(totals), invariantOk };
}

const CASE_NAMES: Record<Case, string> = {
  cut: 'consistent cut alone',
  nothing: 'REFRESH, nothing to apply',
  oneRow: 'REFRESH right after a single-row UPDATE committed',
  batch: 'REFRESH right after a change batch committed',
};

export function fastLatencyReport(r: FastLatencyResult): string {
  const o = r.options;
  const signed = (ms: number) => `${ms < 0 ? '-' : '+'}${fmtMs(Math.abs(ms))}`;
  const rows = CASES.map((c) => {
    const f = r.figures[c];
    const w = r.withWrite[c];
    const hasWrite = c === 'oneRow' || c === 'batch';
    return [
      c === 'batch' ? `${CASE_NAMES[c]} (${fmtInt(o.batch)} rows)` : CASE_NAMES[c],
      `${fmtMs(f.TRIGGERS.p50)} / ${fmtMs(f.TRIGGERS.p90)} / ${fmtMs(f.TRIGGERS.max)}`,
      `${fmtMs(f.BINLOG.p50)} / ${fmtMs(f.BINLOG.p90)} / ${fmtMs(f.BINLOG.max)}`,
      `**${fmtRatio(f.BINLOG.p50 / f.TRIGGERS.p50, 2)}**`,
      signed(f.BINLOG.p50 - f.TRIGGERS.p50),
      hasWrite ? `${fmtMs(w.TRIGGERS.p50)} / ${fmtMs(w.BINLOG.p50)} (${fmtRatio(w.BINLOG.p50 / w.TRIGGERS.p50, 2)})` : '-',
    ];
  });
  return [
    `FAST refresh latency, BINLOG log (capture running) against TRIGGERS log: ${fmtInt(o.rows)}-row tables, ${fmtInt(o.groups)} groups, ` +
      `MV \`SELECT g, COUNT(*), SUM(x) ... GROUP BY g\`; ${o.reps} repetitions (after 2 untimed), the two tables alternating first; ` +
      `RefreshRunner.run() wall time; every refresh FAST; MVs equal to their definitions at the end: ${r.invariantOk ? 'yes' : 'NO'}.`,
    '',
    table(['step', 'TRIGGERS p50 / p90 / max', 'BINLOG p50 / p90 / max', '**BINLOG / TRIGGERS (p50)**', 'BINLOG extra (p50)', 'write + refresh p50: TRIGGERS / BINLOG'], rows),
  ].join('\n');
}
