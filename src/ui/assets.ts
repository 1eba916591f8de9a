import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The dashboard's static files: its own plain ES modules and CSS (src/ui/assets/), and the
// libraries it uses, read from their npm packages' browser builds. Everything is served by the
// mvsched server itself, so the page works on a machine with no network and needs no build
// step. Loaded once at start-up; a name not in the table is a 404 (no paths from the URL
// reach the file system).

export const ASSET_DIR = fileURLToPath(new URL('./assets/', import.meta.url));

const require = createRequire(import.meta.url);
const packageDir = (name: string) => dirname(require.resolve(`${name}/package.json`));

/** Served name -> [npm package, file in it]. */
const VENDOR: Record<string, [string, string]> = {
  'uplot.js': ['uplot', 'dist/uPlot.esm.js'],
  'uplot.css': ['uplot', 'dist/uPlot.min.css'],
  'dagre.js': ['@dagrejs/dagre', 'dist/dagre.esm.js'],
};

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

export interface StaticFile {
  body: Buffer;
  type: string;
  etag: string;
}

function file(body: Buffer, name: string): StaticFile {
  return { body, type: TYPES[extname(name)] ?? 'application/octet-stream', etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
}

/** The page template (with %PLACEHOLDERS%) and the files under /ui/assets/ and /ui/vendor/. */
export function loadStatic(): { template: string; assets: Map<string, StaticFile>; vendor: Map<string, StaticFile> } {
  const assets = new Map<string, StaticFile>();
  let template = '';
  for (const name of readdirSync(ASSET_DIR)) {
    const body = readFileSync(join(ASSET_DIR, name));
    if (name === 'page.html') template = body.toString('utf8');
    else assets.set(name, file(body, name));
  }
  if (!template) throw new Error(`dashboard page template missing in ${ASSET_DIR}`);
  const vendor = new Map<string, StaticFile>();
  for (const [name, [pkg, path]] of Object.entries(VENDOR)) {
    // Source maps are not shipped with the page; drop the pointer so devtools do not ask for one.
    const text = readFileSync(join(packageDir(pkg), path), 'utf8').replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
    vendor.set(name, file(Buffer.from(text, 'utf8'), name));
  }
  return { template, assets, vendor };
}
