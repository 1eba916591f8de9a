import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Constant-time bearer-token check. Both sides are hashed first so the comparison takes the
 * same time whatever the presented token's length.
 */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  return tokenMatches(header.slice('Bearer '.length), token);
}

export const BOARD_COOKIE = 'mvs_token';

/** Constant-time comparison of a presented token (cookie, query) with the configured one. */
export function tokenMatches(given: string | undefined, token: string): boolean {
  if (given === undefined) return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return undefined;
}
