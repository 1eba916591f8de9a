import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Constant-time bearer-token check. Both sides are hashed first so the comparison takes the
 * same time whatever the presented token's length.
 */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const given = createHash('sha256').update(header.slice('Bearer '.length)).digest();
  const want = createHash('sha256').update(token).digest();
  return timingSafeEqual(given, want);
}
