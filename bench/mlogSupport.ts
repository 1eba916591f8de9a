// Helpers shared by the MV-log benchmarks (bench/fastRefresh.ts, bench/mlogWriters.ts,
// bench/mlogPurge.ts): an in-process DdlExecutor with its refresh and purge runners, fast bulk
// loading, direct mysql2 writer connections, and a per-statement SQL timer for phase analysis.
import { createConnection, type Connection } from 'mysql2/promise';
import type { Knex } from 'knex';
import { systemClock } from '../src/clock.js';
import { createRunners } from '../src/app/runtime.js';
import { parseDatabaseUrl } from '../src/db/connect.js';
import { DdlExecutor } from '../src/ddl/executor.js';
import type { PurgeRunner } from '../src/purge/purgeRunner.js';
import type { RefreshRunner } from '../src/refresh/runner.js';
import { readFileSync } from 'node:fs';
import { benchLogger, cpuSnapshot, cpuUse, fmtInt, progress, sleep, type BenchDatabase, type CpuSnapshot, type CpuUse } from './support.js';

export interface MlogBench {
  ddl: DdlExecutor;
  runner: RefreshRunner;
  purger: PurgeRunner;
  /** mvs_mviews.mview_id of an MV in the bench database. */
  mviewId(name: string): Promise<number>;
  /** mvs_mlogs.mlog_id of the log on a table of the bench database. */
  mlogId(table: string): Promise<number>;
}

/**
 * Until InnoDB has purged the undo history the builds left (at most 20 s), then a moment more:
 * a refresh timed right after a COMPLETE rebuild otherwise shares the cores with its purge.
 */
export async function settleServer(db: Knex): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const [rows] = (await db.raw(`SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'`)) as [Array<{ Value: string }>];
    if (Number(rows[0]?.Value ?? 0) < 1_000 || Date.now() > deadline) break;
    await sleep(200);
  }
  await sleep(1_000);
}

/** DdlExecutor + runners on the bench database, like test/integration/mlog.test.ts, logger at warn. */
export function mlogBench(bdb: BenchDatabase, purgeBatch = 10_000): MlogBench {
  const logger = benchLogger();
  const { runner, purger } = createRunners({ db: bdb.db, logger, clock: systemClock, purgeBatch }, 'bench');
  const ddl = new DdlExecutor({ db: bdb.db, logger, clock: systemClock, runner, purger, defaultSchema: bdb.name, notify: async () => {} });
  return {
    ddl,
    runner,
    purger,
    async mviewId(name) {
      const r = await bdb.db('mvs_mviews').where({ table_schema: bdb.name, mview_name: name }).first('mview_id');
      if (!r) throw new Error(`no MV ${name}`);
      return Number(r.mview_id);
    },
    async mlogId(table) {
      const r = await bdb.db('mvs_mlogs').where({ table_schema: bdb.name, base_table_name: table }).first('mlog_id');
      if (!r) throw new Error(`no MV log on ${table}`);
      return Number(r.mlog_id);
    },
  };
}

/**
 * Fill `table` with rows n = 0 .. count-1 (`n` is usable in the value expressions), 100,000 rows
 * per INSERT ... SELECT from a cross join of a digits table (no recursive CTE: that is slower).
 */
