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

export function makeContext(
  env: Record<string, string | undefined>,
  needs: ConfigNeeds,
  io: { out: (s: string) => void; err: (s: string) => void },
  component: string,
  hasCommand: (name: string) => boolean = () => false,
): CliContext {
  const config = loadConfig(env, needs);
  const logger = createLogger({ level: config.logLevel }).child({ cli: component });
  return { config, logger, env, out: io.out, err: io.err, hasCommand };
}
