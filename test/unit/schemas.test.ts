import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { requestJsonSchemas } from '../../src/jobs/jsonSchema.js';
import { parsePayload } from '../../src/jobs/schemas.js';

describe('request job payload schemas', () => {
  it('the committed JSON Schema files are the ones the zod schemas generate (run `npm run schemas`)', () => {
    for (const [name, schema] of Object.entries(requestJsonSchemas())) {
      const committed = JSON.parse(readFileSync(new URL(`../../schemas/${name}.json`, import.meta.url), 'utf8'));
      expect(committed, name).toEqual(schema);
    }
  });

  it('names the bad field', () => {
    const cases: Array<[Parameters<typeof parsePayload>[0], unknown, RegExp]> = [
      ['refresh', {}, /^invalid refresh payload: mview: /],
      ['refresh', { mview: 'a.b', method: 'SLOW' }, /^invalid refresh payload: method: /],
      ['refresh', { mview: 'a.b', extra: 1 }, /^invalid refresh payload: \(payload\): .*extra/],
      ['purge', { mlog: 5 }, /^invalid purge payload: mlog: /],
      ['report-versions', { table: 's.t', partitions: [{ partitionName: 'p', partitionId: 1, versionTime: 1 }], dataChanged: true }, /partitions\.0\.version: /],
      ['repair', { table: 's.t', partitions: [] }, /^invalid repair payload: partitions: /],
    ];
    for (const [name, data, re] of cases) {
      expect(() => parsePayload(name, data), JSON.stringify(data)).toThrow(ValidationError);
      expect(() => parsePayload(name, data)).toThrow(re);
    }
  });

  it('accepts the documented shapes', () => {
    expect(parsePayload('refresh', { mview: 'app.sales' })).toEqual({ mview: 'app.sales' });
    expect(parsePayload('refresh', { mview: '`my db`.`m.v`', method: 'COMPLETE' }).method).toBe('COMPLETE');
    expect(
      parsePayload('repair', {
        table: 't',
        partitions: [{ partitionId: 1, partitionName: 'p1', lastVersion: 1, newVersion: 2, newVersionTime: 5, lastVersionTime: 4 }],
      }).partitions,
    ).toHaveLength(1);
  });
});
