import { spawn } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../../src/cli/main.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { Cluster } from '../support/cluster.js';
import { createTestEnv, waitFor, type TestEnv } from '../support/testEnv.js';

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));

let t: TestEnv;
let cluster: Cluster;

/** Run the CLI as a user would: LOG_LEVEL unset, so one-shot commands log at warn. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: Record<string, string | undefined> = { ...process.env, ...t.env };
  delete env.LOG_LEVEL;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env });
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
    // Built by the CREATE: it succeeded then, and its data is as of that build.
    const built = status.mviews[0]!;
    expect(built.lastSuccessTime).toBe(built.lastRefreshEnd);
    expect(Date.parse(built.dataTime as string)).toBeLessThanOrEqual(Date.parse(built.lastSuccessTime as string));
    expect(built.lagSeconds).toEqual(expect.any(Number));
    expect(built.lagSeconds as number).toBeGreaterThanOrEqual(0);
    expect(built.lagSeconds as number).toBeLessThan(600);
    const nextBefore = status.mviews[0]!.nextTime;

    await t.db('orders').insert({ id: 4, cust: 3, amt: 1 });
    const refreshed = await cli(['refresh', 'by_cust', '--wait', '--json']);
    expect(refreshed.code, refreshed.stderr).toBe(0);
    expect(JSON.parse(refreshed.stdout)).toMatchObject({ outcome: 'SUCCESS', rows: 3 });
    expect(await t.db('by_cust').count({ n: '*' }).first()).toEqual({ n: 3 });

    // A manual refresh leaves the schedule alone, and is recorded as MANUAL.
    const after = JSON.parse((await cli(['status', '--json'])).stdout) as { mviews: Array<Record<string, unknown>> };
    expect(after.mviews[0]!.nextTime).toBe(nextBefore);
    expect(Date.parse(after.mviews[0]!.dataTime as string)).toBeGreaterThan(Date.parse(built.dataTime as string));
    expect(Date.parse(after.mviews[0]!.lastSuccessTime as string)).toBeGreaterThan(Date.parse(built.lastSuccessTime as string));
    const text = (await cli(['status'])).stdout;
    expect(text).toMatch(/MVIEW\s+METHOD\s+STATE\s+SCHEDULE\s+DATA AS OF \(UTC\)\s+LAG\s+LAST/);
    const dataAsOf = (after.mviews[0]!.dataTime as string).replace('T', ' ').replace('Z', '');
    expect(text).toMatch(new RegExp(`${t.database}\\.by_cust\\s+COMPLETE\\s+ACTIVE\\s+every 3600s\\s+${dataAsOf.replace(/\./g, '\\.')}\\s+\\d+\\.\\ds\\s+SUCCESS`));
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
      expect.objectContaining({ table: `${t.database}.clicks`, lastPurgeResult: 'SUCCESS', lastPurgeRows: 3, purgeMethod: 'MANUAL', backlogRows: 0 }),
    ]);
    await t.db('clicks').insert({ id: 4, page: 2, ms: 1 });
    await t.db('clicks').where({ id: 4 }).update({ ms: 2 }); // an UPDATE logs two rows (old and new image)
    const later = JSON.parse((await cli(['status', '--json'])).stdout) as { mlogs: Array<Record<string, unknown>> };
    expect(later.mlogs[0]).toMatchObject({ backlogRows: 3 });
    const text = await cli(['status']);
    expect(text.stdout).toMatch(/MV LOG\s+ON\s+CAPTURE\s+STATE\s+BACKLOG\s+PURGE/);
    expect(text.stdout).toMatch(new RegExp(`mlog\\$clicks\\s+${t.database}\\.clicks\\s+TRIGGERS\\s+OK\\s+3\\s+manual`));
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

describe('output: results on stdout, logs on stderr', () => {
  /** Each command that has --json, with arguments that make it succeed. */
  const jsonRuns = (dir: string): Record<string, string[][]> => ({
    sql: [['sql', '--json', '-f', join(dir, 'two.sql')]],
    status: [['status', '--json']],
    history: [['history', 'by_cust', '--json', '--limit', '5']],
    refresh: [
      ['refresh', 'by_cust', '--json'],
      ['refresh', 'by_cust', '--wait', '--json', '--method', 'complete'],
    ],
    purge: [['purge', 'clicks', '--wait', '--json']],
    'explain-mv': [['explain-mv', 'SELECT cust, COUNT(*) AS n FROM orders GROUP BY cust', '--json']],
    'report-versions': [
      ['report-versions', 'orders', '--file', join(dir, 'versions.json'), '--wait', '--json'],
      ['report-versions', 'orders', '--forget', '--json'],
    ],
    repair: [['repair', 'orders', '--file', join(dir, 'repair.json'), '--wait', '--json']],
  });

  it('every command with --json prints exactly one JSON document on stdout, with LOG_LEVEL unset', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mvjson-'));
    writeFileSync(join(dir, 'two.sql'), 'CREATE MATERIALIZED VIEW j1 AS SELECT 1 AS x;\nDROP MATERIALIZED VIEW j1;\n');
    writeFileSync(join(dir, 'versions.json'), JSON.stringify([{ partitionName: 'p1', partitionId: 1, version: 2, versionTime: 1000 }]));
    writeFileSync(join(dir, 'repair.json'), JSON.stringify([{ partitionId: 1, partitionName: 'p1', lastVersion: 2, newVersion: 3, newVersionTime: 2000 }]));
    const runs = jsonRuns(dir);
    const withJson = buildProgram({ out: () => {}, err: () => {}, env: {} }, () => {})
      .commands.filter((c) => c.options.some((o) => o.long === '--json'))
      .map((c) => c.name());
    expect(Object.keys(runs).sort(), 'every command with --json is covered here').toEqual(withJson.sort());
    for (const [name, argsList] of Object.entries(runs)) {
      for (const args of argsList) {
        const r = await cli(args);
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
        let doc: unknown;
        expect(() => (doc = JSON.parse(r.stdout)), `${args.join(' ')} stdout: ${r.stdout.slice(0, 500)}`).not.toThrow();
        expect(doc, args.join(' ')).not.toBeUndefined();
        // Nothing below warn reached stderr either (pino JSON lines carry a numeric level).
        for (const line of r.stderr.split('\n').filter((l) => l.startsWith('{'))) {
          expect((JSON.parse(line) as { level: number }).level, `${name}: ${line}`).toBeGreaterThanOrEqual(40);
        }
      }
    }
    const sql = JSON.parse((await cli(runs.sql![0]!)).stdout) as Array<{ statement: string }>;
    expect(sql.map((r) => r.statement)).toEqual(['createMview', 'dropMview']);
    const hist = JSON.parse((await cli(runs.history![0]!)).stdout) as Array<Record<string, unknown>>;
    expect(hist.length).toBeGreaterThanOrEqual(3);
    expect(hist[0]).toMatchObject({ status: 'SUCCESS', trigger: 'MANUAL', method: 'COMPLETE' });
    expect(Object.keys(hist[0]!)).toEqual(expect.arrayContaining(['refreshId', 'scheduledTime', 'startTime', 'endTime', 'dataTime', 'rowsInserted', 'rowsDeleted', 'watermarkFrom', 'watermarkTo', 'node', 'reason']));
  });

  it('`history` prints a table, newest first; --method takes any case', async () => {
    const fast = await cli(['refresh', 'clicks_mv', '--wait', '--method', 'Fast']);
    expect(fast.code, fast.stderr).toBe(0);
    expect(fast.stdout.trim()).toMatch(new RegExp(`^refreshed ${t.database}\\.clicks_mv: SUCCESS`));
    const bad = await cli(['refresh', 'clicks_mv', '--method', 'slow']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--method.*expected COMPLETE or FAST/);
    const r = await cli(['history', 'clicks_mv', '--limit', '2']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATUS\s+METHOD\s+TRIGGER\s+START \(UTC\)\s+DURATION\s+ROWS/);
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/^\d+\s+SUCCESS\s+FAST\s+MANUAL\s/);
    expect((await cli(['history', 'nosuch'])).code).toBe(3);
  });

  it('a failed refresh says so in one sentence', async () => {
    await t.db.raw('CREATE TABLE brittle (id INT PRIMARY KEY)');
    expect((await cli(['sql', 'CREATE MATERIALIZED VIEW brittle_mv AS SELECT id FROM brittle'])).code).toBe(0);
    await t.db.raw('DROP TABLE brittle');
    const r = await cli(['refresh', 'brittle_mv', '--wait']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const last = r.stderr.trim().split('\n').at(-1)!;
    expect(last).toBe(`mvsched: refresh of ${t.database}.brittle_mv failed: Table '${t.database}.brittle' doesn't exist`);
  });
});
