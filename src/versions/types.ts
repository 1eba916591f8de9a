/** A base table as the version machinery sees it. */
export interface TableRef {
  schema: string;
  name: string;
}

/** One entry of an MV's version map (StarRocks' MVVersionManager.BasePartitionInfo). */
export interface VersionEntry {
  partitionId: number;
  version: number;
  /** Epoch ms: the partition's versionTime when the MV read it. */
  lastRefreshTime: number;
  extLastFileModifiedTime: number;
  fileNumber: number;
}

/** The latest reported version of a partition of a versioned base table. */
export interface PartitionState {
  partitionName: string;
  partitionId: number;
  version: number;
  /** Epoch ms. */
  versionTime: number;
  /** Latest version whose report said the data changed (0 when none did). */
  dataVersion: number;
  /** When this partition was last reported (epoch ms). */
  reportedAt?: number;
}

export interface RepairInfo {
  partitionId: number;
  partitionName: string;
  lastVersion: number;
  newVersion: number;
  newVersionTime: number;
  lastVersionTime?: number | undefined;
}
