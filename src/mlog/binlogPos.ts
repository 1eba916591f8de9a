// Binary-log positions as one ordered number: the file's sequence number (the digits after the
// last '.' of `binlog.000042`) in the high 32 bits, the byte offset in the low 32 (a binlog file
// is at most 1 GiB: max_binlog_size). A BINLOG log row carries the encoded position at which its
// transaction ends (`_mlog$bpos`), and a cut's position compares with it directly. The value is
// kept as a decimal string: file numbers past 2^21 would not fit a double exactly.

export interface FilePosition {
  file: string;
  pos: number;
}

const OFFSET_BITS = 32n;

/** The sequence number of a binlog file name, or undefined when it has none. */
export function binlogFileNumber(file: string): number | undefined {
  const m = /\.(\d+)$/.exec(file);
  return m ? Number(m[1]) : undefined;
}

/** `file:pos` as one number (decimal string), or undefined when the file name has no number. */
export function encodeBinlogPos(file: string | null | undefined, pos: number | null | undefined): string | undefined {
  if (file === null || file === undefined || pos === null || pos === undefined) return undefined;
  const n = binlogFileNumber(file);
  if (n === undefined || !Number.isInteger(pos) || pos < 0 || pos >= 2 ** 32) return undefined;
  return ((BigInt(n) << OFFSET_BITS) | BigInt(pos)).toString();
}

/** Compare two positions: negative when a is before b, 0 when equal, positive after. */
export function compareBinlogPos(a: FilePosition, b: FilePosition): number {
  const fa = binlogFileNumber(a.file) ?? -1;
  const fb = binlogFileNumber(b.file) ?? -1;
  return fa !== fb ? fa - fb : a.pos - b.pos;
}

export const showPos = (p: { file: string | null; pos: number | null }): string => `${p.file ?? '?'}:${p.pos ?? '?'}`;
