import type { Knex } from 'knex';

export type ServerFlavor = 'mariadb' | 'mysql';

const known = new WeakMap<Knex, Promise<ServerFlavor>>();

/**
 * MariaDB or MySQL (TiDB answers like MySQL): the two differ in the session variables that bound
 * what mvsched holds on the server (idle_transaction_timeout, max_statement_time). Asked once
 * per knex instance.
 */
export function serverFlavor(db: Knex): Promise<ServerFlavor> {
  let p = known.get(db);
  if (!p) {
    p = (async () => {
      const [rows] = (await db.raw('SELECT VERSION() AS v')) as [Array<{ v: string }>];
      return /mariadb/i.test(String(rows[0]?.v)) ? 'mariadb' : 'mysql';
    })();
    p.catch(() => known.delete(db));
    known.set(db, p);
  }
  return p;
}
