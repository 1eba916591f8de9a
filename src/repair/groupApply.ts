import type { Knex } from 'knex';
import { isRecordChangedSinceRead } from '../db/errors.js';
import type { Logger } from '../log.js';
import {
  appendEditLogRows,
  mviewTableKey,
  readPartitions,
  readVersionMapsOf,
  tableKey,
  upsertVersionRows,
  type VersionRow,
} from '../versions/repository.js';
import type { RepairInfo, TableRef, VersionEntry } from '../versions/types.js';
import { planRepair, type SkipReason } from './rules.js';

/** One repair of one MV: the infos of one request (or one retry) for one base table. */
export interface RepairWork {
  mviewId: number;
  table: TableRef;
  infos: RepairInfo[];
}

export interface RepairOutcome {
  mviewId: number;
  applied: number;
  skipped: Partial<Record<SkipReason | 'data-changed-since', number>>;
  /** Infos to try again later: an earlier link of their chain has not landed yet. */
  waiting: RepairInfo[];
  /** The CAS lost to another writer this many times before it won. */
  casRetries: number;
}

/**
 * Another writer moved an MV's meta_version between our read and our write. `mviewId` is
 * undefined when the server refused a CAS of several MVs at once without saying which.
 */
export class CasConflict extends Error {
  constructor(
    readonly mviewId: number | undefined,
    seen?: number,
  ) {
    super(mviewId === undefined ? 'the meta_version of an MV of the group moved' : `meta_version of MV ${mviewId} moved from ${seen}`);
  }
}

export interface GroupResult {
  /** Per work (same index): its outcome, or undefined when its MV lost the CAS (nothing of it written). */
  outcomes: Array<RepairOutcome | undefined>;
  /** MVs whose compare-and-set lost (-> the meta_version they had read): their works must be recomputed from a new read. */
  lost: Map<number, number>;
}

/** One write of one work: the map entries it sets. Each becomes one edit-log row and one meta_version step. */
interface Step {
  work: number;
  table: TableRef;
  updates: Map<string, VersionEntry>;
  maxNewVersionTime: number;
}

interface Meta {
  metaVersion: number;
  versionRefreshTime: number | null;
}

async function readMetas(trx: Knex.Transaction, ids: number[]): Promise<Map<number, Meta>> {
  const rows = (await trx('mvs_mviews').whereIn('mview_id', ids).select('mview_id', 'meta_version', 'version_refresh_time')) as Array<{
    mview_id: number | string;
    meta_version: number | string;
    version_refresh_time: number | string | null;
  }>;
  return new Map(
    rows.map((r) => [
      Number(r.mview_id),
      { metaVersion: Number(r.meta_version), versionRefreshTime: r.version_refresh_time === null ? null : Number(r.version_refresh_time) },
    ]),
  );
}

/**
 * Plan every work against the maps as read, in order; a work's infos that were ahead of the map
 * are planned again after another work of the batch moved the same map, so a chain whose links
 * came in one batch in any order lands whole. Returns the steps per MV, in application order.
 */
