// Pipelines (DESIGN.md §2 "Pipelines: MVs over MVs, and target lag"):
// - an MV's target lag instead of a START WITH / NEXT grid: `target_lag` seconds (n >= 1), or
//   `target_downstream` for TARGET LAG DOWNSTREAM (refreshed only when an MV that reads it needs
//   it); both unset: a grid or manual refresh, as before;
// - why a target cannot be met right now (null when it is met), written by the leading planner;
// - dependencies need no table of their own: an MV that reads another MV already has a row in
//   mvs_mview_base_tables naming it (schema, name), which the unique key of mvs_mviews resolves.
// Refresh history's trigger may now be UPSTREAM (a run made for a downstream MV's target lag or
// a REFRESH ... CASCADE); the column is wide enough already.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  const addColumns = async (table, columns) => {
    const missing = [];
    for (const [name, build] of columns) if (!(await knex.schema.hasColumn(table, name))) missing.push(build);
    if (missing.length) await knex.schema.alterTable(table, (t) => missing.forEach((build) => build(t)));
  };
  await addColumns('mvs_mviews', [
    ['target_lag', (t) => t.integer('target_lag').unsigned().nullable()],
    ['target_downstream', (t) => t.boolean('target_downstream').notNullable().defaultTo(false)],
  ]);
  await addColumns('mvs_mview_refresh_info', [['target_unmet_reason', (t) => t.text('target_unmet_reason').nullable()]]);
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  const dropColumns = async (table, names) => {
    const present = [];
    for (const n of names) if (await knex.schema.hasColumn(table, n)) present.push(n);
    if (present.length) await knex.schema.alterTable(table, (t) => t.dropColumns(...present));
  };
  await dropColumns('mvs_mview_refresh_info', ['target_unmet_reason']);
  await dropColumns('mvs_mviews', ['target_lag', 'target_downstream']);
}
