import { z } from 'zod';
import { ValidationError } from '../errors.js';

// Payloads of the jobs other services put on the `requests` queue (DESIGN.md §3). One zod
// schema per job name; TypeScript types are inferred from them and JSON Schema generated from
// them, so producer, processor and documentation cannot drift apart.

const qualifiedName = z
  .string()
  .min(1)
  .max(200)
  .regex(/^(`[^`]*(``[^`]*)*`|[^.`\s]+)(\.(`[^`]*(``[^`]*)*`|[^.`\s]+))?$/, {
    message: 'expected "schema.name" or "name"',
  });

const int = z.number().int();

export const refreshPayload = z
  .object({
    mview: qualifiedName.describe('materialized view, "schema.name" or "name"'),
    method: z.enum(['COMPLETE', 'FAST']).optional(),
    /** MANUAL when a person asked (CLI, HTTP); REQUEST (default) for services; SYSTEM when mvsched forces one. */
    trigger: z.enum(['MANUAL', 'REQUEST', 'SYSTEM']).optional(),
    /** Refresh the MVs it reads first, upstream first, each with its own method (trigger UPSTREAM). */
    cascade: z.boolean().optional(),
  })
  .strict();

export const purgePayload = z.object({ mlog: qualifiedName.describe('base table of the MV log') }).strict();

export const partitionVersion = z
  .object({
    partitionName: z.string().min(1).max(255),
    partitionId: int,
    version: int,
    versionTime: int.describe('epoch milliseconds'),
  })
  .strict();

export const reportVersionsPayload = z
  .object({
    table: qualifiedName,
    partitions: z.array(partitionVersion).min(1),
    dataChanged: z.boolean(),
    /** External tables: the table's identifier, which changes when it is dropped and recreated. */
    tableIdentifier: z.string().min(1).max(255).optional(),
  })
  .strict();

export const partitionRepairInfo = z
  .object({
    partitionId: int,
    partitionName: z.string().min(1).max(255),
    lastVersion: int,
    newVersion: int,
    newVersionTime: int.describe('epoch milliseconds'),
    lastVersionTime: int.optional(),
  })
  .strict();

export const repairPayload = z
  .object({
    table: qualifiedName,
    partitions: z.array(partitionRepairInfo).min(1),
  })
  .strict();

export const requestPayloads = {
  refresh: refreshPayload,
  purge: purgePayload,
  'report-versions': reportVersionsPayload,
  repair: repairPayload,
} as const;

export type RequestJobName = keyof typeof requestPayloads;
export type RefreshPayload = z.infer<typeof refreshPayload>;
export type PurgePayload = z.infer<typeof purgePayload>;
export type ReportVersionsPayload = z.infer<typeof reportVersionsPayload>;
export type RepairPayload = z.infer<typeof repairPayload>;
export type PartitionRepairInfo = z.infer<typeof partitionRepairInfo>;

export function isRequestJobName(name: string): name is RequestJobName {
  return Object.hasOwn(requestPayloads, name);
}

/** Validate a payload; the error names the first bad field. */
export function parsePayload<N extends RequestJobName>(name: N, data: unknown): z.infer<(typeof requestPayloads)[N]> {
  const res = requestPayloads[name].safeParse(data);
  if (!res.success) {
    const issue = res.error.issues[0]!;
    const field = issue.path.length ? issue.path.join('.') : '(payload)';
    const unknownKeys = issue.code === 'unrecognized_keys' ? `: ${(issue as { keys: string[] }).keys.join(', ')}` : '';
    throw new ValidationError(`invalid ${name} payload: ${field}: ${issue.message}${unknownKeys}`, { field });
  }
  return res.data as z.infer<(typeof requestPayloads)[N]>;
}
