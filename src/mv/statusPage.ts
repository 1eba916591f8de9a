import type { Knex } from 'knex';
import type { HashRing } from '../ring/hashRing.js';
import { decodeCursor, encodeCursor, type Page } from './paging.js';
import { listMviewStatus, type MviewStatus } from './status.js';

interface Key {
  schema: string;
  name: string;
}

const isKey = (v: unknown): v is Key =>
  typeof v === 'object' && v !== null && typeof (v as Key).schema === 'string' && typeof (v as Key).name === 'string';

/** `GET /v1/mviews`: the status listing a page at a time, in (schema, name) order. */
export async function pageMviewStatus(db: Knex, ring: HashRing | undefined, opts: { limit: number; cursor?: string }): Promise<Page<MviewStatus>> {
  const after = decodeCursor(opts.cursor, isKey);
  const rows = await listMviewStatus(db, ring, undefined, { ...(after ? { after } : {}), limit: opts.limit + 1 });
  const items = rows.slice(0, opts.limit);
  if (rows.length <= opts.limit) return { items, nextCursor: null };
  // Rows name an MV as "schema.name", which is ambiguous when a part holds a dot: the key is
  // read back by id.
  const last = items[items.length - 1]!;
  const key = (await db('mvs_mviews').where({ mview_id: last.mviewId }).first('table_schema', 'mview_name')) as
    | { table_schema: string; mview_name: string }
    | undefined;
  const dot = last.name.indexOf('.');
  const next: Key = key ? { schema: key.table_schema, name: key.mview_name } : { schema: last.name.slice(0, dot), name: last.name.slice(dot + 1) };
  return { items, nextCursor: encodeCursor(next) };
}
