// Lets `npx knex migrate:latest` run the same migrations as `npx mvsched migrate`.
// Kept in plain JS so the knex CLI can load it without a TypeScript loader.
const url = process.env.DATABASE_URL;
if (!url) {
  throw new Error('missing DATABASE_URL: set it to mysql://user:password@host:3306/database');
}
const u = new URL(url);

export default {
  client: 'mysql2',
  connection: {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 3306,
    user: decodeURIComponent(u.username || 'root'),
    password: decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')),
    timezone: 'Z',
    charset: 'utf8mb4',
  },
  migrations: {
    directory: './migrations',
    tableName: 'mvs_knex_migrations',
    loadExtensions: ['.js'],
  },
};
