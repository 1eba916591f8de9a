import { fileURLToPath } from 'node:url';
import { spawn, type ChildProcess } from 'node:child_process';
// Shared helpers for the benchmarks run by bench/run.ts: throwaway databases and BullMQ prefixes,
// Redis / MySQL work counters, statistics and report formatting.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import type { Redis } from 'ioredis';
import { createDb, type Db } from '../src/db/connect.js';
import { migrateLatest } from '../src/db/migrate.js';
import { createLogger, type Logger } from '../src/log.js';
import { parseClusterNodes } from '../src/queue/clusterSeeds.js';
import { closeRedis, createRedis, createRedisClient, dataNodes, isCluster, type RedisClient } from '../src/queue/redis.js';

export { closeRedis, createRedis };

export interface BenchContext {
  /** Server URL from DATABASE_URL; benchmarks make databases of their own on that server. */
  serverUrl: string;
  redisUrl: string;
  /** Seeds of a Redis Cluster: when set, the benchmark runs there instead of on redisUrl. */
  redisClusterNodes?: string;
}

/** A connection to the benchmark's Redis: the cluster when the context names one. */
export function benchRedis(ctx: BenchContext): RedisClient {
  return ctx.redisClusterNodes ? createRedisClient({ cluster: parseClusterNodes(ctx.redisClusterNodes) }) : createRedis(ctx.redisUrl);
}

/** The environment that points an `mvsched` child process at the benchmark's Redis. */
export function redisEnv(ctx: BenchContext): Record<string, string> {
  return ctx.redisClusterNodes ? { REDIS_CLUSTER_NODES: ctx.redisClusterNodes } : { REDIS_URL: ctx.redisUrl };
}

/** One goal, judged against a baseline measured in the same process (never an absolute time). */
export interface GoalCheck {
  name: string;
  /** The measured figure the goal is about (a ratio, or milliseconds when stated). */
  value: number | null;
  goal: string;
  met: boolean | null;
  note?: string;
}

export interface BenchOutcome<R = unknown> {
  result: R;
  goals: GoalCheck[];
  /** Human-readable report (markdown-ish), printed by run.ts. */
  report: string;
}

// ---------------------------------------------------------------------------------------------
// Output

const t0 = Date.now();

/** A progress line on stderr, so the report on stdout stays clean. */
export function progress(msg: string): void {
  const s = ((Date.now() - t0) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench +${s}s] ${msg}\n`);
}

/** A positive whole number from the environment (a benchmark knob), else the default. */
export function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  const n = v ? Number(v) : dflt;
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer`);
  return n;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Logger for in-process mvsched components: warnings and errors only, on stderr. */
export function benchLogger(): Logger {
  return createLogger({ level: 'warn', pretty: false, destination: process.stderr, base: { bench: true } });
}

export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '-';
  if (Math.abs(ms) >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (Math.abs(ms) >= 100) return `${Math.round(ms)} ms`;
  return `${ms.toFixed(1)} ms`;
}

export function fmtInt(n: number | null | undefined): string {
  if (n === null || n === undefined) return '-';
  return Math.round(n).toLocaleString('en-US');
}

export function fmtRatio(r: number | null | undefined, digits = 2): string {
  if (r === null || r === undefined || !Number.isFinite(r)) return '-';
  return `${r.toFixed(digits)}x`;
}

