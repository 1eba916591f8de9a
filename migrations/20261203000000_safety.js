// Safety (DESIGN.md §2 "Changes made behind mvsched's back"):
// - an MV log can be BROKEN (its base table was dropped, re-created, renamed, or a tracked column
//   went), with the reason; a broken log has no triggers and must be re-created;
// - the identity of a logged base table (InnoDB table id, else its create time), as the log saw it
//   at creation and as each MV's contents last reflected it: a TRUNCATE or a rebuild moves it
//   without any log row, and forces a complete refresh of the MVs that read the table;
// - consecutive consistent cuts that gave up waiting for writers (MVS_CUT_WAIT_MS), and when a
//   FORCE MV may try one again (it refreshes COMPLETE without a cut until then).
// The triggers of existing logs keep their shape, so they are left as they are.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  const addColumns = async (table, columns) => {
    const missing = [];
    for (const [name, build] of columns) if (!(await knex.schema.hasColumn(table, name))) missing.push(build);
    if (missing.length) await knex.schema.alterTable(table, (t) => missing.forEach((build) => build(t)));
  };
  await addColumns('mvs_mlogs', [
    ['state', (t) => t.string('state', 16).notNullable().defaultTo('OK')], // OK | BROKEN
    ['broken_reason', (t) => t.text('broken_reason').nullable()],
    ['broken_at', (t) => t.datetime('broken_at', { precision: 3 }).nullable()],
    ['base_table_id', (t) => t.bigInteger('base_table_id').nullable()],
    ['base_create_time', (t) => t.datetime('base_create_time').nullable()],
  ]);
  await addColumns('mvs_mview_base_tables', [
    // The base table's identity when the MV last read all of it (its last complete refresh).
    ['base_table_id', (t) => t.bigInteger('base_table_id').nullable()],
  ]);
  await addColumns('mvs_mview_refresh_info', [
    ['cut_timeouts', (t) => t.integer('cut_timeouts').unsigned().notNullable().defaultTo(0)],
    ['cut_retry_after', (t) => t.datetime('cut_retry_after', { precision: 3 }).nullable()],
  ]);
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  const dropColumns = async (table, names) => {
    const present = [];
    for (const n of names) if (await knex.schema.hasColumn(table, n)) present.push(n);
    if (present.length) await knex.schema.alterTable(table, (t) => t.dropColumns(...present));
  };
  await dropColumns('mvs_mview_refresh_info', ['cut_timeouts', 'cut_retry_after']);
  await dropColumns('mvs_mview_base_tables', ['base_table_id']);
  await dropColumns('mvs_mlogs', ['state', 'broken_reason', 'broken_at', 'base_table_id', 'base_create_time']);
}
