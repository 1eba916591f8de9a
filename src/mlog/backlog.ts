import type { Knex } from 'knex';
import { quoteIdent } from '../mv/identifiers.js';
import { SEQ_COLUMN } from './names.js';

// The backlog of MV logs for status and /metrics, read for many logs in a few statements (never
// one per log): each log table's highest sequence number, by its primary key (an index dive).

/** Log tables per UNION statement: enough to keep statements few, small enough to stay readable. */
const PER_STATEMENT = 200;

export interface LogTable {
  mlogId: number;
  schema: string;
  /** The log table's name (`mlog$t`). */
  table: string;
}

/**
 * Highest sequence number of each log (0 when empty); a log whose table is missing or cannot be
 * read is absent from the answer, so one dropped table does not hide every other log's figure.
 */
export async function logHighWaterMarks(db: Knex, logs: LogTable[]): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  if (logs.length === 0) return out;
  const present = (await db('information_schema.TABLES')
    .whereIn(['TABLE_SCHEMA', 'TABLE_NAME'], logs.map((l) => [l.schema, l.table]))
    .select({ schema: 'TABLE_SCHEMA', table: 'TABLE_NAME' })) as Array<{ schema: string; table: string }>;
  const exists = new Set(present.map((p) => `${p.schema}\u0000${p.table}`));
  const readable = logs.filter((l) => exists.has(`${l.schema}\u0000${l.table}`));
  for (let i = 0; i < readable.length; i += PER_STATEMENT) {
    const chunk = readable.slice(i, i + PER_STATEMENT);
    const sql = chunk
      .map((l) => `SELECT ? AS id, COALESCE(MAX(${quoteIdent(SEQ_COLUMN)}), 0) AS h FROM ${quoteIdent(l.schema)}.${quoteIdent(l.table)}`)
      .join(' UNION ALL ');
    try {
      const [rows] = (await db.raw(sql, chunk.map((l) => l.mlogId))) as [Array<{ id: number | string; h: number | string }>];
      for (const r of rows) out.set(Number(r.id), Number(r.h));
    } catch {
      // A table dropped between the two reads: this chunk's figures are unknown this time.
    }
  }
  return out;
}

/**
 * Rows a log holds that are not purged yet, estimated from sequence numbers (an upper bound:
 * rolled-back writes leave gaps); null when the log could not be read.
 */
export function backlogRows(highWater: number | undefined, purgeWatermark: number): number | null {
  return highWater === undefined ? null : Math.max(0, highWater - purgeWatermark);
}
