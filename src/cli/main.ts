import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ConfigError, MvsError, ValidationError, NotFoundError, ConflictError, errorMessage } from '../errors.js';
import { makeContext, type CliContext } from './context.js';
import type { ConfigNeeds } from '../config.js';
import { migrateCommand } from './commands/migrate.js';
import { captureCommand, devCommand, plannerCommand, workerCommand, type DevOptions } from './commands/processes.js';
import { refreshCommand } from './commands/refresh.js';
import { explainMvCommand, purgeCommand } from './commands/mlog.js';
import { historyCommand } from './commands/history.js';
import { sqlCommand } from './commands/sql.js';
import { statusCommand } from './commands/status.js';
import { repairCommand, reportVersionsCommand } from './commands/versions.js';
import { startServer } from '../server/server.js';
import { runUntilSignal } from '../process/lifecycle.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Exit codes (documented in the README). */
export const EXIT = Object.freeze({ ok: 0, failure: 1, usage: 2, notFound: 3, conflict: 4 });

export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  env: Record<string, string | undefined>;
}

const defaultIo: CliIo = {
  out: (s) => process.stdout.write(`${s}\n`),
  err: (s) => process.stderr.write(`${s}\n`),
  env: process.env,
};


/** `--method`: a SQL keyword, so any case will do. */
function refreshMethod(value: string): string {
  const m = value.trim().toUpperCase();
  if (m !== 'COMPLETE' && m !== 'FAST') throw new InvalidArgumentError('expected COMPLETE or FAST.');
  return m;
}

/**
 * Build the command tree. Each action receives a context built from the environment only when
 * it runs, so `--help` works without any configuration.
 */
