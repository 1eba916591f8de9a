import { loadConfig, type Config, type ConfigNeeds } from '../config.js';
import { createLogger, type Logger } from '../log.js';

/** What every command receives: the parsed config and a logger. Built lazily per command. */
export interface CliContext {
  config: Config;
  logger: Logger;
  env: Record<string, string | undefined>;
  /** Human-facing output (results); logs go through logger. */
  out: (line: string) => void;
  err: (line: string) => void;
  /** Whether the CLI has a command of this name (dev starts the server only when it exists). */
  hasCommand: (name: string) => boolean;
}

/** Processes that run until stopped log at LOG_LEVEL (default info); everything else at warn. */
const LONG_LIVED = new Set(['planner', 'worker', 'server', 'capture']);

export function makeContext(
  env: Record<string, string | undefined>,
  needs: ConfigNeeds,
  io: { out: (s: string) => void; err: (s: string) => void },
  component: string,
  hasCommand: (name: string) => boolean = () => false,
): CliContext {
  const config = loadConfig(env, needs);
  // A one-shot command's result is the line that matters: its info logs would bury it (they go
  // to stderr, but on a terminal that is the same screen). LOG_LEVEL, when set, wins.
  const level = config.logLevelExplicit || LONG_LIVED.has(component) ? config.logLevel : 'warn';
  const logger = createLogger({ level }).child({ cli: component });
  return { config, logger, env, out: io.out, err: io.err, hasCommand };
}
