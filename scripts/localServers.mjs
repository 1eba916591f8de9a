// Throwaway Redis and MariaDB servers for `npm start`, `npm test` and `npm run bench`.
// Plain JavaScript with no dependencies: it must work before `npm ci` has run.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

const SEARCH_PATH = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin'];

/** Absolute path of the first of `names` found on PATH or in the sbin dirs, or undefined. */
export function findBinary(...names) {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), ...SEARCH_PATH];
  for (const name of names) {
    for (const dir of dirs) {
      const p = join(dir, name);
      if (existsSync(p)) return p;
    }
  }
  return undefined;
}

export function missingServerPackages({ redis = true, mariadb = true, chromium = false, prometheus = false } = {}) {
  const missing = [];
  // The browser test of Bull Board drives Debian's chromium (playwright-core, no bundled browser).
  if (chromium && !findBinary('chromium')) missing.push('chromium');
  // The alert-rule tests run promtool, which Debian ships in its prometheus package.
  if (prometheus && !findBinary('promtool')) missing.push('prometheus');
  if (redis && !findBinary('redis-server')) missing.push('redis-server');
  // redis-cli (Debian's redis-tools, which redis-server depends on) sets up local Redis Clusters.
  else if (redis && !findBinary('redis-cli')) missing.push('redis-tools');
  if (mariadb && !(findBinary('mariadbd', 'mysqld') && findBinary('mariadb-install-db', 'mysql_install_db') && findBinary('mariadb', 'mysql'))) {
    missing.push('mariadb-server');
  }
  return missing;
}

/**
 * Install Debian's redis-server / mariadb-server (and chromium and prometheus for tests) when they are missing. Root installs them;
 * anyone else gets the exact command and an error.
 */
