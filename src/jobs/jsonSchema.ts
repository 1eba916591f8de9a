import { z } from 'zod';
import { requestPayloads, type RequestJobName } from './schemas.js';

/** JSON Schema (draft 2020-12) of each `requests` job payload, generated from the zod schemas. */
export function requestJsonSchemas(): Record<RequestJobName, Record<string, unknown>> {
  const out = {} as Record<RequestJobName, Record<string, unknown>>;
  for (const [name, schema] of Object.entries(requestPayloads) as Array<[RequestJobName, z.ZodType]>) {
    out[name] = {
      $id: `urn:mvsched:requests:${name}`,
      title: `mvsched "${name}" job payload (queue "requests")`,
      ...z.toJSONSchema(schema),
    };
  }
  return out;
}
