import { meta } from './dom.js';

// The dashboard reads the JSON API (/v1, with the login cookie) and its own listings (/ui/api);
// its one action carries the page's CSRF token.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function parse(res) {
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { message: text.slice(0, 200) };
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

export async function getJson(url) {
  return parse(await fetch(url, { headers: { accept: 'application/json' }, credentials: 'same-origin' }));
}

export async function postJson(url, body) {
  return parse(
    await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', accept: 'application/json', 'x-mvs-csrf': meta('mvs-csrf') },
      body: JSON.stringify(body ?? {}),
    }),
  );
}

/** `/v1/mviews/s/n` etc.: each name part URL-encoded. */
export function mvPath(schema, name) {
  return `${encodeURIComponent(schema)}/${encodeURIComponent(name)}`;
}

/**
 * Call `load` now and every `everyMs` while the page is visible; `onError` shows what failed and
 * the next round tries again. Returns a function that runs a round at once.
 */
export function poll(load, everyMs, onError) {
  let timer;
  let busy = false;
  const round = async () => {
    clearTimeout(timer);
    if (!busy) {
      busy = true;
      try {
        await load();
      } catch (err) {
        onError(err);
      } finally {
        busy = false;
      }
    }
    timer = setTimeout(round, document.hidden ? everyMs * 4 : everyMs);
  };
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) void round();
  });
  void round();
  return round;
}
