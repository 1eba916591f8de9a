// Writes schemas/<job>.json from the zod payload schemas: `npm run schemas`.
import { writeFileSync } from 'node:fs';
import { requestJsonSchemas } from '../src/jobs/jsonSchema.js';

for (const [name, schema] of Object.entries(requestJsonSchemas())) {
  const file = new URL(`../schemas/${name}.json`, import.meta.url);
  writeFileSync(file, `${JSON.stringify(schema, null, 2)}\n`);
  console.log(`wrote schemas/${name}.json`);
}
