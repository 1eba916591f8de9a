import { createWriteStream, mkdirSync, readdirSync, rmSync, statSync, type WriteStream } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { Writable, type Readable } from 'node:stream';

// The console of `mvsched dev` / `npm start`: the processes' logs go to a file in full, and the
// terminal shows only warnings and errors, with the URLs and the demo's status pinned below them
// so they stay in view.

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields shown after the message on a terminal, when a log line has them. */
const SHOWN_FIELDS = ['mview_id', 'mlog_id', 'job_id', 'refresh_id', 'node_id', 'queue', 'err'];
const KEEP_LOG_FILES = 10;

export interface DevConsoleOptions {
  /** Raw writes to the terminal (stderr). */
  write: (s: string) => void;
  /** A terminal: pin lines in place and format logs for people; otherwise append everything. */
  tty: boolean;
  /** Terminal width, for pinned lines (which must not wrap to be redrawn in place). */
  columns?: number;
  logFile: string;
  /** Lowest level shown on the console (the file gets every line). */
  consoleLevel: string;
}

/** Default log file: `.mvsched/logs/dev-<time>-<pid>.log` under `dir`; older ones beyond ten are removed. */
export function devLogFile(dir: string, now = new Date()): string {
  const logs = join(dir, '.mvsched', 'logs');
  mkdirSync(logs, { recursive: true });
  const old = readdirSync(logs)
    .filter((f) => /^dev-.*\.log$/.test(f))
    .map((f) => ({ f, t: statSync(join(logs, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of old.slice(KEEP_LOG_FILES - 1)) rmSync(join(logs, f), { force: true });
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '').replace('T', '-');
  return join(logs, `dev-${stamp}-${process.pid}.log`);
}

export class DevConsole {
  private readonly file: WriteStream;
  private readonly threshold: number;
  private readonly pinned = new Map<string, string>();
  /** Pinned lines currently drawn at the bottom of the terminal. */
  private drawn = 0;
  private closed: Promise<void> | undefined;

  constructor(private readonly opts: DevConsoleOptions) {
    mkdirSync(dirname(opts.logFile), { recursive: true });
    this.file = createWriteStream(opts.logFile, { flags: 'a' });
    this.threshold = LEVELS[opts.consoleLevel] ?? LEVELS.warn!;
  }

  /** A line for people: printed above the pinned lines (and kept in the log file). */
  line(text: string): void {
    this.file.write(`${text}\n`);
    this.print(text);
  }

  /** A line that stays in view, replaced in place when set again (appended when not a terminal). */
  pin(key: string, text: string): void {
    this.file.write(`${text}\n`);
    if (!this.opts.tty) {
      this.opts.write(`${text}\n`);
      return;
    }
    this.pinned.set(key, text);
    this.clearPinned();
    this.drawPinned();
  }

  /** Follow a process's output: all of it to the file, what is at the console level to the console. */
  follow(name: string, stream: Readable): void {
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => this.logLine(name, line));
  }

  /** A stream a logger can write JSON lines to, handled like a child's output. */
  stream(name: string): Writable {
    let buf = '';
    return new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        buf += chunk.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          this.logLine(name, buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
        cb();
      },
    });
  }

  private logLine(name: string, line: string): void {
    if (line === '') return;
    let rec: Record<string, unknown> | undefined;
    if (line.startsWith('{')) {
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        rec = undefined;
      }
    }
    if (!rec) {
      // Not a log record (an error message, a stack trace): always worth seeing.
      this.file.write(`[${name}] ${line}\n`);
      this.print(`[${name}] ${line}`);
      return;
    }
    const tagged = JSON.stringify({ ...rec, proc: name });
    this.file.write(`${tagged}\n`);
    if (Number(rec.level) < this.threshold) return;
    this.print(this.opts.tty ? formatRecord(name, rec) : tagged);
  }

  private print(text: string): void {
    if (!this.opts.tty) {
      this.opts.write(`${text}\n`);
      return;
    }
    this.clearPinned();
    this.opts.write(`${text}\n`);
    this.drawPinned();
  }

  private clearPinned(): void {
    if (this.drawn === 0) return;
    let s = '\r\x1b[2K';
    for (let i = 1; i < this.drawn; i++) s += '\x1b[1A\x1b[2K';
    this.opts.write(s);
    this.drawn = 0;
  }

  private drawPinned(): void {
    if (this.pinned.size === 0) return;
    const width = Math.max(20, (this.opts.columns ?? 120) - 1);
    const lines = [...this.pinned.values()].map((l) => (l.length > width ? `${l.slice(0, width - 1)}…` : l));
    this.opts.write(lines.join('\n'));
    this.drawn = lines.length;
  }

  /** Leave the pinned lines on screen and close the log file. */
  close(): Promise<void> {
    this.closed ??= new Promise<void>((resolve) => {
      if (this.drawn > 0) this.opts.write('\n');
      this.drawn = 0;
      this.pinned.clear();
      this.file.end(() => resolve());
    });
    return this.closed;
  }
}

function formatRecord(name: string, rec: Record<string, unknown>): string {
  const time = typeof rec.time === 'string' ? rec.time.slice(11, 19) : new Date(Number(rec.time ?? Date.now())).toISOString().slice(11, 19);
  const level = LEVEL_NAMES[Number(rec.level)] ?? String(rec.level);
  const extra = SHOWN_FIELDS.filter((k) => rec[k] !== undefined)
    .map((k) => `${k}=${typeof rec[k] === 'object' ? JSON.stringify((rec[k] as { message?: unknown }).message ?? rec[k]) : String(rec[k])}`)
    .join(' ');
  return `${time} ${level.padEnd(5)} [${name}] ${String(rec.msg ?? '')}${extra ? ` (${extra})` : ''}`;
}
