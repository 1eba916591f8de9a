import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/testEnv.js';

// `npm start` runs Redis and MariaDB as children. A Ctrl-C on the terminal reaches the whole
// foreground process group; the servers must not be in it, or Redis quits at once and mvsched's
// processes cannot shut down cleanly (they did hang, retrying a Redis that was gone).

/** Running, not exited: an exited child whose parent died can linger as a zombie. */
const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

describe('local servers and a Ctrl-C to the process group', () => {
  it('keep running until whoever started them stops them', async () => {
    const baseDir = mkdtempSync(join(tmpdir(), 'mvs-sig-'));
    const script = `
      const m = await import(${JSON.stringify(new URL('../../scripts/localServers.mjs', import.meta.url).href)});
      const r = await m.startRedis({ baseDir: ${JSON.stringify(baseDir)} });
      console.log('REDIS_PID ' + r.pid);
      setInterval(() => {}, 1000);`;
    // Its own group, standing in for a terminal's foreground group.
    const parent = spawn(process.execPath, ['--input-type=module', '-e', script], { detached: true, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    parent.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const redisPid = await waitFor(() => Number(/REDIS_PID (\d+)/.exec(out)?.[1]) || undefined, { timeoutMs: 20_000, what: 'redis started' });
    try {
      const exited = new Promise((r) => parent.on('exit', r));
      process.kill(-parent.pid!, 'SIGINT');
      await exited;
      // The group's Ctrl-C ended the parent but not the server in its own group.
      await new Promise((r) => setTimeout(r, 500)); // give a wrongly-grouped Redis time to quit (not a wait for a condition)
      expect(alive(redisPid)).toBe(true);
    } finally {
      if (alive(redisPid)) process.kill(redisPid, 'SIGTERM');
      await waitFor(() => !alive(redisPid), { timeoutMs: 10_000, what: 'redis stopped' });
      rmSync(baseDir, { recursive: true, force: true });
    }
  });
});
