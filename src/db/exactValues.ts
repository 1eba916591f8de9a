import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Knex } from 'knex';

// Values that leave the database and go back in (a row copied between connections, a group key
// matched again) must come back bit for bit: JavaScript numbers round DECIMAL and BIGINT, and
// Date drops microseconds. So such reads take every value as raw bytes and keep it as the
// server's text, or as bytes for binary strings; binding that text back lets the server convert
// it to the column's type exactly.

export type ExactValue = string | Buffer | null;

interface FieldMeta {
  columnType: number;
  characterSet: number;
}

const BINARY_CHARSET = 63;
// VARCHAR, BIT, TINY/MEDIUM/LONG BLOB, BLOB, VAR_STRING, STRING, GEOMETRY: bytes when binary.
const BYTE_TYPES = new Set([15, 16, 249, 250, 251, 252, 253, 254, 255]);

const isBytes = (f: FieldMeta) => f.columnType === 16 || f.columnType === 255 || (BYTE_TYPES.has(f.columnType) && f.characterSet === BINARY_CHARSET);

function converter(asBytes: boolean[]): (row: Array<Buffer | null>) => ExactValue[] {
  return (row) => row.map((v, i) => (v === null ? null : asBytes[i] ? v : v.toString('utf8')));
}

/** Which columns of `sql`'s result are binary (kept as bytes), from planning it with LIMIT 0. */
export async function byteColumns(db: Knex | Knex.Transaction, sql: string): Promise<boolean[]> {
  const [, fields] = (await db.raw(`SELECT * FROM (${sql}) AS __mvs_meta LIMIT 0`).options(RAW)) as [unknown, FieldMeta[]];
  return fields.map(isBytes);
}

const RAW = { typeCast: false, rowsAsArray: true } as const;

/** Run a query whose rows come back as arrays of exact values. */
export async function exactRows(db: Knex | Knex.Transaction, sql: string, bindings: readonly unknown[] = []): Promise<ExactValue[][]> {
  const [rows, fields] = (await db.raw(sql, bindings as never).options(RAW)) as [Array<Array<Buffer | null>>, FieldMeta[]];
  const conv = converter(fields.map(isBytes));
  return rows.map(conv);
}

/**
 * Stream a query's rows as arrays of exact values. The query is planned once for its types,
 * unless the caller knows which columns are binary (`asBytes`, from byteColumns of a table of
 * the same types). Without bindings the SQL goes as it is: a `?` in a string literal of a user's
 * definition is not a placeholder.
 */
export async function* exactStream(
  db: Knex | Knex.Transaction,
  sql: string,
  bindings: readonly unknown[] = [],
  asBytes?: boolean[],
): AsyncGenerator<ExactValue[]> {
  const raw = (text: string) => (bindings.length ? db.raw(text, bindings as never) : db.raw(text));
  let kinds = asBytes;
  if (!kinds) {
    const [, fields] = (await raw(`SELECT * FROM (${sql}) AS __mvs_meta LIMIT 0`).options(RAW)) as [unknown, FieldMeta[]];
    kinds = fields.map(isBytes);
  }
  const conv = converter(kinds);
  const stream = raw(sql).options(RAW).stream() as unknown as AsyncIterable<Array<Buffer | null>>;
  for await (const row of stream) yield conv(row);
}

/** A query already running, whose rows are read later (startedStream). */
export interface StartedStream {
  /** Its rows as exact values; `asBytes` says which columns are binary. Read once. */
  rows(asBytes: boolean[]): AsyncGenerator<ExactValue[]>;
  /** Read and drop whatever is left, so the connection is free for its next statement. */
  discard(): Promise<void>;
}

/**
 * Send a query now and read its rows when the caller is ready for them: the server works on it
 * meanwhile. Until they are read, rows wait in the stream's buffer and then in the socket (the
 * connection pauses): memory stays bounded, but the connection runs nothing else until the
 * rows are read or discarded. An error before the read is kept and thrown by the read.
 */
export function startedStream(db: Knex | Knex.Transaction, sql: string): StartedStream {
  const stream = db.raw(sql).options(RAW).stream() as unknown as Readable;
  let failure: unknown;
  stream.on('error', (err: unknown) => {
    failure ??= err;
  });
  let read = false;
  return {
    async *rows(asBytes) {
      if (read) throw new Error('a started stream is read once');
      read = true;
      const conv = converter(asBytes);
      for await (const row of stream as AsyncIterable<Array<Buffer | null>>) yield conv(row);
      if (failure) throw failure;
    },
    async discard() {
      read = true;
      if (stream.readableEnded || stream.destroyed) return;
      stream.resume();
      await finished(stream).catch(() => {});
    },
  };
}
