import type { Connection } from 'mysql2/promise';
import { prng } from './prng.js';

// A seeded random workload over three joined tables, for the join oracle
// (test/integration/fastJoinOracle.test.ts): a fact table f (with a parent link to itself) and
// two dimensions a and b. Writers change every table: inserts, updates of values and of join
// keys (to NULL, to keys no row has, to other rows), primary-key changes on every side, deletes
// of dimension rows that many fact rows use, whole groups of fact rows moved to another
// dimension row, transactions that touch several tables, rolled-back transactions, and
// transactions held open across a refresh's cut.

export const F_IDS = 30;
export const A_IDS = 8;
export const B_IDS = 5;

export const TABLE_COLUMNS = {
  f: ['id', 'd1', 'd2', 'p', 'g', 'x', 'y'],
  a: ['id', 'r', 'w', 'lo'],
  b: ['id', 'c', 'flag'],
} as const;
export type TableKey = keyof typeof TABLE_COLUMNS;
export type Tables = Record<TableKey, string>;

export function createStatements(t: Tables): string[] {
  return [
    `CREATE TABLE ${t.f} (id INT NOT NULL PRIMARY KEY, d1 INT NULL, d2 INT NULL, p INT NULL, g TINYINT NULL, x INT NULL, ` +
      'y DECIMAL(7,2) NULL, KEY (d1), KEY (d2), KEY (p)) ENGINE=InnoDB',
    `CREATE TABLE ${t.a} (id INT NOT NULL PRIMARY KEY, r VARCHAR(2) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL, w INT NULL, lo INT NULL) ENGINE=InnoDB`,
    `CREATE TABLE ${t.b} (id INT NOT NULL PRIMARY KEY, c TINYINT NULL, flag TINYINT NOT NULL) ENGINE=InnoDB`,
  ];
}

export class Rnd {
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
  /** A key of table `k`, sometimes one no row has (a dangling reference). */
  key(k: TableKey): number {
    return this.int(1, { f: F_IDS, a: A_IDS + 1, b: B_IDS + 1 }[k]);
  }
  /** A join key: NULL one time in eight. */
  ref(k: TableKey): number | null {
    return this.chance(0.125) ? null : this.key(k);
  }
  fRow(id = this.int(1, F_IDS)): unknown[] {
    const x = this.chance(0.15) ? null : this.int(-6, 9);
    const y = this.chance(0.15) ? null : (this.int(-3000, 3000) / 100).toFixed(2);
    return [id, this.ref('a'), this.ref('b'), this.chance(0.3) ? null : this.key('f'), this.chance(0.15) ? null : this.int(0, 3), x, y];
  }
  aRow(id = this.int(1, A_IDS)): unknown[] {
    return [id, this.pick([null, 'a', 'A', 'b', 'ab', '']), this.chance(0.15) ? null : this.int(-5, 20), this.chance(0.4) ? null : this.int(-6, 6)];
  }
  bRow(id = this.int(1, B_IDS)): unknown[] {
    return [id, this.chance(0.2) ? null : this.int(0, 2), this.int(0, 1)];
  }
}

export type Stmt = [string, unknown[]];

const values = (n: number, cols: number) => Array.from({ length: n }, () => `(${Array(cols).fill('?').join(', ')})`).join(', ');

function factStatement(r: Rnd, t: Tables): Stmt {
  const f = t.f;
  const p = r.next();
  if (p < 0.22) {
    const n = r.int(1, 3);
    return [`INSERT INTO ${f} (id, d1, d2, p, g, x, y) VALUES ${values(n, 7)}`, Array.from({ length: n }, () => r.fRow()).flat()];
  }
  if (p < 0.27) return [`INSERT INTO ${f} (id, d1, d2, p, g, x, y) VALUES ${values(1, 7)} ON DUPLICATE KEY UPDATE x = VALUES(x), d1 = VALUES(d1)`, r.fRow()];
  if (p < 0.47) {
    const c = r.pick(['x', 'y', 'g', 'd1', 'd2', 'p', 'd1', 'x'] as const);
    const v = { x: r.int(-6, 9), y: (r.int(-3000, 3000) / 100).toFixed(2), g: r.int(0, 3), d1: r.ref('a'), d2: r.ref('b'), p: r.ref('f') }[c];
    return [`UPDATE ${f} SET ${c} = ? WHERE id = ?`, [r.chance(0.1) ? null : v, r.int(1, F_IDS)]];
  }
  if (p < 0.57) {
    // Many fact rows move from one dimension row to another (or to none).
    return r.chance(0.6) ? [`UPDATE ${f} SET d1 = ? WHERE d1 <=> ?`, [r.ref('a'), r.ref('a')]] : [`UPDATE ${f} SET d2 = ?, g = ? WHERE d2 <=> ?`, [r.ref('b'), r.int(0, 3), r.ref('b')]];
  }
  if (p < 0.64) {
    const lo = r.int(1, F_IDS);
    return [`UPDATE ${f} SET x = x + 1, y = y - 0.75 WHERE id BETWEEN ? AND ?`, [lo, lo + r.int(0, 5)]];
  }
  if (p < 0.69) return [`UPDATE ${f} SET id = ? WHERE id = ?`, [r.int(1, F_IDS), r.int(1, F_IDS)]];
  if (p < 0.72) return [`UPDATE ${f} SET x = x WHERE id = ?`, [r.int(1, F_IDS)]]; // changes nothing
  if (p < 0.9) return [`DELETE FROM ${f} WHERE id = ?`, [r.int(1, F_IDS)]];
  const lo = r.int(1, F_IDS);
  return [`DELETE FROM ${f} WHERE id BETWEEN ? AND ?`, [lo, lo + r.int(0, 3)]];
}

