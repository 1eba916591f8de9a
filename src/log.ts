import { createRequire } from 'node:module';
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

export interface LoggerOptions {
  level: LogLevel;
  /** Pretty-print; defaults to "stderr is a terminal and pino-pretty is installed". */
  pretty?: boolean;
  /** Write here instead of stderr (tests). */
  destination?: NodeJS.WritableStream;
  base?: Record<string, unknown>;
}

function prettyAvailable(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

/**
 * JSON logs by default (what log shippers want); pretty when a person is watching. pino-pretty
 * is a dev dependency, so production images fall back to JSON even on a TTY. Logs go to stderr:
 * stdout carries a command's results (`--json` is one JSON document there, nothing else).
 */
export function createLogger(opts: LoggerOptions): Logger {
  const base = { ...(opts.base ?? {}) };
  if (opts.destination) {
    return pino({ level: opts.level, base }, opts.destination as pino.DestinationStream);
  }
  const pretty = opts.pretty ?? (process.stderr.isTTY === true && prettyAvailable());
  if (pretty) {
    return pino({
      level: opts.level,
      base,
      transport: {
        target: 'pino-pretty',
        options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', destination: 2 },
      },
    });
  }
  return pino({ level: opts.level, base, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
}
