import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * Constant-time bearer-token check. Both sides are hashed first so the comparison takes the
 * same time whatever the presented token's length.
 */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  return tokenMatches(header.slice('Bearer '.length), token);
}

/** The cookie a browser gets from a `?token=` login (HttpOnly, SameSite=Strict). */
export const TOKEN_COOKIE = 'mvs_token';

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

const under = (path: string, base: string) => path === base || path.startsWith(`${base}/`);

/** Pages people open in a browser (`/`, the dashboard, Bull Board): `?token=` logs in there. */
export function isBrowserArea(path: string): boolean {
  return path === '/' || under(path, '/ui') || under(path, '/admin/queues');
}

/**
 * Where the login cookie stands in for the bearer header: the browser pages, and reads of the
 * JSON API, which the dashboard's client makes. Writes to /v1 still need the header, since a
 * browser attaches cookies to requests other sites make it send; the dashboard's own writes
 * (under /ui) also check a CSRF token.
 */
export function cookieAccepted(method: string, path: string): boolean {
  if (isBrowserArea(path)) return true;
  return (method === 'GET' || method === 'HEAD') && under(path, '/v1');
}

/**
 * The onRequest hook of MVS_API_TOKEN: a bearer header anywhere but /healthz; in a browser,
 * `?token=` once on a page, which sets an HttpOnly cookie and redirects to the URL without the
 * token (so it stays out of history and logs), then the cookie.
 */
export function tokenGuard(token: string): (req: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (req, reply) => {
    // Browsers ask for /favicon.ico on their own, without the cookie's help on other paths.
    if (req.url === '/healthz' || req.url === '/favicon.ico') return;
    if (bearerMatches(req.headers.authorization, token)) return;
    const url = new URL(req.url, 'http://mvsched');
    if (isBrowserArea(url.pathname)) {
      const fromQuery = url.searchParams.get('token') ?? undefined;
      if (fromQuery !== undefined && tokenMatches(fromQuery, token)) {
        url.searchParams.delete('token');
        const secure = req.protocol === 'https' ? '; Secure' : '';
        await reply
          .code(302)
          .header('set-cookie', `${TOKEN_COOKIE}=${encodeURIComponent(token)}; Path=/; HttpOnly; SameSite=Strict${secure}`)
          .header('location', url.pathname + url.search)
          .send();
        return;
      }
    }
    if (cookieAccepted(req.method, url.pathname) && tokenMatches(cookieValue(req.headers.cookie, TOKEN_COOKIE), token)) return;
    reply.code(401).header('www-authenticate', 'Bearer');
    if (isBrowserArea(url.pathname) && (req.headers.accept ?? '').includes('text/html')) {
      await reply
        .header('content-type', 'text/html; charset=utf-8')
        .send('<!doctype html><title>mvsched: sign in</title><p>This mvsched server needs its API token: open this page once with <code>?token=&lt;MVS_API_TOKEN&gt;</code> added to the address.</p>');
      return;
    }
    await reply.send({ error: 'unauthorized', message: 'missing or wrong bearer token' });
  };
}
