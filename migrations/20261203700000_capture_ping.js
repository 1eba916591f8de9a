// The cut of a BINLOG log waits until capture's stored position passes the binlog position of its
// snapshot. Capture stores a position moved only by other tables' transactions, not by its own
// commits (that would never end), so when the last transaction before a snapshot is capture's
// own commit, nothing would move it on. The waiting refresh then writes this one row: a
// transaction of another table, which capture reads and stores a position past it for.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  if (!(await knex.schema.hasTable('mvs_capture_ping'))) {
    await knex.schema.createTable('mvs_capture_ping', (t) => {
      t.charset('utf8mb4');
      t.collate('utf8mb4_bin');
      t.tinyint('id').unsigned().primary(); // always 1
      t.bigInteger('pings').unsigned().notNullable().defaultTo(0);
    });
  }
  const [row] = await knex('mvs_capture_ping').where({ id: 1 }).select('id');
  if (!row) await knex('mvs_capture_ping').insert({ id: 1, pings: 0 });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.dropTableIfExists('mvs_capture_ping');
}
