// Process entry: binlog capture (one active per deployment). `mvsched capture` does the same.
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { startCapture } from '../src/app/processes.js';
import { runUntilSignal } from '../src/process/lifecycle.js';

const config = loadConfig(process.env, { database: true, redis: true });
const logger = createLogger({ level: config.logLevel });
process.exitCode = await runUntilSignal(await startCapture(config, logger), logger);
