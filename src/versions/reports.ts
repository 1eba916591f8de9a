import type { Knex } from 'knex';
import type { Clock } from '../clock.js';
import type { ReportVersionsPayload } from '../jobs/schemas.js';
import { readPartitions, dependentMviews } from './repository.js';
import type { RepairInfo, TableRef } from './types.js';

export interface ReportOutcome {
  table: TableRef;
  /** MVs that read the table. */
  dependents: number[];
  /** For a report without a data change: the repair each dependent MV gets. */
  repairInfos: RepairInfo[];
  /** The external table was dropped and recreated: its identifier changed. */
  recreated?: { oldIdent: string; newIdent: string; updatedPartitions: string[]; newModifiedTime: number };
  /** Partitions whose reported version was older than the stored one (a late report): ignored. */
  ignoredStale: string[];
}

/**
 * Store a version report (DESIGN.md §2). A report with a data change only moves the stored
 * versions: the dependent MVs are then stale by comparison with their version maps. A report
 * without one also yields repair infos whose lastVersion is the version stored before, so each
 * dependent MV's map can follow the new version without a refresh.
 */
export async function storeVersionReport(db: Knex, table: TableRef, report: ReportVersionsPayload, clock: Clock): Promise<ReportOutcome> {
  const now = clock.now();
  return db.transaction(async (trx: Knex.Transaction) => {
    const before = await readPartitions(trx, table, { forUpdate: true });
    const oldIdent = [...before.values()].find((p) => p.ident !== null)?.ident ?? null;
    const repairInfos: RepairInfo[] = [];
    const out = { ignored: [] as string[] };
    for (const p of report.partitions) {
      const prev = before.get(p.partitionName);
      // Reports can arrive out of order; versions of the same partition only move forward.
      if (prev && prev.partitionId === p.partitionId && p.version < prev.version && !report.tableIdentifier) {
        out.ignored.push(p.partitionName);
        continue;
      }
      await trx('mvs_base_partitions')
        .insert({
          base_table_schema: table.schema,
          base_table_name: table.name,
          partition_name: p.partitionName,
          partition_id: p.partitionId,
          version: p.version,
          version_time: p.versionTime,
          base_table_ident: report.tableIdentifier ?? prev?.ident ?? null,
          data_version: report.dataChanged ? p.version : (prev?.dataVersion ?? 0),
          updated_at: new Date(now),
        })
        .onConflict(['base_table_schema', 'base_table_name', 'partition_name'])
        .merge(['partition_id', 'version', 'version_time', 'base_table_ident', 'data_version', 'updated_at']);
      if (!report.dataChanged && prev && prev.version !== p.version) {
        repairInfos.push({
          partitionId: p.partitionId,
          partitionName: p.partitionName,
          lastVersion: prev.version,
          newVersion: p.version,
          newVersionTime: p.versionTime,
          lastVersionTime: prev.versionTime,
        });
      }
    }
    const result: ReportOutcome = { table, dependents: await dependentMviews(trx, table), repairInfos, ignoredStale: out.ignored };
    if (report.tableIdentifier && oldIdent && oldIdent !== report.tableIdentifier) {
      // A recreated table starts a new identity: its versions say nothing about the old one's.
      result.repairInfos = [];
      // Every stored partition of the table now belongs to the new identity, not only the ones
      // this report named: otherwise the next report under the same identifier would find an
      // old identifier on an unnamed partition and be taken for another recreation.
      await trx('mvs_base_partitions')
        .where({ base_table_schema: table.schema, base_table_name: table.name })
        .update({ base_table_ident: report.tableIdentifier });
      result.recreated = {
        oldIdent,
        newIdent: report.tableIdentifier,
        updatedPartitions: report.partitions.map((p) => p.partitionName),
        newModifiedTime: Math.max(...report.partitions.map((p) => p.versionTime)),
      };
    }
    return result;
  });
}
