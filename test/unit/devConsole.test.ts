import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DevConsole, devLogFile } from '../../src/cli/devConsole.js';

const rec = (level: number, msg: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ level, time: '2026-12-03T10:00:05.123Z', msg, ...extra });

/** What a terminal would show after these writes: handles \r, clear-line and cursor-up. */
function screen(writes: string[]): string[] {
  const lines: string[] = [''];
  let row = 0;
  const s = writes.join('');
  for (let i = 0; i < s.length; i++) {
    if (s.startsWith('\x1b[2K', i)) {
      lines[row] = '';
      i += 3;
    } else if (s.startsWith('\x1b[1A', i)) {
      row = Math.max(0, row - 1);
      i += 3;
    } else if (s[i] === '\r') {
      // column 0: the next text overwrites a cleared line in this model
    } else if (s[i] === '\n') {
      row++;
      if (lines[row] === undefined) lines[row] = '';
    } else {
      lines[row] = (lines[row] ?? '') + s[i]!;
    }
  }
  while (lines.length > 1 && lines[lines.length - 1] === '' && row < lines.length - 1) lines.pop();
  return lines;
}

function setup(tty: boolean, consoleLevel = 'warn') {
  const dir = mkdtempSync(join(tmpdir(), 'devconsole-'));
  const writes: string[] = [];
  const logFile = join(dir, 'dev.log');
  const c = new DevConsole({ write: (s) => writes.push(s), tty, columns: 60, logFile, consoleLevel });
  return { c, writes, logFile };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('the console of mvsched dev', () => {
  it('on a terminal: warnings and errors above pinned URL and status lines, which stay in view', async () => {
    const { c, writes, logFile } = setup(true);
    const child = new PassThrough();
    c.follow('worker-1', child);
    c.line('mvsched dev: started planner, worker-1');
    c.pin('urls', 'mvsched dev: API http://127.0.0.1:8080/v1/mviews');
    c.pin('demo', '[demo] 1 orders');
    child.write(`${rec(30, 'refresh done', { mview_id: 1 })}\n`);
    child.write(`${rec(40, 'refresh failed', { mview_id: 2, err: 'boom' })}\n`);
    child.write('mvsched: something plain\n');
    await flush();
    c.pin('demo', '[demo] 2 orders');
    expect(screen(writes)).toEqual([
      'mvsched dev: started planner, worker-1',
      '10:00:05 WARN  [worker-1] refresh failed (mview_id=2 err=boom)',
      '[worker-1] mvsched: something plain',
      'mvsched dev: API http://127.0.0.1:8080/v1/mviews',
      '[demo] 2 orders',
    ]);
    await c.close();
    const file = readFileSync(logFile, 'utf8').trim().split('\n');
    // Every level lands in the file, tagged with the process it came from.
    expect(file.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; proc: string })).toEqual([
      expect.objectContaining({ msg: 'refresh done', proc: 'worker-1' }),
      expect.objectContaining({ msg: 'refresh failed', proc: 'worker-1' }),
    ]);
    expect(file).toContain('[demo] 2 orders');
  });

  it('cuts pinned lines to the terminal width so they can be redrawn in place', () => {
    const { c, writes } = setup(true);
    c.pin('demo', 'x'.repeat(200));
    expect(screen(writes)).toEqual([`${'x'.repeat(58)}…`]);
  });

  it('not on a terminal: appends every line, and log records stay JSON', async () => {
    const { c, writes } = setup(false);
    const child = new PassThrough();
    c.follow('server', child);
    c.pin('demo', '[demo] 1 orders');
    c.pin('demo', '[demo] 2 orders');
    child.write(`${rec(30, 'listening')}\n${rec(50, 'broken')}\n`);
    await flush();
    expect(writes.join('').trim().split('\n')).toEqual(['[demo] 1 orders', '[demo] 2 orders', JSON.stringify({ ...JSON.parse(rec(50, 'broken')), proc: 'server' })]);
    await c.close();
  });

  it('shows what LOG_LEVEL asks for when it is set', async () => {
    const { c, writes } = setup(false, 'info');
    const logger = c.stream('dev');
    logger.write(`${rec(30, 'demo created')}\n${rec(20, 'detail')}\n`);
    await flush();
    expect(writes.join('')).toContain('demo created');
    expect(writes.join('')).not.toContain('detail');
    await c.close();
  });

  it('keeps the ten newest log files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'devlogs-'));
    const first = devLogFile(dir, new Date('2026-01-01T00:00:00Z'));
    writeFileSync(first, 'x');
    for (let i = 1; i <= 12; i++) writeFileSync(devLogFile(dir, new Date(Date.UTC(2026, 0, 1, 0, 0, i))), 'x');
    const left = readdirSync(join(dir, '.mvsched', 'logs'));
    expect(left.length).toBeLessThanOrEqual(10);
    expect(first).toMatch(/\.mvsched\/logs\/dev-20260101-000000-\d+\.log$/);
  });
});
