import type { Job } from 'bullmq';
import type { Logger } from '../log.js';
import type { PurgeOutcome } from '../purge/purgeRunner.js';
import type { RefreshOutcome } from '../refresh/runner.js';
import { SCHEDULED_JOB_LOG_KEEP } from '../queue/names.js';

// One line per run in the job's log, so Bull Board's Logs tab of a scheduled job tells what its
// runs did: outcome, rows, duration, reason, and when the next one is due.

const at = (ms: number | null) => (ms === null ? 'none' : new Date(ms).toISOString());
const next = (ms: number | null) => (ms === null ? 'no next run' : `next ${at(ms)}`);

/** The line for a scheduled refresh's outcome; undefined for one that did nothing worth a line. */
export function refreshLogLine(o: RefreshOutcome, durationMs: number): string | undefined {
  switch (o.kind) {
    case 'SUCCESS':
      return `SUCCESS ${o.method}: ${o.rows} rows in ${o.endMs - o.startMs} ms (refresh ${o.refreshId}); ${next(o.nextTime)}`;
    case 'FAILED':
      return `FAILED ${o.method} after ${durationMs} ms (refresh ${o.refreshId}, failure ${o.failures} in a row): ${o.error}; retry: ${next(o.nextTime)}`;
    case 'SKIPPED': {
      const reason = (o as { reason?: unknown }).reason;
      return `SKIPPED in ${durationMs} ms (refresh ${o.refreshId}): ${typeof reason === 'string' ? reason : 'base tables unchanged since the last refresh'}; ${next(o.nextTime)}`;
    }
    case 'NOT_DUE':
      return o.nextTime === null ? 'not run: the MV has no schedule any more; job ends' : `not run: the schedule moved; ${next(o.nextTime)}`;
    case 'GONE':
      return 'not run: the materialized view was dropped; job ends';
    case 'SUSPENDED':
      return 'not run: the materialized view is suspended; job ends';
    case 'DEFERRED':
    case 'COALESCED':
      return undefined;
  }
}

/** The line for a scheduled purge's outcome. */
export function purgeLogLine(o: PurgeOutcome, durationMs: number): string | undefined {
  switch (o.kind) {
    case 'SUCCESS':
      return `SUCCESS: ${o.rows} log rows purged up to seq ${o.watermark} in ${o.durationMs} ms (purge ${o.purgeId}); ${next(o.nextTime)}`;
    case 'FAILED':
      return `FAILED after ${durationMs} ms (purge ${o.purgeId}, failure ${o.failures} in a row): ${o.error}; retry: ${next(o.nextTime)}`;
    case 'NOT_DUE':
      return o.nextTime === null ? 'not run: the log has no purge schedule any more; job ends' : `not run: the schedule moved; ${next(o.nextTime)}`;
    case 'GONE':
      return 'not run: the materialized view log was dropped; job ends';
    case 'DEFERRED':
      return undefined;
  }
}

/**
 * Append a line (time-stamped) to the job's log, keeping the newest SCHEDULED_JOB_LOG_KEEP
 * (jobs placed before keepLogs was set are trimmed here). A failure to log never fails the run.
 */
export async function appendJobLog(job: Job, line: string | undefined, log: Logger): Promise<void> {
  if (line === undefined) return;
  try {
    const count = await job.log(`${new Date().toISOString()} ${line}`);
    if (count > SCHEDULED_JOB_LOG_KEEP) await job.clearLogs(SCHEDULED_JOB_LOG_KEEP);
  } catch (err) {
    log.warn({ err, job_id: job.id }, 'could not append to the job log');
  }
}
