// Process entry: the HTTP server. `mvsched server` does the same.
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { runUntilSignal } from '../src/process/lifecycle.js';
import { startServer } from '../src/server/server.js';

const config = loadConfig(process.env, { database: true, redis: true });
const logger = createLogger({ level: config.logLevel });
const { closeables } = await startServer(config, logger);
process.exitCode = await runUntilSignal(closeables, logger);
