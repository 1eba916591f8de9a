// What a refresher can cost a user's writers (DESIGN.md §4 invariant 8): a writer inserting one
// row per statement without pause into a table with an MV log, while a worker process refreshes
// a FAST MV over it every second. Three phases, each measured as the writer's longest statement
// (its longest stall) and its rows/s:
//   baseline       the MV suspended: no cut at all;
//   refreshing     FAST refreshes every second (each takes the log's gate for an instant);
//   frozen         EPISODES times: a writer transaction in flight makes the worker's cut wait,
//                  the worker is SIGSTOPped while it waits, the transaction commits (the server
//                  grants the frozen worker the gate), and the worker stays frozen FREEZE_MS;
//   long writer    EPISODES times: a writer transaction stays open LONG_MS while cuts want the
//                  gate (each gives up after MVS_CUT_WAIT_MS).
// Goal: every stall of the last two phases under MVS_CUT_WAIT_MS + 1.5 s, however long the freeze.
//
// From bench/run.ts: `npm run bench -- writer-stall`.
// Env: BENCH_STALL_EPISODES=5 BENCH_STALL_FREEZE_MS=6000 BENCH_STALL_LONG_MS=6000 BENCH_STALL_CUT_WAIT_MS=2000
import type { Connection } from 'mysql2/promise';
import { createDdlExecutor, createRuntime } from '../src/app/runtime.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { writerConnection } from './mlogSupport.js';
import {
  createBenchDatabase,
  envInt,
  fmtInt,
  fmtMs,
  freshPrefix,
  progress,
  sleep,
  spawnMvsched,
  stopMvsched,
  table,
  type BenchContext,
  type BenchOutcome,
  type GoalCheck,
} from './support.js';

interface Phase {
  name: string;
  longestMs: number;
  rowsPerS: number;
}

/** The writer: one INSERT after another; phases read its longest statement and its count. */
class Writer {
  private stop = false;
  private longest = 0;
  private count = 0;
  private since = Date.now();
  readonly failures: string[] = [];
  private loop: Promise<void> | undefined;

  constructor(private readonly conn: Connection) {}

  start(): void {
    this.loop = (async () => {
      while (!this.stop) {
        const t0 = Date.now();
        try {
          await this.conn.query('INSERT INTO w (g, x) VALUES (?, ?)', [this.count % 5, this.count % 7]);
          this.count++;
        } catch (err) {
          this.failures.push((err as Error).message);
        }
        this.longest = Math.max(this.longest, Date.now() - t0);
      }
    })();
  }

  phase(name: string): Phase {
    const s = (Date.now() - this.since) / 1000;
    const p = { name, longestMs: this.longest, rowsPerS: this.count / s };
    this.longest = 0;
    this.count = 0;
    this.since = Date.now();
    return p;
  }

  async close(): Promise<void> {
    this.stop = true;
    await this.loop;
  }
}

async function until(what: string, fn: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    // InnoDB refreshes INNODB_TRX only when nobody read it for 100 ms.
    await sleep(150);
  }
}

