import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Knex } from 'knex';
import type { RedisClient } from '../queue/redis.js';
import type { MysqlConnection } from '../db/connect.js';
import type { Logger } from '../log.js';
import { LeaderLease } from '../planner/leaderLease.js';
import { CaptureSession } from './captureSession.js';
import { FencedError } from './positionStore.js';
import { binlogFiles, bytesBehind } from './serverPosition.js';
import { captureKeys, type CaptureStatus } from './status.js';

// `mvsched capture`: any number may run, one captures (a Redis lease, like the planner's); the
// others stand by and take over within the lease TTL. Correctness does not rest on the lease:
// the position row in MySQL fences a capture that lost it (positionStore.ts). A session that
// fails is started again from the stored position after a backoff.

export interface CaptureDeps {
  db: Knex;
  /**
   * One connection (a pool of at most 1) for the position and the commits, so the connection
   * recorded with each commit is the one a frozen commit would hold: a takeover kills it.
   * Defaults to `db`.
   */
  commitDb?: Knex;
  redis: RedisClient;
  connection: MysqlConnection;
  metaSchema: string;
  prefix: string;
  logger: Logger;
  /** Replica id for the binlog connection (unique among the server's replicas). */
  serverId: number;
  leaseTtlMs: number;
  /** How often lag is measured and published (ms). */
  statusIntervalMs?: number;
  /** How often a progress line is logged (ms). */
  logIntervalMs?: number;
  maxPendingRows?: number;
  /** Restart a session whose stream is silent this long while behind (ms). */
  stallMs?: number;
}

export class CaptureProcess {
  readonly id = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private readonly lease: LeaderLease;
  private readonly keys: ReturnType<typeof captureKeys>;
  private readonly log: Logger;
  private session: CaptureSession | undefined;
  private leading = false;
  private lastRenew = 0;
  private leaseTimer: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private logTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private backoffMs = 0;
  private starting: Promise<void> | undefined;
  private closed: Promise<void> | undefined;
  private lag: { seconds: number | null; bytes: number | null; behindSince: number | null } = { seconds: null, bytes: null, behindSince: null };
  private lastLogged = { rows: 0, transactions: 0, at: Date.now() };

  constructor(private readonly deps: CaptureDeps) {
    this.keys = captureKeys(deps.prefix);
    this.lease = new LeaderLease(deps.redis, this.keys.leader, this.id, deps.leaseTtlMs);
    this.log = deps.logger.child({ component: 'capture', capture_id: this.id });
  }

  async start(): Promise<void> {
    await this.leaseTick();
    this.leaseTimer = setInterval(() => void this.leaseTick(), Math.max(100, Math.floor(this.deps.leaseTtlMs / 3)));
    this.statusTimer = setInterval(() => void this.publishStatus(), this.deps.statusIntervalMs ?? 1000);
    this.logTimer = setInterval(() => this.logProgress(), this.deps.logIntervalMs ?? 10_000);
    if (!this.leading) this.log.info({ holder: await this.lease.holder().catch(() => null) }, 'another capture is active; standing by');
  }

  /** True while this process holds the lease and a session is reading. */
  get active(): boolean {
    return this.leading && this.session !== undefined;
  }

