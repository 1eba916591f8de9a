import type { Knex } from 'knex';
import { setupLogs, type FastSetup } from '../fast/explain.js';
import { identityProblem, readLogIdentities } from '../mlog/identity.js';
import { SEQ_COLUMN } from '../mlog/names.js';
import { quoteIdent } from '../mv/identifiers.js';
import type { MlogLink } from './method.js';

// A FAST refresh whose trigger logs hold nothing past the MV's watermarks applies nothing, and
// needs no consistent cut to know it. The cut exists so that a watermark never moves past a
// sequence number a writer has drawn but not committed; a run that moves no watermark cannot do
// that. A trigger writes its log row in the writer's own transaction, so at the moment a read
// finds no row past a watermark, every change committed before that moment is in the MV: that
// moment is the run's data time. The log's identity is checked after the read, as after a cut,
// so a table re-created before it (triggers gone, nothing captured) is never taken for "no
// changes". BINLOG logs are filled by capture after the commit: emptiness there proves nothing
// without waiting for capture, so they always take the cut.

/** Why the shortcut is not taken: the run goes the full way (cut, apply, watermarks). */
export type NotEmpty = 'backlog' | 'binlog' | 'unknown-identity';

/**
 * One statement on the lock transaction (READ COMMITTED: a fresh view of committed rows) reads
 * the database's clock and, per log, whether a row lies past the MV's watermark. Returns the
 * data time when nothing is to be applied: valid only once `identityHolds` (read after this
 * statement returned) says every log still captures its table.
 */
export async function probeEmpty(lock: Knex.Transaction, setup: FastSetup, links: MlogLink[]): Promise<{ dataTime: Date } | NotEmpty> {
  if (setupLogs(setup).some((m) => m.capture_mode === 'BINLOG')) return 'binlog';
  // Without the base table's identity recorded by a full run, a run must record it.
  if (links.some((l) => l.mvToken === null)) return 'unknown-identity';
  const probes = links.map(
    (l, i) => `EXISTS(SELECT 1 FROM ${quoteIdent(l.table.schema)}.${quoteIdent(l.logTable)} WHERE ${quoteIdent(SEQ_COLUMN)} > ?) AS b${i}`,
  );
  const [rows] = (await lock.raw(`SELECT NOW(3) AS at, ${probes.join(', ')}`, links.map((l) => l.watermark))) as [Array<Record<string, unknown>>];
  const row = rows[0]!;
  if (links.some((_, i) => Number(row[`b${i}`]) !== 0)) return 'backlog';
  return { dataTime: row.at as Date };
}

/**
 * Every log is still a trigger log on the table the MV last read in full (same identity token,
 * its triggers in place). One round trip on the pool; the caller starts it only after the probe
 * returned, so a table replaced before the probe is seen here.
 */
export async function identityHolds(db: Knex, setup: FastSetup, links: MlogLink[]): Promise<boolean> {
  const logs = setupLogs(setup);
  const ids = await readLogIdentities(db, logs);
  for (const m of logs) {
    const id = ids.get(m.mlog_id);
    if (!id || id.captureMode === 'BINLOG' || identityProblem(m, id)) return false;
    const link = links.find((l) => l.mlogId === m.mlog_id);
    if (link?.mvToken !== null && id.token !== null && link?.mvToken !== id.token) return false;
  }
  return true;
}

/** A log a previous run of the MV consumed: where the next run looks before it knows its links. */
export interface LogTop {
  mlogId: number;
  schema: string;
  logTable: string;
}

/** The database's clock and each log's highest sequence number, read in one statement. */
export interface Tops {
  at: Date;
  top: Map<number, number>;
}

/**
 * The probe of `probeEmpty`, made before the run knows its links (with the other reads after
 * the lock): the logs are a guess from the previous run and watermarks are compared afterwards,
 * so it reads each log's top (an index end, not a range: no watermark needed in the statement).
 */
export async function readTops(db: Knex, logs: LogTop[]): Promise<Tops> {
  const tops = logs.map((l, i) => `(SELECT MAX(${quoteIdent(SEQ_COLUMN)}) FROM ${quoteIdent(l.schema)}.${quoteIdent(l.logTable)}) AS t${i}`);
  const [rows] = (await db.raw(`SELECT NOW(3) AS at, ${tops.join(', ')}`)) as [Array<Record<string, unknown>>];
  const row = rows[0]!;
  return { at: row.at as Date, top: new Map(logs.map((l, i) => [l.mlogId, row[`t${i}`] === null ? 0 : Number(row[`t${i}`])])) };
}

/** Was the guess right: the same logs, in the same tables, as the run's links? */
export function topsCover(guess: LogTop[], links: MlogLink[]): boolean {
  return (
    guess.length === links.length &&
    links.every((l) => guess.some((g) => g.mlogId === l.mlogId && g.schema === l.table.schema && g.logTable === l.logTable))
  );
}

/** `probeEmpty` answered from tops read earlier (`readTops`) of the same logs. */
export function emptyFromTops(setup: FastSetup, links: MlogLink[], tops: Tops): { dataTime: Date } | NotEmpty {
  if (setupLogs(setup).some((m) => m.capture_mode === 'BINLOG')) return 'binlog';
  if (links.some((l) => l.mvToken === null)) return 'unknown-identity';
  if (links.some((l) => (tops.top.get(l.mlogId) ?? Infinity) > l.watermark)) return 'backlog';
  return { dataTime: tops.at };
}
