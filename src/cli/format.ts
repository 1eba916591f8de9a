/** Left-aligned text columns, two spaces apart, for the human output of the CLI. */
export function columns(head: string[], body: string[][]): string[] {
  // A loop, not Math.max(...cells): a listing of 100,000 MVs is more arguments than a call takes.
  const widths = head.map((h) => h.length);
  for (const row of body) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [fmt(head), ...body.map(fmt)];
}

/** An ISO time as "YYYY-MM-DD HH:MM:SS.mmm" (UTC), or "-". */
export const utc = (s: string | null | undefined): string => s?.replace('T', ' ').replace('Z', '') ?? '-';

/** A lag for people: "4.2s", "3m12s", "2h05m", "3d04h"; "-" when there is none. */
export function formatLag(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return '-';
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds);
  const two = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d${two(Math.floor((s % 86_400) / 3600))}h`;
}
