import type { RedisClient } from '../queue/redis.js';

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
