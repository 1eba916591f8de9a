import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { createConnection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { parseDatabaseUrl } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { MembershipRegistry } from '../../src/membership/registry.js';
import { REQUESTS_QUEUE } from '../../src/queue/names.js';
import { buildApp } from '../../src/server/app.js';
import { Cluster } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// The safety findings that need real processes (issue "Safety first", items 3-6): writes fail
// only within the drift-check window after a breaking ALTER; a truncated table's MVs get a SYSTEM
// refresh through the requests queue; names with any legal characters work through CLI, HTTP and
// jobs; `--wait` answers when nothing can run the job; a worker restarted under its id picks up
// its dead life's jobs at once.

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));

let t: TestEnv;
let rt: Runtime;
let cluster: Cluster;
let app: FastifyInstance;
let requests: Queue;

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...t.env, LOG_LEVEL: 'warn', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 }));
  });
}

beforeAll(async () => {
  t = await createTestEnv('safety_procs', { MVS_NODE_TTL_S: '3', MVS_RECONCILE_S: '1', MVS_DRIFT_CHECK_S: '1' });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE src (id INT PRIMARY KEY, g INT, x INT)');
  await t.db.raw('INSERT INTO src VALUES (1, 1, 1), (2, 2, 2)');
  rt = createRuntime(t.config, t.logger);
  app = await buildApp({ db: rt.db, redis: rt.redis, logger: t.logger, apiToken: undefined, api: { prefix: t.prefix, defaultSchema: rt.defaultSchema, ddl: createDdlExecutor(rt, 'test') } });
  requests = new Queue(REQUESTS_QUEUE, { connection: rt.redis, prefix: t.prefix });
  cluster = new Cluster(t);
});

afterAll(async () => {
  await cluster?.closeAll();
  await app?.close();
  await requests?.close();
  await rt?.close();
  await t?.close();
});

const mvId = async (name: string) => Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);

describe('--wait when nothing can run the job', () => {
  it('with no live worker: exit 1 within seconds, saying so', async () => {
    await createDdlExecutor(rt).execute('CREATE MATERIALIZED VIEW lonely AS SELECT g, SUM(x) AS s FROM src GROUP BY g');
    const r = await cli(['refresh', 'lonely', '--wait']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no worker is running, so nothing will take job \d+; start one \(mvsched worker\)/);
    expect(r.ms).toBeLessThan(30_000);
  });

  it('when the job vanishes from Redis: exit 1 naming it', async () => {
    // A node that looks alive but takes nothing, so only the vanished job can end the wait.
    await new MembershipRegistry(rt.redis, t.prefix).heartbeat('ghost', 60_000);
    await requests.drain(true);
    try {
      const run = cli(['refresh', 'lonely', '--wait']);
      const job = await waitFor(async () => (await requests.getJobs(['waiting']))[0], { timeoutMs: 20_000, what: 'the request job' });
      await job.remove();
      const r = await run;
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`job ${job.id} is no longer in the queue`));
    } finally {
      await new MembershipRegistry(rt.redis, t.prefix).leave('ghost');
    }
  });
});

describe('names that need quoting, end to end', () => {
  it('MVs named with a dot, a space and a backquote refresh through the CLI, HTTP and a request job; an emoji is refused cleanly', async () => {
    cluster.worker('n1');
    const names = ['a.b', 'x y', 'tick`s'];
    const q = (n: string) => `\`${n.replace(/`/g, '``')}\``;
    for (const n of names) {
      const r = await cli(['sql', `CREATE MATERIALIZED VIEW ${q(n)} AS SELECT g, COUNT(*) AS c FROM src GROUP BY g`]);
      expect(r.code, r.stderr).toBe(0);
    }
    for (const n of names) {
      const viaCli = await cli(['refresh', `${t.database}.${q(n)}`, '--wait']);
      expect(viaCli.code, viaCli.stderr).toBe(0);
      expect(viaCli.stdout).toMatch(/SUCCESS/);
      const viaHttp = await app.inject({ method: 'POST', url: `/v1/mviews/${encodeURIComponent(t.database)}/${encodeURIComponent(n)}/refresh`, payload: {} });
      expect(viaHttp.statusCode, viaHttp.body).toBe(202);
      const job = await requests.add('refresh', { mview: `${t.database}.${q(n)}` });
      await waitFor(async () => (await requests.getJobState(job.id!)) === 'completed', { timeoutMs: 30_000, what: `the job for ${n}` });
      const id = await mvId(n);
      await waitFor(async () => (await t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_status: 'SUCCESS' })).length >= 2, {
        timeoutMs: 30_000,
        what: `refreshes of ${n}`,
      });
    }
    const emoji = await cli(['sql', 'CREATE MATERIALIZED VIEW `sales_😀` AS SELECT 1 AS x']);
    expect(emoji.code).toBe(2);
    expect(emoji.stderr.trim().split('\n')).toHaveLength(1);
    expect(emoji.stderr).toMatch(/sales_😀.*Basic Multilingual Plane/);
    const http = await app.inject({ method: 'POST', url: '/v1/sql', payload: { sql: 'CREATE MATERIALIZED VIEW `sales_😀` AS SELECT 1 AS x' } });
    expect(http.statusCode).toBe(400);
    expect(http.json()).toMatchObject({ error: 'bad_request', message: expect.stringMatching(/Basic Multilingual Plane/) });
    await cluster.closeAll();
  });
});

