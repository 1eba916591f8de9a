// Data time, lag and history (DESIGN.md §2 "Data time and lag", "History and retention"):
// - every SUCCESS / SKIPPED run records the MV's data_time: the database time of the snapshot its
//   contents reflect (the cut for FAST and log-backed COMPLETE builds, the start of the read
//   otherwise, the check time of a SKIPPED run); refresh-info keeps the MV's current one;
// - history rows record rows inserted and deleted, and for FAST runs the log range consumed;
// - a PURGE IMMEDIATE that removes nothing is counted in purge-info instead of writing a row;
// - the edit log is trimmed by age: an index on its creation time.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  const addColumns = async (table, columns) => {
    const missing = [];
    for (const [name, build] of columns) if (!(await knex.schema.hasColumn(table, name))) missing.push(build);
    if (missing.length) await knex.schema.alterTable(table, (t) => missing.forEach((build) => build(t)));
  };
  await addColumns('mvs_mview_refresh_hist', [
    ['data_time', (t) => t.datetime('data_time', { precision: 3 }).nullable()],
    ['rows_inserted', (t) => t.bigInteger('rows_inserted').nullable()],
    ['rows_deleted', (t) => t.bigInteger('rows_deleted').nullable()],
    ['watermark_from', (t) => t.bigInteger('watermark_from').unsigned().nullable()],
    ['watermark_to', (t) => t.bigInteger('watermark_to').unsigned().nullable()],
  ]);
  await addColumns('mvs_mview_refresh_info', [['data_time', (t) => t.datetime('data_time', { precision: 3 }).nullable()]]);
  await addColumns('mvs_mlog_purge_info', [
    ['empty_immediate_purges', (t) => t.bigInteger('empty_immediate_purges').unsigned().notNullable().defaultTo(0)],
  ]);
  const [idx] = await knex.raw("SHOW INDEX FROM mvs_edit_log WHERE Key_name = 'idx_edit_log_created'");
  if (idx.length === 0) await knex.schema.alterTable('mvs_edit_log', (t) => t.index(['created_at'], 'idx_edit_log_created'));
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  const dropColumns = async (table, names) => {
    const present = [];
    for (const n of names) if (await knex.schema.hasColumn(table, n)) present.push(n);
    if (present.length) await knex.schema.alterTable(table, (t) => t.dropColumns(...present));
  };
  const [idx] = await knex.raw("SHOW INDEX FROM mvs_edit_log WHERE Key_name = 'idx_edit_log_created'");
  if (idx.length) await knex.schema.alterTable('mvs_edit_log', (t) => t.dropIndex(['created_at'], 'idx_edit_log_created'));
  await dropColumns('mvs_mlog_purge_info', ['empty_immediate_purges']);
  await dropColumns('mvs_mview_refresh_info', ['data_time']);
  await dropColumns('mvs_mview_refresh_hist', ['data_time', 'rows_inserted', 'rows_deleted', 'watermark_from', 'watermark_to']);
}
