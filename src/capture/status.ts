import type { Executor } from '../mv/repository.js';
import type { RedisClient } from '../queue/redis.js';
import { readPosition } from './positionStore.js';

// What the active capture publishes about itself (for `status`, metrics and alerts): where it
// is and how far behind the server. Kept in Redis with a TTL, so a capture that died is seen
// as absent rather than as forever up to date.

export interface CaptureStatus {
  active: boolean;
  /** Process id of the capture that published this. */
  holder: string;
  lagSeconds: number | null;
  lagBytes: number | null;
  gtid: string | null;
  file: string | null;
  pos: number | null;
  rowsWritten: number;
  transactions: number;
  logs: number;
  /** When it was measured (epoch ms). */
  at: number;
}

/** mvsched's Redis keys for capture, under the deployment's prefix. */
export function captureKeys(prefix: string) {
  return {
    leader: `${prefix}:mvs:capture:leader`,
    status: `${prefix}:mvs:capture:status`,
  };
}

/** The active capture's last published status, or null when none published lately (down). */
export async function readCaptureStatus(redis: RedisClient, prefix: string): Promise<CaptureStatus | null> {
  const raw = await redis.get(captureKeys(prefix).status);
  return raw ? (JSON.parse(raw) as CaptureStatus) : null;
}

/** What `status` and `/metrics` show of capture (DESIGN.md §3: `capture: {active, lagSeconds, lagBytes, gtid}`). */
export interface CaptureSummary {
  /** A capture holds the lease and published its status lately. */
  active: boolean;
  lagSeconds: number | null;
  lagBytes: number | null;
  /** GTID position reached: the active capture's, else the one stored with the last rows. */
  gtid: string | null;
  file: string | null;
  pos: number | null;
  /** The process capturing (host-pid-random), when one is. */
  holder: string | null;
  /** BINLOG logs (any state). */
  binlogLogs: number;
}

/**
 * Capture as status and metrics show it, or null when there is nothing to say (no BINLOG log and
 * no capture running). `db` is the metadata database (stored position, BINLOG logs).
 */
export async function captureSummary(db: Executor, redis: RedisClient, prefix: string): Promise<CaptureSummary | null> {
  const [live, counted, stored] = await Promise.all([
    readCaptureStatus(redis, prefix),
    db('mvs_mlogs').where({ capture_mode: 'BINLOG' }).count({ n: '*' }).first() as Promise<{ n: number | string } | undefined>,
    readPosition(db).catch(() => undefined),
  ]);
  const binlogLogs = Number(counted?.n ?? 0);
  if (!live?.active && binlogLogs === 0) return null;
  if (live?.active) {
    return { active: true, lagSeconds: live.lagSeconds, lagBytes: live.lagBytes, gtid: live.gtid, file: live.file, pos: live.pos, holder: live.holder, binlogLogs };
  }
  return { active: false, lagSeconds: null, lagBytes: null, gtid: stored?.gtid ?? null, file: stored?.file ?? null, pos: stored?.pos ?? null, holder: null, binlogLogs };
}
