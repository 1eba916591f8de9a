import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startPlanner, startWorker } from '../../app/processes.js';
import { loadConfig } from '../../config.js';
import { runUntilSignal } from '../../process/lifecycle.js';
import type { CliContext } from '../context.js';

export async function plannerCommand(ctx: CliContext): Promise<number> {
  return runUntilSignal(await startPlanner(ctx.config, ctx.logger), ctx.logger);
}

export async function workerCommand(ctx: CliContext, opts: { nodeId?: string; concurrency?: string }): Promise<number> {
  const env = { ...ctx.env };
  if (opts.nodeId) env.MVS_NODE_ID = opts.nodeId;
  if (opts.concurrency) env.MVS_WORKER_CONCURRENCY = opts.concurrency;
  const config = loadConfig(env, { database: true, redis: true });
  return runUntilSignal(await startWorker(config, ctx.logger), ctx.logger);
}

const bin = fileURLToPath(new URL('../../../bin/mvsched.js', import.meta.url));

/**
 * Planner, two workers and (when present) the HTTP server as child processes, so a laptop runs
 * the same process tree as production. Ctrl-C stops them all.
 */
export async function devCommand(ctx: CliContext, opts: { workers: string; server?: boolean }): Promise<number> {
  const n = Number(opts.workers);
  const procs: Array<{ name: string; args: string[]; env?: Record<string, string> }> = [{ name: 'planner', args: ['planner'] }];
  for (let i = 1; i <= n; i++) procs.push({ name: `worker-${i}`, args: ['worker', '--node-id', `dev-${i}`] });
  if (opts.server !== false && ctx.hasCommand('server')) procs.push({ name: 'server', args: ['server'] });
  const children: ChildProcess[] = [];
  let stopping = false;
  const done = new Promise<number>((resolve) => {
    let exited = 0;
    let code = 0;
    for (const p of procs) {
      const child = spawn(process.execPath, [bin, ...p.args], { stdio: 'inherit', env: { ...process.env, ...p.env } });
      children.push(child);
      child.on('exit', (c, signal) => {
        exited++;
        if (!stopping) {
          ctx.err(`mvsched dev: ${p.name} exited (${signal ?? c}); stopping the rest`);
          code = 1;
          stop();
        }
        if (exited === procs.length) resolve(code);
      });
    }
  });
  const stop = () => {
    stopping = true;
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  };
  const onSignal = () => {
    if (stopping) return;
    ctx.err('mvsched dev: stopping ...');
    stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  ctx.err(`mvsched dev: started ${procs.map((p) => p.name).join(', ')} (Ctrl-C stops them)`);
  const code = await done;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}
