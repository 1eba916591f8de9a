import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateLatest } from '../../src/db/migrate.js';
import { freePort } from '../../scripts/localServers.mjs';
import { Cluster, inspector, logLines, type Proc } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

// The first run a user sees: `mvsched dev` (what `npm start` runs) on an empty database creates
// the demo, prints the URLs and a live status line, keeps the MVs fresh; --no-demo turns it off.

let t: TestEnv;
let cluster: Cluster;
let schema: string;

beforeAll(async () => {
  t = await createTestEnv('demo', { MVS_NODE_TTL_S: '3' });
  await migrateLatest(t.db);
  schema = `${t.database}_demo`;
  cluster = new Cluster(t);
});

afterAll(async () => {
  // SIGTERM first: `dev` stops its children itself; SIGKILL would orphan them.
  await Promise.all([...cluster.procs].map((p) => cluster.stop(p, 'SIGTERM')));
  await t?.db.raw('DROP DATABASE IF EXISTS ??', [schema]).catch(() => {});
  await t?.close();
});

async function stopDev(p: Proc): Promise<void> {
  const { code } = await cluster.stop(p, 'SIGINT');
  expect(code, p.output().slice(-2000)).toBe(0);
}

describe('mvsched dev with the demo', () => {
  it('creates the demo on an empty database, shows URLs and status, keeps the MVs fresh', async () => {
    const port = await freePort();
    // LOG_LEVEL unset (empty counts as unset), as on a laptop: info logs go to the file only.
    const dev = cluster.spawn('dev', ['dev', '--workers', '1'], { MVS_HTTP_PORT: String(port), MVS_DEMO_SCHEMA: schema, LOG_LEVEL: '' });
    await waitFor(() => dev.output().includes(`demo created in database ${schema}`), { timeoutMs: 60_000, what: 'the demo to be created' });
    const logFile = /logs of every level in (\S+);/.exec(dev.output())?.[1];
    expect(logFile, dev.output()).toMatch(/\/\.mvsched\/logs\/dev-[\d-]+\.log$/);
    expect(dev.output()).toContain(`dashboard http://127.0.0.1:${port}/ui`);
    expect(dev.output()).toContain(`Bull Board http://127.0.0.1:${port}/admin/queues`);
    expect(dev.output()).toContain(`metrics http://127.0.0.1:${port}/metrics`);
    // A FAST refresh of the aggregate MV over the writer's new orders, on its schedule. The
    // worker may still be starting (tsx compiling the sources: 30 s and more on a loaded host).
    await waitFor(
      async () => {
        const row = await t.db('mvs_mview_refresh_hist as h')
          .join('mvs_mviews as m', 'm.mview_id', 'h.mview_id')
          .where({ 'm.table_schema': schema, 'm.mview_name': 'sales_by_region', 'h.refresh_method': 'FAST', 'h.refresh_status': 'SUCCESS', 'h.refresh_trigger': 'SCHEDULED' })
          .where('h.rows_changed', '>', 0)
          .first('h.refresh_id');
        return row;
      },
      { timeoutMs: 90_000, what: 'a scheduled FAST refresh with changes' },
    );
    await waitFor(() => /\[demo\] \d+ orders \| sales_by_region: FAST SUCCESS/.test(dev.output()), { timeoutMs: 20_000, what: 'the status line' });
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
    await stopDev(dev);
    // The console stayed readable: no log record below warn; the file has them all, by process.
    expect(logLines(dev).filter((l) => Number(l.level) < 40)).toEqual([]);
    const file = readFileSync(logFile!, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(file.some((l) => l.proc === 'worker-1' && l.level === 30 && l.msg === 'worker started')).toBe(true);
    expect(file.some((l) => l.proc === 'server' && l.msg === 'HTTP server listening')).toBe(true);

    // A second start picks the demo up again instead of failing on what exists.
    const again = cluster.spawn('dev', ['dev', '--workers', '1', '--no-server'], { MVS_DEMO_SCHEMA: schema, LOG_LEVEL: 'warn' });
    await waitFor(() => again.output().includes(`demo resumed in database ${schema}`), { timeoutMs: 60_000, what: 'the demo resumed' });
    await stopDev(again);
  });

  it('picks a free port for the server when 8080 is taken, and says which', async () => {
    // Hold 8080 unless something else already does: either way it is taken.
    const holder = createServer();
    await new Promise<void>((resolve) => {
      holder.once('error', () => resolve());
      holder.listen({ port: 8080, host: '127.0.0.1', exclusive: true }, () => resolve());
    });
    try {
      const dev = cluster.spawn('dev', ['dev', '--workers', '1', '--no-demo'], { MVS_HTTP_PORT: '', LOG_LEVEL: 'warn' });
      const port = await waitFor(() => /port 8080 is taken: the server listens on (\d+) instead/.exec(dev.output())?.[1], {
        timeoutMs: 60_000,
        what: 'dev to pick another port',
      });
      expect(dev.output()).toContain(`API http://127.0.0.1:${port}/v1/mviews`);
      // Process start-up (tsx compiling the sources) is slow on a loaded machine.
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status === 200, {
        timeoutMs: 60_000,
        what: 'the server on the port it picked',
      });
      await stopDev(dev);
    } finally {
      holder.close();
    }
  });

  it('--no-demo starts without it', async () => {
    const dev = cluster.spawn('dev', ['dev', '--workers', '1', '--no-server', '--no-demo'], { MVS_DEMO_SCHEMA: `${schema}_x`, LOG_LEVEL: 'warn' });
    await waitFor(() => dev.output().includes('mvsched dev: demo off'), { timeoutMs: 30_000, what: 'dev to say the demo is off' });
    // Wait until the worker is up: by then a demo would have been created.
    const ins = inspector(t);
    try {
      await waitFor(async () => (await ins.registry.live()).includes('dev-1'), { timeoutMs: 30_000, what: 'the worker live' });
    } finally {
      await ins.close();
    }
    await stopDev(dev);
    expect(dev.output()).not.toContain('demo created');
    expect(await t.db('mvs_mviews').where({ table_schema: `${schema}_x` }).first()).toBeUndefined();
    const [dbs] = (await t.db.raw('SHOW DATABASES LIKE ?', [`${schema}_x`])) as [unknown[]];
    expect(dbs).toEqual([]);
  });
});
