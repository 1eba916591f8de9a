import type { Knex } from 'knex';
import type { DdlExecutor } from '../ddl/executor.js';
import type { Logger } from '../log.js';
import { quoteIdent } from '../mv/identifiers.js';

// The first-run demo of `npm start` / `mvsched dev`: on a database with no MVs, a schema with an
// orders table, an MV log on it, an aggregate MV fast-refreshed every 5 s, a COMPLETE MV every
// 15 s, and a gentle writer adding, changing and removing orders.

export const DEFAULT_DEMO_SCHEMA = 'demo';
const REGIONS = ['north', 'south', 'east', 'west', null];

export interface DemoDeps {
  db: Knex;
  ddl: DdlExecutor;
  logger: Logger;
  schema?: string;
}

export type DemoSetup = { kind: 'created' | 'resumed'; schema: string } | { kind: 'skipped'; reason: string };

function pick<T>(xs: readonly T[]): T {
  return xs[Math.floor(Math.random() * xs.length)]!;
}

function order() {
  return { customer_id: 1 + Math.floor(Math.random() * 50), region: pick(REGIONS), amount: (5 + Math.random() * 195).toFixed(2) };
}

/** Create the demo when the database has no MVs yet; pick it up again when it is already there. */
export async function setupDemo(deps: DemoDeps): Promise<DemoSetup> {
  const { db, ddl } = deps;
  const schema = deps.schema ?? DEFAULT_DEMO_SCHEMA;
  const s = quoteIdent(schema);
  const existing = await db('mvs_mviews').where({ table_schema: schema }).count({ n: '*' }).first();
  if (Number((existing as { n: number }).n) > 0) return { kind: 'resumed', schema };
  const any = await db('mvs_mviews').count({ n: '*' }).first();
  if (Number((any as { n: number }).n) > 0) return { kind: 'skipped', reason: 'the database already has materialized views' };
  try {
    await db.raw(`CREATE DATABASE IF NOT EXISTS ${s}`);
  } catch (err) {
    return { kind: 'skipped', reason: `cannot create database ${schema}: ${(err as { sqlMessage?: string }).sqlMessage ?? String(err)}` };
  }
  await db.raw(
    `CREATE TABLE IF NOT EXISTS ${s}.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, ` +
      'region VARCHAR(8) NULL, amount DECIMAL(10,2) NOT NULL, created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))',
  );
  const seeded = await db.raw(`SELECT COUNT(*) AS n FROM ${s}.orders`);
  if (Number((seeded as [Array<{ n: number }>])[0][0]!.n) === 0) {
    await db.withSchema(schema).table('orders').insert(Array.from({ length: 500 }, order));
  }
  const statements = [
    `CREATE MATERIALIZED VIEW LOG ON ${s}.orders (customer_id, region, amount) PURGE NEXT 60`,
    `CREATE MATERIALIZED VIEW ${s}.sales_by_region REFRESH FAST NEXT 5 AS ` +
      `SELECT region, COUNT(*) AS orders, SUM(amount) AS revenue, AVG(amount) AS avg_amount, MAX(amount) AS biggest FROM ${s}.orders GROUP BY region`,
    `CREATE MATERIALIZED VIEW ${s}.top_customers REFRESH COMPLETE NEXT 15 AS ` +
      `SELECT customer_id, COUNT(*) AS orders, SUM(amount) AS total FROM ${s}.orders GROUP BY customer_id`,
  ];
  for (const sql of statements) await ddl.execute(sql);
  return { kind: 'created', schema };
}

/** Adds an order or two every second, now and then changes or removes one. */
export class DemoWriter {
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(private readonly deps: DemoDeps & { everyMs?: number }) {}

  start(): void {
    const schema = this.deps.schema ?? DEFAULT_DEMO_SCHEMA;
    this.timer = setInterval(() => {
      if (this.busy) return;
      this.busy = true;
      this.tick(schema)
        .catch((err: unknown) => this.deps.logger.warn({ err }, 'demo writer'))
        .finally(() => (this.busy = false));
    }, this.deps.everyMs ?? 1_000);
  }

  private async tick(schema: string): Promise<void> {
    const t = () => this.deps.db.withSchema(schema).table('orders');
    await t().insert(Array.from({ length: 1 + Math.floor(Math.random() * 2) }, order));
    const r = Math.random();
    if (r < 0.2) {
      const [row] = (await t().orderByRaw('RAND()').limit(1).select('id')) as Array<{ id: number }>;
      if (row) await t().where({ id: row.id }).update({ region: pick(REGIONS), amount: (5 + Math.random() * 195).toFixed(2) });
    } else if (r < 0.3) {
      const [row] = (await t().orderBy('id').limit(1).select('id')) as Array<{ id: number }>;
      if (row) await t().where({ id: row.id }).delete();
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}

const ago = (d: Date | null) => (d ? `${Math.max(0, Math.round((Date.now() - d.getTime()) / 1000))}s ago` : 'never');

/** One line on how the demo is doing. */
export async function demoStatusLine(db: Knex, schema = DEFAULT_DEMO_SCHEMA): Promise<string> {
  const s = quoteIdent(schema);
  const [[orders]] = (await db.raw(`SELECT COUNT(*) AS n FROM ${s}.orders`)) as [[{ n: number }]];
  const [[log]] = (await db.raw(`SELECT COUNT(*) AS n FROM ${s}.\`mlog$orders\``)) as [[{ n: number }]];
  const mvs = (await db('mvs_mviews as m')
    .join('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id')
    .where('m.table_schema', schema)
    .orderBy('m.mview_name')
    .select('m.mview_name', 'ri.last_refresh_type', 'ri.last_refresh_result', 'ri.refresh_endtime', 'ri.refresh_count')) as Array<{
    mview_name: string;
    last_refresh_type: string | null;
    last_refresh_result: string | null;
    refresh_endtime: Date | null;
    refresh_count: number;
  }>;
  const parts = mvs.map(
    (m) => `${m.mview_name}: ${m.last_refresh_type ?? '-'} ${m.last_refresh_result ?? '-'} ${ago(m.refresh_endtime)} (${m.refresh_count} runs)`,
  );
  return `[demo] ${orders!.n} orders | ${parts.join(' | ')} | log ${log!.n} rows`;
}
