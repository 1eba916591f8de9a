import { h, fill } from './dom.js';
import { fmtDuration, HEALTH_LABELS, lagAllowance } from './format.js';

// Pieces both pages show: the health badge, the lag with what it is held against, the "updated"
// indicator and the error line.

export function healthBadge(health) {
  return h('span', { class: `badge h-${health}`, title: HEALTH_LABELS[health] ?? health }, HEALTH_LABELS[health] ?? health);
}

/** "12 s" coloured by health, with "every 5 s" / "target 30 s" under it. */
export function lagCell(mv) {
  const allowance = lagAllowance(mv);
  return h(
    'span',
    { class: 'lag' },
    h('span', { class: `lagv h-${mv.health ?? 'ok'}-text`, 'data-lag': mv.lagSeconds ?? '' }, mv.lagSeconds === null || mv.lagSeconds === undefined ? '–' : fmtDuration(mv.lagSeconds)),
    allowance ? h('span', { class: 'sub' }, ` / ${allowance}`) : null,
  );
}

export function setLive(text, ok = true) {
  const el = document.getElementById('live');
  if (!el) return;
  el.textContent = text;
  el.classList.toggle('stale', !ok);
}

export function updatedNow() {
  setLive(`updated ${new Date().toLocaleTimeString()}`);
}

/** Show an error in `box` (and in the header); a 401 says how to sign in again. */
export function showError(box, err) {
  const msg = err?.status === 401 ? 'Not signed in: open this page with ?token=<MVS_API_TOKEN> once.' : `Could not load: ${err?.message ?? err}`;
  fill(box, msg);
  box.hidden = false;
  setLive('update failed', false);
}

export function clearError(box) {
  box.hidden = true;
  fill(box);
}

/** Bull Board's page of a job (or of a queue when the job id is unknown). */
export function boardLink(board, queue, jobId) {
  return `${board}/queue/${encodeURIComponent(queue)}${jobId ? `/${encodeURIComponent(jobId)}` : ''}`;
}

export function truncate(text, n) {
  if (!text) return '';
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}
