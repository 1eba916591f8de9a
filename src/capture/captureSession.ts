import type { Knex } from 'knex';
import type { MysqlConnection } from '../db/connect.js';
import type { Logger } from '../log.js';
import { BinlogReader, type BinlogTx, type RowChange } from './binlogReader.js';
import { scanDdl } from './ddlScan.js';
import { encodeBinlogPos, showPos } from '../mlog/binlogPos.js';
import { LogRegistry, loadCapturedLogs, type CapturedLog, type MlogRowImage } from './logRegistry.js';
import {
  POSITION_TABLE,
  ROWS_PER_INSERT,
  insertLogRows,
  lockPosition,
  markBroken,
  releasePosition,
  takeOverPosition,
  writePosition,
  type BinlogPosition,
  type BrokenMark,
  type StoredPosition,
} from './positionStore.js';
import { logRowsFor, resolveImageKeys, type LogRow } from './rowImages.js';
import { binlogSettingProblems, readBinlogSettings } from './settings.js';
import { currentServerPosition } from './serverPosition.js';

// One stretch of capture as the active process: take the position over, read the binlog from
// it, turn row events of captured tables into log rows and commit them together with the new
// position. Transactions read while a commit runs join the next one (group commit); a reader
// too far ahead of the commits is paused. Anything unexpected ends the session; the process
// (capture.ts) starts a new one from the stored position, so nothing in memory matters.

export interface CaptureSessionDeps {
  db: Knex;
  connection: MysqlConnection;
  /** The schema of mvsched's metadata (DATABASE_URL's database). */
  metaSchema: string;
  serverId: number;
  owner: string;
  logger: Logger;
  /** Pause reading when this many log rows wait for a commit. */
  maxPendingRows?: number;
  /**
   * Store a position moved only by other tables' transactions at most this often. A refresh's
   * cut waits until the stored position passes its own (mlog/binlogCut.ts), and the refresh's
   * own metadata writes come just before it, so this is latency every BINLOG cut may pay.
   */
  idlePersistMs?: number;
  /** Group-commit window: log rows wait at most this long for more to commit with (ms). */
  commitDelayMs?: number;
  /** Commit at once when this many log rows wait. */
  maxBatchRows?: number;
}

export interface CaptureProgress {
  position: BinlogPosition;
  /** Commit time of the last transaction read (epoch ms), or null before the first. */
  lastEventTime: number | null;
  rowsWritten: number;
  transactions: number;
  bytesRead: number;
  logs: number;
}

interface Pending {
  rows: Map<number, { log: CapturedLog; rows: LogRow[] }>;
  rowCount: number;
  broken: BrokenMark[];
  /** Log set changed: the stored active list must follow. */
  changed: boolean;
  /** Position moved by a transaction that was not this capture's own commit. */
  foreign: boolean;
  /** A refresh's cut waits for this position to be stored (it wrote the ping row): commit now. */
  ping: boolean;
  position: BinlogPosition | undefined;
  activeMlogs: number[];
  eventTime: Date | null;
}

/** Server errors that say a log table can no longer take its rows. */
const LOG_TABLE_ERRORS = new Set([1054, 1136, 1146, 1264, 1265, 1366, 1406, 1292]);
/** Default of idlePersistMs: at most 20 position-only commits a second. */
const IDLE_PERSIST_MS = 50;
/** Written by a refresh's cut that waits for capture to store a position past it (mlog/binlogCut.ts). */
const PING_TABLE = 'mvs_capture_ping';
/** A missing log table younger than this may be one CREATE ... USING BINLOG is still making. */
const NEW_LOG_GRACE_MS = 60_000;

export class CaptureSession {
  private reader: BinlogReader | undefined;
  private registry = new LogRegistry();
  private stored: StoredPosition | undefined;
  private pending: Pending = this.emptyPending();
  private flushing: Promise<void> | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  /** The timer is the group-commit window (not the idle position save). */
  private flushTimerForRows = false;
  private paused = false;
  private stopped = false;
  private lastPersist = 0;
  private readonly keyCache = new Map<number, { mlogId: number; keys: string[] } | { mlogId: number; missing: string }>();
  private readonly log: Logger;
  private failure: ((err: Error) => void) | undefined;
  readonly progress: CaptureProgress = { position: { gtid: null, file: null, pos: null }, lastEventTime: null, rowsWritten: 0, transactions: 0, bytesRead: 0, logs: 0 };