export async function runWriterStall(ctx: BenchContext): Promise<BenchOutcome> {
  const episodes = envInt('BENCH_STALL_EPISODES', 5);
  const freezeMs = envInt('BENCH_STALL_FREEZE_MS', 6_000);
  const longMs = envInt('BENCH_STALL_LONG_MS', 6_000);
  const cutWaitMs = envInt('BENCH_STALL_CUT_WAIT_MS', 2_000);
  const bdb = await createBenchDatabase(ctx, 'stall');
  const prefix = freshPrefix('stall');
  const env = {
    DATABASE_URL: bdb.url,
    REDIS_URL: ctx.redisUrl,
    MVS_PREFIX: prefix,
    MVS_NODE_TTL_S: '5',
    MVS_RECONCILE_S: '1',
    MVS_CUT_WAIT_MS: String(cutWaitMs),
    LOG_LEVEL: 'warn',
  };
  const rt = createRuntime(loadConfig(env, { database: true, redis: true }), createLogger({ level: 'warn' }));
  const procs = [spawnMvsched('worker', ['worker', '--node-id', 'stall-1'], env), spawnMvsched('planner', ['planner'], env)];
  const writerConn = await writerConnection(bdb.url);
  const holder = await writerConnection(bdb.url);
  const writer = new Writer(writerConn);
  const phases: Phase[] = [];
  try {
    const db = bdb.db;
    await db.raw('CREATE TABLE w (id INT AUTO_INCREMENT PRIMARY KEY, g INT NOT NULL, x INT NOT NULL)');
    const ddl = createDdlExecutor(rt);
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON w (g, x) PURGE NEXT 30');
    await ddl.execute('CREATE MATERIALIZED VIEW w_fast REFRESH FAST NEXT 1 AS SELECT g, COUNT(*) AS n, SUM(x) AS s FROM w GROUP BY g');
    const successes = async () => Number((await db('mvs_mview_refresh_hist').where({ refresh_status: 'SUCCESS', refresh_trigger: 'SCHEDULED' }).count({ n: '*' }))[0]!.n);
    await until('scheduled FAST refreshes', async () => (await successes()) >= 2, 60_000);

    await ddl.execute('ALTER MATERIALIZED VIEW w_fast SUSPEND');
    writer.start();
    progress('writer-stall: baseline (MV suspended), 5 s');
    await sleep(5_000);
    phases.push(writer.phase('baseline: no refreshes'));
    await ddl.execute('ALTER MATERIALIZED VIEW w_fast RESUME');
    progress('writer-stall: FAST refreshes every second, 10 s');
    await sleep(10_000);
    phases.push(writer.phase('FAST refresh every 1 s'));

    const worker = procs[0]!;
    const gateWaiting = async () => {
      const [r] = (await db.raw(
        "SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '%mvs_mlog_gates%FOR UPDATE%'",
      )) as [Array<{ n: number }>];
      return Number(r[0]!.n) > 0;
    };
    for (let i = 0; i < episodes; i++) {
      progress(`writer-stall: frozen refresher, episode ${i + 1}/${episodes} (${freezeMs} ms)`);
      await holder.query('BEGIN');
      await holder.query('INSERT INTO w (g, x) VALUES (9, 9)');
      await until("the worker's cut waiting for the gate", gateWaiting);
      worker.child.kill('SIGSTOP');
      writer.phase('-');
      await holder.query('COMMIT');
      await sleep(freezeMs);
      phases.push(writer.phase(`frozen refresher #${i + 1} (SIGSTOP ${freezeMs} ms while granted the gate)`));
      worker.child.kill('SIGCONT');
      const thawed = new Date();
      await until('a refresh after the thaw', async () =>
        Boolean(await db('mvs_mview_refresh_hist').where({ refresh_status: 'SUCCESS' }).where('start_time', '>', thawed).first()),
      60_000);
    }
    for (let i = 0; i < episodes; i++) {
      progress(`writer-stall: writer transaction open ${longMs} ms, episode ${i + 1}/${episodes}`);
      writer.phase('-');
      await holder.query('BEGIN');
      await holder.query('INSERT INTO w (g, x) VALUES (8, 8)');
      await sleep(longMs);
      await holder.query('COMMIT');
      phases.push(writer.phase(`writer transaction open #${i + 1} (${longMs} ms, cuts wanting the gate)`));
      await sleep(12_000); // the FAST MV's retry backoff, so the next episode meets a cut again
    }
  } finally {
    await writer.close();
    for (const p of procs) p.child.kill('SIGCONT');
    await Promise.all(procs.map((p) => stopMvsched(p)));
    await writerConn.end();
    await holder.end().catch(() => {});
    await rt.close();
    await bdb.drop();
  }
  const bound = cutWaitMs + 1_500;
  const worst = (re: RegExp) => Math.max(...phases.filter((p) => re.test(p.name)).map((p) => p.longestMs));
  const goals: GoalCheck[] = [
    { name: 'writer-stall: longest stall, frozen refresher (ms)', value: worst(/^frozen/), goal: `< ${bound} ms`, met: worst(/^frozen/) < bound },
    { name: 'writer-stall: longest stall, writer transaction open (ms)', value: worst(/^writer transaction/), goal: `< ${bound} ms`, met: worst(/^writer transaction/) < bound },
    { name: 'writer-stall: failed writes', value: writer.failures.length, goal: '0', met: writer.failures.length === 0 },
  ];
  const report = [
    `MVS_CUT_WAIT_MS=${cutWaitMs}; bound ${bound} ms; a writer inserting one row per statement without pause.`,
    table(
      ['phase', 'longest writer stall', 'rows/s'],
      phases.map((p) => [p.name, fmtMs(p.longestMs), fmtInt(Math.round(p.rowsPerS))]),
    ),
    `failed writes: ${writer.failures.length}${writer.failures.length ? ` (${writer.failures[0]})` : ''}`,
  ].join('\n');
  return { result: { phases, failures: writer.failures.length }, goals, report };
}
