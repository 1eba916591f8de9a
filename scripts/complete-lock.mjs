// Adds the platform-specific optional packages that npm leaves out of package-lock.json when it
// writes the lock on one platform (npm/cli#4828). npm 11's `npm ci` checks that every optional
// dependency named in the lock has an entry, so without them `npm ci` fails on a clean clone.
// Run after changing dependencies: `npm install && node scripts/complete-lock.mjs`.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const lockPath = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(lockPath, 'utf8'));
const pkgs = lock.packages;
let added = 0;

function view(spec) {
  try {
    const meta = JSON.parse(
      execFileSync('npm', ['view', spec, 'version', 'dist.integrity', 'os', 'cpu', 'libc', 'license', 'engines', '--json'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }),
    );
    return Array.isArray(meta) ? meta[meta.length - 1] : meta;
  } catch {
    return undefined;
  }
}

for (const [loc, entry] of Object.entries(pkgs)) {
  for (const [name, range] of Object.entries(entry.optionalDependencies ?? {})) {
    // Where npm would place it: beside the parent, else hoisted to the top.
    const nested = `${loc}/node_modules/${name}`;
    const top = `node_modules/${name}`;
    if (pkgs[nested] || pkgs[top]) continue;
    let m = view(`${name}@${range}`);
    if (!m) {
      // A registry mirror may lack this platform's build of this exact version. npm ci only needs
      // the entry, to see from os/cpu that it skips it here; those never change between versions.
      m = view(name);
      if (!m) throw new Error(`${name} is not in the registry at all`);
      m = { ...m, version: range.replace(/^[\^~=]/, ''), 'dist.integrity': undefined };
    }
    const out = { version: m.version };
    if (m['dist.integrity']) out.integrity = m['dist.integrity'];
    if (m.cpu) out.cpu = m.cpu;
    if (entry.dev) out.dev = true;
    if (m.libc) out.libc = m.libc;
    if (m.license) out.license = m.license;
    out.optional = true;
    if (m.os) out.os = m.os;
    if (m.engines) out.engines = m.engines;
    pkgs[top] = out;
    added++;
    console.error(`added ${top}@${m.version}`);
  }
}
// npm keeps entries sorted by path.
lock.packages = Object.fromEntries(Object.entries(pkgs).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))));
writeFileSync(lockPath, `${JSON.stringify(lock, null, 2)}\n`);
console.error(`${added} optional platform package(s) added`);