export async function bulkLoad(
  db: Knex,
  table: string,
  columns: string[],
  exprs: string[],
  count: number,
  opts: { offset?: number; label?: string } = {},
): Promise<number> {
  await db.raw('CREATE TABLE IF NOT EXISTS __bench_digits (i TINYINT UNSIGNED PRIMARY KEY)');
  await db.raw('INSERT IGNORE INTO __bench_digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)');
  const chunk = 100_000;
  const offset = opts.offset ?? 0;
  const t = performance.now();
  for (let base = 0; base < count; base += chunk) {
    const n = Math.min(chunk, count - base);
    await db.raw(
      `INSERT INTO ?? (${columns.map(() => '??').join(', ')}) ` +
        `SELECT ${exprs.join(', ')} FROM (SELECT d0.i + 10 * d1.i + 100 * d2.i + 1000 * d3.i + 10000 * d4.i + ${base + offset} AS n ` +
        `FROM __bench_digits d0, __bench_digits d1, __bench_digits d2, __bench_digits d3, __bench_digits d4) AS s WHERE s.n < ${base + offset + n}`,
      [table, ...columns],
    );
    if (opts.label) progress(`${opts.label}: ${fmtInt(base + n)} / ${fmtInt(count)} rows (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  }
  return performance.now() - t;
}

/** A plain mysql2 connection (no knex, no pool): what an application writer would use. */
export async function writerConnection(url: string): Promise<Connection> {
  const c = parseDatabaseUrl(url);
  return createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database, timezone: 'Z' });
}

// Seeded, so every run applies the same changes (the tests' PRNG).
export { prng } from '../test/support/prng.js';

export interface TimedStatement {
  sql: string;
  /** null: knex emitted no response event for it (a streamed SELECT, BEGIN / COMMIT). */
  ms: number | null;
  /** For those: from its start to the start of the next statement knex ran (a streamed read's time, roughly). */
  untilNextMs?: number;
}

/**
 * Times every statement knex runs on `db` (and its transactions) between start() and stop(),
 * from knex's 'query' event to its 'query-response' / 'query-error'. Statements knex runs
 * without a response event (BEGIN / COMMIT of a transaction, streams) are listed with ms null.
 */
export class SqlTimer {
  private readonly open = new Map<string, { sql: string; t: number }>();
  private done: Array<TimedStatement & { t: number }> = [];
  private starts: number[] = [];
  private on = false;
  private readonly onQuery = (q: { __knexQueryUid?: string; sql?: string }) => {
    if (!this.on) return;
    const t = performance.now();
    this.starts.push(t);
    if (q.__knexQueryUid) this.open.set(q.__knexQueryUid, { sql: q.sql ?? '', t });
    else this.done.push({ sql: q.sql ?? '', ms: null, t }); // BEGIN / COMMIT / SAVEPOINT: no response event
  };
  private readonly onEnd = (...args: unknown[]) => {
    // query-response: (response, obj, builder); query-error: (err, obj)
    const q = args[1] as { __knexQueryUid?: string } | undefined;
    const o = q?.__knexQueryUid ? this.open.get(q.__knexQueryUid) : undefined;
    if (!o) return;
    this.open.delete(q!.__knexQueryUid!);
    this.done.push({ sql: o.sql, ms: performance.now() - o.t, t: o.t });
  };

  constructor(private readonly db: Knex) {
    db.on('query', this.onQuery);
    db.on('query-response', this.onEnd);
    db.on('query-error', this.onEnd);
  }

  start(): void {
    this.done = [];
    this.starts = [];
    this.open.clear();
    this.on = true;
  }

  stop(): TimedStatement[] {
    this.on = false;
    const end = performance.now();
    const untimed = [...this.open.values()].map((o) => ({ sql: o.sql, ms: null, t: o.t }));
    this.open.clear();
    const starts = [...this.starts].sort((a, b) => a - b);
    const next = (t: number) => starts.find((x) => x > t) ?? end;
    return [...this.done, ...untimed].map(({ t, ...s }) => (s.ms === null ? { ...s, untilNextMs: next(t) - t } : s));
  }

  detach(): void {
    this.db.removeListener('query', this.onQuery);
    this.db.removeListener('query-response', this.onEnd);
    this.db.removeListener('query-error', this.onEnd);
  }
}

/** Phase of a refresh statement (RefreshRunner.run + applyFast + takeCut), for the breakdown. */
export function refreshPhase(sqlRaw: string): string {
  const sql = sqlRaw.replace(/\s+/g, ' ').trim().toLowerCase();
  if (/for update nowait/.test(sql) && /mvs_mview_refresh_info/.test(sql)) return 'lock: refresh-info FOR UPDATE NOWAIT';
  if (/__mvs_probe/.test(sql)) return 'setup: probe definition (SELECT * FROM (def) LIMIT 0)';
  if (/information_schema/.test(sql)) return 'information_schema lookups';
  if (/mvs_mlog_gates|innodb_lock_wait_timeout|idle_transaction_timeout/.test(sql)) return 'cut: gate lock (wait for writers)';
  if (/^select now\(3\) as __at, \(select coalesce\(max\(`_mlog\$seq`\)/.test(sql)) return 'cut: high-water read (snapshot)';
  if (/information_schema\.triggers/.test(sql) && /innodb_sys_tables|innodb_tables|table_type/.test(sql)) return 'cut: log identity check';
  if (/create temporary table/.test(sql)) return 'delta: CREATE TEMPORARY TABLE (log GROUP BY + MV join)';
  if (/drop temporary table/.test(sql)) return 'delta: DROP TEMPORARY TABLE';
  if (/^update .* join `__mvs_delta/.test(sql)) return 'apply: UPDATE MV groups';
  if (/^delete m from .* join `__mvs_delta/.test(sql)) return 'apply: DELETE emptied groups';
  if (/^insert into .* from `__mvs_delta/.test(sql)) return 'apply: INSERT new groups';
  if (/^select .* from `__mvs_delta/.test(sql)) return 'recompute: find groups whose MIN/MAX left';
  if (/<=>/.test(sql) && /^select/.test(sql)) return 'recompute: MIN/MAX from the base table';
  if (/<=>/.test(sql) && /^update/.test(sql)) return 'recompute: UPDATE MV extremes';
  if (/consumed_watermark/.test(sql) && /^update/.test(sql)) return 'watermark update';
  if (/mvs_mview_refresh_hist|mvs_mview_refresh_info/.test(sql)) return 'history + refresh-info reads/writes';
  if (/mvs_mviews|mvs_mview_base_tables|mvs_mlogs|version/.test(sql)) return 'metadata reads';
  if (/^(savepoint|release savepoint|rollback|commit|begin|start transaction|set transaction)/.test(sql)) return 'transaction control';
  if (/^(create table|rename table|drop table|alter table)/.test(sql)) return 'complete: DDL (build table, swap, drop)';
  if (/__mvs_meta/.test(sql)) return 'complete: result-type probe (LIMIT 0)';
  if (/__mvs_def/.test(sql)) return 'complete: read the definition (streamed to the client)';
  if (/^insert into .*__mvs_\d+_new/.test(sql)) return 'complete: INSERT build rows';
  return 'other';
}

export interface PhaseRow {
  phase: string;
  statements: number;
  ms: number;
  /** Statements of this phase that could not be timed (streamed SELECTs). */
  untimed: number;
}

export function phases(stmts: TimedStatement[], classify: (sql: string) => string): PhaseRow[] {
  const by = new Map<string, PhaseRow>();
  for (const s of stmts) {
    const p = classify(s.sql);
    const r = by.get(p) ?? { phase: p, statements: 0, ms: 0, untimed: 0 };
    r.statements++;
    if (s.ms === null) r.untimed++;
    else r.ms += s.ms;
    by.set(p, r);
  }
  return [...by.values()].sort((a, b) => b.ms - a.ms);
}

/** Pid of the MariaDB server when it runs on this host (else undefined). */
export async function mariadbPid(db: Knex): Promise<number | undefined> {
  try {
    const [rows] = (await db.raw('SELECT @@pid_file AS f')) as [Array<{ f: string }>];
    const pid = Number(readFileSync(rows[0]!.f, 'utf8').trim());
    return pid > 0 && /mariadbd|mysqld/.test(readFileSync(`/proc/${pid}/comm`, 'utf8')) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** CPU used between start() and stop() by mariadbd, this process, and everything else on the host. */
export class CpuMeter {
  private a: CpuSnapshot | undefined;
  constructor(private readonly pids: Record<string, number | undefined>) {}

  static async create(db: Knex): Promise<CpuMeter> {
    return new CpuMeter({ mariadbd: await mariadbPid(db), bench: process.pid });
  }

  start(): void {
    this.a = cpuSnapshot(this.pids);
  }

  stop(): CpuUse {
    return cpuUse(this.a!, cpuSnapshot(this.pids));
  }
}

export function fmtCpu(u: CpuUse | null | undefined): string {
  if (!u) return '-';
  const f = (x: number | null | undefined) => (x === null || x === undefined ? '?' : x.toFixed(2));
  return `mariadbd ${f(u.byProcess.mariadbd)}, bench process ${f(u.byProcess.bench)}, everything else on the host ${f(u.otherCores)} cores (over ${u.seconds} s)`;
}