function dimStatement(r: Rnd, t: Tables, k: 'a' | 'b'): Stmt {
  const tbl = t[k];
  const n = k === 'a' ? A_IDS : B_IDS;
  const row = () => (k === 'a' ? r.aRow() : r.bRow());
  const cols = TABLE_COLUMNS[k];
  const p = r.next();
  if (p < 0.2) return [`INSERT INTO ${tbl} (${cols.join(', ')}) VALUES ${values(1, cols.length)}`, row()];
  if (p < 0.25) return [`REPLACE INTO ${tbl} (${cols.join(', ')}) VALUES ${values(1, cols.length)}`, row()];
  if (p < 0.6) {
    const [c, v] = k === 'a' ? r.pick([['r', r.aRow()[1]], ['w', r.aRow()[2]], ['lo', r.aRow()[3]]] as const) : r.pick([['c', r.bRow()[1]], ['flag', r.bRow()[2]]] as const);
    return [`UPDATE ${tbl} SET ${c} = ? WHERE id = ?`, [v, r.int(1, n)]];
  }
  // A dimension row changes key: the fact rows that used it lose it, others may gain it.
  if (p < 0.72) return [`UPDATE ${tbl} SET id = ? WHERE id = ?`, [r.int(1, n + 1), r.int(1, n)]];
  if (p < 0.78 && k === 'a') return [`UPDATE ${tbl} SET r = ? WHERE r <=> ?`, [r.aRow()[1], r.aRow()[1]]];
  // Deleting a dimension row that many fact rows use: an ordinary delete (no cascade).
  return [`DELETE FROM ${tbl} WHERE id = ?`, [r.int(1, n)]];
}

/**
 * Statements that change a dimension row and the fact rows joined to it in one transaction (an
 * order and its customer changed together): each side's change meets the other's in the delta.
 */
export function correlatedStatements(r: Rnd, t: Tables): Stmt[] {
  const k = r.int(1, A_IDS);
  const j = r.int(1, B_IDS);
  const dim: Stmt = r.pick<Stmt>([
    [`UPDATE ${t.a} SET r = ?, w = ? WHERE id = ?`, [r.aRow()[1], r.aRow()[2], k]],
    [`REPLACE INTO ${t.a} (id, r, w, lo) VALUES (?, ?, ?, ?)`, r.aRow(k)],
    [`DELETE FROM ${t.a} WHERE id = ?`, [k]],
    [`UPDATE ${t.a} SET id = ? WHERE id = ?`, [r.int(1, A_IDS + 1), k]],
    [`UPDATE ${t.b} SET c = ?, flag = ? WHERE id = ?`, [r.bRow()[1], r.bRow()[2], j]],
  ]);
  const fact: Stmt = r.pick<Stmt>([
    [`UPDATE ${t.f} SET x = ?, g = ? WHERE d1 = ?`, [r.int(-6, 9), r.int(0, 3), k]],
    [`INSERT INTO ${t.f} (id, d1, d2, p, g, x, y) VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE d1 = VALUES(d1), x = VALUES(x)`, [r.int(1, F_IDS), k, j, r.ref('f'), r.int(0, 3), r.int(-6, 9), '1.25']],
    [`UPDATE ${t.f} SET d1 = ?, d2 = ? WHERE id = ?`, [k, j, r.int(1, F_IDS)]],
    [`UPDATE ${t.f} SET p = ?, x = x - 1 WHERE id = ?`, [r.int(1, F_IDS), r.int(1, F_IDS)]],
    [`DELETE FROM ${t.f} WHERE d1 = ? AND id % 2 = ?`, [k, r.int(0, 1)]],
  ]);
  return r.chance(0.5) ? [dim, fact] : [fact, dim];
}

export function randomStatement(r: Rnd, t: Tables): Stmt {
  const p = r.next();
  return p < 0.55 ? factStatement(r, t) : dimStatement(r, t, p < 0.8 ? 'a' : 'b');
}

