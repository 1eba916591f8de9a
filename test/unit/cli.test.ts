import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('mvsched CLI (as a process)', () => {
  it('--help lists the commands and exits 0', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['migrate', 'planner', 'worker', 'server', 'dev', 'sql', 'status', 'refresh']) expect(r.stdout).toMatch(new RegExp(`^\\s+${cmd}\\b`, 'm'));
  });

  it('--version prints the package version', () => {
    const r = cli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('a bad flag exits 2 with one line', () => {
    const r = cli(['--no-such-flag']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain("unknown option '--no-such-flag'");
  });

  it('an unknown command exits 2 with one line', () => {
    const r = cli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain("unknown command 'frobnicate'");
  });

  it('a bad environment value exits 2 naming the variable', () => {
    const r = cli(['migrate'], { DATABASE_URL: 'mysql://h/db', MVS_NODE_TTL_S: 'x' });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('mvsched: invalid MVS_NODE_TTL_S: expected a whole number (got "x")');
  });

  it('a command that needs the database says so when DATABASE_URL is missing', () => {
    const r = cli(['migrate']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^mvsched: missing DATABASE_URL/);
  });
});
