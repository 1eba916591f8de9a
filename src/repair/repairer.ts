import type { Redlock } from '@sesamecare-oss/redlock';
import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import { isRecordChangedSinceRead } from '../db/errors.js';
import type { Logger } from '../log.js';
import { appendEditLog, readVersionMap, tableKey, upsertVersionEntries } from '../versions/repository.js';
import type { RepairInfo, TableRef, VersionEntry } from '../versions/types.js';
import { applyRepairGroup, CasConflict, type RepairOutcome } from './groupApply.js';
import { repairLockKey } from './locks.js';

export { CasConflict, type RepairOutcome } from './groupApply.js';
export { repairLockKey } from './locks.js';

export interface RepairerDeps {
  db: Knex;
  redlock: Redlock;
  prefix: string;
  logger: Logger;
  clock: Clock;
  /** Redlock lease; a worker that dies holding it blocks the MV's repairs this long at most. */
  lockTtlMs?: number;
}


/**
 * Run the compare-and-set UPDATE. Under REPEATABLE READ it matches no row when meta_version
 * moved since our snapshot; with MariaDB's innodb_snapshot_isolation=ON (the default from 11.6)
 * the server refuses the write instead (ER_CHECKREAD). Both mean the same: another writer won.
 */
async function casUpdate(mviewId: number, seen: number, update: () => Promise<number>): Promise<number> {
  try {
    return await update();
  } catch (err) {
    if (isRecordChangedSinceRead(err)) throw new CasConflict(mviewId, seen);
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
    return repairLockKey(this.deps.prefix, mviewId);
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

  /** One read-plan-write round (applyRepairGroup with one work); throws CasConflict when meta_version moved under us. */
  async applyOnce(mviewId: number, table: TableRef, infos: RepairInfo[], beforeWrite?: () => Promise<void>): Promise<RepairOutcome> {
    return this.deps.db.transaction(async (trx) => {
      const { outcomes, lost } = await applyRepairGroup(trx, [{ mviewId, table, infos }], {
        now: this.deps.clock.now(),
        log: this.deps.logger,
        ...(beforeWrite ? { beforeWrite } : {}),
      });
      const seen = lost.get(mviewId);
      if (seen !== undefined) throw new CasConflict(mviewId, seen);
      return outcomes[0]!;
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
        if (cas !== 1) throw new CasConflict(mviewId, seen);
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