export function ensureServerPackages(needs, log = console.error) {
  const missing = missingServerPackages(needs);
  if (missing.length === 0) return;
  const cmd = `apt-get update && apt-get install -y ${missing.join(' ')}`;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    throw new Error(`${missing.join(' and ')} not installed; run as root: ${cmd}`);
  }
  log(`[mvsched] installing ${missing.join(', ')} from Debian packages ...`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // Headless chromium renders text with whatever fonts there are; without recommends there are none.
  const extra = missing.includes('chromium') ? ['fonts-liberation'] : [];
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', '--no-install-recommends', ...missing, ...extra]]) {
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${r.status}); try: ${cmd}`);
  }
  const still = missingServerPackages(needs);
  if (still.length) throw new Error(`still missing after apt-get: ${still.join(', ')}`);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function exitPromise(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

// Servers run in their own process group (see startRedis), so a signal to the terminal's group
// does not reach them; if the process that started them ends without stopping them (a test
// runner interrupted with Ctrl-C exits without its teardown), they go with it.
const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

function track(child) {
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

async function stopChild(child, graceMs = 20_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = exitPromise(child);
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

/** Wait until `probe()` resolves true, the child dies, or the deadline passes. */
async function waitReady(child, probe, what, logFile, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const tail = logFile && existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
      throw new Error(`${what} exited during start-up (code ${child.exitCode})\n${tail}`);
    }
    if (await probe()) return;
    await sleep(100);
  }
  throw new Error(`${what} not ready after ${timeoutMs} ms`);
}

function redisPing(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    sock.setTimeout(1000);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\r\n')) {
        sock.destroy();
        resolve(buf.startsWith('+PONG'));
      }
    });
    sock.on('error', () => resolve(false));
    sock.on('timeout', () => {
      sock.destroy();
      resolve(false);
    });
  });
}

/**
 * A data dir kept between runs (`npm start -- --keep`) must not be used by two servers at once:
 * a pid file whose process is alive means another run has it.
 */
function claimKeptDir(dir, pidFile, what) {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, 0);
  } catch {
    return; // left behind by a run that was killed
  }
  throw new Error(`${what} data in ${dir} is in use by process ${pid} (another npm start -- --keep?)`);
}

/**
 * Start redis-server on a free port. Data lives in a new dir under baseDir, without persistence;
 * or, with keepDir, in keepDir, saved on shutdown and loaded again by the next start.
 */
/** @param {{ baseDir: string, keepDir?: string }} opts */
export async function startRedis({ baseDir, keepDir }) {
  const bin = findBinary('redis-server');
  if (!bin) throw new Error('redis-server not installed');
  mkdirSync(keepDir ?? baseDir, { recursive: true });
  const dir = keepDir ?? mkdtempSync(join(baseDir, 'redis-'));
  const pidFile = join(dir, 'redis.pid');
  if (keepDir) claimKeptDir(dir, pidFile, 'Redis');
  const persistence = keepDir ? ['--save', '60 1', '--dbfilename', 'dump.rdb', '--pidfile', pidFile] : ['--save', ''];
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const logFile = join(dir, 'redis.log');
    const child = track(spawn(
      bin,
      ['--port', String(port), '--bind', '127.0.0.1', ...persistence, '--appendonly', 'no', '--dir', dir,
        '--logfile', logFile, '--maxclients', '10000', '--protected-mode', 'no'],
      // Its own process group: a Ctrl-C on the terminal reaches the whole foreground group, and
      // Redis would quit at once while mvsched's processes still need it to shut down cleanly.
      // Whoever started it stops it (stop() below), after those processes are gone.
      { stdio: 'ignore', detached: true },
    ));
    try {
      await waitReady(child, () => redisPing(port), 'redis-server', logFile, 20_000);
    } catch (err) {
      await stopChild(child, 2000);
      if (attempt < 3) continue; // the free port may have been taken in between
      throw err;
    }
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      pid: child.pid,
      async stop() {
        await stopChild(child, 5000);
        if (!keepDir) rmSync(dir, { recursive: true, force: true });
      },
    };
  }
}

function redisCommand(port, ...args) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    sock.setTimeout(2000);
    sock.on('connect', () => sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
    sock.on('data', (d) => {
      buf += d.toString();
      // A bulk string reply: "$<len>\r\n<body>\r\n"; anything else fits in one line.
      const m = /^\$(\d+)\r\n/.exec(buf);
      if ((m && buf.length >= m[0].length + Number(m[1]) + 2) || (!m && !buf.startsWith('$') && buf.includes('\r\n'))) {
        sock.destroy();
        resolve(m ? buf.slice(m[0].length, m[0].length + Number(m[1])) : buf.trim());
      }
    });
    sock.on('error', () => resolve(''));
    sock.on('timeout', () => {
      sock.destroy();
      resolve('');
    });
  });
}

/**
 * Start a throwaway Redis Cluster: `masters` masters with `replicas` replicas each (default
 * 3 + 3), every node its own redis-server on free loopback ports (client and cluster-bus port),
 * no persistence, joined with `redis-cli --cluster create`. `nodeTimeoutMs` is the cluster's
 * node timeout: how long a master must be unreachable before its replica takes over.
 * Returns the seeds (`nodes`, for REDIS_CLUSTER_NODES), each node's port and pid, kill(port)
 * to SIGKILL one node (a failover test), and stop().
 */
export async function startRedisCluster({ baseDir, masters = 3, replicas = 1, nodeTimeoutMs = 2000 }) {
  const bin = findBinary('redis-server');
  const cli = findBinary('redis-cli');
  if (!bin || !cli) throw new Error('redis-server / redis-cli not installed');
  mkdirSync(baseDir, { recursive: true });
  const dir = mkdtempSync(join(baseDir, 'redis-cluster-'));
  const count = masters * (1 + replicas);
  const nodes = [];
  const stopAll = async () => {
    await Promise.allSettled(nodes.map((n) => stopChild(n.child, 5000)));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < count; i++) {
      for (let attempt = 1; ; attempt++) {
        const [port, busPort] = [await freePort(), await freePort()];
        const nodeDir = join(dir, `node-${port}`);
        mkdirSync(nodeDir, { recursive: true });
        const logFile = join(nodeDir, 'redis.log');
        const child = track(spawn(
          bin,
          ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', nodeDir,
            '--logfile', logFile, '--maxclients', '10000', '--protected-mode', 'no',
            '--cluster-enabled', 'yes', '--cluster-config-file', join(nodeDir, 'nodes.conf'),
            '--cluster-port', String(busPort), '--cluster-node-timeout', String(nodeTimeoutMs)],
          { stdio: 'ignore', detached: true }, // as startRedis: out of the terminal's process group
        ));
        try {
          await waitReady(child, () => redisPing(port), 'redis-server (cluster node)', logFile, 20_000);
        } catch (err) {
          await stopChild(child, 2000);
          if (attempt < 3) continue;
          throw err;
        }
        nodes.push({ port, busPort, pid: child.pid, child, logFile });
        break;
      }
    }
    const create = spawnSync(
      cli,
      ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed (exit ${create.status}): ${(create.stdout + create.stderr).slice(-2000)}`);
    // `create` returns once the slots are assigned; wait until every node agrees the cluster is
    // whole and every replica has attached to its master.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const infos = await Promise.all(nodes.map((n) => redisCommand(n.port, 'CLUSTER', 'INFO')));
      const ok = infos.every((t) => t.includes('cluster_state:ok') && t.includes(`cluster_known_nodes:${count}`));
      const linked = (await Promise.all(nodes.map((n) => redisCommand(n.port, 'INFO', 'replication'))))
        .filter((t) => t.includes('role:slave'))
        .every((t) => t.includes('master_link_status:up'));
      if (ok && linked) break;
      if (Date.now() > deadline) throw new Error(`Redis Cluster not ready after 30 s:\n${infos.join('\n')}`);
      await sleep(100);
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  return {
    nodes: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
    ports: nodes.map((n) => n.port),
    pids: Object.fromEntries(nodes.map((n) => [n.port, n.pid])),
    /** SIGKILL one node (by client port) and wait until it is gone. */
    async kill(port) {
      const n = nodes.find((x) => x.port === port);
      if (!n) throw new Error(`no cluster node on port ${port}`);
      if (n.child.exitCode !== null || n.child.signalCode !== null) return;
      const done = exitPromise(n.child);
      n.child.kill('SIGKILL');
      await done;
    },
    stop: stopAll,
  };
}

