import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMariadb } from '../../scripts/localServers.mjs';
import { createRunners } from '../../src/app/runtime.js';
import { systemClock } from '../../src/clock.js';
import { createDb, parseDatabaseUrl, type Db } from '../../src/db/connect.js';
import { migrateLatest } from '../../src/db/migrate.js';
import { DdlExecutor } from '../../src/ddl/executor.js';
import { ValidationError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { snapshot } from '../support/snapshot.js';

// Set-ups on which binlog capture cannot work are refused by CREATE MATERIALIZED VIEW LOG ...
// USING BINLOG with the reason, before anything is written (DESIGN.md §2): the binary log off,
// STATEMENT format, MINIMAL row images, table maps without column names, and a user without the
// replication privileges. On MariaDB servers of their own: one started without the binary log,
// and one whose global binlog settings these tests change (the shared server's capture-based
// tests must not see them).

interface Server {
  url: string;
  stop(): Promise<void>;
}
const logger = createLogger({ level: 'silent' });
const baseDir = join(tmpdir(), `mvsched-binlog-setup-${process.pid}`);
let noBinlog: Server;
let withBinlog: Server;
const pools: Db[] = [];

beforeAll(async () => {
  [noBinlog, withBinlog] = await Promise.all([startMariadb({ baseDir, binlog: false }), startMariadb({ baseDir })]);
  for (const s of [noBinlog, withBinlog]) {
    const db = open(s.url);
    await migrateLatest(db);
    await db.raw('CREATE TABLE t (id INT PRIMARY KEY, a INT, b INT)');
  }
}, 180_000);

afterAll(async () => {
  await Promise.allSettled(pools.map((p) => p.destroy()));
  await Promise.allSettled([noBinlog?.stop(), withBinlog?.stop()]);
});

function open(url: string): Db {
  const db = createDb(url, { poolMax: 4 });
  pools.push(db);
  return db;
}

function ddlFor(db: Db, url: string): DdlExecutor {
  const runners = createRunners({ db, logger, clock: systemClock, purgeBatch: 1000 }, 'test-node');
  return new DdlExecutor({ db, logger, clock: systemClock, ...runners, defaultSchema: parseDatabaseUrl(url).database, ddlWaitMs: 2000, notify: async () => {} });
}

/** CREATE ... USING BINLOG fails with a ValidationError whose message matches `reason`, and changes nothing. */
async function expectRefused(db: Db, url: string, reason: RegExp): Promise<string> {
  const database = parseDatabaseUrl(url).database;
  const before = await snapshot(db, database);
  const err = await ddlFor(db, url)
    .execute('CREATE MATERIALIZED VIEW LOG ON t (a, b) USING BINLOG')
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ValidationError);
  const message = (err as Error).message;
  expect(message).toMatch(/^cannot create a materialized view log USING BINLOG on \S+\.t: /);
  expect(message).toMatch(reason);
  expect(message).toMatch(/\(or use USING TRIGGERS, the default\)$/);
  expect(await snapshot(db, database)).toEqual(before);
  return message;
}

describe('CREATE MATERIALIZED VIEW LOG ... USING BINLOG on a server that cannot feed capture', () => {
  it('binary log off: refused with the reason, nothing written; a trigger log is still fine there', async () => {
    const db = open(noBinlog.url);
    const message = await expectRefused(db, noBinlog.url, /the binary log is off \(start the server with log_bin\)/);
    // Nothing else is blamed on a server without a binary log: its binlog settings do not apply.
    expect(message).not.toMatch(/binlog_format|binlog_row_image|privilege/);
    const res = await ddlFor(db, noBinlog.url).execute('CREATE MATERIALIZED VIEW LOG ON t (a, b)');
    expect(res.message).toMatch(/created materialized view log/);
    await ddlFor(db, noBinlog.url).execute('DROP MATERIALIZED VIEW LOG ON t');
  });

  // Each: the global setting changed, CREATE refused naming it, the setting put back.
  const settings: Array<[string, string, RegExp]> = [
    ['binlog_format', 'STATEMENT', /binlog_format is STATEMENT, must be ROW/],
    ['binlog_format', 'MIXED', /binlog_format is MIXED, must be ROW/],
    ['binlog_row_image', 'MINIMAL', /binlog_row_image is MINIMAL, must be FULL/],
    ['binlog_row_image', 'NOBLOB', /binlog_row_image is NOBLOB, must be FULL/],
    ['binlog_row_metadata', 'MINIMAL', /binlog_row_metadata is MINIMAL, must be FULL/],
  ];
  for (const [name, value, reason] of settings) {
    it(`${name} = ${value}: refused with the reason, nothing written`, async () => {
      const db = open(withBinlog.url);
      const [[was]] = (await db.raw(`SELECT @@global.${name} AS v`)) as [Array<{ v: string }>];
      await db.raw(`SET GLOBAL ${name} = ?`, [value]);
      try {
        const message = await expectRefused(db, withBinlog.url, reason);
        expect(message.split('; ')).toHaveLength(1); // only what is wrong is named
      } finally {
        await db.raw(`SET GLOBAL ${name} = ?`, [was!.v]);
      }
    });
  }

  it('a user without REPLICATION SLAVE or BINLOG MONITOR: refused naming each missing privilege; granted them, the same statement works', async () => {
    const admin = open(withBinlog.url);
    const { database } = parseDatabaseUrl(withBinlog.url);
    await admin.raw("CREATE USER 'capless'@'%' IDENTIFIED BY 'capless'");
    await admin.raw(`GRANT ALL PRIVILEGES ON \`${database}\`.* TO 'capless'@'%'`);
    const u = new URL(withBinlog.url);
    u.username = 'capless';
    u.password = 'capless';
    const url = u.toString();
    const db = open(url);

    const both = await expectRefused(db, url, /user 'capless'@'%' lacks the REPLICATION SLAVE privilege \(to read the binary log\)/);
    expect(both).toMatch(/user 'capless'@'%' lacks the BINLOG MONITOR \(REPLICATION CLIENT\) privilege \(to read binary-log positions\)/);

    await admin.raw("GRANT REPLICATION SLAVE ON *.* TO 'capless'@'%'");
    const one = await expectRefused(db, url, /lacks the BINLOG MONITOR \(REPLICATION CLIENT\) privilege/);
    expect(one).not.toMatch(/REPLICATION SLAVE/);

    await admin.raw("GRANT BINLOG MONITOR ON *.* TO 'capless'@'%'");
    const res = await ddlFor(db, url).execute('CREATE MATERIALIZED VIEW LOG ON t (a, b) USING BINLOG');
    expect(res.message).toMatch(/filled from the binary log by mvsched capture/);
    expect(await db('mvs_mlogs').where({ base_table_name: 't' }).first('capture_mode', 'state')).toEqual({ capture_mode: 'BINLOG', state: 'OK' });
  });
});
