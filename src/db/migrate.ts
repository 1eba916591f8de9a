import type { Db } from './connect.js';
import { migrationsConfig } from './connect.js';

export interface MigrateResult {
  batch: number;
  applied: string[];
}

export type MigrateProgress = (message: string) => void;

/** Bring the metadata schema up to date; a second call applies nothing. */
export async function migrateLatest(db: Db, progress: MigrateProgress = () => {}): Promise<MigrateResult> {
  const cfg = migrationsConfig();
  const [, pending] = (await db.migrate.list(cfg)) as [unknown[], Array<{ file: string }>];
  progress(pending.length === 0 ? 'schema is up to date' : `applying ${pending.length} migration(s)`);
  const [batch, applied] = (await db.migrate.latest(cfg)) as [number, string[]];
  for (const name of applied) progress(`applied ${name}`);
  return { batch, applied };
}

/** Undo every migration (for tests and `mvsched migrate --down`). */
export async function migrateDownAll(db: Db): Promise<string[]> {
  const [, undone] = (await db.migrate.rollback(migrationsConfig(), true)) as [number, string[]];
  return undone;
}

export const METADATA_TABLES = Object.freeze([
  'mvs_mviews',
  'mvs_mview_refresh_info',
  'mvs_mview_refresh_hist',
  'mvs_mlogs',
  'mvs_mlog_purge_info',
  'mvs_mlog_purge_hist',
  'mvs_mview_base_tables',
  'mvs_base_partitions',
  'mvs_mview_version_map',
  'mvs_edit_log',
  'mvs_mlog_gates',
  'mvs_capture_position',
  'mvs_capture_ping',
]);
