import type { Knex } from 'knex';
import { decodeCursor, encodeCursor, type Page } from './paging.js';
import { listMviewStatus, type MviewStatus, type RingSource } from './status.js';

interface Key {
  schema: string;
  name: string;
}

const isKey = (v: unknown): v is Key =>
  typeof v === 'object' && v !== null && typeof (v as Key).schema === 'string' && typeof (v as Key).name === 'string';

/** `GET /v1/mviews`: the status listing a page at a time, in (schema, name) order. */
export async function pageMviewStatus(db: Knex, ring: RingSource, opts: { limit: number; cursor?: string }): Promise<Page<MviewStatus>> {
  const after = decodeCursor(opts.cursor, isKey);
  const rows = await listMviewStatus(db, ring, undefined, { ...(after ? { after } : {}), limit: opts.limit + 1 });
  const items = rows.slice(0, opts.limit);
  if (rows.length <= opts.limit) return { items, nextCursor: null };
  const last = items[items.length - 1]!;
  const next: Key = { schema: last.schema, name: last.mview };
  return { items, nextCursor: encodeCursor(next) };
}
