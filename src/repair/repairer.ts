import type { Redlock } from '@sesamecare-oss/redlock';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { isRecordChangedSinceRead } from '../db/errors.js';
import type { Logger } from '../log.js';
import { redisKeys } from '../queue/names.js';
import { appendEditLog, readPartitions, readVersionMap, tableKey, upsertVersionEntries } from '../versions/repository.js';
import type { RepairInfo, TableRef, VersionEntry } from '../versions/types.js';
import { planRepair, type SkipReason } from './rules.js';

export interface RepairOutcome {
  mviewId: number;
  applied: number;
  skipped: Partial<Record<SkipReason | 'data-changed-since', number>>;
  /** Infos to try again later: an earlier link of their chain has not landed yet. */
  waiting: RepairInfo[];
  /** The CAS lost to another writer this many times before it won. */
  casRetries: number;
}

export interface RepairerDeps {
  db: Knex;
  redlock: Redlock;
  prefix: string;
  /** On a Redis Cluster the lock keys carry the {mvs} hash tag (queue/names.ts redisKeys). */
  cluster: boolean;
  logger: Logger;
  clock: Clock;
  /** Redlock lease; a worker that dies holding it blocks the MV's repairs this long at most. */
  lockTtlMs?: number;
}

export class CasConflict extends Error {}

/**
 * Run the compare-and-set UPDATE. Under REPEATABLE READ it matches no row when meta_version
 * moved since our snapshot; with MariaDB's innodb_snapshot_isolation=ON (the default from 11.6)
 * the server refuses the write instead (ER_CHECKREAD). Both mean the same: another writer won.
 */
async function casUpdate(mviewId: number, seen: number, update: () => Promise<number>): Promise<number> {
  try {
    return await update();
  } catch (err) {
    if (isRecordChangedSinceRead(err)) throw new CasConflict(`meta_version of MV ${mviewId} moved from ${seen}`);
    throw err;
  }
}

/**
 * Applies repairs to MV version maps, one MV at a time (Redlock on the MV), each write fenced
 * by a compare-and-set on mvs_mviews.meta_version in the same MySQL transaction: Redlock gives
 * no fencing token, so a worker that lost its lock while paused (GC, network) must not be able
 * to write what it computed from an old map. Refreshes bump meta_version when they rewrite the
 * map, so a repair computed before a refresh loses its CAS too and is recomputed.
 *
 * On a Redis Cluster the lock lives on one master (Redlock over one "instance"): if that master
 * dies before its replica received the lock key, the promoted replica grants the same lock to a
 * second worker while the first still runs. Both then race only to the CAS, which admits one
 * of them per meta_version; the loser re-reads the map and replans. The lock makes repairs of
 * one MV take turns (no wasted CAS retries); the CAS alone makes them correct.
 *
 * Chains: an info whose lastVersion is ahead of the map (v2->v3 seen before v1->v2 landed) is
 * returned as `waiting` for the caller to retry later, unless the partition's data changed after
 * the MV's entry (its reported data_version is newer): then no compaction chain can ever reach
 * it, and it is dropped at once.
 */
export class Repairer {
  constructor(private readonly deps: RepairerDeps) {}

  lockKey(mviewId: number): string {
    return redisKeys(this.deps.prefix, this.deps.cluster).repairLock(mviewId);
  }

