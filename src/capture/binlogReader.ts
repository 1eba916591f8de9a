import ZongJi, { GtidSet, MariadbGtidPosition, type AnyBinlogEvent, type ZongJiOptions } from '@vlasky/zongji';
import type { MysqlConnection } from '../db/connect.js';
import type { RowChangeKind } from './rowImages.js';
import type { BinlogPosition } from './positionStore.js';

// The binary log as a sequence of committed transactions, read with @vlasky/zongji (a maintained
// binlog client on mysql2; MariaDB GTIDs, full table-map metadata). Row events are kept only for
// the tables the caller wants; the rest of a transaction only moves the position. Transactions
// are handed over synchronously, in commit order, as each commit event arrives, so whatever the
// caller changes in `wants` applies from the very next event.

export interface RowChange {
  schema: string;
  table: string;
  /** The table map this event used (its column names tell what the table looked like then). */
  tableId: number;
  columns: string[];
  kind: RowChangeKind;
  rows: unknown[];
}

export interface BinlogTx {
  /** `domain-server-seq` on MariaDB, `uuid:n` on MySQL; undefined for anonymous transactions. */
  gtid: string | undefined;
  /** The position right after this transaction, GTID included. */
  position: BinlogPosition;
  /** Commit time (binlog header, whole seconds). */
  timestamp: number;
  changes: RowChange[];
  /** A DDL statement (it commits on its own). */
  ddl?: { schema: string; query: string };
  /** Binlog bytes this transaction took, for throughput figures. */
  bytes: number;
}

export interface BinlogReaderOptions {
  connection: MysqlConnection;
  /** Replica id the server knows this reader by; unique among its replicas. */
  serverId: number;
  /** Where to start; null everywhere: at the server's current end. */
  from: BinlogPosition;
  /** The tables whose row events matter; the reader skips the others' rows without decoding them. */
  tables(): Array<{ schema: string; table: string }>;
  wants(schema: string, table: string): boolean;
  onTransaction(tx: BinlogTx): void;
  onError(err: Error & { code?: string; errno?: number }): void;
}

const EVENTS = ['tablemap', 'writerows', 'updaterows', 'deleterows', 'xid', 'query', 'mariadbgtid', 'gtid', 'rotate', 'xaprepare',
  // Only to follow the position over file headers (for the bytes-behind figure).
  'format', 'mariadbgtidlist', 'binlogcheckpoint', 'previousgtids'];

/** The GTID position after one more transaction, in the server's own notation. */
class GtidTracker {
  private readonly maria: MariadbGtidPosition | undefined;
  private readonly mysql: GtidSet | undefined;
  constructor(start: string, mariadb: boolean) {
    if (mariadb) this.maria = MariadbGtidPosition.parse(start);
    else this.mysql = GtidSet.parse(start);
  }
  add(gtid: string): void {
    if (this.maria) {
      const [d, s, n] = gtid.split('-');
      this.maria.add({ domainId: Number(d), serverId: Number(s), seqNo: n! });
    } else {
      this.mysql!.add(gtid);
    }
  }
  toString(): string {
    return (this.maria ?? this.mysql)!.toString();
  }
}

export class BinlogReader {
  private zongji: ZongJi | undefined;
  private stopped = false;
  private file: string | null;
  private pos: number | null;
  private gtids: GtidTracker | undefined;
  private current: { gtid: string | undefined; changes: RowChange[]; bytes: number; begun: boolean } | undefined;

  constructor(private readonly opts: BinlogReaderOptions) {
    this.file = opts.from.file;
    this.pos = opts.from.pos;
  }

