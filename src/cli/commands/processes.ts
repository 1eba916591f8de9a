import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startCapture, startPlanner, startWorker } from '../../app/processes.js';
import { loadConfig } from '../../config.js';
import { ConfigError } from '../../errors.js';
import { createLogger, type Logger } from '../../log.js';
import { runUntilSignal } from '../../process/lifecycle.js';
import { createDdlExecutor, createRuntime } from '../../app/runtime.js';
import { DEFAULT_DEMO_SCHEMA, DemoWriter, demoStatusLine, setupDemo } from '../../demo/demo.js';
import { listenHost } from '../../server/server.js';
import type { CliContext } from '../context.js';
import { DevConsole, devLogFile } from '../devConsole.js';
import { anyFreePort, portFree } from '../ports.js';

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

export interface DevOptions {
  workers: string;
  server?: boolean;
  demo?: boolean;
  capture?: boolean;
  logFile?: string;
}

/**
 * The server's port: MVS_HTTP_PORT when given (it must be free), else 8080, or any free port
 * when 8080 is taken (a second `npm start`, another program).
 */
async function devHttpPort(ctx: CliContext, host: string): Promise<{ port: number; note?: string }> {
  const wanted = ctx.config.httpPort;
  if (wanted === 0 || (await portFree(wanted, host))) return { port: wanted };
  if (ctx.env.MVS_HTTP_PORT?.trim()) {
    throw new ConfigError(`port ${wanted} on ${host} is already in use: set MVS_HTTP_PORT to a free port, or leave it unset to get one`, {
      variable: 'MVS_HTTP_PORT',
    });
  }
  const port = await anyFreePort(host);
  return { port, note: `port ${wanted} is taken: the server listens on ${port} instead (MVS_HTTP_PORT chooses one)` };
}

/**
 * Planner, two workers and (when present) the HTTP server as child processes, so a laptop runs
 * the same process tree as production. Their logs go to a file; the console shows warnings and
 * errors, with the URLs and the demo's status pinned below. Ctrl-C stops them all.
 */
export async function devCommand(ctx: CliContext, opts: DevOptions): Promise<number> {
  const n = Number(opts.workers);
  const withServer = opts.server !== false && ctx.hasCommand('server');
  const host = withServer ? listenHost(ctx.config) : '127.0.0.1';
  const http = withServer ? await devHttpPort(ctx, host) : undefined;
  const procs: Array<{ name: string; args: string[]; env?: Record<string, string> }> = [{ name: 'planner', args: ['planner'] }];
  for (let i = 1; i <= n; i++) procs.push({ name: `worker-${i}`, args: ['worker', '--node-id', `dev-${i}`] });
  if (withServer) procs.push({ name: 'server', args: ['server'], env: { MVS_HTTP_PORT: String(http!.port) } });
  // Fills BINLOG logs from the binary log; with none it only follows the binlog's position.
  if (opts.capture !== false && ctx.hasCommand('capture')) procs.push({ name: 'capture', args: ['capture'] });

  const logFile = opts.logFile ?? devLogFile(process.cwd());
  const out = new DevConsole({
    write: (s) => process.stderr.write(s),
    tty: process.stderr.isTTY === true,
    ...(process.stderr.columns !== undefined ? { columns: process.stderr.columns } : {}),
    logFile,
    consoleLevel: ctx.config.logLevelExplicit ? ctx.config.logLevel : 'warn',
  });
  // This process's own logs (the demo's) take the same way as the children's.
  const logger = createLogger({ level: ctx.config.logLevel, destination: out.stream('dev') }).child({ cli: 'dev' });

  const children: ChildProcess[] = [];
  let stopping = false;
  const done = new Promise<number>((resolve) => {
    let exited = 0;
    let code = 0;
    for (const p of procs) {
      const child = spawn(process.execPath, [bin, ...p.args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...p.env } });
      out.follow(p.name, child.stdout!);
      out.follow(p.name, child.stderr!);
      children.push(child);
      child.on('exit', (c, signal) => {
        exited++;
        if (!stopping) {
          out.line(`mvsched dev: ${p.name} exited (${signal ?? c}); stopping the rest (see ${logFile})`);
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
    out.line('mvsched dev: stopping ...');
    // The demo writer stops first: nothing should keep writing while the rest shuts down.
    void demo?.close();
    stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  out.line(`mvsched dev: started ${procs.map((p) => p.name).join(', ')} (Ctrl-C stops them)`);
  out.line(`mvsched dev: logs of every level in ${logFile}; this console shows warnings and errors`);
  if (http?.note) out.line(`mvsched dev: ${http.note}`);
  if (withServer) {
    const base = `http://127.0.0.1:${http!.port}`;
    const q = ctx.config.apiToken ? '?token=<MVS_API_TOKEN>' : '';
    out.pin('urls', `mvsched dev: dashboard ${base}/ui${q} | API ${base}/v1/mviews | Bull Board ${base}/admin/queues${q} | metrics ${base}/metrics`);
  }
  const demoOn = opts.demo !== false && ctx.env.MVS_DEMO !== '0' && ctx.env.MVS_DEMO !== 'false';
  if (!demoOn) out.line('mvsched dev: demo off');
  demo = demoOn ? await startDemo(ctx, out, logger) : undefined;
  if (stopping) await demo?.close(); // Ctrl-C while the demo was being set up
  const code = await done;
  await demo?.close();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  await out.close();
  return code;
}

/** The first-run demo (see src/demo): set up, a gentle writer, and a status line every 5 s. */
async function startDemo(ctx: CliContext, out: DevConsole, logger: Logger): Promise<{ close(): Promise<void> } | undefined> {
  const rt = createRuntime(ctx.config, logger, { poolMax: 6 });
  const schema = ctx.env.MVS_DEMO_SCHEMA || DEFAULT_DEMO_SCHEMA;
  try {
    const setup = await setupDemo({ db: rt.db, ddl: createDdlExecutor(rt, 'demo'), logger, schema });
    if (setup.kind === 'skipped') {
      out.line(`mvsched dev: no demo (${setup.reason}); --no-demo or MVS_DEMO=0 silences this`);
      await rt.close();
      return undefined;
    }
    out.line(
      `mvsched dev: demo ${setup.kind === 'created' ? 'created' : 'resumed'} in database ${schema}: orders (with an MV log), ` +
        `sales_by_region (FAST every 5 s), top_customers (COMPLETE every 15 s); a writer adds orders every second (--no-demo turns it off)`,
    );
    const writer = new DemoWriter({ db: rt.db, ddl: createDdlExecutor(rt, 'demo'), logger, schema });
    writer.start();
    const status = setInterval(() => {
      demoStatusLine(rt.db, schema)
        .then((line) => out.pin('demo', line))
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
    out.line(`mvsched dev: the demo could not be set up: ${(err as Error).message}`);
    await rt.close();
    return undefined;
  }
}