export function buildProgram(io: CliIo, setCode: (code: number) => void): Command {
  const program = new Command('mvsched')
    .description('Keeps materialized views fresh on MySQL 8 / MariaDB / TiDB, on BullMQ workers')
    .version(pkg.version, '-V, --version')
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s.replace(/\n$/, '')),
      writeErr: (s) => io.err(s.replace(/\n$/, '')),
      // One line for usage errors; `--help` names the way out.
      outputError: (s, write) => write(`${s.trim().split('\n')[0]} (see mvsched --help)\n`),
    });

  const wrap =
    <A extends unknown[]>(needs: ConfigNeeds, component: string, fn: (ctx: CliContext, ...args: A) => Promise<number>) =>
    async (...args: A) => {
      const ctx = makeContext(io.env, needs, io, component, (n) => program.commands.some((c) => c.name() === n));
      setCode(await fn(ctx, ...args));
    };

  program
    .command('migrate')
    .description('create or update the metadata tables (knex migrations)')
    .addOption(new Option('--down', 'undo every migration (drops the metadata tables)'))
    .action(wrap({ database: true }, 'migrate', (ctx, opts: { down?: boolean }) => migrateCommand(ctx, opts)));

  const both = { database: true, redis: true };

  program
    .command('planner')
    .description('run a planner (leader-elected; keeps one delayed job per MV in its owner node queue)')
    .action(wrap(both, 'planner', (ctx) => plannerCommand(ctx)));

  program
    .command('worker')
    .description('run a worker replica (its node queue plus the shared requests queue)')
    .option('--node-id <id>', 'stable node id (default MVS_NODE_ID, else host name + pid)')
    .option('--concurrency <n>', 'jobs run at once (default MVS_WORKER_CONCURRENCY)')
    .action(wrap(both, 'worker', (ctx, opts: { nodeId?: string; concurrency?: string }) => workerCommand(ctx, opts)));

  program
    .command('dev')
    .description('run planner, workers and server as child processes, for a laptop')
    .option('--workers <n>', 'number of workers', '2')
    .option('--no-server', 'do not start the HTTP server')
    .option('--no-demo', 'do not create or run the demo (also MVS_DEMO=0)')
    .option('--no-capture', 'do not run binlog capture')
    .option('--log-file <path>', 'where the logs of every level go (default .mvsched/logs/dev-<time>-<pid>.log)')
    .action(wrap(both, 'dev', (ctx, opts: DevOptions) => devCommand(ctx, opts)));

  program
    .command('capture')
    .description('fill USING BINLOG MV logs from the row-based binary log (one active per deployment, the others stand by)')
    .action(wrap(both, 'capture', (ctx) => captureCommand(ctx)));

  program
    .command('server')
    .description('run the HTTP server (health, readiness; MVS_HTTP_PORT)')
    .action(
      wrap(both, 'server', async (ctx) => {
        const { closeables } = await startServer(ctx.config, ctx.logger);
        return runUntilSignal(closeables, ctx.logger);
      }),
    );

  program
    .command('sql')
    .description('run MV DDL: CREATE / ALTER / DROP / REFRESH MATERIALIZED VIEW [LOG] ..., PURGE MATERIALIZED VIEW LOG')
    .argument('[statement]', 'one statement')
    .option('-f, --file <file.sql>', 'run every statement of a file, in order')
    .option('--json', 'print a JSON array with one result per statement')
    .action(wrap(both, 'sql', (ctx, stmt: string | undefined, opts: { file?: string; json?: boolean }) => sqlCommand(ctx, stmt, opts)));

  program
    .command('status')
    .description('show each MV: method, schedule, last result and time, next time, owner node, failures')
    .option('--json', 'print JSON')
    .action(wrap(both, 'status', (ctx, opts: { json?: boolean }) => statusCommand(ctx, opts)));

  program
    .command('history')
    .description("show an MV's refresh runs, newest first: status, method, trigger, times, rows, data time, log range, node, reason")
    .argument('<mview>', 'schema.name or name')
    .option('--limit <n>', 'how many runs (1-10000)', '20')
    .option('--json', 'print a JSON array')
    .action(wrap(both, 'history', (ctx, mview: string, opts: { limit?: string; json?: boolean }) => historyCommand(ctx, mview, opts)));

  program
    .command('refresh')
    .description('enqueue a manual refresh of an MV (does not move its schedule)')
    .argument('<mview>', 'schema.name or name')
    .option('--wait', 'wait for the refresh to finish and print its result')
    .addOption(new Option('--method <method>', 'refresh method: COMPLETE or FAST (any case)').argParser(refreshMethod))
    .option('--cascade', 'refresh the MVs it reads first, upstream first (each with its own method)')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '600')
    .option('--json', 'print JSON')
    .action(
      wrap(both, 'refresh', (ctx, mview: string, opts: { wait?: boolean; method?: string; cascade?: boolean; json?: boolean; timeout?: string }) =>
        refreshCommand(ctx, mview, opts),
      ),
    );

  program
    .command('purge')
    .description("enqueue a purge of a table's MV log (up to what every dependent MV has consumed)")
    .argument('<table>', 'schema.table or table (the base table of the log)')
    .option('--wait', 'wait for the purge to finish and print its result')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '600')
    .option('--json', 'print JSON')
    .action(wrap(both, 'purge', (ctx, table: string, opts: { wait?: boolean; json?: boolean; timeout?: string }) => purgeCommand(ctx, table, opts)));

  program
    .command('explain-mv')
    .description('tell whether a defining SELECT can be fast-refreshed, and why not')
    .argument('<select>', 'the SELECT of a materialized view')
    .option('--json', 'print JSON')
    .action(wrap({ database: true }, 'explain-mv', (ctx, select: string, opts: { json?: boolean }) => explainMvCommand(ctx, select, opts)));

  program
    .command('report-versions')
    .description('report partition versions of a base table (enqueues a report-versions job)')
    .argument('<table>', 'schema.table or table')
    .option('--file <f.json>', 'JSON array of {partitionName, partitionId, version, versionTime}')
    .option('--forget', 'make the table ordinary again: forget its reported versions (its MVs are no longer SKIPPED on them)')
    .option('--data-changed', 'the data changed (default): dependent MVs become stale', true)
    .option('--no-data-changed', 'only the version moved (compaction): dependent MVs get repaired')
    .option('--table-identifier <id>', 'external tables: the identifier, which changes when the table is recreated')
    .option('--wait', 'wait until it is processed')
    .option('--json', 'print JSON')
    .action(
      wrap(both, 'report-versions', (ctx, table: string, opts: { file?: string; forget?: boolean; dataChanged: boolean; tableIdentifier?: string; wait?: boolean; json?: boolean }) =>
        reportVersionsCommand(ctx, table, opts),
      ),
    );

  program
    .command('repair')
    .description('repair the version maps of the MVs over a table (enqueues a repair job)')
    .argument('<table>', 'schema.table or table')
    .requiredOption('--file <infos.json>', 'JSON array of PartitionRepairInfo')
    .option('--wait', 'wait until it is processed')
    .option('--json', 'print JSON')
    .action(wrap(both, 'repair', (ctx, table: string, opts: { file: string; wait?: boolean; json?: boolean }) => repairCommand(ctx, table, opts)));

  program.commands.forEach((c) => c.exitOverride().configureOutput(program.configureOutput()));
  return program;
}

/** Run the CLI; returns the process exit code. Errors become one line on stderr. */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram(io, (c) => (code = c));
  try {
    await program.parseAsync(argv);
    return code;
  } catch (err) {
    return reportError(err, io);
  }
}

export function reportError(err: unknown, io: Pick<CliIo, 'err'>): number {
  if (err instanceof CommanderError) {
    // --help and --version arrive here too, with exit code 0.
    return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  if (err instanceof ConfigError) {
    io.err(`mvsched: ${err.message}`);
    return EXIT.usage;
  }
  const msg = errorMessage(err).split('\n')[0];
  io.err(`mvsched: ${msg}`);
  if (err instanceof ValidationError) return EXIT.usage;
  if (err instanceof NotFoundError) return EXIT.notFound;
  if (err instanceof ConflictError) return EXIT.conflict;
  if (err instanceof MvsError) return EXIT.failure;
  return EXIT.failure;
}
