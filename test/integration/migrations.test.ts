import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '../../src/db/connect.js';
import { METADATA_TABLES, migrateDownAll, migrateLatest } from '../../src/db/migrate.js';
import { createTestEnv, withDatabase, type TestEnv } from '../support/testEnv.js';

let t: TestEnv;
beforeAll(async () => {
  t = await createTestEnv('migrations');
});
afterAll(async () => {
  await t?.close();
});

async function tables(): Promise<string[]> {
  const rows = await t.db('information_schema.tables')
    .where({ table_schema: t.database })
    .andWhere('table_name', 'like', 'mvs\\_%')
    .andWhere('table_name', 'not like', 'mvs\\_knex%')
    .select({ name: 'table_name' });
  return rows.map((r: { name: string }) => r.name).sort();
}

async function indexes(table: string): Promise<Map<string, { unique: boolean; columns: string[] }>> {
  const rows = await t.db('information_schema.statistics')
    .where({ table_schema: t.database, table_name: table })
    .orderBy(['index_name', 'seq_in_index'])
    .select({ name: 'index_name', col: 'column_name', nonUnique: 'non_unique' });
  const out = new Map<string, { unique: boolean; columns: string[] }>();
  for (const r of rows as Array<{ name: string; col: string; nonUnique: number }>) {
    const e = out.get(r.name) ?? { unique: Number(r.nonUnique) === 0, columns: [] };
    e.columns.push(r.col);
    out.set(r.name, e);
  }
  return out;
}

describe('metadata migrations', () => {
  it('up on an empty schema creates every table of DESIGN.md §3 with its keys', async () => {
    expect(await tables()).toEqual([]);
    const res = await migrateLatest(t.db);
    expect(res.applied.length).toBeGreaterThan(0);
    expect(await tables()).toEqual([...METADATA_TABLES].sort());

    const mviews = await indexes('mvs_mviews');
    expect(mviews.get('PRIMARY')).toEqual({ unique: true, columns: ['mview_id'] });
    expect(mviews.get('uniq_mview_name')).toEqual({ unique: true, columns: ['table_schema', 'mview_name'] });

    const info = await indexes('mvs_mview_refresh_info');
    expect(info.get('PRIMARY')?.columns).toEqual(['mview_id']);
    expect(info.get('idx_refresh_next_time')?.columns).toEqual(['next_time']);

    expect((await indexes('mvs_mview_refresh_hist')).get('idx_refresh_hist_mview')?.columns).toEqual(['mview_id', 'refresh_id']);
    expect((await indexes('mvs_mlogs')).get('uniq_mlog_base_table')).toEqual({
      unique: true,
      columns: ['table_schema', 'base_table_name'],
    });
    expect((await indexes('mvs_mlog_purge_info')).get('idx_purge_next_time')?.columns).toEqual(['next_time']);
    expect((await indexes('mvs_mview_base_tables')).get('PRIMARY')?.columns).toEqual([
      'mview_id', 'base_table_schema', 'base_table_name',
    ]);
    expect((await indexes('mvs_base_partitions')).get('PRIMARY')?.columns).toEqual([
      'base_table_schema', 'base_table_name', 'partition_name',
    ]);
    expect((await indexes('mvs_mview_version_map')).get('PRIMARY')?.columns).toEqual([
      'mview_id', 'base_table_schema', 'base_table_name', 'partition_name',
    ]);

    const vmCols = await t.db('information_schema.columns')
      .where({ table_schema: t.database, table_name: 'mvs_mview_version_map' })
      .pluck('column_name');
    expect(vmCols).toEqual(expect.arrayContaining([
      'mview_id', 'partition_name', 'partition_id', 'version', 'last_refresh_time',
      'ext_last_file_modified_time', 'file_number',
    ]));
    const infoCols = await t.db('information_schema.columns')
      .where({ table_schema: t.database, table_name: 'mvs_mview_refresh_info' })
      .pluck('column_name');
    expect(infoCols).toEqual(expect.arrayContaining(['next_time', 'last_refresh_result', 'last_failed_reason']));
  });

  it('up twice is a no-op', async () => {
    const before = await t.db('mvs_knex_migrations').count({ n: '*' }).first();
    const res = await migrateLatest(t.db);
    expect(res.applied).toEqual([]);
    const after = await t.db('mvs_knex_migrations').count({ n: '*' }).first();
    expect(after).toEqual(before);
  });

  it('down removes the tables, and up again restores them', async () => {
    await t.db('mvs_mviews').insert({
      table_schema: 's', mview_name: 'mv', mview_definition: 'SELECT 1',
      created_at: new Date(), mview_modify_time: new Date(),
    });
    const undone = await migrateDownAll(t.db);
    expect(undone.length).toBeGreaterThan(0);
    expect(await tables()).toEqual([]);
    await migrateLatest(t.db);
    expect(await tables()).toEqual([...METADATA_TABLES].sort());
    expect(await t.db('mvs_mviews').count({ n: '*' }).first()).toEqual({ n: 0 });
  });

  it('treats names as case-sensitive, like the server does on Linux', async () => {
    const row = { mview_definition: 'SELECT 1', created_at: new Date(), mview_modify_time: new Date(), table_schema: 's' };
    await t.db('mvs_mviews').insert({ ...row, mview_name: 'Sales' });
    await t.db('mvs_mviews').insert({ ...row, mview_name: 'sales' });
    await expect(t.db('mvs_mviews').insert({ ...row, mview_name: 'sales' })).rejects.toThrow(/Duplicate entry/);
  });

  it('the knex CLI runs the same migrations through the project knexfile', async () => {
    const database = `${t.database}_knexcli`;
    await t.db.raw('CREATE DATABASE ??', [database]);
    const url = withDatabase(t.databaseUrl, database);
    const other = createDb(url, { poolMax: 1 });
    try {
      const root = fileURLToPath(new URL('../..', import.meta.url));
      const knexBin = fileURLToPath(new URL('../../node_modules/knex/bin/cli.js', import.meta.url));
      const run = () =>
        spawnSync(process.execPath, [knexBin, 'migrate:latest'], { cwd: root, encoding: 'utf8', env: { ...process.env, DATABASE_URL: url } });
      const first = run();
      expect(first.status, first.stderr).toBe(0);
      expect(first.stdout).toMatch(/Batch 1 run: [1-9]\d* migrations/);
      const tablesNow = await other('information_schema.tables').where({ table_schema: database }).pluck('table_name');
      expect(tablesNow).toEqual(expect.arrayContaining([...METADATA_TABLES]));
      // Both entry points share the bookkeeping table: mvsched migrate has nothing left to do.
      expect((await migrateLatest(other)).applied).toEqual([]);
      const second = run();
      expect(second.status, second.stderr).toBe(0);
      expect(second.stdout).toMatch(/Already up to date/);
    } finally {
      await other.destroy();
      await t.db.raw('DROP DATABASE IF EXISTS ??', [database]);
    }
  });
});
