import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { isLoopback, listenHost } from '../../src/server/server.js';

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));
const TOKEN = 'a-long-enough-api-token';

describe('where the server listens (DESIGN.md §3 HTTP)', () => {
  it('without a token: 127.0.0.1 by default, any loopback address if asked', () => {
    expect(listenHost({ httpHost: undefined, apiToken: undefined })).toBe('127.0.0.1');
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]']) {
      expect(listenHost({ httpHost: host, apiToken: undefined }), host).toBe(host);
    }
  });

  it('without a token: refuses any other address, naming both variables', () => {
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'db.internal', '128.0.0.1']) {
      let err: unknown;
      try {
        listenHost({ httpHost: host, apiToken: undefined });
      } catch (e) {
        err = e;
      }
      expect(err, host).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toBe(
        `MVS_HTTP_HOST=${host} needs MVS_API_TOKEN: without a token anyone who can reach the server could run DDL; set MVS_API_TOKEN (16+ characters) or listen on 127.0.0.1`,
      );
    }
  });

  it('with a token: every interface by default, or the address given', () => {
    expect(listenHost({ httpHost: undefined, apiToken: TOKEN })).toBe('0.0.0.0');
    expect(listenHost({ httpHost: '10.0.0.5', apiToken: TOKEN })).toBe('10.0.0.5');
  });

  it('tells loopback addresses apart', () => {
    expect(isLoopback('127.0.0.1')).toBe(true);
    expect(isLoopback('::ffff:127.0.0.1')).toBe(true);
    expect(isLoopback('127.0.0.1.example.com')).toBe(false);
    expect(isLoopback('0.0.0.0')).toBe(false);
  });

  it('`mvsched server` with a public address and no token exits 2 with that one line, before connecting anywhere', () => {
    const r = spawnSync(process.execPath, [bin, 'server'], {
      encoding: 'utf8',
      timeout: 30_000,
      // Servers nobody runs: the refusal must come before any connection is tried.
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: 'mysql://u:p@127.0.0.1:1/db', REDIS_URL: 'redis://127.0.0.1:1', MVS_HTTP_HOST: '0.0.0.0' },
    });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim()).toBe(
      'mvsched: MVS_HTTP_HOST=0.0.0.0 needs MVS_API_TOKEN: without a token anyone who can reach the server could run DDL; set MVS_API_TOKEN (16+ characters) or listen on 127.0.0.1',
    );
  });
});
