import { spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateLatest } from '../../src/db/migrate.js';
import { Cluster } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));

let t: TestEnv;
let cluster: Cluster;

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...t.env, LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  t = await createTestEnv('cli_e2e', { MVS_NODE_TTL_S: '3' });
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE orders (id INT PRIMARY KEY, cust INT NOT NULL, amt INT NOT NULL)');
  await t.db('orders').insert([
    { id: 1, cust: 1, amt: 10 },
    { id: 2, cust: 1, amt: 5 },
    { id: 3, cust: 2, amt: 7 },
  ]);
  cluster = new Cluster(t);
  cluster.worker('cli-1');
  cluster.planner();
});

afterAll(async () => {
  await cluster?.closeAll();
  await t?.close();
});

describe('the CLI against a running cluster', () => {
  it('creates an MV with `sql`, reports it in `status --json`, and refreshes it with `refresh --wait`', async () => {
    const created = await cli(['sql', 'CREATE MATERIALIZED VIEW by_cust NEXT 3600 AS SELECT cust, SUM(amt) AS total FROM orders GROUP BY cust']);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout.trim()).toBe(`created materialized view ${t.database}.by_cust (2 rows)`);

    const status = await waitFor(
      async () => {
        const r = await cli(['status', '--json']);
        const s = JSON.parse(r.stdout) as { nodes: string[]; mviews: Array<Record<string, unknown>> };
        return s.nodes.includes('cli-1') ? s : undefined;
      },
      { timeoutMs: 15_000, what: 'the worker in status' },
    );
    expect(status.mviews).toHaveLength(1);
    expect(status.mviews[0]).toMatchObject({
      name: `${t.database}.by_cust`,
      method: 'COMPLETE',
      status: 'ACTIVE',
      nextSeconds: 3600,
      lastResult: 'SUCCESS',
      owner: 'cli-1',
      failures: 0,
    });
    const nextBefore = status.mviews[0]!.nextTime;

    await t.db('orders').insert({ id: 4, cust: 3, amt: 1 });
    const refreshed = await cli(['refresh', 'by_cust', '--wait', '--json']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(JSON.parse(refreshed.stdout)).toMatchObject({ outcome: 'SUCCESS', rows: 3 });
    expect(await t.db('by_cust').count({ n: '*' }).first()).toEqual({ n: 3 });

    // A manual refresh leaves the schedule alone, and is recorded as MANUAL.
    const after = JSON.parse((await cli(['status', '--json'])).stdout) as { mviews: Array<Record<string, unknown>> };
    expect(after.mviews[0]!.nextTime).toBe(nextBefore);
    const hist = await t.db('mvs_mview_refresh_hist').orderBy('refresh_id').pluck('refresh_trigger');
    expect(hist).toEqual(['MANUAL', 'MANUAL']);
  });

  it('MV logs: `explain-mv`, a FAST MV, `purge --wait`, and logs in `status`', async () => {
    await t.db.raw('CREATE TABLE clicks (id INT PRIMARY KEY, page INT NULL, ms INT NULL)');
    const def = 'SELECT page, COUNT(*) AS n, MAX(ms) AS slowest FROM clicks GROUP BY page';
    const before = await cli(['explain-mv', def]);
    expect(before.code, before.stderr).toBe(0);
    expect(before.stdout.trim()).toBe(`FAST refresh: not possible: ${t.database}.clicks has no materialized view log (CREATE MATERIALIZED VIEW LOG ON ${t.database}.clicks (...))`);
    expect((await cli(['sql', 'CREATE MATERIALIZED VIEW LOG ON clicks (page, ms)'])).code).toBe(0);
    const after = await cli(['explain-mv', def, '--json']);
    expect(JSON.parse(after.stdout)).toEqual({ fastRefreshable: true, kind: 'aggregate', table: `${t.database}.clicks`, mlog: `${t.database}.mlog$clicks` });
    const created = await cli(['sql', `CREATE MATERIALIZED VIEW clicks_mv REFRESH FAST AS ${def}`]);
    expect(created.code, created.stderr).toBe(0);

    await t.db('clicks').insert([
      { id: 1, page: 1, ms: 30 },
      { id: 2, page: 1, ms: 50 },
      { id: 3, page: null, ms: 5 },
    ]);
    const refreshed = await cli(['refresh', 'clicks_mv', '--wait', '--json']);
    expect(JSON.parse(refreshed.stdout)).toMatchObject({ outcome: 'SUCCESS', method: 'FAST' });
    const purged = await cli(['purge', 'clicks', '--wait', '--json']);
    expect(purged.code, purged.stderr).toBe(0);
    expect(JSON.parse(purged.stdout)).toMatchObject({ outcome: 'SUCCESS', rows: 3 });
    const status = JSON.parse((await cli(['status', '--json'])).stdout) as { mlogs: Array<Record<string, unknown>> };
    expect(status.mlogs).toEqual([
      expect.objectContaining({ table: `${t.database}.clicks`, lastPurgeResult: 'SUCCESS', lastPurgeRows: 3, purgeMethod: 'MANUAL' }),
    ]);
    const text = await cli(['status']);
    expect(text.stdout).toMatch(/MV LOG\s+ON\s+CAPTURE\s+STATE\s+PURGE/);
    expect(text.stdout).toMatch(new RegExp(`clicks\\s+TRIGGERS\\s+OK\\b`));
    expect(text.stdout).not.toMatch(/^capture:/m); // no BINLOG log, no capture: nothing to say
    expect(text.stdout).toContain(`${t.database}.clicks_mv@`);

    const missing = await cli(['purge', 'orders', '--wait']);
    expect(missing.code).toBe(3);
    expect(missing.stderr.trim()).toBe(`mvsched: there is no materialized view log on ${t.database}.orders`);
    const refused = await cli(['sql', 'DROP MATERIALIZED VIEW LOG ON clicks']);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain(`${t.database}.clicks_mv`);
  });

  it('runs a script with -f, and a syntax error anywhere runs nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mvsql-'));
    const good = join(dir, 'good.sql');
    writeFileSync(good, 'CREATE MATERIALIZED VIEW f1 AS SELECT 1 AS x;\n-- a comment\nDROP MATERIALIZED VIEW f1;\n');
    const r = await cli(['sql', '-f', good]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([
      `created materialized view ${t.database}.f1 (1 rows)`,
      `dropped materialized view ${t.database}.f1`,
    ]);

    const bad = join(dir, 'bad.sql');
    writeFileSync(bad, 'CREATE MATERIALIZED VIEW f2 AS SELECT 1 AS x;\nDROP MATERIALIZED VEIW f2;\n');
    const b = await cli(['sql', '-f', bad]);
    expect(b.code).toBe(2);
    expect(b.stderr.trim()).toMatch(/^mvsched: syntax error at line 2, column 19: expected VIEW, found "VEIW"/);
    expect(await t.db('mvs_mviews').where({ mview_name: 'f2' }).first()).toBeUndefined();
  });

  it('exits with the documented codes: 3 for an unknown MV, 4 for a duplicate, 2 for bad input', async () => {
    const unknown = await cli(['refresh', 'nosuch']);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr.trim()).toBe(`mvsched: materialized view ${t.database}.nosuch does not exist`);

    const dup = await cli(['sql', 'CREATE MATERIALIZED VIEW by_cust AS SELECT 1 AS x']);
    expect(dup.code).toBe(4);
    expect(dup.stderr.trim()).toBe(`mvsched: materialized view ${t.database}.by_cust already exists`);

    const bad = await cli(['sql', 'CREATE MATERIALIZED VIEW z NEXT 0 AS SELECT 1 AS x']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('NEXT must be a whole number of seconds > 0');
  });
});
