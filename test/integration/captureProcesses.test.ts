import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { readCaptureStatus } from '../../src/capture/status.js';
import { createDb, type Db } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { ServerMetrics } from '../../src/metrics/serverMetrics.js';
import { createRedis, closeRedis } from '../../src/queue/redis.js';
import { createTestLog, logByKey, logCount } from '../support/binlogLogs.js';
import { Cluster, type Proc } from '../support/cluster.js';
import { prng, testSeed } from '../support/prng.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// Real `mvsched capture` processes: SIGKILLed again and again during a write load, and a
// standby taking over. The BINLOG log must end up equal to the trigger log of a twin table fed
// the same statements in the same transactions: no gap, no duplicate. And what `status` and
// /metrics say of capture, running and stopped.

const TTL_S = 2;
let t: TestEnv;
let cluster: Cluster;
let redis: Redis;

beforeAll(async () => {
  t = await createTestEnv('capture_procs', { MVS_NODE_TTL_S: String(TTL_S) });
  await migrateLatest(t.db);
  cluster = new Cluster(t);
  redis = createRedis(t.redisUrl);
});
afterAll(async () => {
  await cluster?.closeAll();
  await closeRedis(redis);
  await t?.close();
});

async function twins(name: string): Promise<void> {
  for (const tbl of [name, `${name}_tw`]) {
    await t.db.raw(`CREATE TABLE ${tbl} (id INT PRIMARY KEY, a INT, b VARCHAR(20) COLLATE utf8mb4_general_ci, n INT)`);
  }
  await createTestLog(t.db, { metaSchema: t.database, schema: t.database, table: name, columns: ['a', 'b'], mode: 'BINLOG' });
  await createTestLog(t.db, { metaSchema: t.database, schema: t.database, table: `${name}_tw`, columns: ['a', 'b'], mode: 'TRIGGERS' });
}

/** Writers running random transactions on the table and its twin alike, until `stop()`. */
function writeLoad(db: Db, name: string, writers: number, seed: number): { stop(): Promise<number> } {
  let stopping = false;
  let txns = 0;
  const one = async (w: number) => {
    const rnd = prng(seed + w);
    const pick = (n: number) => Math.floor(rnd() * n);
    let next = w * 1_000_000;
    while (!stopping) {
      const stmts: string[] = [];
      for (let k = 1 + pick(3); k > 0; k--) {
        const id = w * 1_000_000 + pick(Math.max(1, next - w * 1_000_000));
        switch (pick(6)) {
          case 0:
          case 1:
            stmts.push(`INSERT INTO $ VALUES (${next++}, ${pick(100)}, 'v${pick(5)}', 0), (${next++}, NULL, NULL, 0)`);
            break;
          case 2:
            stmts.push(`UPDATE $ SET a = ${pick(100)}, b = ${rnd() < 0.5 ? "'V1'" : "'v1'"} WHERE id = ${id}`);
            break;
          case 3:
            stmts.push(`UPDATE $ SET n = n + 1 WHERE id = ${id}`); // untracked: nothing logged
            break;
          case 4:
            stmts.push(`DELETE FROM $ WHERE id = ${id}`);
            break;
          default:
            stmts.push(`UPDATE $ SET a = a + 1 WHERE id BETWEEN ${id} AND ${id + 5}`);
        }
      }
      try {
        await db.transaction(async (trx) => {
          for (const s of stmts) {
            await trx.raw(s.replaceAll('$', name));
            await trx.raw(s.replaceAll('$', `${name}_tw`));
          }
        });
        txns++;
      } catch (err) {
        // Writers deadlock among themselves now and then; a rolled-back transaction is in neither log.
        if (![1213, 1205].includes((err as { errno?: number }).errno ?? 0)) throw err;
      }
    }
  };
  const all = Array.from({ length: writers }, (_, w) => one(w + 1));
  return {
    async stop() {
      stopping = true;
      await Promise.all(all);
      return txns;
    },
  };
}

async function expectLogsEqual(name: string): Promise<void> {
  const want = await logByKey(t.db, t.database, `${name}_tw`, ['id']);
  const total = [...want.values()].reduce((n, l) => n + l.length, 0);
  await waitFor(async () => (await logCount(t.db, t.database, name)) >= total, { what: `capture of ${name} to catch up (${total} rows)`, timeoutMs: 60_000, intervalMs: 200 });
  const got = await logByKey(t.db, t.database, name, ['id']);
  expect(await logCount(t.db, t.database, name)).toBe(total);
  expect(got).toEqual(want);
}

function capture(): Proc {
  return cluster.spawn('capture', ['capture']);
}

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));
/** `mvsched status [args]`: its stdout (exit code 0 required). */
function status(args: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'status', ...args], { env: { ...process.env, ...t.env, LOG_LEVEL: 'warn' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`mvsched status exited ${code}: ${err}`))));
  });
}
/** The value of an unlabelled series in a Prometheus text exposition, or undefined when absent. */
function series(body: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(body);
  return m ? Number(m[1]) : undefined;
}

