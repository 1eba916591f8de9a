import { ValidationError } from '../errors.js';

// Paging of the listings the API gives out (DESIGN.md §3 HTTP): `?limit=` (default 1000, max
// 10000) and an opaque `?cursor=` taken from the previous answer's `nextCursor`.

export const DEFAULT_PAGE_LIMIT = 1000;
export const MAX_PAGE_LIMIT = 10_000;

export interface Page<T> {
  items: T[];
  /** Pass as `cursor` for the next page; null on the last one. */
  nextCursor: string | null;
}

/** `?limit=`: a whole number from 1 to `max`; absent means `fallback`. */
export function parseLimit(text: unknown, fallback = DEFAULT_PAGE_LIMIT, max = MAX_PAGE_LIMIT): number {
  if (text === undefined || text === '') return fallback;
  const s = String(text).trim();
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > max) throw new ValidationError(`limit: expected a whole number from 1 to ${max}, got ${JSON.stringify(text)}`);
  return n;
}

/** Cursors are base64url JSON, opaque to callers, so their content may change without notice. */
export function encodeCursor(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

/** Decode a cursor and check its shape; anything else is a 400 naming `cursor`. */
export function decodeCursor<T>(text: unknown, check: (v: unknown) => v is T): T | undefined {
  if (text === undefined || text === '') return undefined;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(String(text), 'base64url').toString('utf8'));
  } catch {
    v = undefined;
  }
  if (!check(v)) throw new ValidationError('cursor: not a cursor this API gave out (pass nextCursor from the previous page)');
  return v;
}