/** A markdown table with padded columns. */
export function table(header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(cells[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Statistics

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank quantile of an ascending array. */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function summarize(values: number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1);
  return {
    n: s.length,
    min: s[0] ?? NaN,
    p50: quantile(s, 0.5),
    p90: quantile(s, 0.9),
    p99: quantile(s, 0.99),
    max: s[s.length - 1] ?? NaN,
    mean,
  };
}

export function median(values: number[]): number {
  return quantile([...values].sort((a, b) => a - b), 0.5);
}

// ---------------------------------------------------------------------------------------------
// Throwaway databases and prefixes

function suffix(): string {
  return randomBytes(3).toString('hex');
}

/** Server URL with the database part replaced. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export interface BenchDatabase {
  name: string;
  url: string;
  db: Db;
  /** Drop the database (and close `db`); tables listed are dropped first, in parallel. */
  drop(opts?: { tables?: string[] }): Promise<void>;
}

/** CREATE DATABASE bench_<tag>_<hex>, migrated with the project's migrations. */
export async function createBenchDatabase(ctx: BenchContext, tag: string, poolMax = 8): Promise<BenchDatabase> {
  const name = `bench_${tag.replace(/[^a-z0-9_]/gi, '_')}_${suffix()}`.toLowerCase();
  const admin = createDb(ctx.serverUrl, { poolMax: 1 });
  try {
    await admin.raw('CREATE DATABASE ??', [name]);
  } finally {
    await admin.destroy();
  }
  const url = withDatabase(ctx.serverUrl, name);
  const db = createDb(url, { poolMax });
  await migrateLatest(db);
  let dropped = false;
  return {
    name,
    url,
    db,
    async drop(opts = {}) {
      if (dropped) return;
      dropped = true;
      try {
        // DROP DATABASE removes tables one by one on one connection; thousands of tables go
        // several times faster dropped from a few connections first.
        const tables = opts.tables ?? [];
        if (tables.length) {
          progress(`dropping ${tables.length} tables of ${name} ...`);
          await parallel(tables, 4, (t) => db.raw('DROP TABLE IF EXISTS ??.??', [name, t]));
        }
        await db.raw('DROP DATABASE IF EXISTS ??', [name]);
      } finally {
        await db.destroy();
      }
    },
  };
}

/** A BullMQ prefix of its own (MVS_PREFIX syntax). */
export function freshPrefix(tag: string): string {
  return `bench_${tag}_${suffix()}`;
}

/**
 * Delete every key matching `pattern` (SCAN + UNLINK on every master of a cluster, one key per
 * UNLINK there since a cluster refuses multi-key commands across slots); returns how many.
 */
export async function deleteKeys(redis: RedisClient, pattern: string): Promise<number> {
  let n = 0;
  for (const node of dataNodes(redis)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 5000);
      cursor = next;
      if (!keys.length) continue;
      if (!isCluster(redis)) n += await node.unlink(...keys);
      else {
        const p = node.pipeline();
        for (const k of keys) p.unlink(k);
        n += ((await p.exec()) ?? []).reduce((a, [, v]) => a + Number(v ?? 0), 0);
      }
    } while (cursor !== '0');
  }
  return n;
}

