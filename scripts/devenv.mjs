// Entry point of `npm start`, `npm test` and `npm run bench`. Plain JavaScript with no
// dependencies, because its first job is to install them on a fresh machine.
//
//   start  install what is missing, start throwaway Redis + MariaDB (unless REDIS_URL /
//          DATABASE_URL are set), migrate, run `mvsched dev`; Ctrl-C stops all of it.
//          `npm start -- --keep` keeps their data in .mvsched/keep/ and uses it again next time
//   test   install what is missing, then vitest (its global setup starts the servers)
//   bench  like start, but runs the benchmarks instead of `mvsched dev`
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureServerPackages, startMariadb, startRedis } from './localServers.mjs';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const [mode = 'start', ...args] = process.argv.slice(2);
// --keep is ours (npm start only); everything else goes to `mvsched dev` / vitest / the benchmarks.
const keep = mode === 'start' && args.includes('--keep');
const rest = mode === 'start' ? args.filter((a) => a !== '--keep') : args;
const keepDir = join(root, '.mvsched', 'keep');
const say = (msg) => console.error(`[mvsched] ${msg}`);

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
    ensureServerPackages({ redis: !process.env.REDIS_URL, mariadb: !process.env.DATABASE_URL }, say);
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
    const [redis, db] = await Promise.all([
      env.REDIS_URL ? undefined : startRedis({ baseDir, ...kept('redis') }),
      env.DATABASE_URL ? undefined : startMariadb({ baseDir, ...kept('mariadb') }),
    ]);
    if (redis) {
      started.push(redis);
      env.REDIS_URL = redis.url;
      say(`started Redis at ${redis.url}`);
    }
    if (db) {
      started.push(db);
      env.DATABASE_URL = db.url;
      say(`started MariaDB at ${db.url}`);
    }
    process.off('SIGINT', early);
    process.off('SIGTERM', early);
    if (started.length && keep) say(`data kept in ${keepDir} for the next npm start -- --keep (delete it to start afresh)`);
    else if (started.length && mode === 'start') say('data is thrown away on exit (npm start -- --keep keeps it)');
    if (started.length && mode === 'start') {
      say('to use the CLI from another terminal:');
      say(`  export DATABASE_URL=${env.DATABASE_URL} REDIS_URL=${env.REDIS_URL}`);
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
