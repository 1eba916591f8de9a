import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';

// The dashboard's actions (refresh) run on the login cookie, which a browser also attaches to
// requests that other sites make it send. Besides SameSite=Strict on the cookie, each action
// must carry a CSRF token that only the dashboard's own pages hold (same-origin policy keeps
// other sites from reading them), and must not come from another site by the browser's word
// (Sec-Fetch-Site, Origin).

export const CSRF_HEADER = 'x-mvs-csrf';

/** host[:port] of a URL as a browser compares origins (default ports dropped); undefined if not a URL. */
function hostOf(text: string): string | undefined {
  try {
    const u = new URL(text);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.host : undefined;
  } catch {
    return undefined;
  }
}

export class CsrfGuard {
  private readonly key: Buffer;

  /**
   * With an API token the key is derived from it, so every server replica of a deployment
   * accepts the tokens any replica gave out; without one (a loopback-only server) it is random.
   */
  constructor(apiToken: string | undefined) {
    this.key = apiToken ? createHash('sha256').update(`mvsched ui csrf\0${apiToken}`).digest() : randomBytes(32);
  }

  token(): string {
    return createHmac('sha256', this.key).update('ui-actions').digest('base64url');
  }

  /** Why the request is refused, or undefined when it may act. */
  refusal(req: FastifyRequest): string | undefined {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') return `cross-site request refused (Sec-Fetch-Site: ${String(site)})`;
    const origin = req.headers.origin;
    if (origin !== undefined && hostOf(origin) !== hostOf(`${req.protocol}://${req.headers.host ?? ''}`)) {
      return `cross-site request refused (Origin ${origin})`;
    }
    const given = req.headers[CSRF_HEADER];
    if (typeof given !== 'string' || given === '') return `missing ${CSRF_HEADER} header (reload the dashboard)`;
    const a = createHash('sha256').update(given).digest();
    const b = createHash('sha256').update(this.token()).digest();
    return timingSafeEqual(a, b) ? undefined : `wrong ${CSRF_HEADER} header (reload the dashboard)`;
  }
}
