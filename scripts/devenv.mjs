// Entry point of `npm start`, `npm test` and `npm run bench`. Plain JavaScript with no
// dependencies, because its first job is to install them on a fresh machine.
//
//   start  install what is missing, start throwaway Redis + MariaDB (unless REDIS_URL /
//          DATABASE_URL are set), migrate, run `mvsched dev`; Ctrl-C stops all of it.
//          `npm start -- --keep` keeps their data in .mvsched/keep/ and uses it again next time
//          `start -- --cluster` (or MVS_DEV_CLUSTER=1): a throwaway Redis Cluster (3 masters +
//          3 replicas) instead of the single Redis, unless REDIS_CLUSTER_NODES is set
//   test   install what is missing, then vitest (its global setup starts the servers)
//   bench  like start, but runs the benchmarks instead of `mvsched dev`
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureServerPackages, startMariadb, startRedis, startRedisCluster } from './localServers.mjs';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const [mode = 'start', ...args] = process.argv.slice(2);
const keepDir = join(root, '.mvsched', 'keep');
const say = (msg) => console.error(`[mvsched] ${msg}`);
// --keep and --cluster are ours (npm start only); everything else goes to `mvsched dev` / vitest /
// the benchmarks.
const keep = mode === 'start' && args.includes('--keep');
const rest = args.filter((a) => a !== '--cluster' && !(keep && a === '--keep'));
const devCluster = mode === 'start' && (args.includes('--cluster') || ['1', 'true'].includes(process.env.MVS_DEV_CLUSTER ?? ''));
const haveRedis = () => Boolean(process.env.REDIS_CLUSTER_NODES || (!devCluster && process.env.REDIS_URL));

function ensureNodeModules() {
  const marker = join(root, 'node_modules', '.package-lock.json');
  const lock = join(root, 'package-lock.json');
  if (existsSync(marker) && statSync(marker).mtimeMs >= statSync(lock).mtimeMs) return;
  say('installing npm dependencies (npm ci) ...');
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    say(`npm ci failed (exit ${r.status})`);
    process.exit(r.status ?? 1);
  }
}

function ensurePackages() {
  try {
    ensureServerPackages({ redis: !haveRedis(), mariadb: !process.env.DATABASE_URL }, say);
  } catch (err) {
    say(err.message);
    process.exit(1);
  }
}

/** Run a child to completion, forwarding Ctrl-C / SIGTERM to it. */
function run(cmd, args, env) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: 'inherit', env });
    const forward = (sig) => child.kill(sig);
    process.on('SIGINT', forward);
    process.on('SIGTERM', forward);
    child.on('exit', (code, signal) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve(code ?? (signal ? 128 + 1 : 1));
    });
  });
}

async function withServers(fn) {
  const started = [];
  const env = { ...process.env };
  const baseDir = join(root, '.mvsched', `run-${process.pid}`);
  let stopping = false;
  const stopAll = async () => {
    if (stopping) return;
    stopping = true;
    await Promise.allSettled(started.map((s) => s.stop()));
    rmSync(baseDir, { recursive: true, force: true });
  };
  // While servers start, a Ctrl-C must still tear down what did start.
  const early = () => void stopAll().then(() => process.exit(130));
  process.once('SIGINT', early);
  process.once('SIGTERM', early);
  try {
    const kept = (name) => (keep ? { keepDir: join(keepDir, name) } : {});
    const [redis, cluster, db] = await Promise.all([
      haveRedis() || devCluster ? undefined : startRedis({ baseDir, ...kept('redis') }),
      haveRedis() || !devCluster ? undefined : startRedisCluster({ baseDir }),
      env.DATABASE_URL ? undefined : startMariadb({ baseDir, ...kept('mariadb') }),
    ]);
    if (redis) {
      started.push(redis);
      env.REDIS_URL = redis.url;
      say(`started Redis at ${redis.url}`);
    }
    if (cluster) {
      started.push(cluster);
      env.REDIS_CLUSTER_NODES = cluster.nodes;
      delete env.REDIS_URL; // it would only be ignored, with a warning from every process
      say(`started a Redis Cluster (3 masters + 3 replicas) at ${cluster.nodes}`);
    }
    if (db) {
      started.push(db);
      env.DATABASE_URL = db.url;
      say(`started MariaDB at ${db.url}`);
    }
    process.off('SIGINT', early);
    process.off('SIGTERM', early);
    if (started.length && keep) {
      const what = cluster ? ' (MariaDB only: the Redis Cluster is thrown away)' : '';
      say(`data kept in ${keepDir}${what} for the next npm start -- --keep (delete it to start afresh)`);
    }
    else if (started.length && mode === 'start') say('data is thrown away on exit (npm start -- --keep keeps it)');
    if (started.length && mode === 'start') {
      say('to use the CLI from another terminal:');
      const redisVar = env.REDIS_CLUSTER_NODES ? `REDIS_CLUSTER_NODES=${env.REDIS_CLUSTER_NODES}` : `REDIS_URL=${env.REDIS_URL}`;
      say(`  export DATABASE_URL=${env.DATABASE_URL} ${redisVar}`);
    }
    return await fn(env);
  } finally {
    await stopAll();
    if (started.length) say(`stopped the local servers${keep ? ` (data kept in ${keepDir})` : ''}`);
  }
}

const mvsched = join(root, 'bin', 'mvsched.js');

async function main() {
  ensureNodeModules();
  if (mode === 'test') {
    // The servers are started by vitest's global setup, so `npx vitest` works the same way.
    ensurePackages();
    const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
    return run(process.execPath, [vitest, 'run', ...rest], process.env);
  }
  if (mode === 'start' || mode === 'bench') {
    ensurePackages();
    return withServers(async (env) => {
      const m = await run(process.execPath, [mvsched, 'migrate'], env);
      if (m !== 0) return m;
      if (mode === 'bench') {
        return run(process.execPath, ['--import', 'tsx', join(root, 'bench', 'run.ts'), ...rest], env);
      }
      return run(process.execPath, [mvsched, 'dev', ...rest], env);
    });
  }
  say(`unknown mode "${mode}" (expected start, test or bench)`);
  return 2;
}

process.exitCode = await main();
