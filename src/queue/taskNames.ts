import type { Knex } from 'knex';
import { isMlogTask, type TaskId } from './names.js';

/** Display names of scheduled tasks (MVs: `schema.name`; MV logs: `schema.table`), for job data. */
export type TaskNames = (tasks: TaskId[]) => Promise<Map<TaskId, string>>;

const CHUNK = 1000;
/** Entries a cache may hold beyond what one full load found, before it starts over (drops). */
const CACHE_SLACK = 10_000;

type NameRow = { id: number | string; table_schema: string; name: string };

async function readNames(db: Knex, into: Map<TaskId, string>, ids?: { mviews: number[]; mlogs: number[] }): Promise<void> {
  const mv = () => db('mvs_mviews').select({ id: 'mview_id', table_schema: 'table_schema', name: 'mview_name' });
  const ml = () => db('mvs_mlogs').select({ id: 'mlog_id', table_schema: 'table_schema', name: 'base_table_name' });
  const put = (rows: NameRow[], sign: 1 | -1) => {
    for (const r of rows) into.set(sign * Number(r.id), `${r.table_schema}.${r.name}`);
  };
  if (!ids) {
    put((await mv()) as NameRow[], 1);
    put((await ml()) as NameRow[], -1);
    return;
  }
  for (let i = 0; i < ids.mviews.length; i += CHUNK) put((await mv().whereIn('mview_id', ids.mviews.slice(i, i + CHUNK))) as NameRow[], 1);
  for (let i = 0; i < ids.mlogs.length; i += CHUNK) put((await ml().whereIn('mlog_id', ids.mlogs.slice(i, i + CHUNK))) as NameRow[], -1);
}

/**
 * Names read from the metadata tables, and remembered: an id always names the same MV or log
 * (ids are not reused), and the planner places jobs one at a time, so a query per job would
 * slow down moving thousands of them after a membership change. With `preload` (the planner)
 * the first call reads every name in two queries; later ones only ask for ids not seen yet. The
 * cache starts over when it grows well past that (MVs dropped and created), so it stays bounded.
 */
export function taskNamesFromDb(db: Knex, opts: { preload?: boolean } = {}): TaskNames {
  const cache = new Map<TaskId, string>();
  let loaded = false;
  let limit = CACHE_SLACK;
  return async (tasks) => {
    if (cache.size > limit) {
      cache.clear();
      loaded = false;
    }
    if (opts.preload && !loaded) {
      await readNames(db, cache);
      loaded = true;
      limit = cache.size + CACHE_SLACK;
    }
    const missing = tasks.filter((t) => !cache.has(t));
    if (missing.length) {
      await readNames(db, cache, { mviews: missing.filter((t) => !isMlogTask(t)), mlogs: missing.filter(isMlogTask).map((t) => -t) });
    }
    const out = new Map<TaskId, string>();
    for (const t of tasks) {
      const name = cache.get(t);
      if (name !== undefined) out.set(t, name);
    }
    return out;
  };
}
