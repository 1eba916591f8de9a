import { createConnection, type Connection } from 'mysql2/promise';
import { expect } from 'vitest';
import { parseDatabaseUrl } from '../../src/db/connect.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import {
  createStatements,
  emptyStats,
  initialRows,
  Rnd,
  Signal,
  TABLE_COLUMNS,
  writer,
  type Ctx,
  type Stats,
  type TableKey,
  type Tables,
} from './joinWorkload.js';
import { waitFor, type TestEnv } from './testEnv.js';

// The oracle for FAST refresh over joins (DESIGN.md §2 "FAST refresh over joins", §4 invariant 3),
// in the style of fastOracle.test.ts; used by fastJoinOracle.test.ts (the real code) and by
// fastJoinMutations.test.ts (the same checks against deliberately broken code, which they must
// catch).
//
// Per seed: a fact table f and dimensions a and b, each with a log on all its columns; four MVs
// over them (a 2-table aggregate join, a 3-table star select-project-join, a self-join, and a
// 3-table aggregate with MIN / MAX, a non-equi condition and group keys from two tables);
// WRITERS connections running a seeded random workload on every table (joinWorkload.ts:
// transactions touching several tables, join-key updates, dimension rows deleted under many
// fact rows, NULL and dangling join keys, rollbacks, transactions held open across refreshes),
// and a refresher that creates the MVs and refreshes each FAST several times while the writers
// run.
//
// After each refresh, for each table the MV reads: the log rows with seq <= the MV's watermark
// for that table are exactly the changes committed before the refresh's cut, so the table at
// the cut = its rows from before the log + those log images replayed. The MV must equal its
// definition run over the replayed tables. At the end (writers stopped) one more refresh must
// equal the definition over the real tables, and each whole log replayed must give its table.

export const WRITERS = 4;

export interface Shape {
  name: string;
  /** The tables the definition reads. */
  reads: TableKey[];
  def: (t: Tables) => string;
}

export const SHAPES: Shape[] = [
  {
    name: 'agg2',
    reads: ['f', 'a'],
    def: (t) =>
      'SELECT a.r, COUNT(*) AS c, COUNT(f.x) AS cx, SUM(f.x) AS sx, AVG(f.y) AS ay, SUM(a.w) AS sw ' +
      `FROM ${t.f} f JOIN ${t.a} a ON f.d1 = a.id WHERE f.g IS NULL OR f.g <> 2 GROUP BY a.r`,
  },
  {
    name: 'star_spj',
    reads: ['f', 'a', 'b'],
    def: (t) =>
      'SELECT f.id, a.id AS aid, b.id AS bid, f.x + a.w AS xw, a.r, b.c, f.y ' +
      `FROM ${t.f} f INNER JOIN ${t.a} a ON f.d1 = a.id INNER JOIN ${t.b} b ON f.d2 = b.id WHERE b.flag = 1`,
  },
  {
    name: 'self',
    reads: ['f'],
    def: (t) => `SELECT k.id, p.id AS pid, k.x - p.x AS dx, p.g, k.y FROM ${t.f} k JOIN ${t.f} p ON k.p = p.id WHERE k.id <> p.id`,
  },
  {
    name: 'minmax3',
    reads: ['f', 'a', 'b'],
    def: (t) =>
      'SELECT a.r, f.g, COUNT(*) AS c, MIN(f.x) AS mnx, MAX(f.x) AS mxx, MAX(f.y) AS mxy, MIN(a.w) AS mnw, MAX(b.c) AS mxc ' +
      `FROM ${t.f} f, ${t.a} a, ${t.b} b WHERE f.d1 = a.id AND f.d2 = b.id AND (a.lo IS NULL OR f.x >= a.lo) GROUP BY a.r, f.g`,
  },
];

/** What every oracle failure says (the mutation checks look for it). */
export const ORACLE_MISMATCH = 'the MV differs from its defining SELECT at the refresh';

type Row = Record<string, unknown>;
/** How each table's log is filled (default TRIGGERS); BINLOG logs need `mvsched capture` running. */
export type LogModes = Partial<Record<TableKey, 'TRIGGERS' | 'BINLOG'>>;
const canon = (rows: Row[]) => rows.map((r) => JSON.stringify(r)).sort();

export class JoinOracle {
  constructor(
    private readonly t: TestEnv,
    private readonly ddl: DdlExecutor,
    /** MVS_TEST_SEED the seeds derive from (printed in every assertion message). */
    readonly baseSeed: number,
    private readonly modes: LogModes = {},
  ) {}

