import type { Knex } from 'knex';
import { createLogStatements, describeBaseTable, resolveTrackedColumns } from '../../src/mlog/logObjects.js';
import { logTableName } from '../../src/mlog/names.js';
import { quoteIdent } from '../../src/mv/identifiers.js';

// MV logs for capture tests, made the way CREATE MATERIALIZED VIEW LOG makes them (metadata,
// then the log table), without the DDL executor's checks and waits: the capture tests need only
// the log, and one made while capture may already be reading.

export async function createTestLog(
  db: Knex,
  opts: { metaSchema: string; schema: string; table: string; columns: string[]; mode: 'TRIGGERS' | 'BINLOG' },
): Promise<number> {
  const shape = await describeBaseTable(db, opts.schema, opts.table);
  const tracked = resolveTrackedColumns(opts.schema, opts.table, shape, opts.columns);
  const logTable = logTableName(opts.table);
  const now = new Date();
  const insertMeta = async () =>
    db.transaction(async (trx) => {
      const [id] = (await trx('mvs_mlogs').insert({
        table_schema: opts.schema,
        base_table_name: opts.table,
        mlog_name: logTable,
        mlog_columns: JSON.stringify(tracked),
        pk_columns: JSON.stringify(shape.primaryKey),
        capture_mode: opts.mode,
        created_at: now,
        mlog_modify_time: now,
      })) as number[];
      await trx('mvs_mlog_purge_info').insert({ mlog_id: id, updated_at: trx.fn.now(6) });
      await trx('mvs_mlog_gates').insert({ mlog_id: id });
      return id!;
    });
  // Metadata first, as the executor does (the log table's comment carries the id): capture may
  // see the log before its table exists, and waits for it.
  const id = await insertMeta();
  const spec = { mlogId: id, schema: opts.schema, table: opts.table, logTable, metaSchema: opts.metaSchema, shape, tracked, captureMode: opts.mode };
  for (const st of createLogStatements(spec)) await db.raw(st.sql);
  return id;
}

export type LogEntry = string;

/**
 * A log's rows without the sequence column, grouped by primary key, each key's images in log
 * order. Row locks order the changes of one row the same way in every log, whatever the commit
 * order of transactions on different rows, so two logs of the same changes compare equal.
 */
export async function logByKey(db: Knex, schema: string, table: string, pk: string[]): Promise<Map<string, LogEntry[]>> {
  const [rows] = (await db.raw(`SELECT * FROM ${quoteIdent(schema)}.${quoteIdent(logTableName(table))} ORDER BY ${quoteIdent('_mlog$seq')}`)) as [
    Array<Record<string, unknown>>,
  ];
  const out = new Map<string, LogEntry[]>();
  for (const r of rows) {
    // Only BINLOG logs have the binlog position; the rest is the same in both kinds.
    const { ['_mlog$seq']: _seq, ['_mlog$bpos']: _bpos, ...rest } = r;
    const key = JSON.stringify(pk.map((c) => r[c]));
    const list = out.get(key) ?? [];
    list.push(JSON.stringify(rest, (_k, v: unknown) => (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? `0x${Buffer.from((v as { data: number[] }).data).toString('hex')}` : v)));
    out.set(key, list);
  }
  return out;
}

export async function logCount(db: Knex, schema: string, table: string): Promise<number> {
  const [[r]] = (await db.raw(`SELECT COUNT(*) AS n FROM ${quoteIdent(schema)}.${quoteIdent(logTableName(table))}`)) as [Array<{ n: number }>];
  return Number(r!.n);
}