  constructor(private readonly deps: CaptureSessionDeps) {
    this.log = deps.logger.child({ component: 'capture' });
  }

  private emptyPending(): Pending {
    return { rows: new Map(), rowCount: 0, broken: [], changed: false, foreign: false, ping: false, position: undefined, activeMlogs: [], eventTime: null };
  }

  /** Start reading; `onFailure` hears of whatever ends the session afterwards. */
  async start(onFailure: (err: Error) => void): Promise<void> {
    this.failure = onFailure;
    const { db } = this.deps;
    const problems = binlogSettingProblems(await readBinlogSettings(db));
    if (problems.length) throw new Error(`binlog capture cannot run: ${problems.join('; ')}`);
    let stored = await takeOverPosition(db, this.deps.owner, {
      onKill: (connId) => this.log.warn({ connection: connId }, 'the previous capture hangs on to the position mid-commit: killing its connection'),
    });
    if (stored.gtid === null && stored.file === null) stored = await this.startFresh(stored);
    else if (stored.activeMlogs.length === 0) stored = await this.skipIdleStretch(stored);
    this.stored = stored;
    const logs = await loadCapturedLogs(db);
    const active = new Set(stored.activeMlogs);
    this.registry = new LogRegistry(logs.filter((l) => active.has(l.mlogId)));
    this.progress.position = { gtid: stored.gtid, file: stored.file, pos: stored.pos };
    this.progress.logs = this.registry.size;
    this.pending.activeMlogs = this.registry.ids();
    try {
      await this.openReader(stored);
    } catch (err) {
      if ((err as { errno?: number }).errno !== 1236) throw err;
      await this.afterBinlogGone((err as Error).message);
    }
    this.log.info({ gtid: this.stored.gtid, file: this.stored.file, pos: this.stored.pos, logs: this.registry.ids(), epoch: this.stored.epoch }, 'capture reading the binary log');
  }

  private async openReader(from: BinlogPosition): Promise<void> {
    const { metaSchema } = this.deps;
    this.reader = new BinlogReader({
      connection: this.deps.connection,
      serverId: this.deps.serverId,
      from,
      tables: () => [
        { schema: metaSchema, table: 'mvs_mlogs' },
        { schema: metaSchema, table: POSITION_TABLE },
        { schema: metaSchema, table: PING_TABLE },
        ...this.registry.tables(),
      ],
      wants: (schema, table) =>
        (schema === metaSchema && (table === 'mvs_mlogs' || table === POSITION_TABLE || table === PING_TABLE)) ||
        this.registry.forTable(schema, table) !== undefined,
      onTransaction: (tx) => this.onTransaction(tx),
      onError: (err) => {
        // The server answers a dump from a purged position only once streaming has begun.
        if (err.errno === 1236 && this.progress.transactions === 0) void this.afterBinlogGone(err.message);
        else this.fail(err);
      },
    });
    await this.reader.start();
  }

