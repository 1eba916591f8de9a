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
      // Each close is bounded, but several in a row with Redis or MySQL gone could add up, and a
      // client still retrying a lost server keeps the event loop alive: exit regardless after a
      // deadline, and shortly after everything was closed.
      const deadline = setTimeout(() => {
        logger.error({ timeout_ms: timeoutMs * 2 }, 'could not stop in time: exiting now');
        process.exit(1);
      }, timeoutMs * 2);
      deadline.unref();
      const exitSoon = (code: number) => {
        clearTimeout(deadline);
        setTimeout(() => {
          logger.warn('connections still open after close: exiting');
          process.exit(code);
        }, 2_000).unref();
        resolve(code);
      };
      closeAll(items, logger, timeoutMs)
        .then(() => {
          logger.info('stopped');
          exitSoon(0);
        })
        .catch(() => exitSoon(1))
        .finally(() => {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
        });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
