import { createConnection, type Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCapture } from '../../src/app/processes.js';
import { createRunners } from '../../src/app/runtime.js';
import { systemClock } from '../../src/clock.js';
import { parseDatabaseUrl } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import type { Closeable } from '../../src/process/lifecycle.js';
import { prng, testSeed } from '../support/prng.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// The oracle for incremental (FAST) refresh (DESIGN.md §2 "MV logs", "Refresh", §4 invariant 3).
//
// For each MV shape and each seed: a base table with a log on ALL its columns, 4 writer
// connections running a seeded random workload (inserts, updates that move rows between groups
// and in and out of the WHERE, primary-key changes, deletes, NULLs, duplicate-key statement
// failures, rolled-back transactions, transactions held open across a refresh's cut), and a
// refresher that creates the MV and then refreshes it FAST several times while the writers run.
//
// After each refresh: the log rows with seq <= the MV's consumed watermark are exactly the changes
// committed before the refresh's cut, so "the base table at the cut" = the rows present before the
// log existed + those log images replayed in seq order. The MV must equal the defining SELECT run
// over that replayed state (loaded into a scratch table). At the end (writers stopped) one more
// refresh must equal the defining SELECT over the real table, and replaying the whole log must
// give the real table (trigger capture).
//
// Both capture modes run the same workloads: logs filled by triggers, and logs filled from the
// binary log by one `mvsched capture` running in this process for the whole file (the cut is
// then a snapshot matched to a binlog position, and capture must have passed it).
//
// Replay a failure with MVS_TEST_SEED=<base seed> (printed in every assertion message); the
// writers' operations are then the same, their interleaving with each other and with the
// refreshes is up to the scheduler. MVS_ORACLE_SEEDS overrides the number of seeds per shape
// and mode (`npm run bench -- fast-oracle` runs 20).

const SEEDS_PER_SHAPE = Number(process.env.MVS_ORACLE_SEEDS ?? 10);
const MODES = ['TRIGGERS', 'BINLOG'] as const;
type Mode = (typeof MODES)[number];
const WRITERS = 4;
const ID_MAX = 24;
const BASE_SEED = testSeed();

let t: TestEnv;
let ddl: DdlExecutor;
let capture: Closeable[] = [];

beforeAll(async () => {
  t = await createTestEnv('fast_oracle', { MVS_NODE_TTL_S: '2' });
  await migrateLatest(t.db);
  const { runner, purger } = createRunners({ db: t.db, logger: t.logger, clock: systemClock, purgeBatch: 1000 }, 'oracle-node');
  ddl = new DdlExecutor({ db: t.db, logger: t.logger, clock: systemClock, runner, purger, defaultSchema: t.database, notify: async () => {} });
  capture = await startCapture(t.config, t.logger);
});

afterAll(async () => {
  for (const c of capture.reverse()) await c.close();
  await t?.close();
});

// ---- shapes -------------------------------------------------------------------------------------

interface Shape {
  name: string;
  /** The defining SELECT over table `tbl`. */
  def: (tbl: string) => string;
}

const SHAPES: Shape[] = [
  {
    name: 'agg_group',
    def: (tbl) =>
      'SELECT g, COUNT(*) AS c, COUNT(x) AS cx, SUM(x) AS sx, AVG(x) AS ax, MIN(x) AS mnx, MAX(x) AS mxx, ' +
      `SUM(y) AS sy, AVG(y) AS ay, MIN(y) AS mny, MAX(y) AS mxy FROM ${tbl} WHERE id % 7 <> 3 AND (x IS NULL OR x > -4) GROUP BY g`,
  },
  {
    name: 'minmax_2keys',
    def: (tbl) => `SELECT k, s, MIN(x) AS mnx, MAX(x) AS mxx, MIN(y) AS mny, MAX(y) AS mxy FROM ${tbl} GROUP BY k, s`,
  },
  {
    name: 'scalar',
    def: (tbl) => `SELECT COUNT(*) AS c, SUM(x) AS sx, MIN(x) AS mnx, SUM(y) AS sy, MIN(y) AS mny FROM ${tbl} WHERE g = 2 AND k < 2`,
  },
  {
    name: 'spj',
    def: (tbl) =>
      `SELECT id, s, g, x * 2 + 1 AS x2, y - x AS d, CONCAT(COALESCE(s, '~'), ':', k) AS tag FROM ${tbl} WHERE x IS NULL OR x % 3 <> 0`,
  },
];

