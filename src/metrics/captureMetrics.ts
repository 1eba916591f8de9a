import type { RedisClient } from '../queue/redis.js';
import type { Knex } from 'knex';
import { Gauge, type Registry } from 'prom-client';
import { captureSummary } from '../capture/status.js';

/**
 * Binlog capture at scrape time (DESIGN.md §3 "Metrics and alerts"), only where there is capture
 * to speak of (a BINLOG log exists or a capture runs): `mvs_capture_active` (1 while a capture
 * holds the lease and publishes its status, 0 when none does: the logs are not being filled), and
 * while active `mvs_capture_lag_seconds` / `mvs_capture_lag_bytes`, how far behind the server's
 * binary log it is.
 */
export async function addCaptureGauges(reg: Registry, deps: { db: Knex; redis: RedisClient; prefix: string }): Promise<void> {
  const c = await captureSummary(deps.db, deps.redis, deps.prefix);
  if (!c) return;
  const registers = [reg];
  new Gauge({ name: 'mvs_capture_active', help: 'Binlog capture running (1) or not (0) while BINLOG MV logs exist', registers }).set(c.active ? 1 : 0);
  // Unmeasured (no capture, or not measured yet) is absent, not 0: an unset gauge would say 0.
  if (c.lagSeconds !== null) {
    new Gauge({ name: 'mvs_capture_lag_seconds', help: 'How far binlog capture is behind the server, in seconds', registers }).set(c.lagSeconds);
  }
  if (c.lagBytes !== null) {
    new Gauge({ name: 'mvs_capture_lag_bytes', help: 'How far binlog capture is behind the server, in bytes of binary log', registers }).set(c.lagBytes);
  }
}