/** Rows to start from (before the logs exist). */
export function initialRows(r: Rnd): Record<TableKey, unknown[][]> {
  const ids = (n: number, max: number) => [...new Set(Array.from({ length: n }, () => r.int(1, max)))];
  return {
    f: ids(r.int(5, 20), F_IDS).map((id) => r.fRow(id)),
    a: ids(r.int(3, A_IDS), A_IDS).map((id) => r.aRow(id)),
    b: ids(r.int(2, B_IDS), B_IDS).map((id) => r.bRow(id)),
  };
}

// ---- writers ------------------------------------------------------------------------------------

const ER_DUP_ENTRY = 1062;
const ER_LOCK_WAIT_TIMEOUT = 1205;
const ER_LOCK_DEADLOCK = 1213;
const errno = (e: unknown) => (e as { errno?: number }).errno;

/** A broadcast: everyone waiting when it fires wakes up. */
export class Signal {
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

export interface Stats {
  commits: number;
  rollbacks: number;
  heldAcross: number;
  lateWriters: number;
  multiTable: number;
  dupKeys: number;
  lockErrors: number;
  refreshes: number;
  /** FAST refreshes of an MV over two or more logs that moved more than one watermark. */
  multiLogRefreshes: number;
}

export const emptyStats = (): Stats => ({
  commits: 0,
  rollbacks: 0,
  heldAcross: 0,
  lateWriters: 0,
  multiTable: 0,
  dupKeys: 0,
  lockErrors: 0,
  refreshes: 0,
  multiLogRefreshes: 0,
});

export interface Ctx {
  opsDone: number;
  opsStarted: number;
  /**
   * Operations the writers may start before the MVs exist (their complete builds cut across
   * those); the rest wait for mvsCreated, so that FAST refreshes have changes to apply.
   */
  beforeMvs: number;
  mvsCreated: boolean;
  writersLeft: number;
  /** A writer holds (or is about to hold) a transaction open and wants a refresh to cut across it. */
  want: boolean;
  refreshing: boolean;
  refresherDone: boolean;
  abort: boolean;
  changed: Signal;
  stats: Stats;
}

/** Hold the current transaction open until a refresh is under way (a writer never waits for one to finish). */
async function untilRefreshUnderWay(ctx: Ctx): Promise<void> {
  if (ctx.refreshing || ctx.refresherDone || ctx.abort) return;
  ctx.want = true;
  ctx.changed.fire();
  while (!(ctx.refreshing || ctx.refresherDone || ctx.abort)) await ctx.changed.wait();
}

const jitter = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `stmts` in one transaction (or the caller's autocommit); false when the transaction must end. */
async function runStatements(conn: Connection, stmts: Stmt[], ctx: Ctx): Promise<boolean> {
  for (const [sql, params] of stmts) {
    try {
      await conn.query(sql, params);
    } catch (e) {
      // A duplicate key undoes that statement only (and its log rows); a deadlock or lock wait
      // timeout between writers ends the transaction.
      if (errno(e) === ER_DUP_ENTRY) {
        ctx.stats.dupKeys++;
        continue;
      }
      if (errno(e) === ER_LOCK_DEADLOCK || errno(e) === ER_LOCK_WAIT_TIMEOUT) {
        ctx.stats.lockErrors++;
        return false;
      }
      throw e;
    }
  }
  return true;
}

export async function writer(conn: Connection, r: Rnd, t: Tables, ops: number, ctx: Ctx): Promise<void> {
  try {
    for (let i = 0; i < ops && !ctx.abort; i++) {
      while (!ctx.mvsCreated && ctx.opsStarted >= ctx.beforeMvs && !ctx.abort) await ctx.changed.wait();
      ctx.opsStarted++;
      if (r.chance(0.15)) {
        await runStatements(conn, [randomStatement(r, t)], ctx);
      } else {
        const holdOpen = r.chance(0.25);
        const late = holdOpen && r.chance(0.35);
        const rollback = r.chance(0.15);
        const stmts = r.chance(0.35) ? correlatedStatements(r, t) : Array.from({ length: r.int(1, 4) }, () => randomStatement(r, t));
        if (new Set(stmts.map(([sql]) => /(?:INTO|UPDATE|FROM) (\S+)/.exec(sql)?.[1])).size > 1) ctx.stats.multiTable++;
        const delay = r.chance(0.3) ? 0 : r.int(1, 30);
        await conn.query('START TRANSACTION');
        let ok = false;
        let done = false;
        try {
          if (late) {
            // A snapshot taken before the cut, writes during / after it.
            await conn.query(`SELECT COUNT(*) FROM ${t.f}`);
            ctx.stats.lateWriters++;
            await untilRefreshUnderWay(ctx);
          }
          ok = await runStatements(conn, stmts, ctx);
          if (holdOpen && !late && ok) {
            ctx.stats.heldAcross++;
            await untilRefreshUnderWay(ctx);
          }
          if (holdOpen) await jitter(delay);
          done = true;
        } finally {
          if (!done || !ok || rollback || ctx.abort) {
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