// ---- base table, values and statements ----------------------------------------------------------

const COLS = ['id', 'k', 'g', 's', 'x', 'y'] as const;
type Row = Record<string, unknown>;

const createBase = (tbl: string) =>
  `CREATE TABLE ${tbl} (id INT NOT NULL PRIMARY KEY, k TINYINT NOT NULL, g TINYINT NULL, ` +
  's VARCHAR(2) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, x INT NULL, y DECIMAL(7,2) NULL) ENGINE=InnoDB';

class Rnd {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  id(): number {
    return this.int(1, ID_MAX);
  }
  k(): number {
    return this.int(0, 2);
  }
  g(): number | null {
    return this.chance(0.2) ? null : this.int(0, 3);
  }
  s(): string | null {
    return this.pick([null, null, 'a', 'A', 'b', 'ab', '']);
  }
  x(): number | null {
    return this.chance(0.2) ? null : this.int(-6, 9);
  }
  y(): string | null {
    return this.chance(0.2) ? null : (this.int(-3000, 3000) / 100).toFixed(2);
  }
  row(id = this.id()): unknown[] {
    return [id, this.k(), this.g(), this.s(), this.x(), this.y()];
  }
  /** A random column and a new value for it. */
  assignment(): [string, unknown] {
    const c = this.pick(['k', 'g', 's', 'x', 'y', 'x', 'g'] as const);
    return [c, this[c]()];
  }
}

type Stmt = [string, unknown[]];

function randomStatement(r: Rnd, tbl: string): Stmt {
  const p = r.next();
  const values = (n: number) => Array.from({ length: n }, () => '(?, ?, ?, ?, ?, ?)').join(', ');
  if (p < 0.22) {
    const n = r.int(1, 3);
    return [`INSERT INTO ${tbl} (id, k, g, s, x, y) VALUES ${values(n)}`, Array.from({ length: n }, () => r.row()).flat()];
  }
  if (p < 0.28) {
    return [
      `INSERT INTO ${tbl} (id, k, g, s, x, y) VALUES ${values(1)} ON DUPLICATE KEY UPDATE g = VALUES(g), x = VALUES(x), y = COALESCE(y, 0) + 1`,
      r.row(),
    ];
  }
  if (p < 0.31) return [`REPLACE INTO ${tbl} (id, k, g, s, x, y) VALUES ${values(1)}`, r.row()];
  if (p < 0.52) {
    const sets = Array.from({ length: r.int(1, 3) }, () => r.assignment());
    return [`UPDATE ${tbl} SET ${sets.map(([c]) => `${c} = ?`).join(', ')} WHERE id = ?`, [...sets.map(([, v]) => v), r.id()]];
  }
  if (p < 0.59) {
    // Move a whole group (NULL group included) to another one.
    if (r.chance(0.5)) return [`UPDATE ${tbl} SET g = ? WHERE g <=> ?`, [r.g(), r.g()]];
    return [`UPDATE ${tbl} SET s = ?, k = ? WHERE s <=> ?`, [r.s(), r.k(), r.s()]];
  }
  if (p < 0.65) {
    const lo = r.id();
    return [`UPDATE ${tbl} SET x = x + 1, y = y - 0.75 WHERE id BETWEEN ? AND ?`, [lo, lo + r.int(0, 4)]];
  }
  if (p < 0.7) return [`UPDATE ${tbl} SET id = ? WHERE id = ?`, [r.id(), r.id()]]; // may collide
  if (p < 0.73) return [`UPDATE ${tbl} SET x = x, s = s WHERE id = ?`, [r.id()]]; // changes nothing
  if (p < 0.88) return [`DELETE FROM ${tbl} WHERE id = ?`, [r.id()]];
  const lo = r.id();
  return [`DELETE FROM ${tbl} WHERE id BETWEEN ? AND ?`, [lo, lo + r.int(0, 2)]];
}

