import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

// npm 11's `npm ci` refuses a lock that names an optional dependency without an entry for it,
// and `npm install` drops other platforms' entries (npm/cli#4828): see scripts/complete-lock.mjs.
describe('package-lock.json', () => {
  it('has an entry for every optional dependency it names, so npm ci works on a clean clone', () => {
    const lock = JSON.parse(readFileSync(new URL('../../package-lock.json', import.meta.url), 'utf8')) as {
      packages: Record<string, { optionalDependencies?: Record<string, string> }>;
    };
    const missing: string[] = [];
    for (const [loc, entry] of Object.entries(lock.packages)) {
      for (const name of Object.keys(entry.optionalDependencies ?? {})) {
        if (!lock.packages[`${loc}/node_modules/${name}`] && !lock.packages[`node_modules/${name}`]) missing.push(`${loc} -> ${name}`);
      }
    }
    expect(missing, 'run: node scripts/complete-lock.mjs').toEqual([]);
  });
});