describe('a worker restarted under its id', () => {
  it("takes back its previous life's running job at once, not after BullMQ's stalled check", async () => {
    await createDdlExecutor(rt).execute('CREATE MATERIALIZED VIEW slow NEXT 1 AS SELECT g, SUM(x) AS s, SLEEP(1.5) AS z FROM src GROUP BY g');
    const id = await mvId('slow');
    // A TTL longer than a restart: the node never leaves the ring, so only this release helps.
    const ttl = { MVS_NODE_TTL_S: '20' };
    const first = cluster.worker('rs1', ttl);
    const planner = cluster.planner(ttl);
    // A run takes 3 s (two groups, SLEEP(1.5) each): one that started under a second ago is
    // still going when the kill lands, not one about to commit.
    await waitFor(
      async () => {
        const run = await t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_status: 'RUNNING', node_id: 'rs1' }).first();
        return run !== undefined && (run.start_time as Date).getTime() > Date.now() - 1_000;
      },
      { timeoutMs: 30_000, what: 'a scheduled run in progress that started under a second ago' },
    );
    await cluster.stop(first, 'SIGKILL');
    const killedAt = Date.now();
    const again = cluster.worker('rs1', ttl);
    // Stopped whatever happens: a planner left leading would hold the next test's planner back.
    try {
      const ok = await waitFor(
        async () => t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_status: 'SUCCESS' }).where('start_time', '>', new Date(killedAt)).first(),
        { timeoutMs: 60_000, what: 'a successful run after the restart' },
      );
      const resumedMs = ok.end_time.getTime() - killedAt;
      console.log(`[same-id restart] the MV succeeded again ${resumedMs} ms after the SIGKILL`);
      // The restart itself takes a few seconds here; BullMQ's stalled check alone would take up
      // to two 30 s intervals more.
      expect(resumedMs).toBeLessThan(20_000);
      expect(again.output(), again.output()).toMatch(/released the jobs a previous life of this node left active/);
      // The dead life's run is in the history as abandoned.
      expect(await t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_status: 'FAILED' }).where('failed_reason', 'like', 'abandoned%').first()).toBeDefined();
      await createDdlExecutor(rt).execute('DROP MATERIALIZED VIEW slow');
    } finally {
      await cluster.stop(again);
      await cluster.stop(planner);
    }
  });
});

describe('the planner keeps logs honest', () => {
  it('after DROP COLUMN of a tracked column, writes fail only within the drift-check window, then never again', async () => {
    const planner = cluster.planner();
    await waitFor(() => planner.output().includes('became the leading planner'), { timeoutMs: 30_000, what: 'a leading planner' });
    await t.db.raw('CREATE TABLE dw (id INT AUTO_INCREMENT PRIMARY KEY, g INT, extra INT)');
    await createDdlExecutor(rt).execute('CREATE MATERIALIZED VIEW LOG ON dw (g, extra)');
    const c = parseDatabaseUrl(t.databaseUrl);
    const conn = await createConnection({ host: c.host, port: c.port, user: c.user, password: c.password, database: c.database });
    const failures: number[] = [];
    let ok = 0;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        try {
          await conn.query('INSERT INTO dw (g) VALUES (1)');
          ok++;
        } catch {
          failures.push(Date.now());
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await waitFor(() => ok > 10, { what: 'writes before the ALTER' });
    const alteredAt = Date.now();
    await t.db.raw('ALTER TABLE dw DROP COLUMN extra');
    await waitFor(async () => (await t.db('mvs_mlogs').where({ base_table_name: 'dw' }).first('state')).state === 'BROKEN', {
      timeoutMs: 20_000,
      what: 'the log marked BROKEN',
    });
    const okAfter = ok;
    await waitFor(() => ok > okAfter + 20, { what: 'writes after the drift check' });
    stop = true;
    await writer;
    await conn.end();
    const window = failures.length ? Math.max(...failures) - alteredAt : 0;
    console.log(`[drift window] ${failures.length} failed writes within ${window} ms after DROP COLUMN (MVS_DRIFT_CHECK_S=1)`);
    expect(window).toBeLessThan(5_000);
    const broken = await t.db('mvs_mlogs').where({ base_table_name: 'dw' }).first('broken_reason');
    expect(broken.broken_reason).toMatch(/column extra of .*dw, which its log tracks, was dropped or renamed/);
  });

  it('a truncated table: the planner asks for a SYSTEM complete refresh of the FAST MV over it', async () => {
    cluster.worker('n2');
    await t.db.raw('CREATE TABLE tt (id INT PRIMARY KEY, g INT, x INT)');
    await t.db.raw('INSERT INTO tt VALUES (1, 1, 1), (2, 2, 2)');
    const ddl = createDdlExecutor(rt);
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON tt (g, x)');
    await ddl.execute('CREATE MATERIALIZED VIEW tt_sum REFRESH FAST AS SELECT g, SUM(x) AS s, COUNT(*) AS n FROM tt GROUP BY g');
    await ddl.execute('REFRESH MATERIALIZED VIEW tt_sum'); // a FAST run records the table's identity
    await t.db.raw('TRUNCATE TABLE tt');
    await t.db.raw('INSERT INTO tt VALUES (5, 9, 9)');
    const id = await mvId('tt_sum');
    const run = await waitFor(
      async () => t.db('mvs_mview_refresh_hist').where({ mview_id: id, refresh_trigger: 'SYSTEM', refresh_status: 'SUCCESS' }).first(),
      { timeoutMs: 30_000, what: 'a SYSTEM refresh' },
    );
    expect(run.refresh_method).toBe('COMPLETE');
    const [mv] = (await t.db.raw('SELECT * FROM tt_sum')) as [unknown[]];
    expect(JSON.parse(JSON.stringify(mv))).toEqual([{ g: 9, s: '9', n: 1 }]);
  });
});
