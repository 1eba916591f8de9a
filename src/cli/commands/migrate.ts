import type { CliContext } from '../context.js';
import { createDb } from '../../db/connect.js';
import { migrateDownAll, migrateLatest } from '../../db/migrate.js';

export async function migrateCommand(ctx: CliContext, opts: { down?: boolean }): Promise<number> {
  const db = createDb(ctx.config.databaseUrl!, { poolMax: 1 });
  try {
    if (opts.down) {
      const undone = await migrateDownAll(db);
      ctx.out(`rolled back ${undone.length} migration(s)`);
      return 0;
    }
    const res = await migrateLatest(db, (m) => ctx.err(`migrate: ${m}`));
    ctx.out(res.applied.length ? `migrated: ${res.applied.length} applied` : 'migrated: already up to date');
    return 0;
  } finally {
    await db.destroy();
  }
}