  /** WRITERS writer connections of their own (plain mysql2: no pool between writer and trigger). */
  async writerConnections(): Promise<Connection[]> {
    const c = parseDatabaseUrl(this.t.databaseUrl);
    return Promise.all(
      Array.from({ length: WRITERS }, () =>
        createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database, timezone: 'Z' }),
      ),
    );
  }

  private async query(sql: string, bindings: unknown[] = []): Promise<Row[]> {
    const [rows] = (await this.t.db.raw(sql, bindings as never)) as [Row[]];
    return rows.map((x) => ({ ...x }));
  }

  /** The MV's consumed watermark for each table it reads. */
  async watermarks(mv: string): Promise<Map<string, number>> {
    const rows = await this.t
      .db('mvs_mview_base_tables as b')
      .join('mvs_mviews as m', 'm.mview_id', 'b.mview_id')
      .where('m.mview_name', mv)
      .whereNotNull('b.mlog_id')
      .select('b.base_table_name', 'b.consumed_watermark');
    return new Map(rows.map((r: Row) => [String(r.base_table_name), Number(r.consumed_watermark)]));
  }

  /** A table as of log seq `upTo`: its rows from before the log, plus the log replayed. */
  async replay(k: TableKey, table: string, init: Row[], upTo: number, where: string): Promise<Row[]> {
    const cols = TABLE_COLUMNS[k];
    const state = new Map<number, Row>(init.map((r) => [Number(r.id), r]));
    const log = await this.query(`SELECT * FROM \`mlog$${table}\` WHERE \`_mlog$seq\` <= ? ORDER BY \`_mlog$seq\``, [upTo]);
    for (const l of log) {
      const img: Row = Object.fromEntries(cols.map((c) => [c, l[c]]));
      const id = Number(img.id);
      if (Number(l.old_new) === -1) {
        expect(state.get(id), `${where}: ${table} log seq ${l['_mlog$seq']} (${l.dml_type} -1) removes a row that is not there as logged`).toEqual(img);
        state.delete(id);
      } else {
        expect(state.has(id), `${where}: ${table} log seq ${l['_mlog$seq']} (${l.dml_type} +1) adds a row that is already there`).toBe(false);
        state.set(id, img);
      }
    }
    return [...state.values()].sort((a, b) => Number(a.id) - Number(b.id));
  }

  label(seed: number, index: number): string {
    return `[seed ${seed} (#${index} of MVS_TEST_SEED=${this.baseSeed})]`;
  }

  /** One seed of the random workload; throws at the first MV that differs from its definition. */
  async runSeed(seed: number, index: number, conns: Connection[]): Promise<Stats> {
    const { t, ddl } = this;
    const tag = this.label(seed, index);
    const r = new Rnd(seed);
    const tables: Tables = { f: `f_${index}`, a: `a_${index}`, b: `b_${index}` };
    const scratch: Tables = { f: `rf_${index}`, a: `ra_${index}`, b: `rb_${index}` };
    const keys = Object.keys(TABLE_COLUMNS) as TableKey[];
    for (const sql of createStatements(tables)) await t.db.raw(sql);
    for (const k of keys) await t.db.raw(`CREATE TABLE ${scratch[k]} LIKE ${tables[k]}`);
    const rows = initialRows(r);
    for (const k of keys) {
      const cols = TABLE_COLUMNS[k];
      for (const row of rows[k]) await t.db.raw(`INSERT INTO ${tables[k]} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`, row as never);
    }
    const init = Object.fromEntries(await Promise.all(keys.map(async (k) => [k, await this.query(`SELECT * FROM ${tables[k]} ORDER BY id`)]))) as Record<TableKey, Row[]>;
    for (const k of keys) {
      await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${tables[k]} (${TABLE_COLUMNS[k].join(', ')}) USING ${this.modes[k] ?? 'TRIGGERS'}`);
    }

    const opsPer = Array.from({ length: WRITERS }, () => r.int(10, 16));
    const totalOps = opsPer.reduce((a, b) => a + b, 0);
    const ctx: Ctx = {
      opsDone: 0,
      opsStarted: 0,
      beforeMvs: r.int(0, Math.floor(totalOps / 4)),
      mvsCreated: false,
      writersLeft: WRITERS,
      want: false,
      refreshing: false,
      refresherDone: false,
      abort: false,
      changed: new Signal(),
      stats: emptyStats(),
    };
    const nRefresh = r.int(3, 5);
    const thresholds = Array.from({ length: nRefresh }, () => r.int(ctx.beforeMvs, totalOps)).sort((a, b) => a - b);
    const writerRnds = Array.from({ length: WRITERS }, (_, w) => new Rnd((seed * 31 + w + 1) >>> 0));
    const mvName = (s: Shape) => `mv_${s.name}_${index}`;

    const check = async (shape: Shape, step: string) => {
      const wm = await this.watermarks(mvName(shape));
      const where = `${tag} ${shape.name} ${step}, watermarks ${JSON.stringify(Object.fromEntries(wm))}`;
      for (const k of shape.reads) {
        expect(wm.has(tables[k]), `${where}: no watermark for ${tables[k]}`).toBe(true);
        const state = await this.replay(k, tables[k], init[k], wm.get(tables[k])!, where);
        await t.db.raw(`DELETE FROM ${scratch[k]}`);
        if (state.length) await t.db(scratch[k]).insert(state);
      }
      const want = canon(await this.query(shape.def(scratch)));
      const got = canon(await this.query(`SELECT * FROM ${mvName(shape)}`));
      expect(got, `${where}: ${ORACLE_MISMATCH}'s cut`).toEqual(want);
    };

    const refreshAll = async (step: string) => {
      ctx.refreshing = true;
      ctx.want = false;
      ctx.changed.fire();
      try {
        for (const shape of SHAPES) {
          const before = await this.watermarks(mvName(shape));
          const res = await ddl.execute(`REFRESH MATERIALIZED VIEW ${mvName(shape)}`);
          expect(res.message, `${tag} ${shape.name} ${step}`).toMatch(/\(FAST,/);
          ctx.stats.refreshes++;
          const after = await this.watermarks(mvName(shape));
          if ([...after].filter(([k, w]) => w !== before.get(k)).length > 1) ctx.stats.multiLogRefreshes++;
          // Checked at once: a wrong MV is reported before the next one's refresh can fail.
          await check(shape, step);
        }
      } finally {
        ctx.refreshing = false;
        ctx.changed.fire();
      }
    };

    const refresher = async () => {
      try {
        // The MVs are created (complete builds at a cut of their logs) while the writers run.
        ctx.refreshing = true;
        ctx.changed.fire();
        try {
          for (const shape of SHAPES) await ddl.execute(`CREATE MATERIALIZED VIEW ${mvName(shape)} REFRESH FAST AS ${shape.def(tables)}`);
        } finally {
          ctx.refreshing = false;
          ctx.mvsCreated = true;
          ctx.changed.fire();
        }
        for (const shape of SHAPES) await check(shape, 'after CREATE (complete build)');
        for (let i = 0; i < nRefresh && !ctx.abort; i++) {
          while (!(ctx.opsDone >= thresholds[i]! || ctx.want || ctx.writersLeft === 0 || ctx.abort)) await ctx.changed.wait();
          if (ctx.abort) break;
          await refreshAll(`refresh ${i + 1}/${nRefresh}`);
        }
      } catch (e) {
        ctx.abort = true;
        throw e;
      } finally {
        ctx.refresherDone = true;
        ctx.changed.fire();
      }
    };

    const results = await Promise.allSettled([refresher(), ...conns.map((c, w) => writer(c, writerRnds[w]!, tables, opsPer[w]!, ctx))]);
    const failed = results.find((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (failed) throw failed.reason;

    // Writers stopped: one more refresh consumes every log, and each MV equals its definition
    // over the real tables; each whole log replayed is its table (trigger capture).
    await refreshAll('final refresh');
    for (const shape of SHAPES) {
      const wm = await this.watermarks(mvName(shape));
      for (const k of shape.reads) {
        const [{ h }] = (await this.query(`SELECT COALESCE(MAX(\`_mlog$seq\`), 0) AS h FROM \`mlog$${tables[k]}\``)) as [{ h: number }];
        expect(wm.get(tables[k]), `${tag} ${shape.name}: the final refresh did not consume the whole log of ${tables[k]}`).toBe(Number(h));
      }
      expect(canon(await this.query(`SELECT * FROM ${mvName(shape)}`)), `${tag} ${shape.name} final: the MV differs from its definition on the base tables`).toEqual(
        canon(await this.query(shape.def(tables))),
      );
    }
    for (const k of keys) {
      expect(
        (await this.replay(k, tables[k], init[k], Number.MAX_SAFE_INTEGER, `${tag} full replay`)).map((x) => JSON.stringify(x)),
        `${tag} replaying the whole log of ${tables[k]} does not give the table`,
      ).toEqual((await this.query(`SELECT ${TABLE_COLUMNS[k].join(', ')} FROM ${tables[k]} ORDER BY id`)).map((x) => JSON.stringify(x)));
    }
    for (const shape of SHAPES) await ddl.execute(`DROP MATERIALIZED VIEW ${mvName(shape)}`);
    for (const k of keys) await ddl.execute(`DROP MATERIALIZED VIEW LOG ON ${tables[k]}`);
    await t.db.raw(`DROP TABLE ${[...Object.values(tables), ...Object.values(scratch)].join(', ')}`);
    return ctx.stats;
  }

  /**
   * The deterministic case for one cut over every log: auto-increment order is not commit order
   * on any log. seq s1 is taken on the dimension's log by a transaction still open, s2 > s1
   * committed; a cut that did not wait for writers of that log would read s2 as its high-water
   * mark and never apply s1 (DESIGN.md §2 MV logs). `p` prefixes the table names.
   */
  async oneCutCase(p: string): Promise<void> {
    const { t, ddl } = this;
    const c = parseDatabaseUrl(t.databaseUrl);
    const open = await createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database });
    try {
      const tables: Tables = { f: `${p}f`, a: `${p}a`, b: `${p}b` };
      for (const sql of createStatements(tables)) await t.db.raw(sql);
      await t.db.raw(`INSERT INTO ${tables.a} (id, r, w) VALUES (1, 'a', 1), (2, 'b', 2)`);
      await t.db.raw(`INSERT INTO ${tables.f} (id, d1, x) VALUES (1, 1, 10), (2, 2, 20), (3, 1, 30)`);
      const init = { f: await this.query(`SELECT * FROM ${tables.f} ORDER BY id`), a: await this.query(`SELECT * FROM ${tables.a} ORDER BY id`) };
      // The fact table's log first: the dimension's log is not the first the cut takes.
      await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${tables.f} (${TABLE_COLUMNS.f.join(', ')})`);
      await ddl.execute(`CREATE MATERIALIZED VIEW LOG ON ${tables.a} (${TABLE_COLUMNS.a.join(', ')})`);
      const def = (x: Pick<Tables, 'f' | 'a'>) => `SELECT a.r, COUNT(*) AS n, SUM(f.x) AS sx FROM ${x.f} f JOIN ${x.a} a ON f.d1 = a.id GROUP BY a.r`;
      const mv = `${p}mv`;
      await ddl.execute(`CREATE MATERIALIZED VIEW ${mv} REFRESH FAST AS ${def(tables)}`);

      await open.query('START TRANSACTION');
      await open.query(`UPDATE ${tables.a} SET r = 'z' WHERE id = 1`);
      await t.db.raw(`UPDATE ${tables.a} SET r = 'y' WHERE id = 2`);
      let settled = false;
      const refresh = ddl.execute(`REFRESH MATERIALIZED VIEW ${mv}`).finally(() => {
        settled = true;
      });
      // Either the cut waits for the open transaction (InnoDB shows it waiting for the gate), or
      // the refresh ends without waiting.
      await waitFor(
        async () => {
          if (settled) return true;
          const [rows] = (await t.db.raw(
            "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '%mvs_mlog_gates%FOR UPDATE%'",
          )) as [Array<{ n: number }>];
          return Number(rows[0]!.n) > 0;
        },
        { timeoutMs: 15_000, intervalMs: 150, what: 'the cut waiting for the open transaction, or the refresh done' },
      );
      await open.query('COMMIT');
      expect((await refresh).message).toMatch(/\(FAST,/);

      const wm = await this.watermarks(mv);
      const scratch = { f: `${p}rf`, a: `${p}ra` };
      for (const k of ['f', 'a'] as const) {
        await t.db.raw(`CREATE TABLE ${scratch[k]} LIKE ${tables[k]}`);
        const state = await this.replay(k, tables[k], init[k], wm.get(tables[k])!, 'one-cut case');
        if (state.length) await t.db(scratch[k]).insert(state);
      }
      expect(canon(await this.query(`SELECT * FROM ${mv}`)), `watermarks ${JSON.stringify(Object.fromEntries(wm))}: ${ORACLE_MISMATCH}'s cut`).toEqual(
        canon(await this.query(def(scratch))),
      );
      await ddl.execute(`REFRESH MATERIALIZED VIEW ${mv}`);
      expect(canon(await this.query(`SELECT * FROM ${mv}`))).toEqual(canon(await this.query(def(tables))));
    } finally {
      await open.end().catch(() => {});
    }
  }
}
