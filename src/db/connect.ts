import knexFactory, { type Knex } from 'knex';
import { ConfigError } from '../errors.js';
import type { Logger } from '../log.js';

export type Db = Knex;

export interface DbOptions {
  poolMin?: number;
  poolMax?: number;
  /** Where knex's own warnings go (a connection the server closed, ...); else knex prints them. */
  logger?: Logger;
}

export interface MysqlConnection {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** Split mysql://user:pass@host:port/db into mysql2 connection options. */
export function parseDatabaseUrl(url: string): MysqlConnection {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError('invalid DATABASE_URL: not a URL', { variable: 'DATABASE_URL' });
  }
  const database = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (!database) {
    throw new ConfigError('invalid DATABASE_URL: no database name', { variable: 'DATABASE_URL' });
  }
  return {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 3306,
    user: decodeURIComponent(u.username || 'root'),
    password: decodeURIComponent(u.password),
    database,
  };
}

/** Knex config shared by the app and the project's knexfile. */
export function knexConfig(url: string, opts: DbOptions = {}): Knex.Config {
  const conn = parseDatabaseUrl(url);
  return {
    client: 'mysql2',
    connection: {
      ...conn,
      // All times are UTC end to end: the session and the driver agree, so DATETIME values
      // round-trip as the same instant whatever the host's zone.
      timezone: 'Z',
      supportBigNumbers: true,
      bigNumberStrings: false,
      charset: 'utf8mb4',
      multipleStatements: false,
    },
    pool: {
      min: opts.poolMin ?? 0,
      max: opts.poolMax ?? 10,
      afterCreate(raw: { query: (sql: string, cb: (err: Error | null) => void) => void }, done: (err: Error | null, c: unknown) => void) {
        raw.query("SET time_zone = '+00:00'", (err) => done(err, raw));
      },
    },
    migrations: migrationsConfig(),
    ...(opts.logger ? { log: knexLog(opts.logger) } : {}),
  };
}

/** knex's messages as structured log lines. */
function knexLog(logger: Logger): Knex.Logger {
  const log = logger.child({ component: 'knex' });
  const text = (m: unknown) => (m instanceof Error ? m.message : String(m));
  return {
    warn: (m: unknown) => log.warn(text(m)),
    error: (m: unknown) => log.error(text(m)),
    deprecate: (method: string, alternative: string) => log.warn({ method, alternative }, 'deprecated knex call'),
    debug: (m: unknown) => log.debug(text(m)),
  };
}

export function migrationsConfig(): Knex.MigratorConfig {
  return {
    directory: new URL('../../migrations', import.meta.url).pathname,
    tableName: 'mvs_knex_migrations',
    loadExtensions: ['.js'],
  };
}

export function createDb(url: string, opts: DbOptions = {}): Db {
  return knexFactory(knexConfig(url, opts));
}

/** The database a knex instance connects to (DATABASE_URL's): the schema of unqualified names. */
export function connectionDatabase(db: Knex): string {
  const conn = db.client.config.connection as { database?: string };
  if (!conn?.database) throw new ConfigError('the database connection names no database', { variable: 'DATABASE_URL' });
  return conn.database;
}
