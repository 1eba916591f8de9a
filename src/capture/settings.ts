import type { Executor } from '../mv/repository.js';

// What the server must have for capture from the binary log (DESIGN.md §2): a row-based binary
// log with full row images. Capture also needs full table-map metadata (column names in every
// table map): without it the reader takes column names from information_schema as they are now,
// not as they were when the row was written, so a renamed column or an ENUM value with a comma
// would be read wrong. Each problem is named with the setting that fixes it.

export interface BinlogSettings {
  logBin: boolean;
  format: string;
  rowImage: string;
  rowMetadata: string | null;
  mariadb: boolean;
  version: string;
}

export async function readBinlogSettings(db: Executor): Promise<BinlogSettings> {
  const [rows] = (await db.raw(
    'SELECT @@global.log_bin AS log_bin, @@global.binlog_format AS format, @@global.binlog_row_image AS row_image, @@version AS version',
  )) as [Array<{ log_bin: number | string; format: string; row_image: string; version: string }>];
  const r = rows[0]!;
  let rowMetadata: string | null = null;
  try {
    const [m] = (await db.raw('SELECT @@global.binlog_row_metadata AS m')) as [Array<{ m: string }>];
    rowMetadata = String(m[0]!.m);
  } catch {
    // A server too old to have it (MySQL < 8.0.1, MariaDB < 10.5).
  }
  return {
    logBin: Number(r.log_bin) === 1,
    format: String(r.format).toUpperCase(),
    rowImage: String(r.row_image).toUpperCase(),
    rowMetadata: rowMetadata?.toUpperCase() ?? null,
    mariadb: /mariadb/i.test(String(r.version)),
    version: String(r.version),
  };
}

/** What is missing for binlog capture, one line each; empty when nothing is. */
export function binlogSettingProblems(s: BinlogSettings): string[] {
  const out: string[] = [];
  if (!s.logBin) out.push('the binary log is off (start the server with log_bin)');
  if (s.logBin && s.format !== 'ROW') out.push(`binlog_format is ${s.format}, must be ROW`);
  if (s.logBin && s.rowImage !== 'FULL') out.push(`binlog_row_image is ${s.rowImage}, must be FULL`);
  if (s.logBin && s.rowMetadata !== 'FULL') {
    out.push(
      s.rowMetadata === null
        ? `the server (${s.version}) has no binlog_row_metadata; capture needs MySQL 8.0 or MariaDB 10.5 and later`
        : `binlog_row_metadata is ${s.rowMetadata}, must be FULL`,
    );
  }
  return out;
}

/**
 * The global privileges of the user mvsched connects as (and of its current role), from
 * information_schema.USER_PRIVILEGES (ALL PRIVILEGES is listed privilege by privilege there).
 */
export async function readGlobalPrivileges(db: Executor): Promise<{ user: string; privileges: Set<string> }> {
  const [[who]] = (await db.raw('SELECT CURRENT_USER() AS u, CURRENT_ROLE() AS r')) as [Array<{ u: string; r: string | null }>];
  const at = who!.u.lastIndexOf('@');
  const user = at < 0 ? who!.u : who!.u.slice(0, at);
  const host = at < 0 ? '%' : who!.u.slice(at + 1);
  const grantees = [`'${user}'@'${host}'`];
  // MariaDB names a role grantee without a host; MySQL reports roles as `r`@`%` lists or NONE.
  if (who!.r && who!.r !== 'NONE') grantees.push(...who!.r.split(',').map((r) => (r.includes('@') ? r.replace(/`/g, "'") : `'${r}'`)));
  const [rows] = (await db.raw(`SELECT PRIVILEGE_TYPE AS p FROM information_schema.USER_PRIVILEGES WHERE GRANTEE IN (${grantees.map(() => '?').join(', ')})`, grantees)) as [
    Array<{ p: string }>,
  ];
  return { user: `'${user}'@'${host}'`, privileges: new Set(rows.map((r) => String(r.p).toUpperCase())) };
}

/**
 * What capture's user lacks to read the binary log: REPLICATION SLAVE (the binlog stream) and
 * BINLOG MONITOR, which MySQL and MariaDB before 10.5 call REPLICATION CLIENT (positions and
 * files: where capture starts, how far behind it is). One line each; empty when nothing is.
 */
export function privilegeProblems(user: string, privileges: Set<string>, mariadb: boolean): string[] {
  const out: string[] = [];
  if (!privileges.has('REPLICATION SLAVE')) out.push(`user ${user} lacks the REPLICATION SLAVE privilege (to read the binary log)`);
  if (!privileges.has('BINLOG MONITOR') && !privileges.has('REPLICATION CLIENT')) {
    out.push(`user ${user} lacks the ${mariadb ? 'BINLOG MONITOR (REPLICATION CLIENT)' : 'REPLICATION CLIENT'} privilege (to read binary-log positions)`);
  }
  return out;
}

/** Everything that keeps binlog capture from working on this server for this user; empty when nothing does. */
export async function binlogCaptureProblems(db: Executor): Promise<string[]> {
  const settings = await readBinlogSettings(db);
  const { user, privileges } = await readGlobalPrivileges(db);
  return [...binlogSettingProblems(settings), ...privilegeProblems(user, privileges, settings.mariadb)];
}