const ER_DUP_ENTRY = 1062;
const ER_LOCK_WAIT_TIMEOUT = 1205;
const ER_LOCK_DEADLOCK = 1213;
const errno = (e: unknown) => (e as { errno?: number }).errno;

// ---- coordination -------------------------------------------------------------------------------

/** A broadcast: everyone waiting when it fires wakes up. */
class Signal {
  private waiters: Array<() => void> = [];
  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  fire(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

interface Ctx {
  opsDone: number;
  writersLeft: number;
  /** A writer holds (or is about to hold) a transaction open and wants a refresh to cut across it. */
  want: boolean;
  /** A refresh (or the MV's creation) has been started and has not finished. */
  refreshing: boolean;
  refresherDone: boolean;
  abort: boolean;
  /** Fires on any change of the above. */
  changed: Signal;
  stats: { commits: number; rollbacks: number; heldAcross: number; lateWriters: number; dupKeys: number; lockErrors: number; refreshes: number };
}

const jitter = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Hold the current transaction open until a refresh is under way, then return (the caller commits
 * after a short random delay, so the commit lands before, during, or after the refresh's cut). A
 * writer never waits for a refresh to finish: a refresh waits for writers holding the log's gate.
 */
async function untilRefreshUnderWay(ctx: Ctx): Promise<void> {
  if (ctx.refreshing || ctx.refresherDone || ctx.abort) return;
  ctx.want = true;
  ctx.changed.fire();
  while (!(ctx.refreshing || ctx.refresherDone || ctx.abort)) await ctx.changed.wait();
}

async function writer(conn: Connection, r: Rnd, tbl: string, ops: number, ctx: Ctx): Promise<void> {
  try {
    for (let i = 0; i < ops && !ctx.abort; i++) {
      if (r.chance(0.15)) {
        // A single statement in autocommit mode.
        const [sql, params] = randomStatement(r, tbl);
        await conn.query(sql, params).catch((e: unknown) => {
          if (errno(e) === ER_DUP_ENTRY) ctx.stats.dupKeys++;
          else if (errno(e) === ER_LOCK_DEADLOCK || errno(e) === ER_LOCK_WAIT_TIMEOUT) ctx.stats.lockErrors++;
          else throw e;
        });
      } else {
        const holdOpen = r.chance(0.25);
        const late = holdOpen && r.chance(0.35); // begin, wait for a refresh, then write
        const rollback = r.chance(0.15);
        const stmts = Array.from({ length: r.int(1, 3) }, () => randomStatement(r, tbl));
        const delay = r.chance(0.3) ? 0 : r.int(1, 30);
        await conn.query('START TRANSACTION');
        let failed = false;
        let done = false;
        try {
          if (late) {
            // Take a snapshot first: a REPEATABLE READ transaction that began before the cut and
            // writes during / after it.
            await conn.query(`SELECT COUNT(*) FROM ${tbl}`);
            ctx.stats.lateWriters++;
            await untilRefreshUnderWay(ctx);
          }
          for (const [sql, params] of stmts) {
            try {
              await conn.query(sql, params);
            } catch (e) {
              // A duplicate key undoes that statement only (and its log rows); anything else we
              // expect (deadlock, lock wait timeout) ends the transaction.
              if (errno(e) === ER_DUP_ENTRY) {
                ctx.stats.dupKeys++;
                continue;
              }
              if (errno(e) === ER_LOCK_DEADLOCK || errno(e) === ER_LOCK_WAIT_TIMEOUT) {
                ctx.stats.lockErrors++;
                failed = true;
                break;
              }
              throw e;
            }
          }
          if (holdOpen && !late && !failed) {
            // Took its seqs (and the gate) early; commits late, across a refresh's cut.
            ctx.stats.heldAcross++;
            await untilRefreshUnderWay(ctx);
          }
          if (holdOpen) await jitter(delay);
          done = true;
        } finally {
          if (!done || failed || rollback || ctx.abort) {
            await conn.query('ROLLBACK');
            ctx.stats.rollbacks++;
          } else {
            await conn.query('COMMIT');
            ctx.stats.commits++;
          }
        }
      }
      ctx.opsDone++;
      ctx.changed.fire();
    }
  } catch (e) {
    ctx.abort = true;
    throw e;
  } finally {
    ctx.writersLeft--;
    ctx.changed.fire();
  }
}

// ---- the oracle ---------------------------------------------------------------------------------

const canon = (rows: Row[]) => rows.map((r) => JSON.stringify(r)).sort();

async function query(sql: string, bindings: unknown[] = []): Promise<Row[]> {
  const [rows] = (await t.db.raw(sql, bindings as never)) as [Row[]];
  return rows.map((x) => ({ ...x }));
}

async function watermarkOf(mv: string): Promise<number> {
  const row = await t.db('mvs_mview_base_tables as b')
    .join('mvs_mviews as m', 'm.mview_id', 'b.mview_id')
    .where('m.mview_name', mv)
    .whereNotNull('b.mlog_id')
    .first('b.consumed_watermark');
  return Number(row.consumed_watermark);
}

/** The base table as of log seq `upTo`: the rows from before the log, plus the log replayed. */
async function replay(tbl: string, init: Row[], upTo: number, where: string): Promise<Row[]> {
  const state = new Map<number, Row>(init.map((r) => [Number(r.id), r]));
  const log = await query(`SELECT * FROM \`mlog$${tbl}\` WHERE \`_mlog$seq\` <= ? ORDER BY \`_mlog$seq\``, [upTo]);
  for (const l of log) {
    const img: Row = Object.fromEntries(COLS.map((c) => [c, l[c]]));
    const id = Number(img.id);
    const seq = l['_mlog$seq'];
    if (Number(l.old_new) === -1) {
      expect(state.get(id), `${where}: log seq ${seq} (${l.dml_type} -1) removes a row that is not there as logged`).toEqual(img);
      state.delete(id);
    } else {
      expect(state.has(id), `${where}: log seq ${seq} (${l.dml_type} +1) adds a row that is already there`).toBe(false);
      state.set(id, img);
    }
  }
  return [...state.values()].sort((a, b) => Number(a.id) - Number(b.id));
}

async function loadScratch(scratch: string, rows: Row[]): Promise<void> {
  await t.db.raw(`DELETE FROM ${scratch}`);
  if (rows.length) await t.db(scratch).insert(rows);
}

interface SeedRun {
  shape: Shape;
  mode: Mode;
  seed: number;
  index: number;
}

const label = (s: SeedRun) => `[shape ${s.shape.name}, ${s.mode}, seed ${s.seed} (#${s.index} of MVS_TEST_SEED=${BASE_SEED})]`;

async function runSeed(run: SeedRun, conns: Connection[]): Promise<Ctx['stats']> {
  const { shape, seed } = run;
  const tag = label(run);
  const r = new Rnd(seed);
  const m = run.mode === 'BINLOG' ? 'bl' : 'tr';
  const tbl = `b_${shape.name}_${m}${run.index}`;
  const mv = `mv_${shape.name}_${m}${run.index}`;
  const scratch = `r_${shape.name}_${m}${run.index}`;

  await t.db.raw(createBase(tbl));
  await t.db.raw(`CREATE TABLE ${scratch} LIKE ${tbl}`);
  // Rows from before the log existed: the replay starts from them.
  const initIds = [...new Set(Array.from({ length: r.int(0, 10) }, () => r.id()))];
  for (const id of initIds) await t.db.raw(`INSERT INTO ${tbl} (id, k, g, s, x, y) VALUES (?, ?, ?, ?, ?, ?)`, r.row(id) as never);
  const init = await query(`SELECT * FROM ${tbl} ORDER BY id`);
  await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${tbl} (${COLS.join(', ')}) USING ${run.mode}`);
  const [[made]] = (await t.db.raw(
    'SELECT l.capture_mode AS mode, (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ?) AS triggers ' +
      'FROM mvs_mlogs AS l WHERE l.base_table_name = ?',
    [t.database, tbl, tbl],
  )) as [Array<{ mode: string; triggers: number }>];
  expect({ mode: made!.mode, triggers: Number(made!.triggers) }, tag).toEqual({ mode: run.mode, triggers: run.mode === 'BINLOG' ? 0 : 3 });

  const ctx: Ctx = {
    opsDone: 0,
    writersLeft: WRITERS,
    want: false,
    refreshing: false,
    refresherDone: false,
    abort: false,
    changed: new Signal(),
    stats: { commits: 0, rollbacks: 0, heldAcross: 0, lateWriters: 0, dupKeys: 0, lockErrors: 0, refreshes: 0 },
  };
  const opsPer = Array.from({ length: WRITERS }, () => r.int(10, 16));
  const totalOps = opsPer.reduce((a, b) => a + b, 0);
  const nRefresh = r.int(3, 5);
  const thresholds = Array.from({ length: nRefresh }, () => r.int(0, totalOps)).sort((a, b) => a - b);
  // Each writer draws from its own stream, so its operations depend on the seed only.
  const writerRnds = Array.from({ length: WRITERS }, (_, w) => new Rnd((seed * 31 + w + 1) >>> 0));

  const check = async (step: string) => {
    const wm = await watermarkOf(mv);
    const where = `${tag} ${step}, watermark ${wm}`;
    await loadScratch(scratch, await replay(tbl, init, wm, where));
    const want = canon(await query(shape.def(scratch)));
    const got = canon(await query(`SELECT * FROM ${mv}`));
    expect(got, `${where}: the MV differs from its defining SELECT at the refresh's cut`).toEqual(want);
    return wm;
  };

  const refreshOnce = async (step: string) => {
    ctx.refreshing = true;
    ctx.want = false;
    const p = ddl.execute(`REFRESH MATERIALIZED VIEW ${mv}`);
    ctx.changed.fire();
    try {
      const res = await p;
      expect(res.message, `${tag} ${step}`).toMatch(/\(FAST,/);
    } finally {
      ctx.refreshing = false;
      ctx.changed.fire();
    }
    ctx.stats.refreshes++;
    return check(step);
  };

  const refresher = async () => {
    try {
      // The MV is created (a complete build at a cut of the log) while the writers run.
      ctx.refreshing = true;
      const created = ddl.execute(`CREATE MATERIALIZED VIEW ${mv} REFRESH FAST AS ${shape.def(tbl)}`);
      ctx.changed.fire();
      try {
        await created;
      } finally {
        ctx.refreshing = false;
        ctx.changed.fire();
      }
      let last = await check('after CREATE (complete build)');
      for (let i = 0; i < nRefresh && !ctx.abort; i++) {
        while (!(ctx.opsDone >= thresholds[i]! || ctx.want || ctx.writersLeft === 0 || ctx.abort)) await ctx.changed.wait();
        if (ctx.abort) break;
        const wm = await refreshOnce(`refresh ${i + 1}/${nRefresh}`);
        expect(wm, `${tag} refresh ${i + 1}: the watermark went back`).toBeGreaterThanOrEqual(last);
        last = wm;
      }
    } catch (e) {
      ctx.abort = true;
      throw e;
    } finally {
      ctx.refresherDone = true;
      ctx.changed.fire();
    }
  };

  const results = await Promise.allSettled([
    refresher(),
    ...conns.map((c, w) => writer(c, writerRnds[w]!, tbl, opsPer[w]!, ctx)),
  ]);
  const failed = results.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed) throw failed.reason;

  // Writers stopped, everything committed: one more refresh consumes the whole log ...
  const wm = await refreshOnce('final refresh');
  const [{ h }] = (await query(`SELECT COALESCE(MAX(\`_mlog$seq\`), 0) AS h FROM \`mlog$${tbl}\``)) as [{ h: number }];
  expect(wm, `${tag} the final refresh did not consume the whole log`).toBe(Number(h));
  // ... and the MV equals the definition over the real table (nothing lost or applied twice) ...
  expect(canon(await query(`SELECT * FROM ${mv}`)), `${tag} final: the MV differs from its defining SELECT on the base table`).toEqual(
    canon(await query(shape.def(tbl))),
  );
  // ... and the whole log replayed is the real table (what capture wrote is complete).
  expect(
    (await replay(tbl, init, Number.MAX_SAFE_INTEGER, `${tag} full replay`)).map((x) => JSON.stringify(x)),
    `${tag} replaying the whole log does not give the base table`,
  ).toEqual((await query(`SELECT ${COLS.join(', ')} FROM ${tbl} ORDER BY id`)).map((x) => JSON.stringify(x)));

  await ddl.execute(`DROP MATERIALIZED VIEW ${mv}`);
  await ddl.execute(`DROP MATERIALIZED VIEW LOG ON ${tbl}`);
  await t.db.raw(`DROP TABLE ${tbl}, ${scratch}`);
  return ctx.stats;
}

describe('FAST refresh oracle', () => {
  let conns: Connection[] = [];

  beforeAll(async () => {
    const c = parseDatabaseUrl(t.databaseUrl);
    conns = await Promise.all(
      Array.from({ length: WRITERS }, () =>
        createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database, timezone: 'Z' }),
      ),
    );
  });

  afterAll(async () => {
    await Promise.allSettled(conns.map((c) => c.end()));
  });

  for (const mode of MODES) for (const [si, shape] of SHAPES.entries()) {
    it(`${shape.name}, ${mode} log: the MV equals its definition at every refresh's cut`, async () => {
      const total = { commits: 0, rollbacks: 0, heldAcross: 0, lateWriters: 0, dupKeys: 0, lockErrors: 0, refreshes: 0 };
      const started = Date.now();
      for (let i = 0; i < SEEDS_PER_SHAPE; i++) {
        const seed = (BASE_SEED + si * 1_000_003 + i * 7919) >>> 0;
        const run = { shape, mode, seed, index: i };
        const stats = await runSeed(run, conns).catch((e: unknown) => {
          // Every failure names its seed.
          if (e instanceof Error && !e.message.includes(label(run))) e.message = `${label(run)} ${e.message}`;
          throw e;
        });
        for (const k of Object.keys(total) as Array<keyof typeof total>) total[k] += stats[k];
      }
      console.info(`fast oracle ${shape.name} ${mode}: ${SEEDS_PER_SHAPE} seeds from MVS_TEST_SEED=${BASE_SEED} in ${Date.now() - started} ms`, total);
      // The workload did what it is meant to: transactions held open across refreshes, rollbacks.
      if (SEEDS_PER_SHAPE < 5) return;
      expect(total.heldAcross + total.lateWriters, `${shape.name} ${mode} MVS_TEST_SEED=${BASE_SEED}`).toBeGreaterThan(0);
      expect(total.rollbacks, `${shape.name} ${mode} MVS_TEST_SEED=${BASE_SEED}`).toBeGreaterThan(0);
    }, Math.max(300_000, SEEDS_PER_SHAPE * 20_000));
  }
});
