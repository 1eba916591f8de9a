import type { Logger } from '../log.js';

/** Anything with an idempotent close(). */
export interface Closeable {
  readonly name: string;
  close(): Promise<void>;
}

/** Memoise an async close so calling it twice shares one teardown. */
export function onceAsync(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= fn());
}

/**
 * Close resources last-in-first-out, each bounded by `timeoutMs`, keeping the first error
 * rather than stopping at it (a stuck pool must not keep a queue open).
 */
export async function closeAll(items: Closeable[], logger: Logger, timeoutMs = 15_000): Promise<void> {
  let first: unknown;
  for (const item of [...items].reverse()) {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        item.close(),
        new Promise<void>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`closing ${item.name} took over ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (err) {
      logger.error({ err, component: item.name }, 'close failed');
      first ??= err;
    } finally {
      clearTimeout(timer);
    }
  }
  if (first) throw first;
}

/**
 * Keep a long-running process alive until SIGTERM/SIGINT, then close everything. Resolves with
 * the exit code. A second SIGINT while stopping (a person pressing Ctrl-C again) forces exit;
 * a SIGTERM while stopping is ignored, because on a terminal the whole process group gets the
 * SIGINT and a supervisor (mvsched dev, npm) then sends SIGTERM as well.
 */
export function runUntilSignal(items: Closeable[], logger: Logger, timeoutMs = 30_000): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        if (signal !== 'SIGINT') return;
        logger.warn({ signal }, 'second Ctrl-C while stopping: exiting now');
        process.exit(130);
      }
      stopping = true;
      logger.info({ signal }, 'stopping');
      closeAll(items, logger, timeoutMs)
        .then(() => {
          logger.info('stopped');
          resolve(0);
        })
        .catch(() => resolve(1))
        .finally(() => {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
        });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
