import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDdlExecutor, createRuntime, type Runtime } from '../../src/app/runtime.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { MvsClient, ValidationError } from '../../src/index.js';
import { Cluster } from '../support/cluster.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
let rt: Runtime;
let cluster: Cluster;
let client: MvsClient;

beforeAll(async () => {
  t = await createTestEnv('client');
  await migrateLatest(t.db);
  await t.db.raw('CREATE TABLE sales (id INT PRIMARY KEY, region VARCHAR(8), amt INT)');
  await t.db('sales').insert([{ id: 1, region: 'eu', amt: 5 }]);
  rt = createRuntime(t.config, t.logger);
  await createDdlExecutor(rt).execute('CREATE MATERIALIZED VIEW by_region AS SELECT region, SUM(amt) AS total FROM sales GROUP BY region');
  cluster = new Cluster(t);
  cluster.worker('c1');
  const u = new URL(t.redisUrl);
  client = new MvsClient({ connection: { host: u.hostname, port: Number(u.port) }, prefix: t.prefix });
});

afterAll(async () => {
  await client?.close();
  await cluster?.closeAll();
  await rt?.close();
  await t?.close();
});

describe('MvsClient (import { MvsClient } from "mvsched")', () => {
  it('enqueues a refresh on the requests queue and waits for its result', async () => {
    await t.db('sales').insert({ id: 2, region: 'us', amt: 7 });
    const job = await client.refresh(`${t.database}.by_region`);
    const result = await job.finished(60_000);
    expect(result).toMatchObject({ outcome: 'SUCCESS', rows: 2, method: 'COMPLETE' });
    expect(await t.db('by_region').orderBy('region').select()).toEqual([
      { region: 'eu', total: '5' },
      { region: 'us', total: '7' },
    ]);
  });

  it('reports versions and gets the fan-out back', async () => {
    const job = await client.reportVersions(`${t.database}.sales`, [{ partitionName: 'p0', partitionId: 1, version: 3, versionTime: 1_000 }], {
      dataChanged: true,
    });
    expect(await job.finished(60_000)).toEqual({ dependents: 1, repairs: 0, recreated: false });
  });

  it('purges an MV log and tells where a job stands', async () => {
    const ddl = createDdlExecutor(rt);
    await ddl.execute('CREATE MATERIALIZED VIEW LOG ON sales (region, amt)');
    await t.db('sales').insert({ id: 3, region: 'eu', amt: 1 });
    const job = await client.purge(`${t.database}.sales`);
    const result = await job.finished(60_000);
    expect(result).toMatchObject({ outcome: 'SUCCESS', rows: 1 });
    expect(result.watermark).toBeGreaterThan(0);
    const status = await client.status(job.jobId);
    expect(status).toEqual({
      jobId: job.jobId,
      state: 'completed',
      name: 'purge',
      data: { mlog: `${t.database}.sales` },
      result,
      enqueuedAt: expect.any(Number),
      finishedAt: expect.any(Number),
    });
    expect(status.finishedAt!).toBeGreaterThanOrEqual(status.enqueuedAt!);
    const bad = await client.purge(`${t.database}.no_log_here`);
    await expect(bad.finished(60_000)).rejects.toThrow(/no materialized view log/);
    expect(await client.status(bad.jobId)).toMatchObject({ state: 'failed', failedReason: expect.stringMatching(/no_log_here/) });
    expect(await client.status('no-such-job')).toEqual({ jobId: 'no-such-job', state: 'unknown' });
  });

  it('refuses a malformed payload before sending it, naming the field', async () => {
    await expect(client.refresh('a.b', { method: 'SLOW' as never })).rejects.toThrow(ValidationError);
    await expect(client.refresh('a.b', { method: 'SLOW' as never })).rejects.toThrow(/method/);
  });
});
