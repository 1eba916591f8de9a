// The FAST oracle (test/integration/fastOracle.test.ts) with every seed, in both capture modes:
// the test file runs fewer seeds per mode by default to keep `npm test` short; this runs it with
// BENCH_FAST_ORACLE_SEEDS (default 20) per shape and mode against the bench's servers, and
// reports the base seed (MVS_TEST_SEED replays a failure).
//
// From bench/run.ts: `npm run bench -- fast-oracle`.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { envInt, progress, type BenchContext, type BenchOutcome } from './support.js';

const root = fileURLToPath(new URL('..', import.meta.url));

export interface FastOracleResult {
  seeds: number;
  baseSeed: number;
  passed: boolean;
  durationS: number;
  summary: string;
}

export async function runFastOracleSoak(ctx: BenchContext): Promise<BenchOutcome<FastOracleResult>> {
  const seeds = envInt('BENCH_FAST_ORACLE_SEEDS', 20);
  const baseSeed = process.env.MVS_TEST_SEED ? Number(process.env.MVS_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
  progress(`fast-oracle: ${seeds} seeds per shape and capture mode from MVS_TEST_SEED=${baseSeed}`);
  const t0 = performance.now();
  const vitest = fileURLToPath(new URL('../node_modules/vitest/vitest.mjs', import.meta.url));
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [vitest, 'run', '--project', 'integration', 'test/integration/fastOracle.test.ts'], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: ctx.serverUrl, REDIS_URL: ctx.redisUrl, MVS_ORACLE_SEEDS: String(seeds), MVS_TEST_SEED: String(baseSeed) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (c) => resolve({ code: c, output: out }));
  });
  const durationS = Math.round((performance.now() - t0) / 100) / 10;
  const plain = output.replace(/\u001b\[[0-9;]*m/g, '');
  const stats = [...plain.matchAll(/^fast oracle .*seeds.*$/gm)].map((m) => m[0]).join('\n');
  const failure = /AssertionError[^\n]*/.exec(plain)?.[0] ?? /Error:[^\n]*/.exec(plain)?.[0] ?? '';
  const passed = code === 0;
  const summary = passed ? stats : `FAILED (exit ${code}): ${failure}`;
  return {
    result: { seeds, baseSeed, passed, durationS, summary },
    goals: [
      { name: `fast-oracle: ${seeds} seeds x 4 shapes x {TRIGGERS, BINLOG}, every MV equal to its definition at every cut`, value: null, goal: 'all equal', met: passed, note: `MVS_TEST_SEED=${baseSeed}` },
    ],
    report: `${seeds} seeds per shape and capture mode from MVS_TEST_SEED=${baseSeed} in ${durationS} s: ${passed ? 'passed' : 'FAILED'}\n\n${summary}`,
  };
}
