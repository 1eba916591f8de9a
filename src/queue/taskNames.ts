import type { Knex } from 'knex';
import { isMlogTask, type TaskId } from './names.js';

/** Display names of scheduled tasks (MVs: `schema.name`; MV logs: `schema.table`), for job data. */
export type TaskNames = (tasks: TaskId[]) => Promise<Map<TaskId, string>>;

const CHUNK = 1000;

/** Names read from the metadata tables, a thousand ids per query. */
export function taskNamesFromDb(db: Knex): TaskNames {
  return async (tasks) => {
    const out = new Map<TaskId, string>();
    const mviews = tasks.filter((t) => !isMlogTask(t));
    const mlogs = tasks.filter(isMlogTask).map((t) => -t);
    for (let i = 0; i < mviews.length; i += CHUNK) {
      const rows = (await db('mvs_mviews').whereIn('mview_id', mviews.slice(i, i + CHUNK)).select('mview_id', 'table_schema', 'mview_name')) as Array<{
        mview_id: number | string;
        table_schema: string;
        mview_name: string;
      }>;
      for (const r of rows) out.set(Number(r.mview_id), `${r.table_schema}.${r.mview_name}`);
    }
    for (let i = 0; i < mlogs.length; i += CHUNK) {
      const rows = (await db('mvs_mlogs').whereIn('mlog_id', mlogs.slice(i, i + CHUNK)).select('mlog_id', 'table_schema', 'base_table_name')) as Array<{
        mlog_id: number | string;
        table_schema: string;
        base_table_name: string;
      }>;
      for (const r of rows) out.set(-Number(r.mlog_id), `${r.table_schema}.${r.base_table_name}`);
    }
    return out;
  };
}