function planGroup(works: RepairWork[], metas: Map<number, Meta>, maps: Map<string, Map<string, VersionEntry>>, outcomes: RepairOutcome[]) {
  const steps = new Map<number, Step[]>();
  const ahead: RepairInfo[][] = works.map(() => []);
  /** Per map key: how many steps moved it, and by which work the last one was. */
  const moved = new Map<string, { count: number; by: number }>();
  const plannedAt: number[] = works.map(() => -1);
  const plan = (i: number, infos: RepairInfo[]): boolean => {
    const w = works[i]!;
    const key = mviewTableKey(w.mviewId, w.table);
    const entries = maps.get(key);
    plannedAt[i] = moved.get(key)?.count ?? 0;
    const p = planRepair(entries, infos);
    ahead[i] = [];
    for (const { info, reason } of p.skipped) {
      if (reason === 'version-ahead') ahead[i]!.push(info);
      else outcomes[i]!.skipped[reason] = (outcomes[i]!.skipped[reason] ?? 0) + 1;
    }
    if (p.updates.size === 0) return false;
    for (const [name, e] of p.updates) entries!.set(name, e);
    const list = steps.get(w.mviewId) ?? [];
    list.push({ work: i, table: w.table, updates: p.updates, maxNewVersionTime: p.maxNewVersionTime! });
    steps.set(w.mviewId, list);
    moved.set(key, { count: plannedAt[i]! + 1, by: i }); // plannedAt[i] is the count before this step
    outcomes[i]!.applied += p.updates.size;
    return true;
  };
  works.forEach((w, i) => {
    if (!metas.has(w.mviewId)) outcomes[i]!.skipped['no-table-entry'] = w.infos.length;
    else plan(i, w.infos);
  });
  for (let progress = true; progress; ) {
    progress = false;
    works.forEach((w, i) => {
      const m = moved.get(mviewTableKey(w.mviewId, w.table));
      // Only another work's step can make an info that was ahead applicable.
      if (ahead[i]!.length && m && m.count > plannedAt[i]! && m.by !== i) progress = plan(i, ahead[i]!) || progress;
    });
  }
  return { steps, ahead };
}

/**
 * Infos still ahead of the map wait for the earlier link of their chain, unless their partition's
 * data changed after the MV's entry: then no compaction chain can ever reach it.
 */
async function settleAhead(trx: Knex.Transaction, works: RepairWork[], ahead: RepairInfo[][], maps: Map<string, Map<string, VersionEntry>>, outcomes: RepairOutcome[]) {
  const tables = new Map<string, TableRef>();
  works.forEach((w, i) => ahead[i]!.length && tables.set(tableKey(w.table), w.table));
  const dataVersions = new Map<string, Map<string, number>>();
  for (const [key, t] of tables) {
    const parts = await readPartitions(trx, t);
    dataVersions.set(key, new Map([...parts].map(([name, p]) => [name, p.dataVersion])));
  }
  works.forEach((w, i) => {
    const entries = maps.get(mviewTableKey(w.mviewId, w.table))!;
    for (const info of ahead[i]!) {
      const dataVersion = dataVersions.get(tableKey(w.table))?.get(info.partitionName) ?? 0;
      const r = dataVersion > entries.get(info.partitionName)!.version ? 'data-changed-since' : 'version-ahead';
      if (r === 'version-ahead') outcomes[i]!.waiting.push(info);
      outcomes[i]!.skipped[r] = (outcomes[i]!.skipped[r] ?? 0) + 1;
    }
  });
}

interface Cas {
  id: number;
  /** meta_version as read. */
  seen: number;
  next: number;
  /** The MV's new version_refresh_time. */
  time: number;
}

/**
 * The fence: each MV's meta_version moves from what we read to `next` only if it still is what
 * we read (one compare-and-set per MV, all in one statement). Under REPEATABLE READ a row that
 * moved is simply not matched; which ones were is read back in this transaction, where our own
 * writes show their new value and the others still show what we read. Returns the MVs that lost
 * (-> meta_version read).
 */
async function compareAndSet(trx: Knex.Transaction, rows: Cas[]): Promise<Map<number, number>> {
  const ids = rows.map((r) => r.id);
  const marks = (n: number, m: string) => Array.from({ length: n }, () => m).join(', ');
  const when = rows.map(() => 'WHEN ? THEN ?').join(' ');
  const sql =
    `UPDATE mvs_mviews SET meta_version = CASE mview_id ${when} END, version_refresh_time = CASE mview_id ${when} END ` +
    `WHERE mview_id IN (${marks(rows.length, '?')}) AND (mview_id, meta_version) IN (${marks(rows.length, '(?, ?)')})`;
  const bindings = [...rows.flatMap((r) => [r.id, r.next]), ...rows.flatMap((r) => [r.id, r.time]), ...ids, ...rows.flatMap((r) => [r.id, r.seen])];
  let changed: number;
  try {
    const [res] = (await trx.raw(sql, bindings)) as [{ affectedRows: number }];
    changed = res.affectedRows;
  } catch (err) {
    // innodb_snapshot_isolation=ON: the server refuses the whole statement and the transaction.
    if (isRecordChangedSinceRead(err)) throw rows.length === 1 ? new CasConflict(rows[0]!.id, rows[0]!.seen) : new CasConflict(undefined);
    throw err;
  }
  const lost = new Map<number, number>();
  if (changed === rows.length) return lost;
  const now = (await trx('mvs_mviews').whereIn('mview_id', ids).select('mview_id', 'meta_version')) as Array<{ mview_id: number | string; meta_version: number | string }>;
  const at = new Map(now.map((r) => [Number(r.mview_id), Number(r.meta_version)]));
  for (const r of rows) if (at.get(r.id) !== r.next) lost.set(r.id, r.seen);
  return lost;
}