  private async leaseTick(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.leading) {
        if (await this.lease.renew()) {
          this.lastRenew = Date.now();
        } else {
          this.log.warn('lost the capture lease; standing by');
          await this.standDown();
        }
      } else if (await this.lease.tryAcquire()) {
        this.leading = true;
        this.lastRenew = Date.now();
        this.log.info('holding the capture lease: capturing');
        this.startSession();
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'capture lease check failed');
      // Without Redis another process may take over once the lease expires: stop before then.
      if (this.leading && Date.now() - this.lastRenew > this.deps.leaseTtlMs * 0.7) await this.standDown();
    }
  }

  private startSession(): void {
    if (!this.leading || this.closed || this.starting || this.session) return;
    const session = new CaptureSession({
      db: this.deps.commitDb ?? this.deps.db,
      connection: this.deps.connection,
      metaSchema: this.deps.metaSchema,
      serverId: this.deps.serverId,
      owner: this.id,
      logger: this.deps.logger,
      ...(this.deps.maxPendingRows ? { maxPendingRows: this.deps.maxPendingRows } : {}),
    });
    this.starting = session
      .start((err) => void this.onSessionFailure(session, err))
      .then(() => {
        if (!this.leading || this.closed) return session.stop();
        this.session = session;
        this.backoffMs = 0;
      })
      .catch(async (err: Error) => {
        await session.stop();
        this.retryLater(err);
      })
      .finally(() => {
        this.starting = undefined;
      });
  }

  private async onSessionFailure(session: CaptureSession, err: Error): Promise<void> {
    if (this.session !== session) return;
    this.session = undefined;
    await session.stop();
    if (err instanceof FencedError) {
      this.log.warn({ err: err.message }, 'another capture took the position over; standing by');
      await this.standDown();
      return;
    }
    this.retryLater(err);
  }

  private retryLater(err: Error): void {
    this.backoffMs = Math.min(30_000, this.backoffMs ? this.backoffMs * 2 : 1000);
    this.log.error({ err: err.message, retry_in_ms: this.backoffMs }, 'capture stopped; starting again from the stored position');
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => this.startSession(), this.backoffMs);
  }

  private async standDown(): Promise<void> {
    this.leading = false;
    clearTimeout(this.restartTimer);
    await this.starting;
    const s = this.session;
    this.session = undefined;
    await s?.stop();
  }

  /** Lag of the active capture as this process sees it; null figures when not capturing. */
  status(): CaptureStatus {
    const s = this.session;
    const p = s?.progress;
    return {
      active: this.active,
      holder: this.id,
      lagSeconds: this.active ? this.lag.seconds : null,
      lagBytes: this.active ? this.lag.bytes : null,
      gtid: p?.position.gtid ?? null,
      file: p?.position.file ?? null,
      pos: p?.position.pos ?? null,
      rowsWritten: p?.rowsWritten ?? 0,
      transactions: p?.transactions ?? 0,
      logs: p?.logs ?? 0,
      at: Date.now(),
    };
  }

  /** Measure how far behind the server capture is, and publish it for status and metrics. */
  private async publishStatus(): Promise<void> {
    const s = this.session;
    if (!this.active || !s) return;
    try {
      const here = s.readerPosition();
      const bytes = bytesBehind(await binlogFiles(this.deps.db), here.file, here.pos);
      const now = Date.now();
      if (bytes === 0) {
        this.lag = { seconds: 0, bytes, behindSince: null };
      } else {
        const behindSince = this.lag.behindSince ?? now;
        const last = s.progress.lastEventTime;
        // Behind since we first saw it, or since the last transaction read, whichever is later.
        const seconds = Math.max(0, (now - Math.max(behindSince, last ?? behindSince)) / 1000);
        this.lag = { seconds, bytes, behindSince };
      }
      if (bytes !== null && bytes > 0 && s.silentForMs(now) > (this.deps.stallMs ?? 60_000)) {
        void this.onSessionFailure(s, new Error(`the binlog stream has been silent for ${Math.round(s.silentForMs(now) / 1000)} s while ${bytes} bytes behind`));
        return;
      }
      await this.deps.redis.set(this.keys.status, JSON.stringify(this.status()), 'PX', Math.max(3 * this.deps.leaseTtlMs, 5000));
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'capture lag not measured');
    }
  }

  private logProgress(): void {
    const s = this.session;
    if (!this.active || !s) return;
    const p = s.progress;
    const now = Date.now();
    const secs = Math.max(0.001, (now - this.lastLogged.at) / 1000);
    this.log.info(
      {
        gtid: p.position.gtid,
        file: p.position.file,
        pos: p.position.pos,
        lag_seconds: this.lag.seconds,
        lag_bytes: this.lag.bytes,
        rows_per_s: Math.round((p.rowsWritten - this.lastLogged.rows) / secs),
        tx_per_s: Math.round((p.transactions - this.lastLogged.transactions) / secs),
        logs: p.logs,
      },
      'capture progress',
    );
    this.lastLogged = { rows: p.rowsWritten, transactions: p.transactions, at: now };
  }

  /** Stop capturing (a commit under way finishes), release the lease. Idempotent. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      clearInterval(this.leaseTimer);
      clearInterval(this.statusTimer);
      clearInterval(this.logTimer);
      clearTimeout(this.restartTimer);
      const wasLeading = this.leading;
      const session = this.session;
      await this.standDown();
      if (wasLeading) {
        await session?.release().catch((err: Error) => this.log.warn({ err: err.message }, 'could not clear the capture position owner'));
        await this.deps.redis.del(this.keys.status).catch(() => {});
        await this.lease.release().catch(() => {});
      }
    })();
    return this.closed;
  }
}
