// The join oracle (test/integration/fastJoinOracle.test.ts) with many seeds: the test file runs a
// few by default to keep `npm test` short; this runs it with BENCH_JOIN_ORACLE_SEEDS (default
// 100) against the bench's servers, and reports the base seed (MVS_TEST_SEED replays a failure).
//
// From bench/run.ts: `npm run bench -- join-oracle`.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { envInt, progress, type BenchContext, type BenchOutcome } from './support.js';

const root = fileURLToPath(new URL('..', import.meta.url));

export interface JoinOracleResult {
  seeds: number;
  baseSeed: number;
  passed: boolean;
  durationS: number;
  summary: string;
}

export async function runJoinOracleSoak(ctx: BenchContext): Promise<BenchOutcome<JoinOracleResult>> {
  const seeds = envInt('BENCH_JOIN_ORACLE_SEEDS', 100);
  const baseSeed = process.env.MVS_TEST_SEED ? Number(process.env.MVS_TEST_SEED) : Math.floor(Math.random() * 2 ** 31);
  progress(`join-oracle: ${seeds} seeds from MVS_TEST_SEED=${baseSeed}`);
  const t0 = performance.now();
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(new URL('../node_modules/vitest/vitest.mjs', import.meta.url)), 'run', '--project', 'integration', 'test/integration/fastJoinOracle.test.ts'], {
      cwd: root,
      env: {
        ...process.env,
        DATABASE_URL: ctx.serverUrl,
        REDIS_URL: ctx.redisUrl,
        MVS_JOIN_ORACLE_SEEDS: String(seeds),
        MVS_TEST_SEED: String(baseSeed),
        // One seed takes ~5 s on an idle 2-core host: vitest's per-test timeout follows the count.
        MVS_JOIN_ORACLE_TIMEOUT_MS: String(Math.max(600_000, seeds * 30_000)),
      },
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
  const stats = /fast join oracle: .*$/m.exec(plain)?.[0] ?? '';
  const failure = /AssertionError[^\n]*/.exec(plain)?.[0] ?? /Error:[^\n]*/.exec(plain)?.[0] ?? '';
  const passed = code === 0;
  const summary = passed ? stats : `FAILED (exit ${code}): ${failure}`;
  return {
    result: { seeds, baseSeed, passed, durationS, summary },
    goals: [{ name: `join-oracle: ${seeds} seeds, every MV equal to its definition at every cut`, value: null, goal: 'all equal', met: passed, note: `MVS_TEST_SEED=${baseSeed}` }],
    report: `${seeds} seeds from MVS_TEST_SEED=${baseSeed} in ${durationS} s: ${passed ? 'passed' : 'FAILED'}\n\n${summary}`,
  };
}
