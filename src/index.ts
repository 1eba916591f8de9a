// The package's public API: the client for other services and the job payload schemas.
// Importing it starts nothing.
export { MvsClient, type MvsClientOptions, type EnqueueResult, type RefreshResult, type PurgeResult, type JobStatus } from './client/mvsClient.js';
export {
  partitionRepairInfo,
  partitionVersion,
  purgePayload,
  refreshPayload,
  repairPayload,
  reportVersionsPayload,
  requestPayloads,
  parsePayload,
  type PartitionRepairInfo,
  type PurgePayload,
  type RefreshPayload,
  type RepairPayload,
  type ReportVersionsPayload,
  type RequestJobName,
} from './jobs/schemas.js';
export { REQUESTS_QUEUE } from './queue/names.js';
export { ValidationError, NotFoundError, ConflictError, MvsError } from './errors.js';