/** Run `fn` over `items` with at most `limit` in flight. */
export async function parallel<T>(items: T[], limit: number, fn: (item: T, index: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// MV metadata written straight into the tables (no DDL, no first build)

export interface MvSpec {
  id: number;
  /** next_time, epoch ms (whole ms). */
  nextTime: number;
  /** refresh_start (START WITH), epoch ms; defaults to nextTime. */
  start?: number;
}

/**
 * Insert mvs_mviews + mvs_mview_refresh_info rows: `mv_<id>` in `schema`, 'SELECT 1 AS x',
 * COMPLETE, every 3600 s, ACTIVE; refresh-info's updated_at is the server's NOW(6).
 */
export async function insertMvMetadata(
  db: Db,
  schema: string,
  specs: MvSpec[],
  opts: { batch?: number; label?: string } = {},
): Promise<void> {
  const batch = opts.batch ?? 5000;
  const now = new Date();
  let lastReport = Date.now();
  for (let i = 0; i < specs.length; i += batch) {
    const chunk = specs.slice(i, i + batch);
    await db('mvs_mviews').insert(
      chunk.map((s) => ({
        mview_id: s.id,
        table_schema: schema,
        mview_name: `mv_${s.id}`,
        mview_definition: 'SELECT 1 AS x',
        refresh_method: 'COMPLETE',
        refresh_start: new Date(s.start ?? s.nextTime),
        refresh_interval: 3600,
        status: 'ACTIVE',
        created_at: now,
        mview_modify_time: now,
      })),
    );
    await db('mvs_mview_refresh_info').insert(
      chunk.map((s) => ({ mview_id: s.id, next_time: new Date(s.nextTime), updated_at: db.fn.now(6) })),
    );
    if (opts.label && Date.now() - lastReport > 3000) {
      lastReport = Date.now();
      progress(`${opts.label}: inserted ${fmtInt(i + chunk.length)} / ${fmtInt(specs.length)} MVs`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Work counters

export interface RedisCounters {
  total: number;
  byCommand: Map<string, number>;
}

/** Server-wide command counters (INFO stats + commandstats), read on a connection of its own. */
export async function redisCounters(statsConn: Redis): Promise<RedisCounters> {
  const text = (await statsConn.call('INFO', 'stats', 'commandstats')) as string;
  const total = Number(/total_commands_processed:(\d+)/.exec(text)?.[1] ?? NaN);
  const byCommand = new Map<string, number>();
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) byCommand.set(m[1]!, Number(m[2]));
  return { total, byCommand };
}

export interface RedisDelta {
  /**
   * Commands Redis executed between two readings, the second INFO excluded. Counts commands
   * run inside Lua scripts and MULTI blocks too (Redis counts those in total_commands_processed).
   */
  total: number;
  /** Busiest commands, calls. */
  top: Array<[string, number]>;
}

export function redisDelta(a: RedisCounters, b: RedisCounters): RedisDelta {
  const diff: Array<[string, number]> = [];
  for (const [cmd, calls] of b.byCommand) {
    const d = calls - (a.byCommand.get(cmd) ?? 0) - (cmd === 'info' ? 1 : 0);
    if (d > 0) diff.push([cmd, d]);
  }
  diff.sort((x, y) => y[1] - x[1]);
  // The first INFO is counted in the second reading; the second is not yet counted in itself.
  return { total: b.total - a.total - 1, top: diff.slice(0, 6) };
}

/**
 * Count the commands one ioredis connection sends (each a request the client waits on; a
 * MULTI block counts every queued command). Wraps sendCommand, which every command goes through.
 */
export function countSentCommands(conn: Redis): { readonly count: number } {
  const c = { count: 0 };
  const orig = conn.sendCommand.bind(conn);
  conn.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    c.count++;
    return orig(...args);
  }) as Redis['sendCommand'];
  return c;
}

/**
 * Rows read by the server, server-wide: MariaDB's Rows_read status ("requests to read a row,
 * temporary tables excluded"), or MySQL's Innodb_rows_read when Rows_read does not exist.
 */
export async function mysqlRowsRead(db: Db): Promise<number> {
  const [rows] = (await db.raw(
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rows_read', 'Innodb_rows_read')",
  )) as [Array<{ Variable_name: string; Value: string }>];
  const pick = rows.find((r) => r.Variable_name === 'Rows_read') ?? rows[0];
  return Number(pick?.Value ?? NaN);
}

/** Everything a pass did: wall time, Redis commands (server and client side), MySQL rows read. */
export interface WorkSample {
  ms: number;
  redisCommands: number;
  redisSent: number;
  redisTop: Array<[string, number]>;
  mysqlRowsRead: number;
}

export class WorkMeter {
  constructor(
    private readonly statsConn: Redis,
    private readonly db: Db,
    private readonly sent: { readonly count: number },
  ) {}

  async measure<T>(fn: () => Promise<T>): Promise<{ value: T; work: WorkSample }> {
    const rows0 = await mysqlRowsRead(this.db);
    const r0 = await redisCounters(this.statsConn);
    const s0 = this.sent.count;
    const t = performance.now();
    const value = await fn();
    const ms = performance.now() - t;
    const s1 = this.sent.count;
    const r1 = await redisCounters(this.statsConn);
    const rows1 = await mysqlRowsRead(this.db);
    const d = redisDelta(r0, r1);
    return { value, work: { ms, redisCommands: d.total, redisSent: s1 - s0, redisTop: d.top, mysqlRowsRead: rows1 - rows0 } };
  }
}

// ---------------------------------------------------------------------------------------------
// Machine description

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  platform: string;
  mariadb: string;
  redis: string;
  bullmq: string;
  loadAvgAtStart: number[];
}

export async function machineInfo(ctx: BenchContext): Promise<MachineInfo> {
  const db = createDb(ctx.serverUrl, { poolMax: 1 });
  const redis = createRedis(ctx.redisUrl);
  try {
    const [rows] = (await db.raw('SELECT VERSION() AS v')) as [Array<{ v: string }>];
    const info = await redis.info('server');
    let bullmq = 'unknown';
    try {
      bullmq = (JSON.parse(readFileSync(new URL('../node_modules/bullmq/package.json', import.meta.url), 'utf8')) as { version: string }).version;
    } catch {
      // reported as unknown
    }
    return {
      nproc: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      mariadb: rows[0]?.v ?? 'unknown',
      redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown',
      bullmq,
      loadAvgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    };
  } finally {
    await db.destroy();
    await closeRedis(redis);
  }
}

export function loadAvg(): number[] {
  return os.loadavg().map((x) => Math.round(x * 100) / 100);
}

// ---------------------------------------------------------------------------------------------
// CPU accounting (Linux /proc): who used the cores during a measurement. On a shared machine
// this separates our processes from everything else running at the same time.

const CLK_TCK = 100;

function readProcStatBusy(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

function readPidTicks(pid: number): number | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // After "(comm) ": state is f[0], so utime (field 14) is f[11] and stime f[12].
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

export interface CpuSnapshot {
  at: number;
  machine: { busy: number; total: number } | null;
  pids: Map<string, number | null>;
}

export function cpuSnapshot(pids: Record<string, number | undefined>): CpuSnapshot {
  const m = new Map<string, number | null>();
  for (const [name, pid] of Object.entries(pids)) m.set(name, pid === undefined ? null : readPidTicks(pid));
  return { at: performance.now(), machine: readProcStatBusy(), pids: m };
}

export interface CpuUse {
  seconds: number;
  /** Average cores busy over the interval, machine-wide. */
  machineCores: number | null;
  /** Average cores used by each named process. */
  byProcess: Record<string, number | null>;
  /** machineCores minus the named processes: everything else on the host. */
  otherCores: number | null;
}

export function cpuUse(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
  const seconds = (b.at - a.at) / 1000;
  const byProcess: Record<string, number | null> = {};
  let ours = 0;
  for (const [name, t0] of a.pids) {
    const t1 = b.pids.get(name);
    if (t0 === null || t1 === null || t1 === undefined) {
      byProcess[name] = null;
      continue;
    }
    const cores = (t1 - t0) / CLK_TCK / seconds;
    byProcess[name] = Math.round(cores * 100) / 100;
    ours += cores;
  }
  const machineCores = a.machine && b.machine ? (b.machine.busy - a.machine.busy) / CLK_TCK / seconds : null;
  return {
    seconds: Math.round(seconds * 10) / 10,
    machineCores: machineCores === null ? null : Math.round(machineCores * 100) / 100,
    byProcess,
    otherCores: machineCores === null ? null : Math.round((machineCores - ours) * 100) / 100,
  };
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * Pids of the database and Redis servers when they run on this host (else undefined); on a
 * Redis Cluster every master is listed, as `redis <port>`.
 */
export async function serverPids(db: Db | undefined, redis: RedisClient): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  if (db) try {
    const [rows] = (await db.raw('SELECT @@pid_file AS f')) as [Array<{ f: string }>];
    const pid = Number(readFileSync(rows[0]!.f, 'utf8').trim());
    if (pid > 0 && /mariadbd|mysqld/.test(commOf(pid))) out.mariadbd = pid;
  } catch {
    // not local, or not readable
  }
  for (const node of dataNodes(redis)) {
    try {
      const pid = Number(/process_id:(\d+)/.exec(await node.info('server'))?.[1]);
      if (pid > 0 && /redis/.test(commOf(pid))) out[isCluster(redis) ? `redis ${node.options.port}` : 'redis'] = pid;
    } catch {
      // not local
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// mvsched child processes

export interface MvschedProc {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
  /** The last 40 output lines. */
  lines: string[];
  warnings: number;
  errors: number;
}

const mvschedBin = fileURLToPath(new URL('../bin/mvsched.js', import.meta.url));

/** Start `mvsched <args>` as a child process, counting its warning and error log lines. */
/**
 * BENCH_BEFORE_DIR: a checkout of an earlier mvsched (with node_modules), whose processes a
 * benchmark also runs, so before and after are measured in the same run on the same host.
 */
export function beforeCheckout(): { dir: string; bin: string } | undefined {
  const dir = process.env.BENCH_BEFORE_DIR;
  if (!dir) return undefined;
  const bin = `${dir.replace(/\/$/, '')}/bin/mvsched.js`;
  if (!existsSync(bin) || !existsSync(`${dir}/node_modules`)) throw new Error(`BENCH_BEFORE_DIR=${dir}: expected a checkout with bin/mvsched.js and node_modules`);
  return { dir, bin };
}

/** Start `mvsched <args>` (this checkout's, or `bin` of another one). */
export function spawnMvsched(name: string, args: string[], env: Record<string, string>, bin = mvschedBin): MvschedProc {
  // BENCH_CHILD_NODE_ARGS: flags for node in every mvsched process (e.g. "--cpu-prof --cpu-prof-dir=/tmp/p").
  const nodeArgs = (process.env.BENCH_CHILD_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const p: MvschedProc = { name, child, exited: new Promise((r) => child.once('exit', () => r())), lines: [], warnings: 0, errors: 0 };
  let buf = '';
  const onData = (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const line of parts) {
      if (!line.trim()) continue;
      if (/"level":40/.test(line)) p.warnings++;
      else if (/"level":(50|60)/.test(line)) p.errors++;
      p.lines.push(line);
      if (p.lines.length > 40) p.lines.shift();
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  return p;
}

/** SIGTERM, then SIGKILL after 20 s. */
export async function stopMvsched(p: MvschedProc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
  await p.exited;
  clearTimeout(timer);
}
