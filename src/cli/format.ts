/** Left-aligned text columns, two spaces apart, for the human output of the CLI. */
export function columns(head: string[], body: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [fmt(head), ...body.map(fmt)];
}

/** An ISO time as "YYYY-MM-DD HH:MM:SS.mmm" (UTC), or "-". */
export const utc = (s: string | null | undefined): string => s?.replace('T', ' ').replace('Z', '') ?? '-';
