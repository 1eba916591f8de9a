// mvsched metadata schema (DESIGN.md §3). Column names follow TiDB's mysql.tidb_mview* tables
// where TiDB has one, in snake_case. No foreign keys: TiDB and online schema tools dislike them,
// and every write that spans tables happens in one transaction in the application.
// Times: DATETIME(3) in UTC; version times (StarRocks semantics) are epoch milliseconds.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  // MySQL DDL is not transactional: a failure half-way leaves the tables made so far, so each
  // step skips a table that exists and a re-run picks up where the failed one stopped.
  const createTable = async (name, build) => {
    if (await knex.schema.hasTable(name)) return;
    await knex.schema.createTable(name, (t) => {
      // Schema and table names are case-sensitive on Linux: compare them as bytes, like TiDB.
      t.charset('utf8mb4');
      t.collate('utf8mb4_bin');
      build(t);
    });
  };

  await createTable('mvs_mviews', (t) => {
    t.bigIncrements('mview_id');
    t.string('table_schema', 64).notNullable();
    t.string('mview_name', 64).notNullable();
    t.text('mview_definition', 'longtext').notNullable();
    t.string('refresh_method', 16).notNullable().defaultTo('COMPLETE'); // FAST | COMPLETE | FORCE
    t.datetime('refresh_start', { precision: 3 }).nullable(); // START WITH, evaluated, UTC
    t.integer('refresh_interval').unsigned().nullable(); // NEXT, whole seconds
    t.string('status', 16).notNullable().defaultTo('ACTIVE'); // ACTIVE | SUSPENDED
    t.boolean('fast_refreshable').notNullable().defaultTo(false);
    t.string('fast_reason', 1024).nullable(); // why FAST is not possible
    // Compare-and-set fence for repairs of the version map (Redlock gives no fencing token).
    t.bigInteger('meta_version').unsigned().notNullable().defaultTo(0);
    t.bigInteger('version_refresh_time').nullable(); // epoch ms, max repaired newVersionTime
    t.datetime('created_at', { precision: 3 }).notNullable();
    t.datetime('mview_modify_time', { precision: 3 }).notNullable();
    t.unique(['table_schema', 'mview_name'], { indexName: 'uniq_mview_name' });
  });

  await createTable('mvs_mview_refresh_info', (t) => {
    t.bigInteger('mview_id').unsigned().primary(); // also the per-MV refresh lock row
    t.string('refresh_job_id', 128).nullable();
    t.string('refresh_method', 16).nullable(); // method of the last run
    t.string('refresh_status', 16).nullable(); // RUNNING while a run holds the lock
    t.datetime('refresh_time', { precision: 3 }).nullable(); // start of the last run
    t.datetime('refresh_endtime', { precision: 3 }).nullable(); // end of the last run
    t.string('last_refresh_result', 16).nullable(); // SUCCESS | FAILED | SKIPPED
    t.string('last_refresh_type', 16).nullable(); // COMPLETE | FAST
    t.string('last_refresh_trigger', 16).nullable(); // SCHEDULED | MANUAL | REQUEST
    t.datetime('last_success_endtime', { precision: 3 }).nullable();
    t.text('last_failed_reason').nullable();
    t.integer('consecutive_failures').unsigned().notNullable().defaultTo(0);
    t.bigInteger('refresh_count').unsigned().notNullable().defaultTo(0);
    t.datetime('next_time', { precision: 3 }).nullable();
    // Lets the planner read only what changed since its last pass.
    t.datetime('updated_at', { precision: 6 }).notNullable();
    t.index(['next_time'], 'idx_refresh_next_time');
    t.index(['updated_at'], 'idx_refresh_updated_at');
  });

  await createTable('mvs_mview_refresh_hist', (t) => {
    t.bigIncrements('refresh_id');
    t.bigInteger('mview_id').unsigned().notNullable();
    t.string('refresh_job_id', 128).nullable();
    t.string('refresh_method', 16).notNullable(); // COMPLETE | FAST
    t.string('refresh_trigger', 16).notNullable(); // SCHEDULED | MANUAL | REQUEST
    t.string('refresh_status', 16).notNullable(); // RUNNING | SUCCESS | FAILED | SKIPPED
    t.string('node_id', 128).nullable();
    t.datetime('scheduled_time', { precision: 3 }).nullable();
    t.datetime('start_time', { precision: 3 }).notNullable();
    t.datetime('end_time', { precision: 3 }).nullable();
    t.bigInteger('rows_changed').nullable();
    t.text('failed_reason').nullable();
    t.index(['mview_id', 'refresh_id'], 'idx_refresh_hist_mview');
    t.index(['start_time'], 'idx_refresh_hist_start');
    t.index(['refresh_status'], 'idx_refresh_hist_status');
  });

  await createTable('mvs_mlogs', (t) => {
    t.bigIncrements('mlog_id');
    t.string('table_schema', 64).notNullable(); // base table's schema
    t.string('base_table_name', 64).notNullable();
    t.string('mlog_name', 64).notNullable(); // mlog$<table>
    t.text('mlog_columns').notNullable(); // JSON array of tracked columns
    t.text('pk_columns').notNullable(); // JSON array of the base table's primary key
    t.string('purge_method', 16).notNullable().defaultTo('MANUAL'); // IMMEDIATE | SCHEDULED | MANUAL
    t.datetime('purge_start', { precision: 3 }).nullable();
    t.integer('purge_interval').unsigned().nullable();
    t.datetime('created_at', { precision: 3 }).notNullable();
    t.datetime('mlog_modify_time', { precision: 3 }).notNullable();
    t.unique(['table_schema', 'base_table_name'], { indexName: 'uniq_mlog_base_table' });
  });

  await createTable('mvs_mlog_purge_info', (t) => {
    t.bigInteger('mlog_id').unsigned().primary(); // also the per-log purge lock row
    t.string('purge_job_id', 128).nullable();
    t.string('purge_method', 16).nullable();
    t.string('purge_status', 16).nullable();
    t.datetime('purge_time', { precision: 3 }).nullable();
    t.datetime('purge_endtime', { precision: 3 }).nullable();
    t.bigInteger('purge_rows').unsigned().notNullable().defaultTo(0);
    t.bigInteger('purge_watermark').unsigned().notNullable().defaultTo(0);
    t.integer('purge_duration_ms').unsigned().nullable();
    t.string('last_purge_result', 16).nullable();
    t.text('last_failed_reason').nullable();
    t.integer('consecutive_failures').unsigned().notNullable().defaultTo(0);
    t.datetime('next_time', { precision: 3 }).nullable();
    t.datetime('updated_at', { precision: 6 }).notNullable();
    t.index(['next_time'], 'idx_purge_next_time');
    t.index(['updated_at'], 'idx_purge_updated_at');
  });

  await createTable('mvs_mlog_purge_hist', (t) => {
    t.bigIncrements('purge_id');
    t.bigInteger('mlog_id').unsigned().notNullable();
    t.string('purge_job_id', 128).nullable();
    t.string('purge_trigger', 16).notNullable(); // SCHEDULED | IMMEDIATE | MANUAL | REQUEST
    t.string('purge_status', 16).notNullable(); // RUNNING | SUCCESS | FAILED
    t.string('node_id', 128).nullable();
    t.datetime('start_time', { precision: 3 }).notNullable();
    t.datetime('end_time', { precision: 3 }).nullable();
    t.bigInteger('purge_rows').unsigned().nullable();
    t.bigInteger('purge_watermark').unsigned().nullable();
    t.text('failed_reason').nullable();
    t.index(['mlog_id', 'purge_id'], 'idx_purge_hist_mlog');
    t.index(['start_time'], 'idx_purge_hist_start');
  });

  // One row per (MV, base table): the dependency, and for FAST MVs the log watermark consumed.
  await createTable('mvs_mview_base_tables', (t) => {
    t.bigInteger('mview_id').unsigned().notNullable();
    t.string('base_table_schema', 64).notNullable();
    t.string('base_table_name', 64).notNullable();
    t.bigInteger('mlog_id').unsigned().nullable(); // set while the MV consumes the table's log
    t.bigInteger('consumed_watermark').unsigned().notNullable().defaultTo(0);
    t.string('base_table_ident', 255).nullable(); // external table identifier (StarRocks)
    t.primary(['mview_id', 'base_table_schema', 'base_table_name']);
    t.index(['base_table_schema', 'base_table_name'], 'idx_base_tables_table');
    t.index(['mlog_id'], 'idx_base_tables_mlog');
  });

  // Latest reported version of each partition of a versioned base table.
  await createTable('mvs_base_partitions', (t) => {
    t.string('base_table_schema', 64).notNullable();
    t.string('base_table_name', 64).notNullable();
    t.string('partition_name', 255).notNullable();
    t.bigInteger('partition_id').notNullable();
    t.bigInteger('version').notNullable();
    t.bigInteger('version_time').notNullable(); // epoch ms
    t.string('base_table_ident', 255).nullable();
    t.datetime('updated_at', { precision: 3 }).notNullable();
    t.primary(['base_table_schema', 'base_table_name', 'partition_name']);
  });

  // What each MV read: base table -> partition -> version (StarRocks' version map).
  await createTable('mvs_mview_version_map', (t) => {
    t.bigInteger('mview_id').unsigned().notNullable();
    t.string('base_table_schema', 64).notNullable();
    t.string('base_table_name', 64).notNullable();
    t.string('partition_name', 255).notNullable();
    t.bigInteger('partition_id').notNullable();
    t.bigInteger('version').notNullable();
    t.bigInteger('last_refresh_time').notNullable(); // epoch ms (partition's versionTime)
    t.bigInteger('ext_last_file_modified_time').notNullable().defaultTo(-1);
    t.bigInteger('file_number').notNullable().defaultTo(-1);
    t.primary(['mview_id', 'base_table_schema', 'base_table_name', 'partition_name']);
    t.index(['base_table_schema', 'base_table_name'], 'idx_version_map_table');
  });

  await createTable('mvs_edit_log', (t) => {
    t.bigIncrements('id');
    t.bigInteger('mview_id').unsigned().nullable();
    t.string('op_type', 32).notNullable();
    t.text('payload', 'longtext').notNullable(); // JSON
    t.datetime('created_at', { precision: 3 }).notNullable();
    t.index(['mview_id', 'id'], 'idx_edit_log_mview');
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  for (const table of [
    'mvs_edit_log',
    'mvs_mview_version_map',
    'mvs_base_partitions',
    'mvs_mview_base_tables',
    'mvs_mlog_purge_hist',
    'mvs_mlog_purge_info',
    'mvs_mlogs',
    'mvs_mview_refresh_hist',
    'mvs_mview_refresh_info',
    'mvs_mviews',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
}
