import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { knexConfig } from '../../src/db/connect.js';

// knex prints its own warnings (a pooled connection the server closed: "Connection Error: ...")
// to the console unless told where they go; a process's logs are structured lines.

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: pino({ level: 'debug' }, stream) };
}

describe('knex messages', () => {
  it('go to the process logger as structured lines when one is given', async () => {
    const { lines, logger } = capture();
    const log = knexConfig('mysql://u:p@127.0.0.1:3306/db', { logger }).log!;
    log.warn!('Connection Error: Error: read ECONNRESET');
    log.error!(new Error('pool broke'));
    log.deprecate!('oldMethod', 'newMethod');
    await new Promise((r) => setImmediate(r));
    expect(lines.map((l) => [l.level, l.component, l.msg])).toEqual([
      [40, 'knex', 'Connection Error: Error: read ECONNRESET'],
      [50, 'knex', 'pool broke'],
      [40, 'knex', 'deprecated knex call'],
    ]);
    expect(lines[2]).toMatchObject({ method: 'oldMethod', alternative: 'newMethod' });
  });

  it('are left to knex without one (the knexfile, one-shot tools)', () => {
    expect(knexConfig('mysql://u:p@127.0.0.1:3306/db').log).toBeUndefined();
  });
});
