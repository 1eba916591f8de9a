import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startCapture, startPlanner, startWorker } from '../../app/processes.js';
import { loadConfig } from '../../config.js';
import { runUntilSignal } from '../../process/lifecycle.js';
import { createDdlExecutor, createRuntime } from '../../app/runtime.js';
import { DEFAULT_DEMO_SCHEMA, DemoWriter, demoStatusLine, setupDemo } from '../../demo/demo.js';
import type { CliContext } from '../context.js';

export async function plannerCommand(ctx: CliContext): Promise<number> {
  return runUntilSignal(await startPlanner(ctx.config, ctx.logger), ctx.logger);
}

export async function captureCommand(ctx: CliContext): Promise<number> {
  return runUntilSignal(await startCapture(ctx.config, ctx.logger), ctx.logger);
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
export async function devCommand(ctx: CliContext, opts: { workers: string; server?: boolean; demo?: boolean; capture?: boolean }): Promise<number> {
  const n = Number(opts.workers);
  const procs: Array<{ name: string; args: string[]; env?: Record<string, string> }> = [{ name: 'planner', args: ['planner'] }];
  for (let i = 1; i <= n; i++) procs.push({ name: `worker-${i}`, args: ['worker', '--node-id', `dev-${i}`] });
  if (opts.server !== false && ctx.hasCommand('server')) procs.push({ name: 'server', args: ['server'] });
  // Fills BINLOG logs from the binary log; with none it only follows the binlog's position.
  if (opts.capture !== false && ctx.hasCommand('capture')) procs.push({ name: 'capture', args: ['capture'] });
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
  let demo: { close(): Promise<void> } | undefined;
  const onSignal = () => {
    if (stopping) return;
    ctx.err('mvsched dev: stopping ...');
    // The demo writer stops first: nothing should keep writing while the rest shuts down.
    void demo?.close();
    stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  ctx.err(`mvsched dev: started ${procs.map((p) => p.name).join(', ')} (Ctrl-C stops them)`);
  const withServer = procs.some((p) => p.name === 'server');
  if (withServer) {
    const base = `http://127.0.0.1:${ctx.config.httpPort}`;
    const q = ctx.config.apiToken ? '?token=<MVS_API_TOKEN>' : '';
    ctx.err(`mvsched dev: API ${base}/v1/mviews | Bull Board ${base}/admin/queues${q} | metrics ${base}/metrics`);
  }
  const demoOn = opts.demo !== false && ctx.env.MVS_DEMO !== '0' && ctx.env.MVS_DEMO !== 'false';
  if (!demoOn) ctx.err('mvsched dev: demo off');
  demo = demoOn ? await startDemo(ctx) : undefined;
  if (stopping) await demo?.close(); // Ctrl-C while the demo was being set up
  const code = await done;
  await demo?.close();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}

/** The first-run demo (see src/demo): set up, a gentle writer, and a status line every 5 s. */
async function startDemo(ctx: CliContext): Promise<{ close(): Promise<void> } | undefined> {
  const rt = createRuntime(ctx.config, ctx.logger, { poolMax: 6 });
  const schema = ctx.env.MVS_DEMO_SCHEMA || DEFAULT_DEMO_SCHEMA;
  try {
    const setup = await setupDemo({ db: rt.db, ddl: createDdlExecutor(rt, 'demo'), logger: ctx.logger, schema });
    if (setup.kind === 'skipped') {
      ctx.err(`mvsched dev: no demo (${setup.reason}); --no-demo or MVS_DEMO=0 silences this`);
      await rt.close();
      return undefined;
    }
    ctx.err(
      `mvsched dev: demo ${setup.kind === 'created' ? 'created' : 'resumed'} in database ${schema}: orders (with an MV log), ` +
        `sales_by_region (FAST every 5 s), top_customers (COMPLETE every 15 s); a writer adds orders every second (--no-demo turns it off)`,
    );
    const writer = new DemoWriter({ db: rt.db, ddl: createDdlExecutor(rt, 'demo'), logger: ctx.logger, schema });
    writer.start();
    const status = setInterval(() => {
      demoStatusLine(rt.db, schema)
        .then((line) => ctx.err(line))
        .catch(() => {});
    }, 5_000);
    return {
      async close() {
        clearInterval(status);
        writer.close();
        await rt.close();
      },
    };
  } catch (err) {
    ctx.err(`mvsched dev: the demo could not be set up: ${(err as Error).message}`);
    await rt.close();
    return undefined;
  }
}