/**
 * Apply a group of repairs in the caller's transaction (DESIGN.md §2): read the MVs' fences and
 * maps once, plan every work with the pure rules, then per MV with something to write one
 * compare-and-set on mvs_mviews.meta_version (advanced by one per step) and, for the MVs that won
 * it, their map entries and one edit-log row per step. An MV that lost its CAS (a refresh or a
 * writer whose lock lapsed got there first) writes nothing and is reported in `lost`; the others
 * are not affected. With innodb_snapshot_isolation=ON the server refuses a lost CAS instead and
 * aborts the transaction: that surfaces as CasConflict (naming the MV when it is the only writer),
 * and nothing is written.
 *
 * The caller holds each MV's lock; `beforeWrite` runs once before the first write (tests).
 */
export async function applyRepairGroup(
  trx: Knex.Transaction,
  works: RepairWork[],
  opts: { now: number; log: Logger; beforeWrite?: () => Promise<void> },
): Promise<GroupResult> {
  const ids = [...new Set(works.map((w) => w.mviewId))];
  const tables = [...new Map(works.map((w) => [tableKey(w.table), w.table])).values()];
  const metas = await readMetas(trx, ids);
  const maps = await readVersionMapsOf(trx, ids, tables);
  const outcomes: RepairOutcome[] = works.map((w) => ({ mviewId: w.mviewId, applied: 0, skipped: {}, waiting: [], casRetries: 0 }));
  const { steps, ahead } = planGroup(works, metas, maps, outcomes);
  if (ahead.some((a) => a.length)) await settleAhead(trx, works, ahead, maps, outcomes);
  if (steps.size === 0) return { outcomes, lost: new Map() }; // rule 2: no write, no edit-log row

  await opts.beforeWrite?.();
  const writers = [...steps.keys()].sort((a, b) => a - b);
  const lost = await compareAndSet(
    trx,
    writers.map((id) => {
      const meta = metas.get(id)!;
      const mine = steps.get(id)!;
      const time = Math.max(meta.versionRefreshTime ?? -Infinity, ...mine.map((s) => s.maxNewVersionTime));
      return { id, seen: meta.metaVersion, next: meta.metaVersion + mine.length, time };
    }),
  );

  const versionRows: VersionRow[] = [];
  const editRows: Array<{ mviewId: number; opType: string; payload: unknown }> = [];
  for (const id of writers) {
    if (lost.has(id)) continue;
    const seen = metas.get(id)!.metaVersion;
    steps.get(id)!.forEach((s, k) => {
      for (const [partitionName, entry] of s.updates) versionRows.push({ mviewId: id, table: s.table, partitionName, entry });
      editRows.push({
        mviewId: id,
        opType: 'REPAIR_VERSION_MAP',
        payload: { table: tableKey(s.table), metaVersion: seen + k + 1, partitions: Object.fromEntries(s.updates) },
      });
      opts.log.info({ mview_id: id, table: tableKey(s.table), applied: s.updates.size, meta_version: seen + k + 1 }, 'version map repaired');
    });
  }
  await upsertVersionRows(trx, versionRows);
  await appendEditLogRows(trx, editRows, opts.now);
  const result = outcomes.map((o) => (lost.has(o.mviewId) ? undefined : o));
  return { outcomes: result, lost };
}
