// Remember, per reported partition, the latest version whose report said the data changed. A
// repair whose lastVersion is ahead of an MV's map can then tell "an earlier compaction is still
// on its way" (wait for it) from "the data changed in between" (never applicable: drop it).

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  if (!(await knex.schema.hasColumn('mvs_base_partitions', 'data_version'))) {
    await knex.schema.alterTable('mvs_base_partitions', (t) => {
      t.bigInteger('data_version').notNullable().defaultTo(0);
    });
  }
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  if (await knex.schema.hasColumn('mvs_base_partitions', 'data_version')) {
    await knex.schema.alterTable('mvs_base_partitions', (t) => {
      t.dropColumn('data_version');
    });
  }
}
