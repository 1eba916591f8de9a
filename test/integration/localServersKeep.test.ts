import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startMariadb, startRedis } from '../../scripts/localServers.mjs';
import { createDb } from '../../src/db/connect.js';
import { closeRedis, createRedis } from '../../src/queue/redis.js';

// `npm start -- --keep`: the local servers keep their data in a directory of their own and the
// next start uses it again (devenv.mjs passes .mvsched/keep/{redis,mariadb}).

describe('local servers with kept data', () => {
  it('a second start finds what the first left; two at once on one directory are refused', async () => {
    const base = mkdtempSync(join(tmpdir(), 'mvs-keep-'));
    const keep = { redis: join(base, 'keep', 'redis'), mariadb: join(base, 'keep', 'mariadb') };
    try {
      const [r1, m1] = await Promise.all([startRedis({ baseDir: base, keepDir: keep.redis }), startMariadb({ baseDir: base, keepDir: keep.mariadb })]);
      try {
        const db = createDb(m1.url, { poolMax: 1 });
        await db.raw('CREATE TABLE kept (id INT PRIMARY KEY)');
        await db('kept').insert({ id: 42 });
        await db.destroy();
        const redis = createRedis(r1.url);
        await redis.set('kept', 'yes');
        await closeRedis(redis);
        await expect(startRedis({ baseDir: base, keepDir: keep.redis })).rejects.toThrow(/Redis data in .* is in use by process \d+/);
        await expect(startMariadb({ baseDir: base, keepDir: keep.mariadb })).rejects.toThrow(/MariaDB data in .* is in use by process \d+/);
      } finally {
        await Promise.all([r1.stop(), m1.stop()]);
      }
      expect(existsSync(join(keep.mariadb, 'data', 'mysql'))).toBe(true);

      const [r2, m2] = await Promise.all([startRedis({ baseDir: base, keepDir: keep.redis }), startMariadb({ baseDir: base, keepDir: keep.mariadb })]);
      try {
        const db = createDb(m2.url, { poolMax: 1 });
        expect(await db('kept').pluck('id')).toEqual([42]);
        await db.destroy();
        const redis = createRedis(r2.url);
        expect(await redis.get('kept')).toBe('yes');
        await closeRedis(redis);
      } finally {
        await Promise.all([r2.stop(), m2.stop()]);
      }
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