  private async afterBinlogGone(why: string): Promise<void> {
    try {
      this.reader?.stop();
      this.stored = await this.binlogGone(this.stored!, why);
      this.registry = new LogRegistry();
      this.pending = this.emptyPending();
      this.progress.position = { gtid: this.stored.gtid, file: this.stored.file, pos: this.stored.pos };
      if (!this.stopped) await this.openReader(this.stored);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  /**
   * No position was ever stored (the binary log was off when the metadata was made): start at
   * the server's position now. A BINLOG log that exists already may have missed changes.
   */
  private async startFresh(stored: StoredPosition): Promise<StoredPosition> {
    const here = await currentServerPosition(this.deps.db);
    const logs = await loadCapturedLogs(this.deps.db);
    await this.deps.db.transaction(async (trx) => {
      await lockPosition(trx, stored.epoch);
      for (const l of logs) {
        await markBroken(trx, { mlogId: l.mlogId, reason: 'capture had no starting position in the binary log when this log was created; changes before its first run are missing (re-create the log)' });
      }
      await writePosition(trx, { position: here, activeMlogs: [], eventTime: null });
    });
    if (logs.length) this.log.error({ logs: logs.map((l) => l.mlogId) }, 'capture starts for the first time after logs were created: those logs are BROKEN');
    return { ...stored, ...here, activeMlogs: [] };
  }

  /**
   * With no BINLOG log to fill, nothing before now matters: start at the server's position
   * instead of reading the binlog written since capture last ran (on a busy server, or on the
   * first start after the migrations, that can be a lot). A locking read of mvs_mlogs keeps a
   * log from being created in between: one created afterwards commits after this position.
   */
  private async skipIdleStretch(stored: StoredPosition): Promise<StoredPosition> {
    let moved: BinlogPosition | undefined;
    await this.deps.db.transaction(async (trx) => {
      await lockPosition(trx, stored.epoch);
      const [logs] = (await trx.raw("SELECT mlog_id FROM mvs_mlogs WHERE capture_mode = 'BINLOG' AND state = 'OK' LOCK IN SHARE MODE")) as [unknown[]];
      if (logs.length > 0) return;
      moved = await currentServerPosition(trx);
      await writePosition(trx, { position: moved, activeMlogs: [], eventTime: null });
    });
    return moved ? { ...stored, ...moved } : stored;
  }

  /** The binlog files from the stored position on are gone: every BINLOG log has a gap. */
  private async binlogGone(stored: StoredPosition, why: string): Promise<StoredPosition> {
    const here = await currentServerPosition(this.deps.db);
    const logs = await loadCapturedLogs(this.deps.db);
    const at = stored.gtid ? `GTID ${stored.gtid}` : `${stored.file}:${stored.pos}`;
    const reason = `binary log files capture had not read yet were purged (it had reached ${at}; the server said: ${why}); changes are missing (re-create the log)`;
    await this.deps.db.transaction(async (trx) => {
      await lockPosition(trx, stored.epoch);
      for (const l of logs) await markBroken(trx, { mlogId: l.mlogId, reason });
      await writePosition(trx, { position: here, activeMlogs: [], eventTime: null });
    });
    this.log.error({ logs: logs.map((l) => l.mlogId), from: at, to: here }, 'binary log files were purged before capture read them: logs marked BROKEN');
    return { ...stored, ...here, activeMlogs: [] };
  }

  // ---- reading (synchronous: the log set must change before the next event is read) ----

  private onTransaction(tx: BinlogTx): void {
    if (this.stopped) return;
    let own = false;
    for (const ch of tx.changes) {
      if (ch.schema === this.deps.metaSchema && ch.table === POSITION_TABLE) own = true;
      else if (ch.schema === this.deps.metaSchema && ch.table === PING_TABLE) this.pending.ping = true;
      else if (ch.schema === this.deps.metaSchema && ch.table === 'mvs_mlogs') this.onMlogsChange(ch);
      else this.onRows(ch, tx);
    }
    if (tx.ddl) this.onDdl(tx);
    const p = this.pending;
    p.position = tx.position;
    p.eventTime = new Date(tx.timestamp);
    p.activeMlogs = this.registry.ids();
    if (!own) p.foreign = true;
    this.progress.position = tx.position;
    this.progress.lastEventTime = tx.timestamp;
    this.progress.transactions++;
    this.progress.bytesRead += tx.bytes;
    this.progress.logs = this.registry.size;
    this.scheduleFlush();
  }

  private onMlogsChange(ch: RowChange): void {
    for (const r of ch.rows) {
      const [before, after] =
        ch.kind === 'insert' ? [null, r as MlogRowImage] : ch.kind === 'delete' ? [r as MlogRowImage, null] : [(r as { before: MlogRowImage }).before, (r as { after: MlogRowImage }).after];
      const { added, removed } = this.registry.applyRowChange(before, after);
      if (added || removed) {
        this.pending.changed = true;
        this.keyCache.clear();
        this.reader?.tablesChanged();
        if (added) this.log.info({ mlog_id: added.mlogId, table: `${added.schema}.${added.table}` }, 'capture starts filling the log');
        if (removed) this.log.info({ mlog_id: removed.mlogId, table: `${removed.schema}.${removed.table}` }, 'capture stops filling the log');
      }
    }
  }

  private onRows(ch: RowChange, tx: BinlogTx): void {
    const log = this.registry.forTable(ch.schema, ch.table);
    if (!log) return;
    let k = this.keyCache.get(ch.tableId);
    if (!k || k.mlogId !== log.mlogId) {
      k = { mlogId: log.mlogId, ...resolveImageKeys(log.columns, ch.columns) };
      this.keyCache.set(ch.tableId, k);
    }
    if ('missing' in k) {
      this.breakLog(log, `column ${k.missing} of ${log.schema}.${log.table} is no longer in the table (dropped or renamed; binlog ${tx.gtid ?? tx.position.file + ':' + tx.position.pos})`);
      return;
    }
    const rows = logRowsFor(ch.kind, ch.rows, k.keys);
    if (rows.length === 0) return;
    // Where the transaction ends: a cut at binlog position P takes the rows with bpos <= P.
    const bpos = encodeBinlogPos(tx.position.file, tx.position.pos);
    if (bpos === undefined) throw new Error(`binlog position ${showPos(tx.position)} cannot be encoded (no file number)`);
    for (const r of rows) r.push(bpos);
    let entry = this.pending.rows.get(log.mlogId);
    if (!entry) this.pending.rows.set(log.mlogId, (entry = { log, rows: [] }));
    for (const r of rows) entry.rows.push(r);
    this.pending.rowCount += rows.length;
  }

  private onDdl(tx: BinlogTx): void {
    const { schema, query } = tx.ddl!;
    const at = tx.gtid ?? `${tx.position.file}:${tx.position.pos}`;
    for (const e of scanDdl(query, schema)) {
      if (e.kind === 'dropSchema') {
        for (const l of this.registry.inSchema(e.schema)) this.breakLog(l, `database ${e.schema} was dropped with base table ${l.schema}.${l.table} (binlog ${at})`);
        continue;
      }
      const log = this.registry.forTable(e.schema, e.table);
      if (!log) continue;
      const name = `${e.schema}.${e.table}`;
      switch (e.kind) {
        case 'dropTable':
          this.breakLog(log, `base table ${name} was dropped or replaced (binlog ${at})`);
          break;
        case 'renameTable':
          this.breakLog(log, `base table ${name} was renamed to ${e.to} (binlog ${at})`);
          break;
        case 'dropColumn':
        case 'renameColumn':
          if (log.columns.some((c) => c.toLowerCase() === e.column.toLowerCase())) {
            this.breakLog(log, `column ${e.column} of ${name} was ${e.kind === 'dropColumn' ? 'dropped' : `renamed to ${e.to}`} (binlog ${at})`);
          }
          break;
        case 'truncate':
          // Its rows go without row events. The table's InnoDB id moves with it: the next
          // refresh of an MV over it, and the planner's drift check, see that and refresh the MVs
          // COMPLETE (trigger SYSTEM); nothing to record here.
          this.log.warn({ mlog_id: log.mlogId, table: name, binlog: at }, 'captured table truncated: its MVs get a complete refresh');
          break;
      }
    }
  }

  /** Stop filling a log and mark it BROKEN in the next commit; other logs carry on. */
  private breakLog(log: CapturedLog, reason: string): void {
    if (!this.registry.remove(log.mlogId)) return;
    this.pending.broken.push({ mlogId: log.mlogId, reason });
    this.pending.changed = true;
    this.keyCache.clear();
    this.reader?.tablesChanged();
    this.log.error({ mlog_id: log.mlogId, table: `${log.schema}.${log.table}`, reason }, 'MV log BROKEN');
  }

  // ---- committing ----

  private scheduleFlush(): void {
    if (this.flushing) {
      if (this.pending.rowCount >= (this.deps.maxPendingRows ?? 20_000) && !this.paused) {
        this.paused = true;
        this.reader?.pause();
      }
      return;
    }
    const p = this.pending;
    if (p.ping) {
      // A refresh waits for this position: no group-commit window, no idle throttle.
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
      setImmediate(() => this.flush());
    } else if (p.rowCount > 0 || p.broken.length > 0 || p.changed) {
      // Group commit: what arrives within the window joins this commit, so a stream of small
      // transactions costs capture one transaction per window, not one per writer commit.
      if (p.rowCount >= (this.deps.maxBatchRows ?? 5000) || p.broken.length > 0 || p.changed) {
        clearTimeout(this.flushTimer);
        this.flushTimer = undefined;
        setImmediate(() => this.flush());
      } else if (!this.flushTimer || !this.flushTimerForRows) {
        clearTimeout(this.flushTimer);
        this.flushTimerForRows = true;
        this.flushTimer = setTimeout(() => {
          this.flushTimer = undefined;
          this.flush();
        }, this.deps.commitDelayMs ?? 25);
      }
    } else if (p.foreign && !this.flushTimer) {
      const wait = Math.max(0, this.lastPersist + (this.deps.idlePersistMs ?? IDLE_PERSIST_MS) - Date.now());
      this.flushTimerForRows = false;
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        this.flush();
      }, wait);
      this.flushTimer.unref();
    }
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.flushing || this.stopped || !this.pending.position) return;
    const batch = this.pending;
    this.pending = { ...this.emptyPending(), position: batch.position, activeMlogs: batch.activeMlogs, eventTime: batch.eventTime };
    this.flushing = this.commit(batch)
      .then(() => {
        this.lastPersist = Date.now();
        this.progress.rowsWritten += batch.rowCount;
      })
      .catch((err: Error) => this.fail(err))
      .finally(() => {
        this.flushing = undefined;
        if (this.paused && !this.stopped) {
          this.paused = false;
          this.reader?.resume();
        }
        if (!this.stopped) this.scheduleFlush();
      });
  }

  private async commit(batch: Pending): Promise<void> {
    const broken = [...batch.broken];
    await this.deps.db.transaction(async (trx) => {
      // First: it fails at once when another capture took over, and holds the row to the commit.
      await lockPosition(trx, this.stored!.epoch, { position: batch.position!, activeMlogs: batch.activeMlogs, eventTime: batch.eventTime });
      for (const [mlogId, { log, rows }] of batch.rows) {
        if (broken.some((b) => b.mlogId === mlogId)) continue;
        const problem = await this.insertOrDiagnose(trx, log, rows);
        if (problem) {
          broken.push({ mlogId, reason: problem });
          this.registry.remove(mlogId);
          this.reader?.tablesChanged();
          this.log.error({ mlog_id: mlogId, reason: problem }, 'MV log BROKEN');
        }
      }
      for (const b of broken) await markBroken(trx, b);
      if (broken.length > batch.broken.length) {
        const gone = new Set(broken.map((b) => b.mlogId));
        await writePosition(trx, { position: batch.position!, activeMlogs: batch.activeMlogs.filter((id) => !gone.has(id)), eventTime: batch.eventTime });
      }
    });
  }

  /**
   * Insert a log's rows; when the log table itself cannot take them, say why (the log is then
   * BROKEN and the others are still written). A log dropped meanwhile just loses its rows.
   */
  private async insertOrDiagnose(trx: Knex.Transaction, log: CapturedLog, rows: LogRow[]): Promise<string | undefined> {
    // A failed statement leaves none of its rows; with several statements (chunks), a savepoint
    // takes the earlier ones back too.
    const savepoint = rows.length > ROWS_PER_INSERT;
    if (savepoint) await trx.raw('SAVEPOINT mvs_log');
    try {
      await insertLogRows(trx, log, rows);
      return undefined;
    } catch (err) {
      const e = err as { errno?: number; sqlMessage?: string };
      if (!LOG_TABLE_ERRORS.has(e.errno ?? 0)) throw err;
      if (savepoint) await trx.raw('ROLLBACK TO SAVEPOINT mvs_log');
      const [meta] = (await trx('mvs_mlogs').where({ mlog_id: log.mlogId }).select('created_at', 'state')) as Array<{ created_at: Date; state: string }>;
      if (!meta || meta.state !== 'OK') return undefined; // dropped or broken meanwhile: nothing to keep
      if (e.errno === 1146 && Date.now() - meta.created_at.getTime() < NEW_LOG_GRACE_MS) {
        throw new Error(`log table ${log.schema}.${log.logTable} does not exist yet (the log was just created); retrying`);
      }
      return `log table ${log.schema}.${log.logTable} cannot take captured rows: ${e.sqlMessage ?? String(err)}`;
    }
  }

  private fail(err: Error): void {
    if (this.stopped) return;
    const f = this.failure;
    this.failure = undefined;
    f?.(err);
  }

  /** Stop reading; a commit under way finishes (or fails) before this resolves. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.flushTimer);
    this.reader?.stop();
    await this.flushing?.catch(() => {});
  }

  /** After stop(), when the process shuts down: the position no longer has an owner. */
  async release(): Promise<void> {
    if (this.stored) await releasePosition(this.deps.db, this.stored.epoch);
  }

  /**
   * Milliseconds the binlog stream has been silent while not held back by a commit; the
   * process restarts a session whose stream stays silent while the server is ahead of it (a
   * connection that died without an error).
   */
  silentForMs(now = Date.now()): number {
    if (!this.reader || this.flushing || this.paused) return 0;
    return now - this.reader.lastEventAt;
  }

  /** Where the reader is in the server's binlog files (past commits and file headers too). */
  readerPosition(): { file: string | null; pos: number | null } {
    return this.reader?.position() ?? { file: this.progress.position.file, pos: this.progress.position.pos };
  }
}
