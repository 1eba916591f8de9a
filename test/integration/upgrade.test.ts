import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findBinary } from '../../scripts/localServers.mjs';
import { systemClock } from '../../src/clock.js';
import { parseDatabaseUrl } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import type { DdlExecutor } from '../../src/ddl/executor.js';
import { DriftChecker } from '../../src/drift/driftChecker.js';
import type { RefreshOutcome, RefreshRunner } from '../../src/refresh/runner.js';
import { inProcessRefresh } from '../support/inProcess.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// DESIGN.md §4 invariant 10: upgrades keep working deployments working. A database made by the
// previous release (test/fixtures/upgrade/release-0.1.0.sql: metadata, an MV log with its
// triggers, FAST / FORCE / COMPLETE MVs, one logged change not yet applied) is migrated, and
// everything keeps refreshing, right.

let t: TestEnv;
let runner: RefreshRunner;
let ddl: DdlExecutor;

beforeAll(async () => {
  t = await createTestEnv('upgrade');
  const dump = readFileSync(fileURLToPath(new URL('../fixtures/upgrade/release-0.1.0.sql', import.meta.url)), 'utf8')
    .replaceAll('mvs_prev', t.database)
    .replace(/\/\*!50017 DEFINER=`[^`]*`@`[^`]*`\*\//g, '');
  const c = parseDatabaseUrl(t.databaseUrl);
  const mariadb = findBinary('mariadb', 'mysql');
  const r = spawnSync(mariadb!, [`-h${c.host}`, `-P${c.port}`, `-u${c.user}`, `-p${c.password}`, c.database], { input: dump, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`loading the fixture failed: ${r.stderr}`);
  await migrateLatest(t.db);
  ({ runner, ddl } = inProcessRefresh(t, { nodeId: 'upgraded-node' }));
});

afterAll(async () => {
  await t?.close();
});

async function rows(sql: string): Promise<string[]> {
  const [r] = (await t.db.raw(sql)) as [Array<Record<string, unknown>>];
  return r.map((x) => JSON.stringify(x)).sort();
}
const mvId = async (name: string) => Number((await t.db('mvs_mviews').where({ mview_name: name }).first('mview_id')).mview_id);
function expectSuccess(o: RefreshOutcome, method: 'FAST' | 'COMPLETE') {
  expect(o.kind, JSON.stringify(o)).toBe('SUCCESS');
  expect((o as { method: string }).method).toBe(method);
}
const DEFS = {
  sales_fast: 'SELECT region, COUNT(*) AS n, SUM(amt) AS total, MAX(amt) AS biggest FROM orders GROUP BY region',
  orders_force: 'SELECT id, cust, amt FROM orders WHERE amt > 6',
  top_cust: 'SELECT cust, SUM(amt) AS total FROM orders GROUP BY cust',
};

describe('a database made by release 0.1.0, migrated', () => {
  it('its log is healthy to the drift check and keeps capturing; its MVs refresh FAST / COMPLETE and are right', async () => {
    const drift = new DriftChecker({ db: t.db, logger: t.logger, clock: systemClock, ddlWaitMs: 2000, requestSystemRefresh: async () => {} });
    expect((await drift.check()).broken).toEqual([]);
    expect(await t.db('mvs_mlogs').first('state')).toEqual({ state: 'OK' });
    await t.db.raw("INSERT INTO orders VALUES (7, 'south', 6, 30.00)");
    await t.db.raw('UPDATE orders SET amt = 2 WHERE id = 3');
    expectSuccess(await runner.run({ mviewId: await mvId('sales_fast'), trigger: 'MANUAL' }), 'FAST');
    expectSuccess(await runner.run({ mviewId: await mvId('orders_force'), trigger: 'MANUAL' }), 'FAST');
    expectSuccess(await runner.run({ mviewId: await mvId('top_cust'), trigger: 'MANUAL' }), 'COMPLETE');
    for (const [mv, def] of Object.entries(DEFS)) expect(await rows(`SELECT * FROM ${mv}`), mv).toEqual(await rows(def));
    // And again after a purge of what they consumed.
    await ddl.execute('PURGE MATERIALIZED VIEW LOG ON orders');
    await t.db.raw('DELETE FROM orders WHERE id = 1');
    expectSuccess(await runner.run({ mviewId: await mvId('sales_fast'), trigger: 'MANUAL' }), 'FAST');
    expect(await rows('SELECT * FROM sales_fast')).toEqual(await rows(DEFS.sales_fast));
  });

  it("its objects can be dropped: the log table an earlier release made (no comment) is recognised as the log's", async () => {
    for (const mv of ['sales_fast', 'orders_force', 'top_cust']) await ddl.execute(`DROP MATERIALIZED VIEW ${mv}`);
    await ddl.execute('DROP MATERIALIZED VIEW LOG ON orders');
    const left = await t.db('information_schema.tables').where({ table_schema: t.database }).whereIn('table_name', ['mlog$orders', 'sales_fast', 'orders_force', 'top_cust']);
    expect(left).toEqual([]);
    expect(await t.db('information_schema.triggers').where({ trigger_schema: t.database })).toEqual([]);
    await t.db.raw("INSERT INTO orders VALUES (8, 'east', 1, 1.00)");
  });
});
