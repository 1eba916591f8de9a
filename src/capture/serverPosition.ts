import type { Executor } from '../mv/repository.js';
import type { BinlogPosition } from './positionStore.js';

// The server's own binary-log position and files: where capture starts when it has nothing to
// resume from, and how far behind it is.

export async function currentServerPosition(db: Executor): Promise<BinlogPosition> {
  const [[v]] = (await db.raw('SELECT @@version AS version')) as [Array<{ version: string }>];
  const mariadb = /mariadb/i.test(v!.version);
  const [[g]] = (await db.raw(mariadb ? 'SELECT @@global.gtid_binlog_pos AS p' : 'SELECT @@global.gtid_executed AS p')) as [Array<{ p: string | null }>];
  // MySQL 8.4 renamed it.
  const [status] = (await db.raw('SHOW MASTER STATUS').catch(() => db.raw('SHOW BINARY LOG STATUS'))) as [Array<{ File: string; Position: number | string }>];
  return {
    gtid: String(g!.p ?? '').replace(/\s/g, ''),
    file: status[0]?.File ?? null,
    pos: status[0] ? Number(status[0].Position) : null,
  };
}

export interface BinlogFile {
  name: string;
  size: number;
}

export async function binlogFiles(db: Executor): Promise<BinlogFile[]> {
  const [rows] = (await db.raw('SHOW BINARY LOGS')) as [Array<{ Log_name: string; File_size: number | string }>];
  return rows.map((r) => ({ name: r.Log_name, size: Number(r.File_size) }));
}

/** Bytes of binary log after `file:pos`; null when that file is not among the server's. */
export function bytesBehind(files: BinlogFile[], file: string | null, pos: number | null): number | null {
  if (file === null || pos === null) return null;
  const i = files.findIndex((f) => f.name === file);
  if (i < 0) return null;
  let n = Math.max(0, files[i]!.size - pos);
  for (const f of files.slice(i + 1)) n += f.size;
  return n;
}