  async repair(mviewId: number, table: TableRef, infos: RepairInfo[]): Promise<RepairOutcome> {
    const lock = await this.deps.redlock.acquire([this.lockKey(mviewId)], this.deps.lockTtlMs ?? 10_000);
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          const out = await this.applyOnce(mviewId, table, infos);
          out.casRetries = attempt;
          return out;
        } catch (err) {
          if (err instanceof CasConflict && attempt < 20) continue;
          throw err;
        }
      }
    } finally {
      await lock.release().catch(() => {});
    }
  }

  /** One read-plan-write round; throws CasConflict when meta_version moved under us. */
  async applyOnce(mviewId: number, table: TableRef, infos: RepairInfo[], beforeWrite?: () => Promise<void>): Promise<RepairOutcome> {
    const { db, clock } = this.deps;
    const log = this.deps.logger.child({ mview_id: mviewId, table: tableKey(table) });
    return db.transaction(async (trx) => {
      const mv = (await trx('mvs_mviews').where({ mview_id: mviewId }).first('meta_version', 'version_refresh_time')) as
        | { meta_version: number | string; version_refresh_time: number | string | null }
        | undefined;
      const out: RepairOutcome = { mviewId, applied: 0, skipped: {}, waiting: [], casRetries: 0 };
      if (!mv) {
        out.skipped['no-table-entry'] = infos.length;
        return out;
      }
      const seen = Number(mv.meta_version);
      const entries = (await readVersionMap(trx, mviewId, table)).get(tableKey(table));
      const plan = planRepair(entries, infos);
      const partitions = await readPartitions(trx, table);
      for (const { info, reason } of plan.skipped) {
        let r: SkipReason | 'data-changed-since' = reason;
        if (reason === 'version-ahead') {
          const entry = entries!.get(info.partitionName)!;
          const dataVersion = partitions.get(info.partitionName)?.dataVersion ?? 0;
          if (dataVersion > entry.version) r = 'data-changed-since';
          else out.waiting.push(info);
        }
        out.skipped[r] = (out.skipped[r] ?? 0) + 1;
      }
      if (plan.updates.size === 0) return out; // rule 2: no write, no edit-log row
      await beforeWrite?.();
      const newRefreshTime = Math.max(plan.maxNewVersionTime!, mv.version_refresh_time === null ? -Infinity : Number(mv.version_refresh_time));
      const cas = await casUpdate(mviewId, seen, () =>
        trx('mvs_mviews')
          .where({ mview_id: mviewId, meta_version: seen })
          .update({ meta_version: seen + 1, version_refresh_time: newRefreshTime }),
      );
      if (cas !== 1) throw new CasConflict(`meta_version of MV ${mviewId} moved from ${seen}`);
      await upsertVersionEntries(trx, mviewId, table, plan.updates);
      await appendEditLog(trx, mviewId, 'REPAIR_VERSION_MAP', {
        table: tableKey(table),
        metaVersion: seen + 1,
        partitions: Object.fromEntries(plan.updates),
      }, clock.now());
      out.applied = plan.updates.size;
      log.info({ applied: out.applied, skipped: out.skipped, meta_version: seen + 1 }, 'version map repaired');
      return out;
    });
  }

  /**
   * An external base table was dropped and recreated (new identifier): move the MV's base-table
   * info to it. Partitions the report names as updated keep their old entries (they stay stale);
   * the others get lastRefreshTime = version = the new modified time, keeping
   * extLastFileModifiedTime and fileNumber. One edit-log row.
   */
  async moveToNewIdentifier(mviewId: number, table: TableRef, change: { newIdent: string; updatedPartitions: string[]; newModifiedTime: number }): Promise<boolean> {
    const lock = await this.deps.redlock.acquire([this.lockKey(mviewId)], this.deps.lockTtlMs ?? 10_000);
    try {
      return await this.deps.db.transaction(async (trx) => {
        const mv = await trx('mvs_mviews').where({ mview_id: mviewId }).first('meta_version');
        if (!mv) return false;
        const seen = Number(mv.meta_version);
        const entries = (await readVersionMap(trx, mviewId, table)).get(tableKey(table)) ?? new Map<string, VersionEntry>();
        const updated = new Set(change.updatedPartitions);
        const moved = new Map<string, VersionEntry>();
        for (const [name, e] of entries) {
          if (updated.has(name)) continue;
          moved.set(name, { ...e, version: change.newModifiedTime, lastRefreshTime: change.newModifiedTime });
        }
        const cas = await casUpdate(mviewId, seen, () =>
          trx('mvs_mviews').where({ mview_id: mviewId, meta_version: seen }).update({ meta_version: seen + 1 }),
        );
        if (cas !== 1) throw new CasConflict(`meta_version of MV ${mviewId} moved from ${seen}`);
        await trx('mvs_mview_base_tables')
          .where({ mview_id: mviewId, base_table_schema: table.schema, base_table_name: table.name })
          .update({ base_table_ident: change.newIdent });
        await upsertVersionEntries(trx, mviewId, table, moved);
        await appendEditLog(trx, mviewId, 'EXTERNAL_TABLE_RECREATED', {
          table: tableKey(table),
          newIdentifier: change.newIdent,
          keptStale: change.updatedPartitions,
          moved: Object.fromEntries(moved),
        }, this.deps.clock.now());
        return true;
      });
    } finally {
      await lock.release().catch(() => {});
    }
  }
}