  /** Connect and stream; resolves once the stream is open (errors after that go to onError). */
  async start(): Promise<void> {
    const { connection: c } = this.opts;
    const z = new ZongJi({
      host: c.host,
      port: c.port,
      user: c.user,
      password: c.password,
      // Values as the log table takes them back: temporal values as UTC strings (the writer's
      // session is UTC too), exact decimals and big integers as strings, JSON as its text.
      dateStrings: true,
      timezone: 'Z',
      jsonStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    this.zongji = z;
    z.on('binlog', (e: AnyBinlogEvent) => {
      try {
        this.onEvent(e);
      } catch (err) {
        this.fail(err as Error);
      }
    });
    z.on('error', (err: Error) => this.fail(err));
    const from = this.opts.from;
    const start: ZongJiOptions = { serverId: this.opts.serverId, includeEvents: EVENTS, includeSchema: this.schemaFilter() };
    // A GTID position survives a failover to a replica; file and position are the fallback (a
    // MySQL server without gtid_mode, or a position taken before the first transaction).
    if (from.gtid) start.gtidSet = from.gtid;
    else if (from.file !== null && from.pos !== null) Object.assign(start, { filename: from.file, position: from.pos });
    else if (from.gtid === '') start.gtidSet = '';
    else start.startAtEnd = true;
    await new Promise<void>((resolve, reject) => {
      const onReady = () => {
        z.off('error', onFail);
        resolve();
      };
      const onFail = (err: Error) => {
        z.off('ready', onReady);
        reject(err);
      };
      z.once('ready', onReady);
      z.once('error', onFail);
      z.start(start);
    });
    // Seeded by zongji from the start position (or the server's, at the end).
    this.gtids = new GtidTracker(z.gtidSet ?? from.gtid ?? '', z.isMariaDb);
    if (this.file === null) this.file = z.options.filename ?? null;
  }

  private fail(err: Error): void {
    if (this.stopped) return;
    this.opts.onError(err);
  }

  /** The reader's own place in the server's files, whatever the event. */
  position(): { file: string | null; pos: number | null } {
    return { file: this.file, pos: this.pos };
  }

  /** When the last event arrived (epoch ms): a stream that stays silent while behind is stuck. */
  lastEventAt = Date.now();

  private onEvent(e: AnyBinlogEvent): void {
    if (this.stopped) return;
    this.lastEventAt = Date.now();
    if (e.nextPosition > 0) this.pos = e.nextPosition;
    switch (e.getEventName()) {
      case 'rotate':
        this.file = (e as { binlogName: string }).binlogName;
        this.pos = (e as { position: number }).position;
        return;
      case 'mariadbgtid':
        // A non-standalone group is a transaction (the GTID event stands for its BEGIN).
        this.current = { gtid: e.gtid, changes: [], bytes: e.size, begun: !(e as { standalone: boolean }).standalone };
        return;
      case 'gtid':
        this.current = { gtid: e.gtid, changes: [], bytes: e.size, begun: false };
        return;
      case 'tablemap':
        if (this.current) this.current.bytes += e.size;
        return;
      case 'writerows':
      case 'updaterows':
      case 'deleterows':
        return this.onRows(e as AnyBinlogEvent & { tableId: number; tableMap: Record<number, { parentSchema: string; tableName: string; columnSchemas: Array<{ COLUMN_NAME: string }> }>; rows: unknown[] });
      case 'xid':
      case 'xaprepare':
        return this.commit(e);
      case 'query': {
        const q = e as AnyBinlogEvent & { query: string; schema: string };
        const text = q.query.trim().replace(/\s+/g, ' ').toUpperCase();
        if (text === 'BEGIN') {
          if (this.current) this.current.begun = true;
          return;
        }
        // COMMIT ends a transaction on a non-transactional engine (as ROLLBACK does: its rows
        // stay written); XA COMMIT / ROLLBACK is a group of its own.
        if (text === 'COMMIT' || text === 'ROLLBACK' || text.startsWith('XA COMMIT') || text.startsWith('XA ROLLBACK')) return this.commit(e);
        if (/^(SAVEPOINT|ROLLBACK TO|RELEASE SAVEPOINT|XA START|XA BEGIN|XA END)\b/.test(text)) return;
        // Any other statement inside a transaction body is not DDL; outside one it commits on
        // its own.
        if (this.current?.begun) return;
        return this.commit(e, { schema: q.schema, query: q.query });
      }
    }
  }

  private onRows(e: AnyBinlogEvent & { tableId: number; tableMap: Record<number, { parentSchema: string; tableName: string; columnSchemas: Array<{ COLUMN_NAME: string }> }>; rows: unknown[] }): void {
    const cur = (this.current ??= { gtid: e.gtid, changes: [], bytes: 0, begun: true });
    cur.bytes += e.size;
    const map = e.tableMap[e.tableId];
    if (!map || !this.opts.wants(map.parentSchema, map.tableName)) return;
    const kind = e.getEventName() === 'writerows' ? 'insert' : e.getEventName() === 'updaterows' ? 'update' : 'delete';
    cur.changes.push({
      schema: map.parentSchema,
      table: map.tableName,
      tableId: e.tableId,
      columns: map.columnSchemas.map((c) => c.COLUMN_NAME),
      kind,
      rows: e.rows,
    });
  }

  private commit(e: AnyBinlogEvent, ddl?: { schema: string; query: string }): void {
    const cur = this.current ?? { gtid: e.gtid, changes: [], bytes: 0, begun: false };
    this.current = undefined;
    const gtid = cur.gtid ?? e.gtid;
    if (gtid !== undefined) this.gtids!.add(gtid);
    this.opts.onTransaction({
      gtid,
      // Anonymous transactions (MySQL without gtid_mode): file and position only.
      position: { gtid: gtid === undefined ? null : this.gtids!.toString(), file: this.file, pos: e.nextPosition },
      timestamp: e.timestamp,
      changes: cur.changes,
      ...(ddl ? { ddl } : {}),
      bytes: cur.bytes + e.size,
    });
  }

  private schemaFilter(): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (const { schema, table } of this.opts.tables()) (out[schema] ??= []).push(table);
    return out;
  }

  /**
   * The set of tables changed: filter from the next event on. Called from within a transaction
   * handler, so it takes effect before the following event is decoded (zongji applies its
   * schema filter when it reads a table map).
   */
  tablesChanged(): void {
    if (this.zongji && !this.stopped) this.zongji.start({ includeEvents: EVENTS, includeSchema: this.schemaFilter() });
  }

  /** Stop reading from the server until resume() (backpressure while a commit is slow). */
  pause(): void {
    this.zongji?.connection?.pause();
  }

  resume(): void {
    this.zongji?.connection?.resume();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.zongji?.stop();
  }
}