describe('mvsched capture processes', () => {
  it('SIGKILLed repeatedly during a write load: the log equals the trigger log, no gaps, no duplicates', async () => {
    await twins('k');
    const seed = testSeed();
    const db = createDb(t.databaseUrl, { poolMax: 8 });
    const load = writeLoad(db, 'k', 4, seed);
    try {
      const rnd = prng(seed);
      for (let round = 0; round < 4; round++) {
        const p = capture();
        // Let it get going (past its start-up) for a while, then kill it mid-stream.
        await waitFor(async () => (await readCaptureStatus(redis, t.prefix))?.holder.includes(`-${p.child.pid}-`), {
          what: 'capture to take the lease',
          timeoutMs: 30_000,
        });
        await new Promise((r) => setTimeout(r, 300 + Math.floor(rnd() * 1200)));
        await cluster.stop(p, 'SIGKILL');
        // The dead holder's lease must run out before the next one takes over.
        await redis.del(`${t.prefix}:mvs:capture:leader`, `${t.prefix}:mvs:capture:status`);
      }
    } finally {
      const txns = await load.stop();
      await db.destroy();
      expect(txns, `seed ${seed}`).toBeGreaterThan(50);
    }
    const last = capture();
    await expectLogsEqual('k');
    await cluster.stop(last);
  });

  it('a standby takes over within the lease TTL when the active capture dies', async () => {
    await twins('s');
    const a = capture();
    const b = capture();
    const first = await waitFor(async () => (await readCaptureStatus(redis, t.prefix))?.holder, { what: 'one capture active', timeoutMs: 30_000 });
    const [active, standby] = first.includes(`-${a.child.pid}-`) ? [a, b] : [b, a];
    await t.db.raw("INSERT INTO s VALUES (1, 1, 'x', 0)");
    await t.db.raw("INSERT INTO s_tw VALUES (1, 1, 'x', 0)");
    await cluster.stop(active, 'SIGKILL');
    await t.db.raw('UPDATE s SET a = 2 WHERE id = 1');
    await t.db.raw('UPDATE s_tw SET a = 2 WHERE id = 1');
    // The dead one's status expires with it; the standby's appears once it holds the lease.
    await waitFor(async () => (await readCaptureStatus(redis, t.prefix))?.holder.includes(`-${standby.child.pid}-`), {
      what: 'the standby to take over',
      timeoutMs: TTL_S * 1000 * 2 + 3000,
      intervalMs: 100,
    });
    await expectLogsEqual('s');
    await cluster.stop(standby);
  });

  it('status and /metrics show the active capture and its lag, and that none runs once it stops', async () => {
    await t.db.raw('CREATE TABLE st (id INT PRIMARY KEY, a INT)');
    await createTestLog(t.db, { metaSchema: t.database, schema: t.database, table: 'st', columns: ['a'], mode: 'BINLOG' });
    const metrics = new ServerMetrics({ db: t.db, redis, prefix: t.prefix });
    try {
      const p = capture();
      await t.db.raw('INSERT INTO st VALUES (1, 1)');
      await waitFor(async () => (await logCount(t.db, t.database, 'st')) === 1, { what: 'st captured', timeoutMs: 30_000 });
      await waitFor(async () => (await readCaptureStatus(redis, t.prefix))?.lagBytes === 0, { what: 'capture caught up', timeoutMs: 30_000 });

      const running = JSON.parse(await status(['--json'])) as { capture: Record<string, unknown>; mlogs: Array<Record<string, unknown>> };
      expect(running.capture).toMatchObject({ active: true, lagSeconds: expect.any(Number), lagBytes: expect.any(Number) });
      expect(running.capture.gtid).toMatch(/^\d+-\d+-\d+/);
      expect(running.capture.holder).toContain(`-${p.child.pid}-`);
      expect(running.capture.lagBytes as number).toBeLessThan(1_000_000);
      expect(running.mlogs.find((l) => l.table === `${t.database}.st`)).toMatchObject({ capture: 'BINLOG', state: 'OK' });
      const text = await status();
      expect(text).toMatch(/^MV LOG\s+ON\s+CAPTURE\s+STATE\b/m);
      expect(text).toMatch(/^capture: active \(\S+\), behind by [\d.]+ s \/ \d+ bytes, at GTID \d+-\d+-\d+/m);
      const up = (await metrics.scrape()).body;
      expect(series(up, 'mvs_capture_active')).toBe(1);
      expect(series(up, 'mvs_capture_lag_seconds')).toBeGreaterThanOrEqual(0);
      expect(series(up, 'mvs_capture_lag_bytes')).toBeGreaterThanOrEqual(0);
      // The alert rules on capture read series this scrape has.
      const read = readFileSync(new URL('../../deploy/prometheus/alerts.yml', import.meta.url), 'utf8').match(/\bmvs_capture_[a-z_]+\b/g) ?? [];
      expect(read.length).toBeGreaterThan(0);
      for (const name of read) expect(series(up, name), name).toBeDefined();

      expect((await cluster.stop(p)).code).toBe(0);
      const stopped = JSON.parse(await status(['--json'])) as { capture: Record<string, unknown> };
      expect(stopped.capture).toMatchObject({ active: false, lagSeconds: null, lagBytes: null, holder: null });
      expect(stopped.capture.gtid).toMatch(/^\d+-\d+-\d+/); // where the stopped capture's rows end
      expect(await status()).toMatch(/^capture: NOT RUNNING: \d+ BINLOG logs? not being filled \(start `mvsched capture`\)/m);
      const down = (await metrics.scrape()).body;
      expect(series(down, 'mvs_capture_active')).toBe(0);
      expect(series(down, 'mvs_capture_lag_seconds')).toBeUndefined();
      expect(series(down, 'mvs_capture_lag_bytes')).toBeUndefined();
    } finally {
      await metrics.close();
    }
  });
});
