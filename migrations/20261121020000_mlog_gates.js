// One row per MV log: the gate that gives a refresh a consistent cut of the log. The log's
// triggers take a shared lock on it in the writer's transaction; a refresh takes it exclusively
// for an instant, which waits for every writer transaction in flight and reads the high-water
// mark when none is (auto-increment order is not commit order; DESIGN.md §2 MV logs).
// A table of its own so that no metadata write ever waits on a writer's shared lock.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  if (await knex.schema.hasTable('mvs_mlog_gates')) return;
  await knex.schema.createTable('mvs_mlog_gates', (t) => {
    t.charset('utf8mb4');
    t.collate('utf8mb4_bin');
    t.bigInteger('mlog_id').unsigned().primary();
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.dropTableIfExists('mvs_mlog_gates');
}
