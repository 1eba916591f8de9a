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
export type NotEmpty = 'backlog' | 'binlog' | 'unknown-identity' | 'identity';

/**
 * One statement on the lock transaction (READ COMMITTED: a fresh view of committed rows) reads
 * the database's clock and, per log, whether a row lies past the MV's watermark; then one reads
 * every log's identity. Returns the data time when nothing is to be applied.
 */
export async function nothingToApply(
  db: Knex,
  lock: Knex.Transaction,
  setup: FastSetup,
  links: MlogLink[],
): Promise<{ dataTime: Date } | NotEmpty> {
  const logs = setupLogs(setup);
  if (logs.some((m) => m.capture_mode === 'BINLOG')) return 'binlog';
  // Without the base table's identity recorded by a full run, a run must record it.
  if (links.some((l) => l.mvToken === null)) return 'unknown-identity';
  const probes = links.map(
    (l, i) => `EXISTS(SELECT 1 FROM ${quoteIdent(l.table.schema)}.${quoteIdent(l.logTable)} WHERE ${quoteIdent(SEQ_COLUMN)} > ?) AS b${i}`,
  );
  const [rows] = (await lock.raw(`SELECT NOW(3) AS at, ${probes.join(', ')}`, links.map((l) => l.watermark))) as [Array<Record<string, unknown>>];
  const row = rows[0]!;
  if (links.some((_, i) => Number(row[`b${i}`]) !== 0)) return 'backlog';
  const ids = await readLogIdentities(db, logs);
  for (const m of logs) {
    const id = ids.get(m.mlog_id);
    if (!id || id.captureMode === 'BINLOG' || identityProblem(m, id)) return 'identity';
    const link = links.find((l) => l.mlogId === m.mlog_id);
    if (link?.mvToken !== null && id.token !== null && link?.mvToken !== id.token) return 'identity';
  }
  return { dataTime: row.at as Date };
}
