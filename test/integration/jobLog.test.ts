import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { SCHEDULED_JOB_LOG_KEEP } from '../../src/queue/names.js';
import { closeRedis, createRedis } from '../../src/queue/redis.js';
import { appendJobLog, purgeLogLine, refreshLogLine } from '../../src/worker/jobLog.js';
import { createTestEnv, type TestEnv } from '../support/testEnv.js';

// The log of a scheduled job gets a line per run for the MV's whole life: it must stay bounded
// (DESIGN.md §4, invariant 9), also for jobs placed before keepLogs was set on them.

let t: TestEnv;
let queue: Queue;
const redis = () => createRedis(t.redisUrl);
let conn: ReturnType<typeof redis>;

beforeAll(async () => {
  t = await createTestEnv('job_log');
  conn = redis();
  queue = new Queue('node-x', { connection: conn, prefix: t.prefix });
});

afterAll(async () => {
  await queue?.obliterate({ force: true }).catch(() => {});
  await queue?.close();
  if (conn) await closeRedis(conn);
  await t?.close();
});

describe('job logs of scheduled jobs', () => {
  it('keep the newest lines only, with or without keepLogs on the job', async () => {
    const log = createLogger({ level: 'silent' });
    const withKeep = await queue.add('refresh', { mviewId: 1 }, { jobId: 'mv-1', delay: 60_000, keepLogs: SCHEDULED_JOB_LOG_KEEP });
    const legacy = await queue.add('refresh', { mviewId: 2 }, { jobId: 'mv-2', delay: 60_000 });
    for (let i = 1; i <= SCHEDULED_JOB_LOG_KEEP + 20; i++) {
      await appendJobLog(withKeep, `run ${i}`, log);
      await appendJobLog(legacy, `run ${i}`, log);
    }
    for (const id of ['mv-1', 'mv-2']) {
      const { logs, count } = await queue.getJobLogs(id, 0, -1);
      expect(count, id).toBe(SCHEDULED_JOB_LOG_KEEP);
      expect(logs.at(-1), id).toMatch(new RegExp(`Z run ${SCHEDULED_JOB_LOG_KEEP + 20}$`));
      expect(logs[0], id).toMatch(/Z run 21$/);
    }
  });

  it('say what a run did in one line', () => {
    expect(refreshLogLine({ kind: 'FAILED', refreshId: 7, error: "Table 'a.b' doesn't exist", method: 'COMPLETE', nextTime: Date.UTC(2026, 0, 1), failures: 2 }, 12)).toBe(
      "FAILED COMPLETE after 12 ms (refresh 7, failure 2 in a row): Table 'a.b' doesn't exist; retry: next 2026-01-01T00:00:00.000Z",
    );
    expect(refreshLogLine({ kind: 'SKIPPED', refreshId: 8, nextTime: null }, 3)).toBe('SKIPPED in 3 ms (refresh 8): base tables unchanged since the last refresh; no next run');
    expect(refreshLogLine({ kind: 'NOT_DUE', nextTime: null }, 1)).toBe('not run: the MV has no schedule any more; job ends');
    expect(refreshLogLine({ kind: 'DEFERRED' }, 1)).toBeUndefined();
    expect(purgeLogLine({ kind: 'SUCCESS', purgeId: 3, rows: 120, watermark: 4567, nextTime: null, durationMs: 30 }, 31)).toBe(
      'SUCCESS: 120 log rows purged up to seq 4567 in 30 ms (purge 3); no next run',
    );
  });
});
