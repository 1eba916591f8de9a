import { describe, expect, it } from 'vitest';
import { CONFIG_VARIABLES, loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

const base = { DATABASE_URL: 'mysql://u:p@db:3306/app', REDIS_URL: 'redis://cache:6379' };

function errorOf(env: Record<string, string>, needs = {}): ConfigError {
  try {
    loadConfig(env, needs);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const c = loadConfig(base);
    expect(c).toMatchObject({
      databaseUrl: base.DATABASE_URL,
      redisUrl: base.REDIS_URL,
      prefix: 'mvs',
      workerConcurrency: 4,
      httpPort: 8080,
      apiToken: undefined,
      reconcileIntervalS: 30,
      nodeTtlS: 10,
      purgeBatch: 10_000,
      boardWrite: false,
      logLevel: 'info',
      logLevelExplicit: false,
      nodeIdExplicit: false,
      httpHost: undefined,
    });
    expect(c.nodeId).toMatch(/^[A-Za-z0-9_.-]+-\d+$/);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads every variable', () => {
    const c = loadConfig({
      ...base,
      MVS_PREFIX: '{mvs}',
      MVS_NODE_ID: 'worker-7',
      MVS_WORKER_CONCURRENCY: '16',
      MVS_HTTP_PORT: '9090',
      MVS_API_TOKEN: 'a-long-enough-secret-token',
      MVS_RECONCILE_S: '5',
      MVS_NODE_TTL_S: '3',
      MVS_PURGE_BATCH: '500',
      MVS_VNODES: '64',
      MVS_BOARD_WRITE: '1',
      MVS_HTTP_HOST: '0.0.0.0',
      LOG_LEVEL: 'debug',
    });
    expect(c).toMatchObject({
      prefix: '{mvs}',
      nodeId: 'worker-7',
      nodeIdExplicit: true,
      workerConcurrency: 16,
      httpPort: 9090,
      apiToken: 'a-long-enough-secret-token',
      reconcileIntervalS: 5,
      nodeTtlS: 3,
      purgeBatch: 500,
      vnodes: 64,
      boardWrite: true,
      httpHost: '0.0.0.0',
      logLevel: 'debug',
      logLevelExplicit: true,
    });
    expect(CONFIG_VARIABLES).toEqual(
      expect.arrayContaining([
        'DATABASE_URL', 'REDIS_URL', 'MVS_PREFIX', 'MVS_NODE_ID', 'MVS_WORKER_CONCURRENCY', 'MVS_HTTP_PORT',
        'MVS_API_TOKEN', 'MVS_RECONCILE_S', 'MVS_NODE_TTL_S', 'MVS_PURGE_BATCH', 'LOG_LEVEL', 'MVS_HTTP_HOST',
      ]),
    );
  });

  it('treats empty values as unset', () => {
    expect(loadConfig({ ...base, MVS_RECONCILE_S: '', LOG_LEVEL: ' ' }).reconcileIntervalS).toBe(30);
  });

  it('rejects a value that is not a number, naming the variable and the value', () => {
    const e = errorOf({ ...base, MVS_RECONCILE_S: 'soon' });
    expect(e.message).toBe('invalid MVS_RECONCILE_S: expected a whole number (got "soon")');
    expect(e.message).not.toContain('\n');
  });

  it('rejects numbers out of range', () => {
    expect(errorOf({ ...base, MVS_WORKER_CONCURRENCY: '0' }).message).toMatch(/^invalid MVS_WORKER_CONCURRENCY: must be >= 1/);
    expect(errorOf({ ...base, MVS_HTTP_PORT: '70000' }).message).toMatch(/^invalid MVS_HTTP_PORT: must be <= 65535/);
    expect(errorOf({ ...base, MVS_NODE_TTL_S: '-5' }).message).toMatch(/^invalid MVS_NODE_TTL_S: expected a whole number/);
  });

  it('rejects bad URLs', () => {
    expect(errorOf({ ...base, DATABASE_URL: 'postgres://x/y' }).message).toMatch(/^invalid DATABASE_URL: expected a URL like mysql:/);
    expect(errorOf({ ...base, DATABASE_URL: 'mysql://host:3306/' }).message).toMatch(/^invalid DATABASE_URL: the URL must name a database/);
    expect(errorOf({ ...base, REDIS_URL: 'localhost:6379' }).message).toMatch(/^invalid REDIS_URL: expected a URL like redis:/);
  });

  it('rejects bad enums and identifiers', () => {
    expect(errorOf({ ...base, LOG_LEVEL: 'loud' }).message).toMatch(/^invalid LOG_LEVEL: expected one of fatal, error/);
    expect(errorOf({ ...base, MVS_NODE_ID: 'a:b' }).message).toMatch(/^invalid MVS_NODE_ID: expected 1-64 characters/);
    expect(errorOf({ ...base, MVS_PREFIX: 'has space' }).message).toMatch(/^invalid MVS_PREFIX/);
    expect(errorOf({ ...base, MVS_BOARD_WRITE: 'yes' }).message).toMatch(/^invalid MVS_BOARD_WRITE: expected 0, 1, true or false/);
    expect(errorOf({ ...base, MVS_HTTP_HOST: 'http://x/' }).message).toMatch(/^invalid MVS_HTTP_HOST: expected a host name or an IP address/);
  });

  it('never echoes the API token', () => {
    const e = errorOf({ ...base, MVS_API_TOKEN: 'short' });
    expect(e.message).toBe('invalid MVS_API_TOKEN: must be at least 16 characters');
  });

  it('reports a missing required URL', () => {
    expect(errorOf({ REDIS_URL: base.REDIS_URL }, { database: true }).message).toMatch(/^missing DATABASE_URL/);
    expect(errorOf({ DATABASE_URL: base.DATABASE_URL }, { redis: true }).message).toMatch(/^missing REDIS_URL/);
    expect(() => loadConfig({})).not.toThrow();
  });
});
