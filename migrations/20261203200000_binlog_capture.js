// Change capture from the binary log (DESIGN.md §2): which logs are filled by `mvsched capture`
// instead of triggers, the state a log is in (capture marks it BROKEN when it cannot have seen
// every change), and the capture process's own position, stored in the same transaction as the
// log rows it writes so a restart neither loses nor repeats a row.

/** @param {import('knex').Knex} knex */
async function addColumnIfMissing(knex, table, column, add) {
  if (!(await knex.schema.hasColumn(table, column))) await knex.schema.alterTable(table, add);
}

/**
 * Where capture starts on its first run: the binary log's position now, before any BINLOG log
 * can exist, so it sees the creation of every one of them. NULL when the server has no binary
 * log (capture then starts from wherever the server is when it first runs).
 * @param {import('knex').Knex} knex
 */
async function currentPosition(knex) {
  const [[vars]] = await knex.raw('SELECT @@global.log_bin AS log_bin, @@version AS version');
  if (!vars || Number(vars.log_bin) !== 1) return { gtid_pos: null, binlog_file: null, binlog_pos: null };
  const mariadb = /mariadb/i.test(String(vars.version));
  const [[g]] = await knex.raw(mariadb ? 'SELECT @@global.gtid_binlog_pos AS p' : 'SELECT @@global.gtid_executed AS p');
  let file = null;
  let pos = null;
  try {
    const [rows] = await knex.raw('SHOW MASTER STATUS').catch(() => knex.raw('SHOW BINARY LOG STATUS')); // renamed in MySQL 8.4
    if (rows[0]) {
      file = rows[0].File;
      pos = rows[0].Position;
    }
  } catch {
    // Without BINLOG MONITOR / REPLICATION CLIENT the GTID alone is enough to start from.
  }
  return { gtid_pos: String(g.p ?? '').replace(/\s/g, ''), binlog_file: file, binlog_pos: pos };
}

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await addColumnIfMissing(knex, 'mvs_mlogs', 'capture_mode', (t) => {
    t.string('capture_mode', 16).notNullable().defaultTo('TRIGGERS'); // TRIGGERS | BINLOG
  });
  // The lead's drift work adds the same two columns; whichever migration runs first adds them.
  await addColumnIfMissing(knex, 'mvs_mlogs', 'state', (t) => {
    t.string('state', 16).notNullable().defaultTo('OK'); // OK | BROKEN
  });
  await addColumnIfMissing(knex, 'mvs_mlogs', 'broken_reason', (t) => {
    t.text('broken_reason').nullable();
  });
  if (!(await knex.schema.hasTable('mvs_capture_position'))) {
    await knex.schema.createTable('mvs_capture_position', (t) => {
      t.charset('utf8mb4');
      t.collate('utf8mb4_bin');
      t.tinyint('id').unsigned().primary(); // always 1: one capture position per deployment
      t.text('gtid_pos').nullable(); // MariaDB domain-server-seq list, or a MySQL GTID set
      t.string('binlog_file', 255).nullable();
      t.bigInteger('binlog_pos').unsigned().nullable();
      t.text('active_mlogs').notNullable(); // JSON array of the BINLOG log ids captured at this position
      t.bigInteger('epoch').unsigned().notNullable().defaultTo(0); // fences out a capture that lost its lease
      t.string('owner', 128).nullable();
      t.bigInteger('owner_conn').unsigned().nullable(); // connection of the last commit: a takeover kills it if it hangs on
      t.datetime('event_time', { precision: 3 }).nullable(); // commit time of the last transaction read
      t.datetime('updated_at', { precision: 6 }).notNullable();
    });
  }
  const [existing] = await knex('mvs_capture_position').where({ id: 1 }).select('id');
  if (!existing) {
    await knex('mvs_capture_position').insert({ id: 1, ...(await currentPosition(knex)), active_mlogs: '[]', updated_at: knex.fn.now(6) });
  }
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.dropTableIfExists('mvs_capture_position');
  for (const column of ['capture_mode', 'state', 'broken_reason']) {
    if (await knex.schema.hasColumn('mvs_mlogs', column)) {
      await knex.schema.alterTable('mvs_mlogs', (t) => {
        t.dropColumn(column);
      });
    }
  }
}