/**
 * Start a MariaDB server on a free port, with a user `mvsched`/`mvsched` that may do anything
 * and a database `mvsched`. Data lives in a fresh dir under baseDir; or, with keepDir, in
 * keepDir, made on the first start and used again by later ones. Durability settings are
 * relaxed: these servers are for development and tests only. `binlog: false` starts it without
 * the binary log (for tests of what needs it).
 */
/** @param {{ baseDir: string, database?: string, keepDir?: string, binlog?: boolean }} opts */
export async function startMariadb({ baseDir, database = 'mvsched', keepDir, binlog = true }) {
  const server = findBinary('mariadbd', 'mysqld');
  const installDb = findBinary('mariadb-install-db', 'mysql_install_db');
  const client = findBinary('mariadb', 'mysql');
  if (!server || !installDb || !client) throw new Error('mariadb-server not installed');
  mkdirSync(keepDir ?? baseDir, { recursive: true });
  const dir = keepDir ?? mkdtempSync(join(baseDir, 'mariadb-'));
  const datadir = join(dir, 'data');
  const socket = join(dir, 'mysqld.sock');
  const logFile = join(dir, 'error.log');
  if (keepDir) claimKeptDir(dir, join(dir, 'mysqld.pid'), 'MariaDB');
  // A kept data dir already has its system tables (and the user and database below).
  if (!existsSync(join(datadir, 'mysql'))) {
    const init = spawnSync(
      installDb,
      ['--no-defaults', `--datadir=${datadir}`, '--user=root', '--auth-root-authentication-method=normal',
        '--skip-test-db', '--skip-name-resolve'],
      { encoding: 'utf8' },
    );
    if (init.status !== 0) {
      rmSync(datadir, { recursive: true, force: true });
      throw new Error(`mariadb-install-db failed (exit ${init.status}): ${init.stderr.slice(-2000)}`);
    }
  }
  // Its own temporary dir: a shared /tmp cleaned by someone else took internal temporary tables
  // from under a running build ("Error on delete of '/tmp/#sql-temptable-...'").
  const tmpdir = join(dir, 'tmp');
  mkdirSync(tmpdir, { recursive: true });
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = track(spawn(
      server,
      ['--no-defaults', `--datadir=${datadir}`, '--user=root', `--port=${port}`, '--bind-address=127.0.0.1',
        `--socket=${socket}`, `--tmpdir=${tmpdir}`, `--pid-file=${join(dir, 'mysqld.pid')}`, `--log-error=${logFile}`,
        // The row-based binary log is on, as in production, for binlog capture (mvsched capture):
        // full row images with full metadata (column names in every table map), files expiring
        // after a day. Triggers created by a user without SUPER need the trust setting.
        ...(binlog ? [`--log-bin=${join(datadir, 'binlog')}`] : []), '--binlog-format=ROW', '--binlog-row-image=FULL',
        '--binlog-row-metadata=FULL', '--server-id=1', '--binlog-expire-logs-seconds=86400',
        '--max-binlog-size=256M', '--log-bin-trust-function-creators=1', '--sync-binlog=0',
        '--skip-name-resolve', '--innodb-buffer-pool-size=512M',
        '--innodb-log-file-size=256M', '--innodb-flush-log-at-trx-commit=2', '--innodb-doublewrite=0',
        '--max-connections=2000', '--default-time-zone=+00:00', '--character-set-server=utf8mb4',
        '--collation-server=utf8mb4_general_ci', '--innodb-lock-wait-timeout=20',
        '--max-allowed-packet=64M', '--table-open-cache=4000', '--skip-performance-schema'],
      { stdio: 'ignore', detached: true }, // as Redis: out of the terminal's process group
    ));
    const probe = async () =>
      spawnSync(client, ['--no-defaults', `--socket=${socket}`, '-uroot', '-e', 'SELECT 1'], { stdio: 'ignore' })
        .status === 0;
    try {
      await waitReady(child, probe, 'mariadbd', logFile, 60_000);
    } catch (err) {
      await stopChild(child, 5000);
      if (attempt < 3 && existsSync(logFile) && /Address already in use|bind on TCP/i.test(readFileSync(logFile, 'utf8'))) continue;
      throw err;
    }
    const setup = spawnSync(
      client,
      ['--no-defaults', `--socket=${socket}`, '-uroot', '-e',
        "CREATE USER IF NOT EXISTS 'mvsched'@'%' IDENTIFIED BY 'mvsched';" +
          "GRANT ALL PRIVILEGES ON *.* TO 'mvsched'@'%' WITH GRANT OPTION;" +
          `CREATE DATABASE IF NOT EXISTS \`${database}\`;`],
      { encoding: 'utf8' },
    );
    if (setup.status !== 0) {
      await stopChild(child);
      throw new Error(`MariaDB user setup failed: ${setup.stderr}`);
    }
    return {
      url: `mysql://mvsched:mvsched@127.0.0.1:${port}/${database}`,
      port,
      socket,
      pid: child.pid,
      async stop() {
        await stopChild(child, 30_000);
        if (!keepDir) rmSync(dir, { recursive: true, force: true });
      },
    };
  }
}
