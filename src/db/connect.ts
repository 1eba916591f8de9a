import knexFactory, { type Knex } from 'knex';
import { ConfigError } from '../errors.js';

export type Db = Knex;

export interface DbOptions {
  poolMin?: number;
  poolMax?: number;
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
